//! `bench-suite` (`make bench` / `scripts/bench.sh`): starts real PostgreSQL,
//! Redis and (if available) a Kafka-protocol broker with `prism-testkit`,
//! starts the release plugin binaries next to this executable, and measures
//! each plugin against the backend's own benchmark tool **in the same run**,
//! at the same concurrency, value size and key space:
//!
//! | plugin scenario | direct baseline |
//! |---|---|
//! | `cache-get` / `cache-set` on prism-redis | `redis-benchmark GET/SET prism:bench:bench-__rand_int__` (the plugin's exact keys) |
//! | `kv-get` / `kv-set` on prism-postgres | `pgbench -M prepared` scripts running the plugin's SELECT / upsert on the plugin's table |
//! | `publish` / `publish-subscribe` on prism-kafka | a librdkafka producer (and consumer) with prism-kafka's defaults, in this process |
//!
//! plus plugin-only scenarios (the gRPC floor `health`, `kv-batch`,
//! `kv-mixed`), idle RSS, max RSS under
//! load and start → SERVING time. Both Kafka consumers (plugin and direct)
//! long-poll with `fetch.wait.max.ms=10` unless the flags set it: the
//! testkit's broker answers a fetch only when that wait expires. Prints a
//! table and writes a markdown report
//! (`--out`, default `BENCHMARKS.md` in the workspace root); a hand-written
//! `## Analysis` section already in that file is kept.
//!
//! Builds nothing: run `cargo build --release --bins -p prism-postgres
//! -p prism-redis -p prism-kafka -p prism-bench` first (scripts/bench.sh does).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use prism_bench::cpu::{self, Snapshot, Window};
use prism_bench::{Options, Report, Scenario};
use prism_plugin_core::proto::pubsub::{
    PublishRequest, pub_sub_basic_interface_client::PubSubBasicInterfaceClient,
};
use prism_testkit::{Kafka, PluginProcess, Postgres, Redis};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The cargo command that builds everything this suite runs.
const BUILD_HINT: &str =
    "cargo build --release --bins -p prism-postgres -p prism-redis -p prism-kafka -p prism-bench";
/// Namespace of every KeyValue scenario (so the direct tools can address the
/// same rows / keys).
const NAMESPACE: &str = "bench";
/// The prism-redis default key prefix.
const REDIS_PREFIX: &str = "prism:";
/// The prism-postgres default table.
const PG_TABLE: &str = "\"public\".\"prism_kv\"";
/// The librdkafka setting both publish → deliver consumers (plugin and
/// direct) run with unless the flags set it: tansu, the testkit's broker,
/// answers a fetch only when this long-poll expires rather than when data
/// arrives, so librdkafka's default (500 ms) would measure the broker's wait,
/// not the plugin (BENCHMARKS.md, Analysis §3).
const FETCH_WAIT: (&str, &str) = ("fetch.wait.max.ms", "10");
/// prism-kafka's pass-through librdkafka map in the environment; an entry is
/// `PRISM_BACKEND__LIBRDKAFKA__<property>`.
const LIBRDKAFKA_ENV: &str = "PRISM_BACKEND__LIBRDKAFKA";

/// Plugin vs direct backend benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Markdown report to write (default: BENCHMARKS.md in the workspace root).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Short runs (3 s per scenario) for CI smoke tests.
    #[arg(long)]
    quick: bool,
    /// Measured seconds per scenario (default 10, or 3 with --quick).
    #[arg(long)]
    seconds: Option<u64>,
    /// HTTP/2 connections of the load generator.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Requests in flight (total) to compare at; each is split over the connections.
    #[arg(long, value_delimiter = ',', default_value = "32,64")]
    in_flight: Vec<usize>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Only these plugins (postgres, redis, kafka); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Extra environment for every plugin process, e.g.
    /// `--plugin-env PRISM_BACKEND__POOL_SIZE=32` (experiments; the report lists them).
    /// `PRISM_BACKEND__LIBRDKAFKA…` entries go to prism-kafka only, e.g.
    /// `PRISM_BACKEND__LIBRDKAFKA__fetch.wait.max.ms=500` (default 10).
    #[arg(long, value_name = "KEY=VALUE")]
    plugin_env: Vec<String>,
    /// Extra librdkafka settings for the direct Kafka baseline's producer and
    /// consumer, e.g. `--kafka-direct fetch.wait.max.ms=500` (default 10; experiments).
    #[arg(long, value_name = "KEY=VALUE")]
    kafka_direct: Vec<String>,
    /// Keep the stack up after the run (prints ports) until Ctrl-C, for profiling.
    #[arg(long)]
    keep_running: bool,
}

impl Args {
    fn wants(&self, plugin: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == plugin)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds.unwrap_or(if self.quick { 3 } else { 10 }))
    }
}

/// The environment and client settings the flags and the suite's defaults
/// add up to.
struct Settings {
    /// `--plugin-env`.
    plugin_env: Vec<(String, String)>,
    /// The direct Kafka clients' extra librdkafka settings: [`FETCH_WAIT`]
    /// unless `--kafka-direct` sets it, then `--kafka-direct`.
    kafka_direct: Vec<(String, String)>,
}

impl Settings {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let plugin_env = key_values("--plugin-env", &args.plugin_env)?;
        let user = key_values("--kafka-direct", &args.kafka_direct)?;
        let overridden = user.iter().any(|(k, _)| k == FETCH_WAIT.0);
        let kafka_direct = default_unless(overridden, FETCH_WAIT.0, user);
        Ok(Settings {
            plugin_env,
            kafka_direct,
        })
    }

    /// Environment of plugin `name`: `--plugin-env`, except that entries for
    /// prism-kafka's librdkafka map go to prism-kafka only (the other plugins
    /// refuse unknown backend keys); prism-kafka gets [`FETCH_WAIT`] first
    /// unless they set it.
    fn plugin_env(&self, name: &str) -> Vec<(String, String)> {
        let librdkafka = |key: &str| key.to_ascii_uppercase().starts_with(LIBRDKAFKA_ENV);
        if name != "kafka" {
            return self
                .plugin_env
                .iter()
                .filter(|(k, _)| !librdkafka(k))
                .cloned()
                .collect();
        }
        let key = fetch_wait_env();
        let overridden = self.plugin_env.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case(&key)
                || (k.eq_ignore_ascii_case(LIBRDKAFKA_ENV) && v.contains(FETCH_WAIT.0))
        });
        default_unless(overridden, &key, self.plugin_env.clone())
    }

    /// The publish → deliver setting: how each side's consumer long-polls.
    fn fetch_wait_line(&self) -> String {
        let (fetch, key) = (FETCH_WAIT.0, fetch_wait_env());
        let plugin = self
            .plugin_env("kafka")
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&key))
            .map_or_else(
                || format!("as set in `{LIBRDKAFKA_ENV}`"),
                |(_, v)| format!("`{fetch}={v}`"),
            );
        let direct = self
            .kafka_direct
            .iter()
            .rev()
            .find(|(k, _)| k == FETCH_WAIT.0)
            .map_or_else(|| "?".to_string(), |(_, v)| format!("`{fetch}={v}`"));
        format!(
            "- Kafka consumers (`Publish → deliver`): {plugin} for the plugin (`{key}`) and {direct} \
             for the direct consumer, instead of librdkafka's default 500 ms: tansu, the testkit's \
             broker, answers a fetch only when that long-poll expires, not when data arrives \
             (Analysis §3); `--plugin-env` / `--kafka-direct` override it"
        )
    }
}

