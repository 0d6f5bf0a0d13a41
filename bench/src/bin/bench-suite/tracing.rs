//! The cost of OpenTelemetry tracing (issue #18): the release plugin's Set and
//! Get at one concurrency against the real backend with tracing off, on at
//! `sample_ratio` 0, and on at 1 exporting to a live OTLP receiver
//! (testkit's), to a collector that is down (a closed port) and to one that
//! black-holes (accepts TCP, never answers). Each (variant, op) runs in a
//! fresh plugin process so the exporter's queue and the RSS start clean; the
//! variants are interleaved in two rounds, the second in reverse order, so
//! the spread between rounds shows the machine's noise and a drift in load
//! over the section falls on every variant alike.
//!
//! Calls carry no `traceparent`: at `sample_ratio` 0 nothing is sampled, at 1
//! every call is a new sampled trace (a server span and a backend span).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prism_bench::Scenario;
use prism_testkit::otlp::{BlackHole, OtlpReceiver};
use prism_testkit::{PluginProcess, ServingStatus};

use crate::args::{Args, Settings};
use crate::fmt::{dash, mib};
use crate::load::run_plugin;
use crate::processes::{Backends, Running, sample_rss};
use crate::results::{Measure, ProcessFacts};

/// Rounds of the interleaved variants.
const ROUNDS: usize = 2;

/// Where a variant's plugin sends its spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collector {
    /// Tracing off: no `telemetry.otlp_endpoint`.
    None,
    /// testkit's OTLP/gRPC receiver, fresh for each run.
    Live,
    /// A port nothing listens on.
    Down,
    /// Accepts connections, never reads or answers.
    BlackHole,
}

/// One tracing configuration.
#[derive(Debug, Clone, Copy)]
struct Variant {
    label: &'static str,
    collector: Collector,
    sample_ratio: &'static str,
}

const VARIANTS: [Variant; 5] = [
    Variant {
        label: "off",
        collector: Collector::None,
        sample_ratio: "",
    },
    Variant {
        label: "ratio 0",
        collector: Collector::Live,
        sample_ratio: "0",
    },
    Variant {
        label: "ratio 1, live collector",
        collector: Collector::Live,
        sample_ratio: "1",
    },
    Variant {
        label: "ratio 1, collector down",
        collector: Collector::Down,
        sample_ratio: "1",
    },
    Variant {
        label: "ratio 1, black-holing collector",
        collector: Collector::BlackHole,
        sample_ratio: "1",
    },
];

/// One measured run: a variant's op in one round.
#[derive(Debug)]
pub(crate) struct Run {
    plugin: &'static str,
    op: &'static str,
    variant: Variant,
    round: usize,
    in_flight: usize,
    result: Result<Measure, String>,
    /// `VmRSS` right after the run.
    rss_after_kb: Option<u64>,
    /// Highest `VmRSS` sampled (every 100 ms) during the run.
    peak_rss_kb: u64,
    /// Spans the live receiver got (the plugin's exit flushes its queue).
    spans: Option<usize>,
}

/// The plugins measured: name, backend address variable, Get and Set scenarios.
fn plugins(backends: &Backends) -> Vec<(&'static str, &'static str, String, [Scenario; 2])> {
    let mut out = Vec::new();
    if let Some(redis) = &backends.redis {
        out.push((
            "redis",
            "REDIS_ADDRESS",
            redis.addr(),
            [Scenario::CacheSet, Scenario::CacheGet],
        ));
    }
    if let Some(pg) = &backends.pg {
        out.push((
            "postgres",
            "DATABASE_URL",
            pg.url(),
            [Scenario::KvSet, Scenario::KvGet],
        ));
    }
    out
}

