//! `/metrics` of a real `prism-redis`, scraped while the test drives it:
//! command latency by operation counts every call, and the multiplexed
//! connections show as the pool.

mod common;

use common::{get, redis_and_plugin, req, set};
use prism_testkit::scrape::{MetricsPort, sample, scrape};

#[tokio::test]
async fn command_and_pool_metrics_count_the_calls() {
    let metrics = MetricsPort::free();
    let env = [metrics.env(), ("PRISM_BACKEND__CONNECTIONS", "2")];
    let (_redis, plugin) = redis_and_plugin(&env).await;
    let port = metrics.port;
    let count = "prism_backend_operation_duration_seconds_count";
    let op = |operation| [("backend", "redis"), ("operation", operation)];
    let before = scrape(port).await;
    assert_eq!(sample(&before, count, &op("SET")), None, "{before}");
    let mut kv = plugin.basic();
    for i in 0..5 {
        kv.set(req(None, set(&format!("k{i}"), "v", 0)))
            .await
            .expect("set");
    }
    kv.get(req(None, get("k1"))).await.expect("get");
    let text = scrape(port).await;
    assert_eq!(sample(&text, count, &op("SET")), Some(5.0), "{text}");
    assert_eq!(sample(&text, count, &op("GET")), Some(1.0), "{text}");
    let pool = [("backend", "redis")];
    assert_eq!(
        sample(&text, "prism_pool_connections", &pool),
        Some(2.0),
        "{text}"
    );
    // Counted while calls run; none runs now.
    let in_use = sample(&text, "prism_pool_connections_in_use", &pool);
    assert_eq!(in_use, Some(0.0), "{text}");
}