/// `PRISM_BACKEND__LIBRDKAFKA__fetch.wait.max.ms`.
fn fetch_wait_env() -> String {
    format!("{LIBRDKAFKA_ENV}__{}", FETCH_WAIT.0)
}

/// `key` = the [`FETCH_WAIT`] value (unless `overridden`), then `entries`.
fn default_unless(
    overridden: bool,
    key: &str,
    entries: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let default = (!overridden).then(|| (key.to_string(), FETCH_WAIT.1.to_string()));
    default.into_iter().chain(entries).collect()
}

/// `KEY=VALUE` arguments of `flag`.
fn key_values(flag: &str, values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(anyhow::anyhow!("{flag} {kv:?}: expected KEY=VALUE")),
        })
        .collect()
}

/// Throughput and latency of one side of a comparison.
#[derive(Debug, Clone, Default)]
struct Measure {
    ops_per_sec: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    errors: u64,
    detail: String,
    /// Plugin process CPU time per successful operation, µs (plugin runs only).
    plugin_cpu_us: Option<f64>,
    /// CPU time per successful operation of the client side, µs: the load
    /// generator on a plugin run, the direct tool on a direct one.
    client_cpu_us: Option<f64>,
    /// CPU time of the whole machine per successful operation, µs.
    machine_cpu_us: Option<f64>,
    /// Share of the machine's CPU time that was busy in the window (0–1).
    busy: Option<f64>,
}

impl Measure {
    /// A direct tool's result (no error detail); `cpu` is its window and
    /// `tool_us` the tool's share of it.
    fn direct(
        ops_per_sec: f64,
        [p50_us, p99_us, p999_us]: [u64; 3],
        errors: u64,
        cpu: Option<(Window, f64)>,
    ) -> Self {
        Measure {
            ops_per_sec,
            p50_us,
            p99_us,
            p999_us,
            errors,
            client_cpu_us: cpu.map(|(_, tool_us)| tool_us),
            machine_cpu_us: cpu.map(|(w, _)| w.machine_us),
            busy: cpu.map(|(w, _)| w.busy),
            ..Measure::default()
        }
    }

    /// CPU per operation left after the plugin and the client: the backend,
    /// the kernel's share of loopback traffic, and anything else running.
    fn backend_cpu_us(&self) -> Option<f64> {
        Some(self.machine_cpu_us? - self.client_cpu_us? - self.plugin_cpu_us.unwrap_or(0.0))
    }

    /// The error count, or the errors by kind when there were any.
    fn errors_text(&self) -> String {
        if self.detail.is_empty() {
            self.errors.to_string()
        } else {
            self.detail.clone()
        }
    }
}

impl From<&Report> for Measure {
    fn from(r: &Report) -> Self {
        Measure {
            ops_per_sec: r.ops_per_sec,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
            p999_us: r.p999_us,
            errors: r.errors.values().sum(),
            detail: if r.errors.is_empty() {
                String::new()
            } else {
                format!("{:?}", r.errors)
            },
            ..Measure::default()
        }
    }
}

/// One plugin-vs-direct comparison.
#[derive(Debug, Clone)]
struct Pair {
    backend: &'static str,
    op: &'static str,
    scenario: Scenario,
    in_flight: usize,
    plugin: Option<Measure>,
    direct: Option<Measure>,
    direct_tool: &'static str,
    note: String,
}

impl Pair {
    fn ratio(&self) -> Option<f64> {
        match (&self.plugin, &self.direct) {
            (Some(p), Some(d)) if d.ops_per_sec > 0.0 => Some(p.ops_per_sec / d.ops_per_sec),
            _ => None,
        }
    }

    fn added_p99_ms(&self) -> Option<f64> {
        match (&self.plugin, &self.direct) {
            (Some(p), Some(d)) => Some((p.p99_us as f64 - d.p99_us as f64) / 1000.0),
            _ => None,
        }
    }

    fn ratio_text(&self) -> String {
        dash(self.ratio().map(|r| format!("{r:.2}")))
    }

    /// Added p99 in ms, `unit` after the number.
    fn added_p99_text(&self, unit: &str) -> String {
        dash(self.added_p99_ms().map(|v| format!("{v:+.2}{unit}")))
    }
}

/// A plugin-only scenario.
#[derive(Debug, Clone)]
struct Solo {
    plugin: &'static str,
    scenario: Scenario,
    in_flight: usize,
    result: Result<Measure, String>,
}

/// Process facts of one plugin.
#[derive(Debug, Clone, Default)]
struct ProcessFacts {
    name: &'static str,
    version: String,
    start_first_ms: Option<f64>,
    start_restart_ms: Vec<f64>,
    idle_rss_kb: Option<u64>,
    max_rss_kb: Arc<AtomicU64>,
    binary_bytes: Option<u64>,
    image_bytes: Option<u64>,
    note: String,
}

impl ProcessFacts {
    /// First start → SERVING, `unit` after the number.
    fn first_start(&self, unit: &str) -> String {
        dash(self.start_first_ms.map(|v| format!("{v:.0}{unit}")))
    }

    /// Median restart → SERVING, `unit` after the number.
    fn restart(&self, unit: &str) -> String {
        dash(median(&self.start_restart_ms).map(|v| format!("{v:.0}{unit}")))
    }
}

/// A started plugin with its facts.
struct Running {
    process: PluginProcess,
    port: u16,
    facts: ProcessFacts,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf())
}

