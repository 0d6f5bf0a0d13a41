//! Fault: Vault (OpenBao) goes away while prism-postgres runs on Vault-minted
//! credentials under a steady load. Asserted: the plugin keeps serving with
//! its current credentials (0 failed calls, readiness SERVING), its health
//! details report the Vault problem (`vault_reachable=false`,
//! `vault_last_error`), and it recovers by itself when Vault returns
//! (renewals resume; after a restart that lost Vault's state, it mints new
//! credentials and swaps its pool, still without failing a call).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prism_faults::{Kind, Load, LoadOptions, Plugin, Report};
use prism_testkit::{Postgres, ServingStatus, Vault, borrowed_env};

/// Generous bound for waits.
const WAIT: Duration = Duration::from_secs(30);

async fn plugin_on_vault(pg: &Postgres, vault: &Vault) -> Plugin {
    let mut env = vault.postgres_plugin_env(pg, &vault.addr());
    env.push(("PRISM_VAULT__REQUEST_TIMEOUT", "800ms".into()));
    Plugin::start(Kind::Postgres, &borrowed_env(&env)).await
}

fn kv_load(plugin: &Plugin) -> Load {
    let options = LoadOptions {
        callers: 4,
        hang_limit: Duration::from_secs(6),
        ..LoadOptions::default()
    };
    plugin.set_load(options, Duration::from_secs(2), |_| "v".into())
}

/// PostgreSQL and Vault (15 s leases), the plugin on Vault credentials, and
/// KV load that has made 20 successful calls.
async fn serving_under_load() -> (Postgres, Vault, Plugin, Load) {
    let (pg, vault, _) = Vault::start_with_postgres("15s", "10m", &[])
        .await
        .unwrap_or_else(|e| panic!("postgres and vault: {e}"));
    let plugin = plugin_on_vault(&pg, &vault).await;
    let load = kv_load(&plugin);
    let started = Instant::now();
    assert!(load.wait_calls(started, 20, WAIT, |r| r.is_ok()).await);
    (pg, vault, plugin, load)
}

fn number(details: &BTreeMap<String, String>, key: &str) -> u64 {
    details
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("health detail {key}: {details:?}"))
}

/// Polls the health details until `check` holds; returns them.
async fn wait_details(
    plugin: &Plugin,
    what: &str,
    check: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let details = plugin.health_details().await;
        if check(&details) {
            return details;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {details:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report_and_assert(name: &str, report: &Report, outage: Instant, back: Instant) {
    let before = report.counts(|r| r.finished < outage);
    let during = report.counts(|r| r.started >= outage && r.finished < back);
    let after = report.counts(|r| r.started >= back);
    let all = report.all();
    eprintln!("[{name}] before the Vault outage: {before}");
    eprintln!("[{name}] during the Vault outage: {during}");
    eprintln!("[{name}] after Vault returned: {after}");
    eprintln!("[{name}] all calls: {all}");
    assert_eq!(all.hung, 0);
    assert_eq!(
        all.failed_total(),
        0,
        "no call fails because Vault is away: {:?}",
        report.sample_failures(10)
    );
    assert!(during.ok >= 20, "calls served during the outage");
    assert!(after.ok >= 1, "calls served after Vault returned");
}

/// Vault frozen (SIGSTOP: requests hang until `request_timeout`) past a
/// renewal, then thawed before the lease runs out.
#[tokio::test(flavor = "multi_thread")]
async fn vault_stall_keeps_serving_reports_unreachable_and_renewal_resumes() {
    // Renewal at 2/3 of 15 s: the stall is noticed within ~10 s and leaves
    // ~4 s of lease when Vault is back.
    let (_pg, mut vault, plugin, load) = serving_under_load().await;
    let renewals = number(&plugin.health_details().await, "vault_renewals");

    let outage = Instant::now();
    vault.pause().expect("SIGSTOP vault");
    let during = wait_details(&plugin, "vault_reachable=false", |d| {
        d.get("vault_reachable").map(String::as_str) == Some("false")
    })
    .await;
    let readiness = plugin.health("readiness").await.expect("health answers");
    vault.resume().expect("SIGCONT vault");
    let back = Instant::now();
    let after = wait_details(&plugin, "renewal resumed", |d| {
        d.get("vault_reachable").map(String::as_str) == Some("true")
            && number(d, "vault_renewals") > renewals
    })
    .await;
    let report = load.finish().await;
    eprintln!("[vault-stall] health during: {during:?}");
    eprintln!("[vault-stall] health after: {after:?}");
    report_and_assert("vault-stall", &report, outage, back);
    assert_eq!(readiness, ServingStatus::Serving, "readiness stays SERVING");
    assert!(
        !during.get("vault_last_error").is_none_or(|e| e.is_empty()),
        "the Vault problem is reported: {during:?}"
    );
}

/// Vault stopped (connection refused) and started again with fresh dev
/// state (a dev server keeps everything in memory), configured again by
/// the setup script: the old lease is unknown to it, so the plugin mints new
/// credentials and swaps its pool.
#[tokio::test(flavor = "multi_thread")]
async fn vault_restart_keeps_serving_and_switches_to_new_credentials_when_back() {
    let (pg, mut vault, plugin, load) = serving_under_load().await;
    let swaps = number(&plugin.health_details().await, "vault_pool_swaps");

    let outage = Instant::now();
    vault.stop().await.expect("vault stops");
    let during = wait_details(&plugin, "vault_reachable=false", |d| {
        d.get("vault_reachable").map(String::as_str) == Some("false")
    })
    .await;
    let readiness = plugin.health("readiness").await.expect("health answers");
    vault.start_again().await.expect("vault restarts");
    vault
        .setup_postgres(&pg, "15s", "10m", &[])
        .await
        .unwrap_or_else(|e| panic!("vault-dev-setup.sh failed: {e}"));
    let back = Instant::now();
    let after = wait_details(&plugin, "new credentials in use", |d| {
        d.get("vault_reachable").map(String::as_str) == Some("true")
            && number(d, "vault_pool_swaps") > swaps
    })
    .await;
    // A few more calls on the new credentials.
    assert!(
        load.wait_calls(Instant::now(), 20, WAIT, |r| r.is_ok())
            .await
    );
    let report = load.finish().await;
    eprintln!("[vault-restart] health during: {during:?}");
    eprintln!("[vault-restart] health after: {after:?}");
    report_and_assert("vault-restart", &report, outage, back);
    assert_eq!(readiness, ServingStatus::Serving, "readiness stays SERVING");
}