/// Runs every variant of every KeyValue plugin whose backend runs, when
/// `--only` is empty or names `tracing`.
pub(crate) async fn measure(
    args: &Args,
    settings: &Settings,
    backends: &Backends,
    bins: &Path,
) -> Vec<Run> {
    let mut runs = Vec::new();
    if !args.wants("tracing") {
        return runs;
    }
    let in_flight = args.in_flight.first().copied().unwrap_or(32);
    println!(
        "== tracing overhead ({in_flight} in flight, {} rounds, a fresh plugin per run)",
        ROUNDS
    );
    let hole = BlackHole::start().await;
    let down = format!("http://127.0.0.1:{}", prism_testkit::free_port());
    for (plugin, var, addr, scenarios) in plugins(backends) {
        for round in 0..ROUNDS {
            let order: Vec<Variant> = if round % 2 == 0 {
                VARIANTS.to_vec()
            } else {
                VARIANTS.iter().rev().copied().collect()
            };
            for variant in order {
                for scenario in scenarios {
                    let endpoint = match variant.collector {
                        Collector::None => None,
                        Collector::Live => Some(Endpoint::Live(OtlpReceiver::start().await)),
                        Collector::Down => Some(Endpoint::Fixed(down.clone())),
                        Collector::BlackHole => Some(Endpoint::Fixed(hole.endpoint().to_string())),
                    };
                    let mut env = settings.plugin_env(plugin);
                    env.push((var.to_string(), addr.clone()));
                    if let Some(endpoint) = &endpoint {
                        env.push(("PRISM_TELEMETRY__OTLP_ENDPOINT".into(), endpoint.url()));
                        env.push((
                            "PRISM_TELEMETRY__SAMPLE_RATIO".into(),
                            variant.sample_ratio.into(),
                        ));
                    }
                    let spec = RunSpec {
                        plugin,
                        variant,
                        round,
                        scenario,
                        in_flight,
                    };
                    let run = one_run(args, bins, &spec, &env, endpoint.as_ref()).await;
                    println!("{}", run_line(&run));
                    runs.push(run);
                }
            }
        }
    }
    runs
}

/// Where one run's plugin exports.
enum Endpoint {
    Live(OtlpReceiver),
    Fixed(String),
}

impl Endpoint {
    fn url(&self) -> String {
        match self {
            Endpoint::Live(r) => r.endpoint().to_string(),
            Endpoint::Fixed(url) => url.clone(),
        }
    }
}

/// What one run is.
struct RunSpec {
    plugin: &'static str,
    variant: Variant,
    round: usize,
    scenario: Scenario,
    in_flight: usize,
}

/// Starts the plugin, drives the scenario, reads RSS, stops the plugin (its
/// exit flushes the span queue) and counts what the live receiver got.
async fn one_run(
    args: &Args,
    bins: &Path,
    spec: &RunSpec,
    env: &[(String, String)],
    endpoint: Option<&Endpoint>,
) -> Run {
    let op = match spec.scenario {
        Scenario::CacheGet | Scenario::KvGet => "Get",
        _ => "Set",
    };
    let mut run = Run {
        plugin: spec.plugin,
        op,
        variant: spec.variant,
        round: spec.round,
        in_flight: spec.in_flight,
        result: Err(String::new()),
        rss_after_kb: None,
        peak_rss_kb: 0,
        spans: None,
    };
    let bin = bins.join(format!("prism-{}", spec.plugin));
    let mut envs: Vec<(&str, &str)> = vec![("PRISM_LOG_LEVEL", "warn")];
    envs.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (process, port) = prism_testkit::lifecycle::spawn_plugin(&bin, &envs).await;
    let serving =
        prism_testkit::wait_for_health(port, "", ServingStatus::Serving, Duration::from_secs(30))
            .await;
    if let Err(e) = serving {
        run.result = Err(format!("not SERVING: {e}"));
        stop(process).await;
        return run;
    }
    let peak = Arc::new(AtomicU64::new(0));
    let stop_sampling = Arc::new(AtomicBool::new(false));
    sample_rss(vec![(process.pid(), peak.clone())], stop_sampling.clone());
    let running = Running {
        process,
        port,
        facts: ProcessFacts {
            name: spec.plugin,
            ..ProcessFacts::default()
        },
    };
    run.result = run_plugin(args, &running, spec.scenario, spec.in_flight).await;
    run.rss_after_kb = crate::processes::rss_kb(running.process.pid());
    stop_sampling.store(true, Ordering::Relaxed);
    run.peak_rss_kb = peak
        .load(Ordering::Relaxed)
        .max(run.rss_after_kb.unwrap_or(0));
    stop(running.process).await;
    if let Some(Endpoint::Live(receiver)) = endpoint {
        run.spans = Some(receiver.spans().len());
    }
    run
}

/// SIGTERM and wait (the exporter's shutdown is bounded at 3 s).
async fn stop(mut process: PluginProcess) {
    if process.sigterm().is_ok()
        && let Err(e) = process.wait_exit(Duration::from_secs(35)).await
    {
        eprintln!("   {} did not exit: {e}", process.name());
    }
}