/// `VmRSS` of a process in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Polls the whole-server health every 2 ms until SERVING (the testkit helper
/// polls every 50 ms, too coarse for a 100 ms target).
async fn wait_serving(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_millis(500));
    let channel = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => bail!("port {port} never accepted: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    let mut client = HealthClient::new(channel);
    loop {
        let status = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status);
        if matches!(status, Ok(s) if s == ServingStatus::Serving as i32) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("not SERVING after {timeout:?} (last: {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Spawns a plugin and returns it with the spawn → SERVING time.
async fn spawn_plugin(
    path: &Path,
    port: u16,
    env: (&str, &str),
    extra: &[(String, String)],
) -> anyhow::Result<(PluginProcess, f64)> {
    let port_arg = port.to_string();
    let mut envs = vec![
        env,
        ("PRISM_LOG_LEVEL", "warn"),
        ("PRISM_LOG_FORMAT", "text"),
    ];
    envs.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let started = Instant::now();
    let process = PluginProcess::spawn(path, &["--grpc-port", &port_arg], &envs).await?;
    wait_serving(port, Duration::from_secs(30))
        .await
        .with_context(|| format!("{} on port {port}", path.display()))?;
    Ok((process, started.elapsed().as_secs_f64() * 1000.0))
}

/// Starts a plugin, restarts it twice (start time with the backend up and the
/// table already created), and records idle RSS.
async fn start_plugin(
    bins: &Path,
    name: &'static str,
    env: (&str, &str),
    extra: &[(String, String)],
) -> anyhow::Result<Running> {
    let path = bins.join(format!("prism-{name}"));
    let port = prism_testkit::free_port();
    let version = command_line(&path, &["--version"]).await;
    let (mut process, first) = spawn_plugin(&path, port, env, extra).await?;
    let mut restarts = Vec::new();
    for _ in 0..2 {
        process.sigterm()?;
        process.wait_exit(Duration::from_secs(30)).await?;
        let (p, ms) = spawn_plugin(&path, port, env, extra).await?;
        process = p;
        restarts.push(ms);
    }
    // Let the startup work settle (health loop, pools) before reading RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kb(process.pid());
    let facts = ProcessFacts {
        name,
        version,
        start_first_ms: Some(first),
        start_restart_ms: restarts,
        idle_rss_kb: idle,
        max_rss_kb: Arc::new(AtomicU64::new(idle.unwrap_or(0))),
        binary_bytes: std::fs::metadata(&path).ok().map(|m| m.len()),
        image_bytes: image_size(name).await,
        note: String::new(),
    };
    Ok(Running {
        process,
        port,
        facts,
    })
}

/// Size of the production image `prism/<name>-plugin:latest`, if podman has it.
async fn image_size(name: &str) -> Option<u64> {
    let out = tokio::process::Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}"])
        .arg(format!("prism/{name}-plugin:latest"))
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// First line of a command's output, or `?`.
async fn command_line(program: &Path, args: &[&str]) -> String {
    match tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
    {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_string()
        }
        Err(_) => "?".to_string(),
    }
}

/// Samples the RSS of every plugin every 100 ms, keeping the maximum.
fn sample_rss(targets: Vec<(u32, Arc<AtomicU64>)>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for (pid, max) in &targets {
                if let Some(kb) = rss_kb(*pid) {
                    max.fetch_max(kb, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Runs one load-generator scenario against a plugin.
async fn run_plugin(
    args: &Args,
    plugin: &Running,
    scenario: Scenario,
    in_flight: usize,
) -> Result<Measure, String> {
    let port = plugin.port;
    let connections = args.connections.max(1);
    let opts = Options {
        target: format!("http://127.0.0.1:{port}"),
        scenario,
        connections,
        concurrency: in_flight.div_ceil(connections).max(1),
        duration: args.duration(),
        requests: None,
        warmup: Duration::from_secs(1),
        value_size: args.value_size,
        keys: args.keys,
        batch_size: 10,
        namespace: NAMESPACE.to_string(),
        topic: "prism-bench".to_string(),
    };
    let label = format!("{scenario:?}@{in_flight}");
    let tty = std::io::stderr().is_terminal();
    let pid = plugin.process.pid();
    // CPU counters at the start of the measured window (set by the first
    // progress call), so warm-up and preload are not charged to the ops.
    let at_start = Arc::new(std::sync::Mutex::new(None::<(u64, Snapshot)>));
    let snapshot = at_start.clone();
    let report = prism_bench::run(opts, move |elapsed, done| {
        if elapsed.is_zero() {
            if let (Some(p), Some(s)) = (cpu::process_ticks(pid), Snapshot::now()) {
                *snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some((p, s));
            }
        } else if tty {
            eprint!(
                "\r  {label:<22} {:>3}s {:>9} req {:>9.0} ops/s ",
                elapsed.as_secs(),
                done,
                done as f64 / elapsed.as_secs_f64().max(1e-9)
            );
        }
    })
    .await
    .map_err(|e| e.to_string());
    if tty {
        eprint!("\r{:<70}\r", "");
    }
    let report = report?;
    let mut measure = Measure::from(&report);
    let start = *at_start.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some((p0, s0)), Some(p1), Some(s1)) = (start, cpu::process_ticks(pid), Snapshot::now())
        && let Some(window) = Window::between(s0, s1, report.ops)
    {
        measure.plugin_cpu_us = Some(cpu::per_op(p1.saturating_sub(p0), report.ops));
        measure.client_cpu_us = Some(window.own_us);
        measure.machine_cpu_us = Some(window.machine_us);
        measure.busy = Some(window.busy);
    }
    Ok(measure)
}

/// `redis-benchmark` with the plugin's exact key layout; the request count is
/// calibrated so the run takes about `duration`.
async fn redis_direct(
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

/// Runs a direct tool to completion; its output and the CPU counters just
/// before and after (once waited for, the tool's CPU time shows in this
/// process's `children` counter).
async fn run_tool(
    cmd: &mut tokio::process::Command,
) -> anyhow::Result<(std::process::Output, Option<(Snapshot, Snapshot)>)> {
    let start = Snapshot::now();
    let out = cmd.output().await?;
    Ok((out, start.zip(Snapshot::now())))
}

/// The CPU cost of a direct tool's run of `ops` operations, with the
/// tool's own share.
fn tool_cpu(window: Option<(Snapshot, Snapshot)>, ops: u64) -> Option<(Window, f64)> {
    let (start, end) = window?;
    let w = Window::between(start, end, ops)?;
    Some((w, w.children_us))
}

/// pgbench scripts doing what prism-postgres does for Get and Set (same
/// statements, same table, same namespace and key format).
fn pgbench_script(get: bool, keys: u64, value_size: usize) -> String {
    let key = "'bench-' || lpad(:k::text, 12, '0')";
    let body = if get {
        format!(
            "SELECT value FROM {PG_TABLE} WHERE namespace = '{NAMESPACE}' \
             AND key_md5 = md5({key})::uuid AND key = {key} \
             AND (expires_at IS NULL OR expires_at > now());"
        )
    } else {
        format!(
            "INSERT INTO {PG_TABLE} AS t (namespace, key, value, expires_at) \
             VALUES ('{NAMESPACE}', {key}, decode(repeat('78', {value_size}), 'hex'), NULL) \
             ON CONFLICT (namespace, key_md5) DO UPDATE SET \
             key = EXCLUDED.key, value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, \
             created_at = CASE WHEN t.expires_at <= now() THEN now() ELSE t.created_at END, \
             updated_at = now();"
        )
    };
    format!("\\set k random(0, {})\n{body}\n", keys.saturating_sub(1))
}

async fn pg_direct(
    args: &Args,
    pg: &Postgres,
    get: bool,
    in_flight: usize,
    work: &Path,
) -> anyhow::Result<Measure> {
    let tool = prism_testkit::tool("pgbench")?;
    let script = work.join(if get { "get.sql" } else { "set.sql" });
    std::fs::write(&script, pgbench_script(get, args.keys, args.value_size))?;
    let prefix = work.join(format!(
        "log-{}-{in_flight}",
        if get { "get" } else { "set" }
    ));
    let (out, window) = run_tool(
        tokio::process::Command::new(&tool)
            .current_dir(work)
            .env("PGPASSWORD", pg.password())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port().to_string(),
                "-U",
                pg.user(),
            ])
            .args(["-n", "-M", "prepared", "-j", "2"])
            .args(["-c", &in_flight.to_string()])
            .args(["-T", &args.duration().as_secs().to_string()])
            .arg("-f")
            .arg(&script)
            // Per-transaction latencies for the percentiles (a sample, to keep the
            // logging cost off the measurement).
            .args(["--log", "--sampling-rate", "0.2"])
            .arg(format!("--log-prefix={}", prefix.display()))
            .arg(pg.database()),
    )
    .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "pgbench failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tps = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output: {stdout}"))?;
    let processed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or((tps * args.duration().as_secs_f64()) as u64);
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    // Log lines: client_id transaction_no time_us script_no epoch epoch_us
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for entry in std::fs::read_dir(work)? {
        let path = entry?.path();
        let is_log = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            prefix
                .file_name()
                .and_then(|p| p.to_str())
                .is_some_and(|p| n.starts_with(p))
        });
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                let _ = hist.record(us.max(1));
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    let pct = |q: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(q)
        }
    };
    Ok(Measure::direct(
        tps,
        [pct(0.5), pct(0.99), pct(0.999)],
        failed,
        tool_cpu(window, processed),
    ))
}

