//! OpenTelemetry traces of `prism-redis` reach a real OTLP receiver: a call
//! carrying a `traceparent` yields the plugin's server span as the caller's
//! child and the Redis command span as the server span's child, and no
//! exported attribute holds a key or value; log lines inside the call carry
//! its trace id.

mod common;

use std::time::Duration;

use common::redis_and_plugin;
use prism_testkit::otlp::{self, OtlpReceiver};

#[tokio::test]
async fn a_traced_call_exports_server_and_redis_spans_under_the_callers_span() {
    let receiver = OtlpReceiver::start().await;
    let (_redis, plugin) = redis_and_plugin(&receiver.env()).await;
    let (set, get) = otlp::trace_set_and_get(
        &receiver,
        &plugin.channel,
        "redis",
        ("trace-key-7", "trace-value-7"),
        &[],
    )
    .await;
    assert_eq!(set.server.service, "prism-redis");
    assert_eq!(set.backend.attr("db.operation.name"), Some("SET"));
    assert_eq!(get.backend.attr("db.operation.name"), Some("GET"));
}

/// With the collector black-holing (accepts, never answers) or down (nothing
/// listening), every data call still succeeds, no slower beyond noise than
/// without tracing, and the plugin's memory stays bounded (spans beyond the
/// export queue are dropped).
#[tokio::test]
async fn a_dead_or_black_holing_collector_fails_no_call_and_holds_no_memory() {
    let hole = otlp::BlackHole::start().await;
    let down = format!("http://127.0.0.1:{}", prism_testkit::free_port());
    let redis = prism_testkit::Redis::start().await.expect("redis starts");
    let addr = redis.addr();
    let plain = common::start_plugin(&[("REDIS_ADDRESS", addr.as_str())]).await;
    const CALLS: usize = 2000;
    const CLIENTS: usize = 16;
    let baseline = otlp::drive_sets(&plain.channel, CALLS, CLIENTS).await;
    assert_eq!(baseline.failed, 0);
    eprintln!("[timing] no tracing: {baseline:?}");
    for (what, endpoint) in [("black hole", hole.endpoint()), ("down", down.as_str())] {
        let mut env = otlp::tracing_env(endpoint);
        env.push(("PRISM_TELEMETRY__MAX_QUEUE_SIZE", "512".to_string()));
        env.push(("REDIS_ADDRESS", addr.clone()));
        let env = prism_testkit::borrowed_env(&env);
        let plugin = common::start_plugin(&env).await;
        let warm = otlp::drive_sets(&plugin.channel, CALLS, CLIENTS).await;
        let before = otlp::rss_kib(plugin.process.pid());
        let run = otlp::drive_sets(&plugin.channel, 3 * CALLS, CLIENTS).await;
        let after = otlp::rss_kib(plugin.process.pid());
        eprintln!("[timing] collector {what}: {run:?}, RSS {before} -> {after} KiB");
        assert_eq!(
            warm.failed + run.failed,
            0,
            "collector {what}: failed calls"
        );
        // 12k spans kept would be over 12 MiB; the queue holds 512.
        assert!(
            after < before + 12 * 1024,
            "collector {what}: RSS grew {before} -> {after} KiB"
        );
        // Generous for a loaded 2-core machine: a call waiting on the
        // exporter would take the export timeout (2 s).
        assert!(
            run.p99 < baseline.p99 * 5 + Duration::from_millis(100),
            "collector {what}: p99 {:?} vs {:?} without tracing",
            run.p99,
            baseline.p99
        );
    }
}

/// The cost of tracing, measured (not asserted): the same Set load against a
/// plugin with tracing off, on at `sample_ratio` 0 (calls carry no
/// traceparent, so nothing is sampled) and on at 1 with every call exported
/// to a live receiver. Prints ops/s and plugin CPU per call; BENCHMARKS.md
/// records a run. `cargo nextest run -p prism-redis --run-ignored only -E
/// 'test(tracing_overhead)' --no-capture`.
#[tokio::test]
#[ignore = "measurement for BENCHMARKS.md, not a check"]
async fn tracing_overhead() {
    let receiver = OtlpReceiver::start().await;
    let redis = prism_testkit::Redis::start().await.expect("redis starts");
    let addr = redis.addr();
    const CALLS: usize = 20_000;
    const CLIENTS: usize = 16;
    for (what, ratio) in [
        ("off", None),
        ("on, sample_ratio 0", Some("0")),
        ("on, sample_ratio 1", Some("1")),
    ] {
        let mut env = vec![("REDIS_ADDRESS", addr.clone())];
        if let Some(ratio) = ratio {
            env.extend(otlp::tracing_env(receiver.endpoint()));
            env.push(("PRISM_TELEMETRY__SAMPLE_RATIO", ratio.to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let plugin = common::start_plugin(&env).await;
        let untraced = ratio == Some("0");
        otlp::drive_sets_with(&plugin.channel, 2000, CLIENTS, !untraced).await;
        let cpu = otlp::cpu_seconds(plugin.process.pid());
        let run = otlp::drive_sets_with(&plugin.channel, CALLS, CLIENTS, !untraced).await;
        let per_call = (otlp::cpu_seconds(plugin.process.pid()) - cpu) / CALLS as f64;
        assert_eq!(run.failed, 0);
        eprintln!(
            "[bench] tracing {what}: {:.0} ops/s, p99 {:?}, plugin CPU {:.1} µs/call",
            run.ops_per_second,
            run.p99,
            per_call * 1e6
        );
    }
}