/// The line printed after a run.
fn run_line(r: &Run) -> String {
    let head = format!(
        "   prism-{:<8} {:<3} round {} {:<31}",
        r.plugin,
        r.op,
        r.round + 1,
        r.variant.label
    );
    match &r.result {
        Ok(m) => format!(
            "{head} {:>7.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  CPU {} µs/call  errors {}  RSS {} (peak {}){}",
            m.ops_per_sec,
            m.p50_us as f64 / 1e3,
            m.p99_us as f64 / 1e3,
            dash(m.plugin_cpu_us.map(|c| format!("{c:.1}"))),
            m.errors,
            mib(r.rss_after_kb),
            mib(Some(r.peak_rss_kb)),
            r.spans
                .map(|s| format!("  spans received {s}"))
                .unwrap_or_default()
        ),
        Err(e) => format!("{head} failed: {e}"),
    }
}

/// The two rounds of one (plugin, op, variant).
fn rounds<'a>(runs: &'a [Run], plugin: &str, op: &str, label: &str) -> Vec<&'a Run> {
    let mut v: Vec<&Run> = runs
        .iter()
        .filter(|r| r.plugin == plugin && r.op == op && r.variant.label == label)
        .collect();
    v.sort_by_key(|r| r.round);
    v
}

/// RSS after each round, and the highest sampled in either, MiB.
fn rss_cell(runs: &[&Run]) -> String {
    let after: Vec<String> = runs
        .iter()
        .map(|r| {
            dash(
                r.rss_after_kb
                    .map(|kb| format!("{:.1}", kb as f64 / 1024.0)),
            )
        })
        .collect();
    let peak = runs.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0);
    format!("{} (peak {})", after.join(" / "), mib(Some(peak)))
}