/// The direct librdkafka baseline for `publish` (send → ack) or
/// `publish-subscribe` (send → delivery), on the plugin's topic.
async fn kafka_direct(
    args: &Args,
    bootstrap: &str,
    extra: &[(String, String)],
    in_flight: usize,
    end_to_end: bool,
) -> anyhow::Result<Measure> {
    let report = prism_bench::kafka::run(prism_bench::kafka::Direct {
        bootstrap,
        topic: "prism-bench",
        in_flight,
        value_size: args.value_size,
        warmup: Duration::from_secs(1),
        duration: args.duration(),
        end_to_end,
        extra,
    })
    .await
    .context("librdkafka")?;
    Ok(Measure::direct(
        report.ops_per_sec,
        [report.p50_us, report.p99_us, report.p999_us],
        report.errors,
        // The client is this process (producer, consumer, librdkafka threads).
        report.cpu.map(|w| (w, w.own_us)),
    ))
}

/// The backend's own tool doing what one plugin scenario does.
#[derive(Clone, Copy)]
enum Baseline<'a> {
    /// `redis-benchmark` GET (`get`) or SET on the plugin's keys.
    RedisBenchmark { port: u16, get: bool },
    /// `pgbench` running the plugin's SELECT (`get`) or upsert.
    Pgbench {
        pg: &'a Postgres,
        work: &'a Path,
        get: bool,
    },
    /// A librdkafka producer, with `end_to_end` also a consumer.
    Librdkafka {
        bootstrap: &'a str,
        extra: &'a [(String, String)],
        end_to_end: bool,
    },
}

impl Baseline<'_> {
    /// The "direct tool" column.
    fn tool(self) -> &'static str {
        match self {
            Baseline::RedisBenchmark { .. } => "redis-benchmark",
            Baseline::Pgbench { .. } => "pgbench -M prepared",
            Baseline::Librdkafka { .. } => "librdkafka producer (rdkafka)",
        }
    }

    async fn run(self, args: &Args, in_flight: usize) -> anyhow::Result<Measure> {
        match self {
            Baseline::RedisBenchmark { port, get } => {
                redis_direct(args, port, get, in_flight).await
            }
            Baseline::Pgbench { pg, work, get } => pg_direct(args, pg, get, in_flight, work).await,
            Baseline::Librdkafka {
                bootstrap,
                extra,
                end_to_end,
            } => kafka_direct(args, bootstrap, extra, in_flight, end_to_end).await,
        }
    }
}

/// One row of a backend's comparison table: the report's op name, the plugin
/// scenario, the requests in flight, and the direct baseline.
type Comparison<'a> = (&'static str, Scenario, usize, Baseline<'a>);

/// Runs each comparison of one backend in order: the plugin scenario, then
/// right after it the direct baseline at the same concurrency.
async fn compare<'a>(
    args: &Args,
    backend: &'static str,
    plugin: &Running,
    table: impl IntoIterator<Item = Comparison<'a>>,
) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for (op, scenario, in_flight, baseline) in table {
        let measured = run_plugin(args, plugin, scenario, in_flight).await;
        let direct = baseline.run(args, in_flight).await;
        let pair = pair(
            backend,
            op,
            scenario,
            in_flight,
            measured,
            direct,
            baseline.tool(),
        );
        println!("{}", pair_line(&pair));
        pairs.push(pair);
    }
    pairs
}

