//! The Redis baseline: `redis-benchmark` GET, SET, INCR, or EVAL of the
//! plugin's compare-and-swap script, on exactly the keys prism-redis uses
//! (`<prefix><namespace>:<key>`).

use anyhow::{Context, bail};

use crate::args::{Args, NAMESPACE, REDIS_PREFIX};
use crate::results::Measure;
use crate::tool::{run_tool, tool_cpu};

/// What a `redis-benchmark` baseline runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RedisCommand {
    Get,
    Set,
    /// `INCR` on the counters' keys (the plugin's Increment is a script
    /// around `INCRBY`).
    Incr,
    /// `EVAL` of the plugin's own compare-and-swap script
    /// (`prism_redis::SWAP_SCRIPT_SOURCE`), from the run's value to itself.
    Cas,
}

impl RedisCommand {
    /// The "direct tool" column.
    pub(crate) fn tool(self) -> &'static str {
        match self {
            RedisCommand::Get | RedisCommand::Set => "redis-benchmark",
            RedisCommand::Incr => "redis-benchmark INCR",
            RedisCommand::Cas => "redis-benchmark EVAL (the plugin's script)",
        }
    }

    /// The command line, on the plugin's keys (`<prefix><namespace>:<key>`)
    /// with a `value_size`-byte value.
    fn args(self, value_size: usize) -> Vec<String> {
        let key = |kind: &str| format!("{REDIS_PREFIX}{NAMESPACE}:{kind}-__rand_int__");
        let value = "x".repeat(value_size);
        match self {
            RedisCommand::Get => vec!["GET".into(), key("bench")],
            RedisCommand::Set => vec!["SET".into(), key("bench"), value],
            RedisCommand::Incr => vec!["INCR".into(), key("counter")],
            RedisCommand::Cas => {
                // On one line: redis-benchmark's CSV names the test by its
                // command line, which must stay one line to be parsed (Lua
                // needs no newlines).
                let script = prism_redis::SWAP_SCRIPT_SOURCE.replace('\n', " ");
                let rest = ["value", &value, "write", &value, "0"].map(String::from);
                let mut args = vec!["EVAL".into(), script, "1".into(), key("bench")];
                args.extend(rest);
                args
            }
        }
    }
}

/// `redis-benchmark` running `command`; the request count is calibrated so
/// the run takes about the suite's duration.
pub(crate) async fn direct(
    args: &Args,
    port: u16,
    command: RedisCommand,
    in_flight: usize,
) -> anyhow::Result<Measure> {
    let command = command.args(args.value_size);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let calibration = redis_benchmark(port, in_flight, 20_000, args.keys, &command).await?;
    let n = (calibration.ops_per_sec * args.duration().as_secs_f64()).max(20_000.0) as u64;
    redis_benchmark(port, in_flight, n, args.keys, &command).await
}

/// One `redis-benchmark` run of `requests` commands from `clients` connections.
async fn redis_benchmark(
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
