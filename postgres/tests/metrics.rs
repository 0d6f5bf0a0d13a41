//! `/metrics` of a real `prism-postgres`, scraped while the test drives it:
//! statement latency by operation, pool gauges that move (calls wait while a
//! table lock holds the only connection, and stop waiting after), and the
//! Vault lease remaining falling, then jumping back at each renewal.

mod common;

use std::time::Duration;

use common::{pg_and_plugin, req, set, start_plugin};
use prism_testkit::scrape::{MetricsPort, sample, scrape, wait_for_sample};
use prism_testkit::{Vault, borrowed_env};

const MOVES: Duration = Duration::from_secs(20);

#[tokio::test]
async fn pool_and_statement_metrics_move_with_the_load() {
    let metrics = MetricsPort::free();
    let (pg, plugin) = pg_and_plugin(&[metrics.env(), ("PRISM_BACKEND__POOL_SIZE", "1")]).await;
    let port = metrics.port;
    let mut kv = plugin.basic();
    kv.set(req(None, set("m1", "v", 0))).await.expect("set");
    let text = scrape(port).await;
    let insert = [("backend", "postgresql"), ("operation", "INSERT")];
    let count = "prism_backend_operation_duration_seconds_count";
    assert_eq!(sample(&text, count, &insert), Some(1.0), "{text}");
    let pool = [("backend", "postgresql")];
    assert_eq!(sample(&text, "prism_pool_connections", &pool), Some(1.0));
    assert_eq!(
        sample(&text, "prism_pool_connections_in_use", &pool),
        Some(0.0)
    );
    let acquired = sample(&text, "prism_pool_acquire_duration_seconds_count", &pool);
    assert!(acquired.is_some_and(|n| n >= 1.0), "{text}");

    // The only connection blocks on a table lock: later calls wait for it.
    let holder =
        pg.psql("BEGIN; LOCK TABLE prism_kv IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;");
    let load = async {
        let locked = || pg.exclusively_locked("prism_kv");
        common::poll_until(Duration::from_secs(3), "the lock", locked).await;
        let calls = (0..3).map(|i| {
            let mut kv = plugin.basic();
            async move { kv.set(req(None, set(&format!("w{i}"), "v", 0))).await }
        });
        let watch = async {
            let waiting = "prism_pool_waiting";
            wait_for_sample(port, waiting, &pool, "calls wait", MOVES, |v| v >= 1.0).await;
            let in_use = "prism_pool_connections_in_use";
            wait_for_sample(port, in_use, &pool, "held", MOVES, |v| v == 1.0).await;
        };
        let (results, ()) = tokio::join!(futures::future::join_all(calls), watch);
        results
    };
    let (held, results) = tokio::join!(holder, load);
    held.expect("lock holder");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    wait_for_sample(port, "prism_pool_waiting", &pool, "drained", MOVES, |v| {
        v == 0.0
    })
    .await;
    let text = scrape(port).await;
    assert_eq!(sample(&text, count, &insert), Some(4.0));
    let slow = sample(&text, "prism_pool_acquire_duration_seconds_sum", &pool);
    assert!(slow.is_some_and(|s| s >= 1.0), "waits are timed: {text}");
}

#[tokio::test]
async fn vault_lease_remaining_falls_then_jumps_at_renewal() {
    let (pg, vault, _) = Vault::start_with_postgres("6s", "1m", &[])
        .await
        .unwrap_or_else(|e| panic!("postgres and vault: {e}"));
    let metrics = MetricsPort::free();
    let env = vault.postgres_plugin_env(&pg, &vault.addr());
    let mut env = borrowed_env(&env);
    env.push(metrics.env());
    let plugin = start_plugin(&pg, &env).await;
    let port = metrics.port;
    let text = scrape(port).await;
    assert_eq!(
        sample(&text, "prism_vault_credential_rotations_total", &[]),
        Some(1.0)
    );
    let renewals = sample(&text, "prism_vault_lease_renewals_total", &[]).unwrap_or(0.0);
    let lease = "prism_vault_lease_remaining_seconds";
    let first = sample(&text, lease, &[]).expect("a lease");
    assert!(first <= 6.0, "{text}");
    // Falls...
    let lower = wait_for_sample(port, lease, &[], "falls", MOVES, |v| v < first - 0.5).await;
    // ...then jumps back up at the renewal, which the counter shows.
    wait_for_sample(port, lease, &[], "renewed", MOVES, |v| v > lower + 0.5).await;
    let text = scrape(port).await;
    let now = sample(&text, "prism_vault_lease_renewals_total", &[]).unwrap_or(0.0);
    assert!(now > renewals, "renewals counted: {text}");
    assert!(plugin.read(None, "anything").await.error.is_empty());
}