/// Whether prism-kafka serves Publish yet (its data services are optional).
async fn publish_served(port: u16) -> Result<(), String> {
    let channel = prism_testkit::connect(port, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = PubSubBasicInterfaceClient::new(channel);
    match client
        .publish(PublishRequest {
            topic: "prism-bench".to_string(),
            payload: bytes::Bytes::from_static(b"probe"),
            ..Default::default()
        })
        .await
    {
        Ok(r) if r.get_ref().success => Ok(()),
        Ok(r) => Err(format!("Publish failed: {}", r.get_ref().error)),
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            Err("Publish not served by this prism-kafka build".to_string())
        }
        Err(s) => Err(format!("Publish failed: {:?} {}", s.code(), s.message())),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = bin_dir()?;
    let mut missing = Vec::new();
    for name in ["postgres", "redis"] {
        if args.wants(name) && !bins.join(format!("prism-{name}")).exists() {
            missing.push(format!("prism-{name}"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} not found in {}: run `{BUILD_HINT}` first (or scripts/bench.sh)",
            missing.join(", "),
            bins.display()
        );
    }
    if !bins.ends_with("release") {
        eprintln!(
            "warning: running from {} (not a release dir): numbers are not representative",
            bins.display()
        );
    }
    let out_path = args
        .out
        .clone()
        .unwrap_or_else(|| prism_testkit::workspace_root().join("BENCHMARKS.md"));
    let settings = Settings::new(&args)?;
    let work = tempfile::tempdir()?;
    let suite_started = Instant::now();

    println!("== machine and versions");
    let mut machine = machine_info();
    let versions = tool_versions().await;
    for (k, v) in machine.iter().chain(versions.iter()) {
        println!("   {k:<16} {v}");
    }

    println!("== starting backends");
    let pg = if args.wants("postgres") {
        Some(Postgres::start().await.context("PostgreSQL")?)
    } else {
        None
    };
    let redis = if args.wants("redis") {
        Some(Redis::start().await.context("Redis")?)
    } else {
        None
    };
    let kafka_bin = bins.join("prism-kafka");
    let kafka = if args.wants("kafka") && kafka_bin.exists() {
        match Kafka::start().await {
            Ok(k) => Some(k),
            Err(e) => {
                eprintln!("   Kafka broker did not start ({e}); skipping prism-kafka");
                None
            }
        }
    } else {
        None
    };

    println!("== starting plugins (release binaries, PRISM_LOG_LEVEL=warn; 3 starts each)");
    let mut running: BTreeMap<&'static str, Running> = BTreeMap::new();
    let backends = [
        ("postgres", "DATABASE_URL", pg.as_ref().map(Postgres::url)),
        ("redis", "REDIS_ADDRESS", redis.as_ref().map(Redis::addr)),
        (
            "kafka",
            "KAFKA_BROKERS",
            kafka.as_ref().map(Kafka::bootstrap),
        ),
    ];
    for (name, var, value) in backends {
        let Some(value) = value else {
            continue;
        };
        match start_plugin(&bins, name, (var, &value), &settings.plugin_env(name)).await {
            Ok(r) => {
                running.insert(name, r);
            }
            // prism-kafka is optional: measured when it builds and serves.
            Err(e) if name == "kafka" => eprintln!("   prism-kafka did not become SERVING: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    for r in running.values() {
        println!(
            "   prism-{:<8} port {:<5} first start {:>6.1} ms, restarts {:?} ms, idle RSS {} KiB",
            r.facts.name,
            r.port,
            r.facts.start_first_ms.unwrap_or(0.0),
            r.facts
                .start_restart_ms
                .iter()
                .map(|v| (v * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            r.facts.idle_rss_kb.unwrap_or(0)
        );
    }
    let stop_sampling = Arc::new(AtomicBool::new(false));
    sample_rss(
        running
            .values()
            .map(|r| (r.process.pid(), r.facts.max_rss_kb.clone()))
            .collect(),
        stop_sampling.clone(),
    );

    println!(
        "== scenarios ({} s each + 1 s warm-up; {} connections; value {} B; {} keys)",
        args.duration().as_secs(),
        args.connections,
        args.value_size,
        args.keys
    );
    let levels = &args.in_flight;
    let first_level = levels.first().copied().unwrap_or(32);
    // The gRPC floor first, on a quiet stack: the CPU ceilings divide by it,
    // and the broker keeps working for a while after the Kafka scenarios.
    let floor_runs: Vec<_> = levels
        .iter()
        .map(|&n| ("redis", Scenario::Health, n))
        .collect();
    let mut solos = run_solos(&args, &running, floor_runs).await;
    let mut pairs = Vec::new();
    if let (Some(r), Some(redis)) = (running.get("redis"), &redis) {
        let port = redis.port();
        let redis_benchmark = |get| Baseline::RedisBenchmark { port, get };
        let table = levels.iter().flat_map(|&n| {
            [
                ("Get", Scenario::CacheGet, n, redis_benchmark(true)),
                ("Set", Scenario::CacheSet, n, redis_benchmark(false)),
            ]
        });
        pairs.extend(compare(&args, "Redis", r, table).await);
    }
    if let (Some(r), Some(pg)) = (running.get("postgres"), &pg) {
        let work = work.path();
        let pgbench = |get| Baseline::Pgbench { pg, work, get };
        let table = levels.iter().flat_map(|&n| {
            [
                ("Get", Scenario::KvGet, n, pgbench(true)),
                ("Set", Scenario::KvSet, n, pgbench(false)),
            ]
        });
        pairs.extend(compare(&args, "PostgreSQL", r, table).await);
    }
    solos.extend(
        run_solos(
            &args,
            &running,
            [
                ("redis", Scenario::KvBatch, first_level),
                ("postgres", Scenario::KvMixed, first_level),
                ("postgres", Scenario::KvBatch, first_level),
            ],
        )
        .await,
    );
    // Kafka last: see the floor above.
    let mut kafka_note = String::new();
    if let (Some(r), Some(kafka)) = (running.get("kafka"), &kafka) {
        match publish_served(r.port).await {
            Ok(()) => {
                let bootstrap = kafka.bootstrap();
                let librdkafka = |end_to_end| Baseline::Librdkafka {
                    bootstrap: &bootstrap,
                    extra: &settings.kafka_direct,
                    end_to_end,
                };
                let table = levels
                    .iter()
                    .map(|&n| ("Publish", Scenario::Publish, n, librdkafka(false)))
                    .chain([(
                        "Publish → deliver",
                        Scenario::PublishSubscribe,
                        first_level,
                        librdkafka(true),
                    )]);
                pairs.extend(compare(&args, "Kafka", r, table).await);
            }
            Err(e) => kafka_note = e,
        }
    } else if args.wants("kafka") {
        kafka_note = if kafka_bin.exists() {
            "prism-kafka or its broker did not start".to_string()
        } else {
            format!("{} not built", kafka_bin.display())
        };
    }
    if let Some(r) = running.get_mut("kafka") {
        r.facts.note = kafka_note.clone();
    }
    stop_sampling.store(true, Ordering::Relaxed);

    if args.keep_running {
        println!("== keeping the stack up; Ctrl-C to stop");
        for r in running.values() {
            println!(
                "   prism-{} pid {} port {}",
                r.facts.name,
                r.process.pid(),
                r.port
            );
        }
        tokio::signal::ctrl_c().await?;
    }

    println!("== stopping plugins");
    let mut facts = Vec::new();
    for (_, mut r) in running {
        r.process.sigterm()?;
        let status = r.process.wait_exit(Duration::from_secs(35)).await?;
        if !status.success() {
            eprintln!("   prism-{} exited with {status}", r.facts.name);
        }
        facts.push(r.facts);
    }
    drop((pg, redis, kafka));

    machine.push(("load at end", loadavg()));
    let total = suite_started.elapsed();
    let report = Markdown {
        args: &args,
        settings: &settings,
        machine: &machine,
        versions: &versions,
        pairs: &pairs,
        solos: &solos,
        facts: &facts,
        kafka_note: &kafka_note,
        total,
    }
    .render(&out_path);
    println!("\n{}", summary_table(&pairs, &solos, &facts));
    std::fs::write(&out_path, report).with_context(|| format!("writing {}", out_path.display()))?;
    println!(
        "== wrote {} ({:.0} s total)",
        out_path.display(),
        total.as_secs_f64()
    );
    Ok(())
}

/// Runs plugin-only scenarios `(plugin, scenario, in flight)` in order,
/// printing each result; plugins that are not running are skipped.
async fn run_solos(
    args: &Args,
    running: &BTreeMap<&'static str, Running>,
    runs: impl IntoIterator<Item = (&'static str, Scenario, usize)>,
) -> Vec<Solo> {
    let mut solos = Vec::new();
    for (plugin, scenario, in_flight) in runs {
        let Some(r) = running.get(plugin) else {
            continue;
        };
        let result = run_plugin(args, r, scenario, in_flight).await;
        let solo = Solo {
            plugin,
            scenario,
            in_flight,
            result,
        };
        println!("{}", solo_line(&solo));
        solos.push(solo);
    }
    solos
}

fn pair(
    backend: &'static str,
    op: &'static str,
    scenario: Scenario,
    in_flight: usize,
    plugin: Result<Measure, String>,
    direct: anyhow::Result<Measure>,
    direct_tool: &'static str,
) -> Pair {
    let mut note = String::new();
    let plugin = match plugin {
        Ok(m) => Some(m),
        Err(e) => {
            note.push_str(&format!("plugin: {e}. "));
            None
        }
    };
    let direct = match direct {
        Ok(m) => Some(m),
        Err(e) => {
            note.push_str(&format!("direct: {e:#}. "));
            None
        }
    };
    Pair {
        backend,
        op,
        scenario,
        in_flight,
        plugin,
        direct,
        direct_tool,
        note,
    }
}

/// The value, or a dash where there is none.
fn dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "–".to_string())
}

/// `text` between `before` and `after`, or nothing if `text` is empty.
fn affix(before: &str, text: &str, after: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{before}{text}{after}")
    }
}

fn ops(m: &Option<Measure>) -> String {
    dash(m.as_ref().map(|m| format!("{:.0}", m.ops_per_sec)))
}

fn lat(m: &Option<Measure>) -> String {
    dash(m.as_ref().map(|m| {
        format!(
            "{:.2} / {:.2}",
            m.p50_us as f64 / 1e3,
            m.p99_us as f64 / 1e3
        )
    }))
}

/// "plugin / client" CPU µs per op.
fn cpu(m: Option<&Measure>) -> String {
    match m {
        Some(Measure {
            plugin_cpu_us: Some(p),
            client_cpu_us: Some(c),
            ..
        }) => format!("{p:.0} / {c:.0}"),
        _ => "–".to_string(),
    }
}

fn pair_line(p: &Pair) -> String {
    format!(
        "   {:<10} {:<3} @{:<3} plugin {:>8} ops/s (p50/p99 {:>13} ms, CPU µs/op plugin/client {}) | direct {:>8} ops/s ({:>13} ms) | ratio {} | added p99 {}{}{}",
        p.backend,
        p.op,
        p.in_flight,
        ops(&p.plugin),
        lat(&p.plugin),
        cpu(p.plugin.as_ref()),
        ops(&p.direct),
        lat(&p.direct),
        p.ratio_text(),
        p.added_p99_text(" ms"),
        match p.plugin.as_ref().map(|m| m.errors) {
            Some(e) if e > 0 => format!(" | plugin errors {e}"),
            _ => String::new(),
        },
        affix(" | ", &p.note, "")
    )
}

fn solo_line(s: &Solo) -> String {
    match &s.result {
        Ok(m) => format!(
            "   prism-{:<9} {:<12} @{:<3} {:>8.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  CPU µs/op plugin/client {}  errors {}{}",
            s.plugin,
            scenario_name(s.scenario),
            s.in_flight,
            m.ops_per_sec,
            m.p50_us as f64 / 1e3,
            m.p99_us as f64 / 1e3,
            cpu(Some(m)),
            m.errors,
            affix(" ", &m.detail, "")
        ),
        Err(e) => format!(
            "   prism-{:<9} {:<12} @{:<3} failed: {e}",
            s.plugin,
            scenario_name(s.scenario),
            s.in_flight
        ),
    }
}

fn scenario_name(s: Scenario) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{s:?}"))
}

fn summary_table(pairs: &[Pair], solos: &[Solo], facts: &[ProcessFacts]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<4} {:>9} {:>11} {:>11} {:>6} {:>15} {:>15} {:>10}",
        "backend",
        "op",
        "in flight",
        "plugin/s",
        "direct/s",
        "ratio",
        "plugin p50/p99",
        "direct p50/p99",
        "added p99"
    );
    for p in pairs {
        let _ = writeln!(
            out,
            "{:<10} {:<4} {:>9} {:>11} {:>11} {:>6} {:>15} {:>15} {:>10}",
            p.backend,
            p.op,
            p.in_flight,
            ops(&p.plugin),
            ops(&p.direct),
            p.ratio_text(),
            lat(&p.plugin),
            lat(&p.direct),
            p.added_p99_text("ms"),
        );
    }
    for s in solos {
        let _ = writeln!(out, "{}", solo_line(s).trim_start());
    }
    for f in facts {
        let _ = writeln!(
            out,
            "prism-{:<9} start→SERVING first {} ms, restart {} ms; idle RSS {}; max RSS {}",
            f.name,
            f.first_start(""),
            f.restart(""),
            mib(f.idle_rss_kb),
            mib(Some(f.max_rss_kb.load(Ordering::Relaxed)))
        );
    }
    out
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn mib_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn mib(kb: Option<u64>) -> String {
    match kb {
        Some(kb) if kb > 0 => format!("{:.1} MiB", kb as f64 / 1024.0),
        _ => "–".to_string(),
    }
}

/// nproc, memory, CPU model, kernel.
fn machine_info() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "?".to_string());
    let mem_kb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let load = loadavg();
    vec![
        (
            "cpus (nproc)",
            std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into()),
        ),
        ("cpu model", model),
        (
            "memory",
            mem_kb
                .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
                .unwrap_or("?".into()),
        ),
        ("kernel", kernel),
        ("load at start", load),
    ]
}

