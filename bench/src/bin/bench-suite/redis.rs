//! The Redis baseline: `redis-benchmark` GET or SET on exactly the keys
//! prism-redis uses (`<prefix><namespace>:<key>`).

use anyhow::{Context, bail};

use crate::args::{Args, NAMESPACE, REDIS_PREFIX};
use crate::results::Measure;
use crate::tool::{run_tool, tool_cpu};

/// `redis-benchmark` with the plugin's exact key layout; the request count is
/// calibrated so the run takes about `duration`.
pub(crate) async fn direct(
    args: &Args,
    port: u16,
    get: bool,
    in_flight: usize,
) -> anyhow::Result<Measure> {
    let key = format!("{REDIS_PREFIX}{NAMESPACE}:bench-__rand_int__");
    let value = "x".repeat(args.value_size);
    let command: Vec<&str> = if get {
        vec!["GET", &key]
    } else {
        vec!["SET", &key, &value]
    };
    let calibration = redis_benchmark(port, in_flight, 20_000, args.keys, &command).await?;
    let n = (calibration.ops_per_sec * args.duration().as_secs_f64()).max(20_000.0) as u64;
    redis_benchmark(port, in_flight, n, args.keys, &command).await
}

/// One `redis-benchmark` run of `requests` commands from `clients` connections.
pub(crate) async fn redis_benchmark(
    port: u16,
    clients: usize,
    requests: u64,
    keys: u64,
    command: &[&str],
) -> anyhow::Result<Measure> {
    let tool = prism_testkit::tool("redis-benchmark")?;
    let (out, window) = run_tool(
        tokio::process::Command::new(&tool)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
            .args(["-r", &keys.to_string(), "--csv", "-q"])
            .args(command),
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "redis-benchmark failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = stdout
        .lines()
        .find(|l| !l.starts_with("\"test\"") && l.starts_with('"'))
        .with_context(|| format!("no result line in redis-benchmark output: {stdout}"))?;
    let fields: Vec<f64> = line
        .split("\",\"")
        .skip(1)
        .map(|f| f.trim_matches('"').parse().unwrap_or(0.0))
        .collect();
    if fields.len() < 7 {
        bail!("cannot parse redis-benchmark line {line}");
    }
    let ms = |v: f64| (v * 1000.0).round() as u64;
    // redis-benchmark reports max, not p99.9.
    let latencies = [ms(fields[3]), ms(fields[5]), ms(fields[6])];
    Ok(Measure::direct(
        fields[0],
        latencies,
        0,
        tool_cpu(window, requests),
    ))
}
