//! The load generator itself, against a real prism-redis (the debug binary
//! from `cargo build --bins`) on a real `redis-server`: a short run completes
//! requests and counts no errors, for reads of preloaded keys and for writes.

use std::path::PathBuf;
use std::time::Duration;

use prism_bench::{Options, Scenario};
use prism_testkit::{PluginProcess, Redis, ServingStatus, wait_for_health};

/// `target/debug/prism-redis`, next to this test's own target directory.
fn prism_redis() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/debug/deps/<test> → target/debug/prism-redis
    let path = exe.parent()?.parent()?.join("prism-redis");
    path.exists().then_some(path)
}

fn options(port: u16, scenario: Scenario) -> Options {
    Options {
        target: format!("http://127.0.0.1:{port}"),
        scenario,
        connections: 2,
        concurrency: 4,
        duration: Duration::from_millis(700),
        requests: None,
        warmup: Duration::from_millis(200),
        value_size: 64,
        keys: 100,
        batch_size: 5,
        namespace: "bench-test".to_string(),
        topic: "unused".to_string(),
    }
}

#[tokio::test]
async fn a_short_run_against_prism_redis_completes_requests_without_errors() {
    let Some(bin) = prism_redis() else {
        eprintln!(
            "SKIPPED: target/debug/prism-redis is not built; run `cargo build --bins` \
             (make test does) to cover the load generator"
        );
        return;
    };
    let redis = Redis::start().await.expect("redis-server");
    let port = prism_testkit::free_port();
    let port_arg = port.to_string();
    let addr = redis.addr();
    let mut plugin = PluginProcess::spawn(
        &bin,
        &["--grpc-port", &port_arg],
        &[
            ("REDIS_ADDRESS", addr.as_str()),
            ("PRISM_LOG_LEVEL", "warn"),
        ],
    )
    .await
    .expect("spawn prism-redis");
    wait_for_health(port, "", ServingStatus::Serving, Duration::from_secs(30))
        .await
        .expect("prism-redis SERVING");

    for scenario in [Scenario::CacheGet, Scenario::CacheSet, Scenario::KvBatch] {
        let report = prism_bench::run(options(port, scenario), |_, _| {})
            .await
            .expect("run");
        assert!(report.ops > 0, "{scenario:?}: no successful requests");
        assert!(
            report.errors.is_empty(),
            "{scenario:?}: errors {:?}",
            report.errors
        );
        assert!(report.p50_us > 0 && report.p50_us <= report.p99_us);
        assert!(report.ops_per_sec > 0.0);
    }
    // The preload (BatchSet through the plugin) wrote every key of the key space
    // with the plugin's layout.
    let stored = redis
        .cli(&["EXISTS", "prism:bench-test:bench-000000000000"])
        .await
        .expect("redis-cli");
    assert_eq!(stored, "1");

    // A request budget stops after exactly that many measured requests.
    let mut counted = options(port, Scenario::CacheGet);
    counted.requests = Some(500);
    let report = prism_bench::run(counted, |_, _| {}).await.expect("run");
    assert_eq!(report.ops, 500);
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    plugin.sigterm().expect("sigterm");
    plugin
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exit");
}