/// The 1, 5 and 15 minute load averages: above the CPU count, other work
/// competed with the benchmark.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn tool_versions() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    out.push(("rustc", command_line(Path::new("rustc"), &["-V"]).await));
    for (label, name, arg) in [
        ("redis-server", "redis-server", "--version"),
        ("redis-benchmark", "redis-benchmark", "--version"),
        ("postgres", "postgres", "--version"),
        ("pgbench", "pgbench", "--version"),
    ] {
        let v = match prism_testkit::tool(name) {
            Ok(path) => command_line(&path, &[arg]).await,
            Err(_) => "not installed".to_string(),
        };
        out.push((label, v));
    }
    out
}

/// The markdown report.
struct Markdown<'a> {
    args: &'a Args,
    settings: &'a Settings,
    machine: &'a [(&'static str, String)],
    versions: &'a [(&'static str, String)],
    pairs: &'a [Pair],
    solos: &'a [Solo],
    facts: &'a [ProcessFacts],
    kafka_note: &'a str,
    total: Duration,
}

impl Markdown<'_> {
    fn render(&self, out_path: &Path) -> String {
        let mut md = String::new();
        let when = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by `make bench` (`scripts/bench.sh` → `bench-suite`, crate `bench/`) on {when}{} in {:.0} s. \
             Plugin scenarios are driven by `prism-bench` (tonic client); each is followed, in the same \
             run, by the backend's own tool at the same concurrency, value size and key space. \
             Nothing in the test suite asserts a time; these are measurements.\n",
            if self.args.quick {
                " with `--quick` (short runs: smoke numbers only)"
            } else {
                ""
            },
            self.total.as_secs_f64()
        );
        let _ = writeln!(md, "## Machine\n");
        for (k, v) in self.machine {
            let _ = writeln!(md, "- **{k}**: {v}");
        }
        let _ = writeln!(
            md,
            "\n**Caveat:** everything runs on this one machine over loopback: the load generator, \
             the plugin and the backend share its {} CPU(s). With 2 cores the plugin's extra hop \
             competes for CPU with both the client and the backend, so ratios here are a lower bound \
             on what a deployment with the plugin on its own cores would see; concurrency is kept \
             moderate for that reason. A load average above the CPU count means other work on the \
             machine competed too, and run-to-run variation grows accordingly.\n",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        let _ = writeln!(md, "## Versions\n");
        for (k, v) in self.versions {
            let _ = writeln!(md, "- **{k}**: {v}");
        }
        for f in self.facts {
            let _ = writeln!(md, "- **prism-{}**: {}", f.name, f.version);
        }
        let _ = writeln!(md, "\n## Settings\n");
        let _ = writeln!(
            md,
            "- {} s measured per scenario (plugin runs get 1 s of warm-up first)",
            self.args.duration().as_secs()
        );
        let _ = writeln!(
            md,
            "- plugin load: {} HTTP/2 connections, requests in flight split evenly over them; \
             direct tools: one connection per request in flight (`redis-benchmark -c N`, `pgbench -c N -j 2`)",
            self.args.connections
        );
        let _ = writeln!(
            md,
            "- value size {} B, {} distinct keys chosen uniformly at random, namespace `{NAMESPACE}`; \
             Get scenarios read keys preloaded through the plugin (BatchSet), so both sides read the same data",
            self.args.value_size, self.args.keys
        );
        let _ = writeln!(
            md,
            "- Redis direct: `redis-benchmark -c N -n <calibrated to the duration> -r {keys} --csv GET|SET {REDIS_PREFIX}{NAMESPACE}:bench-__rand_int__ [value]`, \
             i.e. exactly the plugin's keys (`<prefix><namespace>:<key>`)",
            keys = self.args.keys
        );
        let _ = writeln!(
            md,
            "- PostgreSQL direct: `pgbench -n -M prepared -c N -j 2 -T {} -f script.sql` on the plugin's table {PG_TABLE} \
             with the plugin's statements (p50/p99 from a 20 % sample of `--log`):\n",
            self.args.duration().as_secs()
        );
        for get in [true, false] {
            let _ = writeln!(
                md,
                "  ```sql\n{}  ```",
                indent(&pgbench_script(get, self.args.keys, self.args.value_size))
            );
        }
        let _ = writeln!(
            md,
            "- Kafka direct: a librdkafka producer (rdkafka crate) in the suite's process with prism-kafka's \
             defaults (`acks=all`, idempotence on, no compression, librdkafka's default batching), N sends \
             in flight, the same payload size, topic `prism-bench` and a 32-byte message-id header like the \
             plugin's; `Publish → deliver` adds a consumer (group member subscribed 3 s before, like the \
             plugin's Subscribe) and reports send → delivery latency{}",
            affix(
                "; extra librdkafka settings `",
                &self.args.kafka_direct.join("`, `"),
                "`"
            )
        );
        let _ = writeln!(md, "{}", self.settings.fetch_wait_line());
        let _ = writeln!(
            md,
            "- backends: `prism-testkit` servers (Redis without persistence; PostgreSQL with fsync off); \
             plugins: release binaries, default configuration (prism-postgres `pool_size` 10, prism-redis \
             one multiplexed connection), `PRISM_LOG_LEVEL=warn`{}\n",
            affix(", plus `", &self.args.plugin_env.join("`, `"), "`")
        );

        table_head(
            &mut md,
            "Results: plugin vs direct",
            "| backend | op | in flight | plugin ops/s | direct ops/s | **plugin / direct** | plugin p50 / p99 ms | direct p50 / p99 ms | added p99 | CPU µs/op plugin / client | plugin errors | direct tool |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        );
        for p in self.pairs {
            let _ = writeln!(
                md,
                "| {} | {} (`{}`) | {} | {} | {} | **{}** | {} | {} | {} | {} | {} | {}{} |",
                p.backend,
                p.op,
                scenario_name(p.scenario),
                p.in_flight,
                ops(&p.plugin),
                ops(&p.direct),
                p.ratio_text(),
                lat(&p.plugin),
                lat(&p.direct),
                p.added_p99_text(" ms"),
                cpu(p.plugin.as_ref()),
                dash(p.plugin.as_ref().map(Measure::errors_text)),
                p.direct_tool,
                affix(" (", p.note.trim(), ")")
            );
        }
        let _ = writeln!(
            md,
            "\n`added p99` = plugin p99 − direct p99 at the same number of requests in flight. \
             CPU µs/op: user + system CPU time of the plugin process and of the load generator \
             (`/proc/<pid>/stat`) over the measured window, divided by the operations completed.\n"
        );

        self.cpu_budget(&mut md);

        table_head(
            &mut md,
            "Plugin-only scenarios",
            "| plugin | scenario | in flight | ops/s | p50 ms | p99 ms | p99.9 ms | CPU µs/op plugin / client | errors |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        );
        for s in self.solos {
            match &s.result {
                Ok(m) => {
                    let _ = writeln!(
                        md,
                        "| prism-{} | `{}` | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                        s.plugin,
                        scenario_name(s.scenario),
                        s.in_flight,
                        m.ops_per_sec,
                        m.p50_us as f64 / 1e3,
                        m.p99_us as f64 / 1e3,
                        m.p999_us as f64 / 1e3,
                        cpu(Some(m)),
                        m.errors_text()
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        md,
                        "| prism-{} | `{}` | {} | failed: {e} | | | | | |",
                        s.plugin,
                        scenario_name(s.scenario),
                        s.in_flight
                    );
                }
            }
        }
        let _ = writeln!(
            md,
            "\n`health` is `grpc.health.v1.Health/Check` (no backend): the gRPC floor of this client + \
             server on this machine. `kv-batch` is BatchGet of 10 keys; `kv-mixed` 90 % Get / 10 % Set.{}\n",
            affix(" Kafka publish: not measured (", self.kafka_note, ").")
        );

        table_head(
            &mut md,
            "Processes",
            "| plugin | start → SERVING, first | start → SERVING, restart (median of 2) | idle RSS | max RSS under load | release binary | image |",
            "|---|--:|--:|--:|--:|--:|--:|",
        );
        for f in self.facts {
            let _ = writeln!(
                md,
                "| prism-{} | {} | {} | {} | {} | {} | {} |",
                f.name,
                f.first_start(" ms"),
                f.restart(" ms"),
                mib(f.idle_rss_kb),
                mib(Some(f.max_rss_kb.load(Ordering::Relaxed))),
                dash(f.binary_bytes.map(mib_bytes)),
                f.image_bytes
                    .map(mib_bytes)
                    .unwrap_or("not built (`make images`, then `make sizes`)".into()),
            );
        }
        let _ = writeln!(
            md,
            "\nstart → SERVING: from spawning the process to the first `grpc.health.v1` SERVING answer \
             (polled every 2 ms), backend already up; the first start also creates the table \
             (prism-postgres). Idle RSS: `VmRSS` 1 s after SERVING; max RSS: sampled every 100 ms \
             during all scenarios.\n"
        );

        table_head(
            &mut md,
            "Targets",
            "| target | measured | met | bound measured in this run (see CPU budget) |",
            "|---|---|---|---|",
        );
        for p in self.pairs {
            if p.scenario == Scenario::PublishSubscribe {
                continue;
            }
            if let Some(r) = p.ratio() {
                let _ = writeln!(
                    md,
                    "| {} {} throughput ≥ 0.8× direct (@{}) | {r:.2}× | {} | {} |",
                    p.backend,
                    p.op,
                    p.in_flight,
                    yes(r >= 0.8),
                    self.ceiling_text(p)
                );
            }
        }
        for p in self.pairs.iter().filter(|p| p.in_flight == 64) {
            if let Some(a) = p.added_p99_ms() {
                let _ = writeln!(
                    md,
                    "| {} {} added p99 ≤ 2 ms @64 | {a:+.2} ms | {} | {} |",
                    p.backend,
                    p.op,
                    yes(a <= 2.0),
                    dash(self.floor(p.in_flight).map(|f| format!(
                        "`health` alone (no backend): p99 {:.2} ms @{}",
                        f.p99_us as f64 / 1e3,
                        p.in_flight
                    )))
                );
            }
        }
        for f in self.facts {
            if let Some(kb) = f.idle_rss_kb {
                let m = kb as f64 / 1024.0;
                let _ = writeln!(
                    md,
                    "| prism-{} idle RSS ≤ 15 MB | {m:.1} MiB | {} | |",
                    f.name,
                    yes(m <= 15.0)
                );
            }
            if let Some(ms) = median(&f.start_restart_ms) {
                let _ = writeln!(
                    md,
                    "| prism-{} start → SERVING ≤ 100 ms | {ms:.0} ms (first {:.0} ms) | {} | |",
                    f.name,
                    f.start_first_ms.unwrap_or(0.0),
                    yes(ms <= 100.0)
                );
            }
        }
        let e2e = self
            .pairs
            .iter()
            .find(|p| p.scenario == Scenario::PublishSubscribe);
        match e2e.and_then(|p| p.plugin.as_ref().map(|m| (p, m))) {
            Some((p, m)) => {
                let ms = m.p99_us as f64 / 1e3;
                let _ = writeln!(
                    md,
                    "| Kafka publish→deliver p99 ≤ 10 ms (@{}) | {ms:.2} ms | {} | the direct librdkafka consumer: p99 {} |\n",
                    p.in_flight,
                    yes(ms <= 10.0),
                    dash(
                        p.direct
                            .as_ref()
                            .map(|d| format!("{:.2} ms", d.p99_us as f64 / 1e3))
                    )
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| Kafka publish ≥ 0.8× librdkafka; publish→deliver p99 ≤ 10 ms | not measured | – | |\n"
                );
            }
        }
        md.push_str(&kept_analysis(out_path));
        md
    }
}

/// A `## title` section starting with a table's header and alignment rows.
/// A plugin run counts as CPU-bound when the machine was this busy: then its
/// throughput is what CPU time per operation allows, and the CPU budget
/// explains it.
const CPU_BOUND: f64 = 0.85;

impl Markdown<'_> {
    /// The gRPC floor at `in_flight`: the `health` scenario (no backend).
    fn floor(&self, in_flight: usize) -> Option<&Measure> {
        self.solos
            .iter()
            .filter(|s| s.scenario == Scenario::Health && s.in_flight == in_flight)
            .find_map(|s| s.result.as_ref().ok())
    }

    /// The ratio the plugin would reach if everything it does beyond a bare
    /// gRPC call (its backend client, the request handling) cost no CPU: the
    /// ops/s all CPUs allow at (the gRPC floor's server + client CPU per op +
    /// what the rest of the machine spent per op on the plugin run), divided
    /// by the direct tool's ops/s. Only where the plugin run was CPU-bound.
    fn ceiling(&self, p: &Pair) -> Option<f64> {
        let (plugin, direct) = (p.plugin.as_ref()?, p.direct.as_ref()?);
        if plugin.busy? < CPU_BOUND || direct.ops_per_sec <= 0.0 {
            return None;
        }
        let floor = self.floor(p.in_flight)?;
        let path_us = floor.plugin_cpu_us? + floor.client_cpu_us? + plugin.backend_cpu_us()?;
        let cpus = std::thread::available_parallelism().ok()?.get() as f64;
        Some(cpus * 1e6 / path_us / direct.ops_per_sec)
    }

    fn ceiling_text(&self, p: &Pair) -> String {
        if let Some(c) = self.ceiling(p) {
            return format!("CPU ceiling {c:.2}×");
        }
        match p.plugin.as_ref().and_then(|m| m.busy) {
            Some(busy) if busy < CPU_BOUND => {
                format!("not CPU-bound (machine {:.0} % busy)", busy * 100.0)
            }
            _ => "–".to_string(),
        }
    }

    /// The "CPU budget" section: where each side's CPU time per operation
    /// goes, and the ceiling that sets on the ratio.
    fn cpu_budget(&self, md: &mut String) {
        table_head(
            md,
            "CPU budget: what bounds the ratio",
            "| backend | op | in flight | machine busy plugin run / direct run | plugin path µs/op: plugin + client + rest = machine | direct µs/op: tool + rest = machine | gRPC floor µs/op (`health`: server + client) | **CPU ceiling** | measured ratio |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        );
        let pct = |m: Option<&Measure>| {
            dash(
                m.and_then(|m| m.busy)
                    .map(|b| format!("{:.0} %", b * 100.0)),
            )
        };
        for p in self.pairs {
            let plugin = p.plugin.as_ref().and_then(|m| {
                Some(format!(
                    "{:.0} + {:.0} + {:.0} = {:.0}",
                    m.plugin_cpu_us?,
                    m.client_cpu_us?,
                    m.backend_cpu_us()?,
                    m.machine_cpu_us?
                ))
            });
            let direct = p.direct.as_ref().and_then(|m| {
                Some(format!(
                    "{:.0} + {:.0} = {:.0}",
                    m.client_cpu_us?,
                    m.backend_cpu_us()?,
                    m.machine_cpu_us?
                ))
            });
            let floor = self
                .floor(p.in_flight)
                .and_then(|f| Some(format!("{:.0} + {:.0}", f.plugin_cpu_us?, f.client_cpu_us?)));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} / {} | {} | {} | {} | **{}** | {} |",
                p.backend,
                p.op,
                p.in_flight,
                pct(p.plugin.as_ref()),
                pct(p.direct.as_ref()),
                dash(plugin),
                dash(direct),
                dash(floor),
                self.ceiling_text(p),
                p.ratio_text(),
            );
        }
        let _ = writeln!(
            md,
            "\nCPU time per completed operation over each measured window, in µs: `machine` is all \
             CPUs' busy time (`/proc/stat`), `plugin` and `client` are the plugin process and the load \
             generator (`/proc/<pid>/stat`), `tool` is the direct tool (pgbench and redis-benchmark as \
             reaped children; the librdkafka client is this process), `rest` = machine − the named \
             processes: the backend server, the kernel's loopback work not charged to a process, and \
             anything else that ran (so run this on an otherwise idle machine). **CPU ceiling** = the \
             ops/s this machine's CPUs allow at (gRPC floor + the plugin run's `rest`) µs per op, \
             divided by the direct tool's ops/s: the ratio the plugin would reach if everything it does \
             beyond answering a bare gRPC call — its backend client, request handling — cost no CPU at \
             all. Shown where the plugin run kept the machine ≥ {:.0} % busy (otherwise CPU is not what \
             limits it). A ceiling below 0.8 means no change inside the plugin can meet the target on \
             this machine: the extra hop's gRPC server + client work alone takes the budget.\n",
            CPU_BOUND * 100.0
        );
    }
}