/// `f` of each round's measure, joined with " / ".
fn per_round(runs: &[&Run], f: impl Fn(&Measure) -> String) -> String {
    runs.iter()
        .map(|r| {
            r.result
                .as_ref()
                .map(&f)
                .unwrap_or_else(|e| format!("failed: {e}"))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The mean of `f` over the rounds that succeeded.
fn mean(runs: &[&Run], f: impl Fn(&Measure) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.result.as_ref().ok().and_then(&f))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The spread between the rounds of `f`: max − min.
fn spread(runs: &[&Run], f: impl Fn(&Measure) -> Option<f64>) -> Option<f64> {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.result.as_ref().ok().and_then(&f))
        .collect();
    let max = values.iter().copied().reduce(f64::max)?;
    let min = values.iter().copied().reduce(f64::min)?;
    Some(max - min)
}

fn ops(m: &Measure) -> Option<f64> {
    Some(m.ops_per_sec)
}
fn p99(m: &Measure) -> Option<f64> {
    Some(m.p99_us as f64 / 1e3)
}
fn cpu(m: &Measure) -> Option<f64> {
    m.plugin_cpu_us
}

/// Worse than off beyond noise: the mean is further from off's mean, in the
/// bad direction, than off's own spread between rounds or 10 % of off's mean,
/// whichever is larger.
fn beyond_noise(
    off: &[&Run],
    v: &[&Run],
    f: fn(&Measure) -> Option<f64>,
    higher_worse: bool,
) -> Option<bool> {
    let (base, m) = (mean(off, f)?, mean(v, f)?);
    let band = spread(off, f)?.max(0.1 * base);
    let worse = if higher_worse { m - base } else { base - m };
    Some(worse > band)
}

/// The report section: every run, then each variant against "off".
pub(crate) fn markdown(runs: &[Run], md: &mut String) {
    if runs.is_empty() {
        return;
    }
    let in_flight = runs.first().map_or(0, |r| r.in_flight);
    let _ = writeln!(
        md,
        "## Tracing overhead (issue #18)\n\n\
         Release plugin, real backend, one scenario per fresh plugin process, variants interleaved \
         in {ROUNDS} rounds (the second in reverse order), {in_flight} calls in flight over the suite's connections; values are round 1 / round 2. \
         Calls carry no `traceparent`: at `sample_ratio` 1 each is a new sampled trace (server span + \
         backend span), at 0 none is traced. Live collector: testkit's OTLP/gRPC receiver in the \
         load generator's process (its CPU counts as client CPU); down: a closed port; \
         black-holing: accepts TCP, never answers. Exporter settings are the defaults \
         (`max_queue_size` 2048, `export_timeout` 5 s). Plugin CPU per call: `/proc/<pid>/stat` \
         over the measured window, exporter thread included.\n\n\
         | plugin | op | tracing | ops/s | p50 ms | p99 ms | plugin CPU µs/call | failed calls | RSS after, MiB | spans received |\n\
         |---|---|---|--:|--:|--:|--:|--:|--:|--:|"
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in runs {
        if !keys.contains(&(r.plugin, r.op)) {
            keys.push((r.plugin, r.op));
        }
    }
    for &(plugin, op) in &keys {
        for v in VARIANTS {
            let rs = rounds(runs, plugin, op, v.label);
            if rs.is_empty() {
                continue;
            }
            let _ = writeln!(
                md,
                "| prism-{plugin} | {op} | {} | {} | {} | {} | {} | {} | {} | {} |",
                v.label,
                per_round(&rs, |m| format!("{:.0}", m.ops_per_sec)),
                per_round(&rs, |m| format!("{:.2}", m.p50_us as f64 / 1e3)),
                per_round(&rs, |m| format!("{:.2}", m.p99_us as f64 / 1e3)),
                per_round(&rs, |m| dash(m.plugin_cpu_us.map(|c| format!("{c:.1}")))),
                per_round(&rs, Measure::errors_text),
                rss_cell(&rs),
                dash((v.collector == Collector::Live).then(|| {
                    rs.iter()
                        .map(|r| dash(r.spans.map(|s| s.to_string())))
                        .collect::<Vec<_>>()
                        .join(" / ")
                })),
            );
        }
    }
    against_off(runs, &keys, md);
}

/// Each variant's mean against "off": Δ ops/s, Δ CPU per call, Δ p99, and
/// what is worse beyond the noise of "off"; for a collector that is down or
/// black-holing also against the live collector (same spans, only the
/// collector differs).
fn against_off(runs: &[Run], keys: &[(&str, &str)], md: &mut String) {
    let _ = writeln!(
        md,
        "\nAgainst tracing off (means of the rounds; **beyond noise** = worse than the baseline by \
         more than the baseline's own spread between its rounds or 10 % of it, whichever is larger; \
         the last column compares a dead collector with the live one at the same `sample_ratio`):\n\n\
         | plugin | op | tracing | ops/s vs off | plugin CPU µs/call vs off | p99 vs off | worse than off beyond noise | worse than the live collector beyond noise |\n\
         |---|---|---|--:|--:|--:|---|---|"
    );
    for &(plugin, op) in keys {
        let off = rounds(runs, plugin, op, VARIANTS[0].label);
        let live = rounds(runs, plugin, op, VARIANTS[2].label);
        for v in &VARIANTS[1..] {
            let rs = rounds(runs, plugin, op, v.label);
            if rs.is_empty() || off.is_empty() {
                continue;
            }
            let rel = |f: fn(&Measure) -> Option<f64>| {
                dash(
                    mean(&off, f)
                        .zip(mean(&rs, f))
                        .map(|(a, b)| format!("{:+.0} %", (b / a - 1.0) * 100.0)),
                )
            };
            let abs = |f: fn(&Measure) -> Option<f64>, unit: &str| {
                dash(
                    mean(&off, f)
                        .zip(mean(&rs, f))
                        .map(|(a, b)| format!("{:.1} → {:.1}{unit} ({:+.1})", a, b, b - a)),
                )
            };
            let dead = matches!(v.collector, Collector::Down | Collector::BlackHole);
            let _ = writeln!(
                md,
                "| prism-{plugin} | {op} | {} | {} | {} | {} | {} | {} |",
                v.label,
                rel(ops),
                abs(cpu, ""),
                abs(p99, " ms"),
                verdict(&off, &rs),
                if dead {
                    verdict(&live, &rs)
                } else {
                    "–".to_string()
                },
            );
        }
    }
    md.push('\n');
}

/// What of `runs` is worse than `base` beyond noise: ops/s, p99, failed calls.
fn verdict(base: &[&Run], runs: &[&Run]) -> String {
    if base.is_empty() {
        return "–".to_string();
    }
    let mut worse = Vec::new();
    if beyond_noise(base, runs, ops, false) == Some(true) {
        worse.push("ops/s");
    }
    if beyond_noise(base, runs, p99, true) == Some(true) {
        worse.push("p99");
    }
    let failed: u64 = runs
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .map(|m| m.errors)
        .sum();
    if failed > 0 || runs.iter().any(|r| r.result.is_err()) {
        worse.push("failed calls");
    }
    if worse.is_empty() {
        "no".to_string()
    } else {
        format!("**{}**", worse.join(", "))
    }
}