fn table_head(md: &mut String, title: &str, header: &str, align: &str) {
    let _ = writeln!(md, "## {title}\n\n{header}\n{align}");
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The hand-written `## Analysis` section (to the end of the file) of an
/// existing report, so regenerating the numbers keeps the profile findings.
fn kept_analysis(path: &Path) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    match old.find("\n## Analysis") {
        Some(at) => old[at + 1..].to_string(),
        None => "## Analysis\n\n(Not written yet: profile findings go here; \
                 this section is kept when the numbers are regenerated.)\n"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flags: &[&str]) -> Settings {
        let args = Args::parse_from(std::iter::once("bench-suite").chain(flags.iter().copied()));
        Settings::new(&args).expect("valid flags")
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn both_kafka_consumers_get_the_short_fetch_wait_by_default() {
        let s = settings(&["--plugin-env", "PRISM_BACKEND__POOL_SIZE=32"]);
        assert_eq!(s.kafka_direct, pairs(&[("fetch.wait.max.ms", "10")]));
        assert_eq!(
            s.plugin_env("kafka"),
            pairs(&[
                ("PRISM_BACKEND__LIBRDKAFKA__fetch.wait.max.ms", "10"),
                ("PRISM_BACKEND__POOL_SIZE", "32"),
            ])
        );
        assert_eq!(
            s.plugin_env("redis"),
            pairs(&[("PRISM_BACKEND__POOL_SIZE", "32")])
        );
    }

    #[test]
    fn flags_override_the_fetch_wait_and_librdkafka_entries_reach_prism_kafka_only() {
        let s = settings(&[
            "--kafka-direct",
            "fetch.wait.max.ms=500",
            "--plugin-env",
            "PRISM_BACKEND__LIBRDKAFKA__FETCH.WAIT.MAX.MS=500",
        ]);
        assert_eq!(s.kafka_direct, pairs(&[("fetch.wait.max.ms", "500")]));
        assert_eq!(
            s.plugin_env("kafka"),
            pairs(&[("PRISM_BACKEND__LIBRDKAFKA__FETCH.WAIT.MAX.MS", "500")])
        );
        assert!(s.plugin_env("postgres").is_empty());
        let line = s.fetch_wait_line();
        assert_eq!(line.matches("`fetch.wait.max.ms=500`").count(), 2, "{line}");

        let map = settings(&[
            "--plugin-env",
            r#"PRISM_BACKEND__LIBRDKAFKA={"fetch.wait.max.ms": "50"}"#,
        ]);
        assert_eq!(map.plugin_env("kafka").len(), 1);
    }

    #[test]
    fn a_setting_without_equals_sign_is_refused() {
        let args = Args::parse_from(["bench-suite", "--kafka-direct", "fetch.wait.max.ms"]);
        let err = Settings::new(&args).err().expect("refused");
        assert!(err.to_string().contains("--kafka-direct"), "{err}");
    }
}
