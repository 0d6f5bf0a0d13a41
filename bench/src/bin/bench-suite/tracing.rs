//! The cost of OpenTelemetry tracing (issue #18): the release plugin's Set and
//! Get at one concurrency against the real backend with tracing off, on at
//! `sample_ratio` 0, and on at 1 exporting to a live OTLP receiver
//! (testkit's), to a collector that is down (a closed port) and to one that
//! black-holes (accepts TCP, never answers). Each (variant, op) runs in a
//! fresh plugin process so the exporter's queue and the RSS start clean; the
//! variants are interleaved in [`ROUNDS`] rounds, every other one in reverse
//! order, so the spread between rounds shows the machine's noise and a drift
//! in load over the section falls on every variant alike.
//!
//! Measured twice: at saturation (the suite's closed-loop load generator,
//! where any extra CPU per call shows as lower ops/s and higher latency), and
//! at a fixed offered rate of half the untraced plugin's saturated ops/s
//! ([`paced`](crate::paced), open loop), where a call is slowed only by what
//! it waits for.
//!
//! Calls carry no `traceparent`: at `sample_ratio` 0 nothing is sampled, at 1
//! every call is a new sampled trace (a server span and a backend span).

mod report;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prism_bench::Scenario;
use prism_testkit::otlp::{BlackHole, OtlpReceiver};
use prism_testkit::{PluginProcess, ServingStatus};

use crate::args::{Args, Settings};
use crate::fmt::{dash, median, mib};
use crate::load::run_plugin;
use crate::processes::{Backends, Running, sample_rss};
use crate::results::{Measure, ProcessFacts};

pub(crate) use report::markdown;

/// Rounds of the interleaved variants.
const ROUNDS: usize = 3;
/// The fixed offered rate, as a share of the untraced plugin's saturated ops/s.
const PACED_SHARE: f64 = 0.5;
/// The variants of the fixed-rate rounds (`VARIANTS` indices): off and the
/// three collectors at `sample_ratio` 1.
const PACED_VARIANTS: [usize; 4] = [0, 2, 3, 4];

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
    /// The fixed offered rate, calls/s; None at saturation.
    rate: Option<f64>,
    result: Result<Measure, String>,
    /// `VmRSS` right after the run.
    rss_after_kb: Option<u64>,
    /// Highest `VmRSS` sampled (every 100 ms) during the run.
    peak_rss_kb: u64,
    /// Spans the live receiver got (the plugin's exit flushes its queue).
    spans: Option<usize>,
}

/// A plugin measured: name, backend address variable, backend address, Set
/// and Get scenarios.
type Target = (&'static str, &'static str, String, [Scenario; 2]);

/// The plugins whose backend runs.
fn plugins(backends: &Backends) -> Vec<Target> {
    let redis = backends.redis.as_ref().map(|r| {
        let ops = [Scenario::CacheSet, Scenario::CacheGet];
        ("redis", "REDIS_ADDRESS", r.addr(), ops)
    });
    let pg = backends.pg.as_ref().map(|pg| {
        let ops = [Scenario::KvSet, Scenario::KvGet];
        ("postgres", "DATABASE_URL", pg.url(), ops)
    });
    redis.into_iter().chain(pg).collect()
}

/// The variants in round `round`'s order: forward, then reversed, ...
fn ordered(variants: &[Variant], round: usize) -> Vec<Variant> {
    let mut order = variants.to_vec();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

/// Where the dead collectors are.
struct Dead {
    hole: BlackHole,
    down: String,
}

/// Runs every variant of every KeyValue plugin whose backend runs, when
/// `--only` is empty or names `tracing`: first at saturation, then at a fixed
/// rate.
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
        "== tracing overhead ({in_flight} in flight, then {:.0} % of untraced ops/s; {ROUNDS} rounds, a fresh plugin per run)",
        PACED_SHARE * 100.0
    );
    let dead = Dead {
        hole: BlackHole::start().await,
        down: format!("http://127.0.0.1:{}", prism_testkit::free_port()),
    };
    let ctx = Context {
        args,
        settings,
        bins,
        dead,
        in_flight,
    };
    for target in plugins(backends) {
        for paced in [false, true] {
            pass(&ctx, &target, paced, &mut runs).await;
        }
    }
    runs
}

/// What every run of the section shares.
struct Context<'a> {
    args: &'a Args,
    settings: &'a Settings,
    bins: &'a Path,
    dead: Dead,
    in_flight: usize,
}

/// The interleaved rounds of `target`, saturated or `paced` (at
/// [`PACED_SHARE`] of the saturated "off" median in `runs`).
async fn pass(ctx: &Context<'_>, target: &Target, paced: bool, runs: &mut Vec<Run>) {
    let variants: Vec<Variant> = match paced {
        false => VARIANTS.to_vec(),
        true => PACED_VARIANTS.iter().map(|&i| VARIANTS[i]).collect(),
    };
    for round in 0..ROUNDS {
        for variant in ordered(&variants, round) {
            for scenario in target.3 {
                let off = rounds(runs, target.0, op_name(scenario), VARIANTS[0].label, false);
                let rate = match median_of(&off, ops) {
                    Some(max) if paced => Some(max * PACED_SHARE),
                    None if paced => continue,
                    _ => None,
                };
                let spec = RunSpec {
                    plugin: target.0,
                    variant,
                    round,
                    scenario,
                    in_flight: ctx.in_flight,
                    rate,
                };
                let run = variant_run(ctx, target, spec).await;
                println!("{}", run_line(&run));
                runs.push(run);
            }
        }
    }
}

/// One run of `spec` against `target`, with its collector.
async fn variant_run(ctx: &Context<'_>, (plugin, var, addr, _): &Target, spec: RunSpec) -> Run {
    let dead = &ctx.dead;
    let endpoint = match spec.variant.collector {
        Collector::None => None,
        Collector::Live => Some(Endpoint::Live(OtlpReceiver::start().await)),
        Collector::Down => Some(Endpoint::Fixed(dead.down.clone())),
        Collector::BlackHole => Some(Endpoint::Fixed(dead.hole.endpoint().to_string())),
    };
    let mut env = ctx.settings.plugin_env(plugin);
    env.push((var.to_string(), addr.clone()));
    // The default log format, which with tracing on adds trace ids to lines
    // (the testkit's spawn asks for text).
    env.push(("PRISM_LOG_FORMAT".into(), "json".into()));
    if let Some(endpoint) = &endpoint {
        env.push(("PRISM_TELEMETRY__OTLP_ENDPOINT".into(), endpoint.url()));
        env.push((
            "PRISM_TELEMETRY__SAMPLE_RATIO".into(),
            spec.variant.sample_ratio.into(),
        ));
    }
    one_run(ctx.args, ctx.bins, &spec, &env, endpoint.as_ref()).await
}

fn op_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::CacheGet | Scenario::KvGet => "Get",
        _ => "Set",
    }
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
    rate: Option<f64>,
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
    let mut run = Run {
        plugin: spec.plugin,
        op: op_name(spec.scenario),
        variant: spec.variant,
        round: spec.round,
        in_flight: spec.in_flight,
        rate: spec.rate,
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
    run.result = match spec.rate {
        None => run_plugin(args, &running, spec.scenario, spec.in_flight).await,
        Some(rate) => paced_run(args, &running, spec, rate).await,
    };
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

/// Drives `running` at `rate` calls/s for the suite's measured seconds.
async fn paced_run(
    args: &Args,
    running: &Running,
    spec: &RunSpec,
    rate: f64,
) -> Result<Measure, String> {
    let load = crate::paced::Load {
        port: running.port,
        pid: running.process.pid(),
        set: matches!(spec.scenario, Scenario::CacheSet | Scenario::KvSet),
        rate,
        duration: args.duration(),
        connections: args.connections,
        keys: args.keys,
        value_size: args.value_size,
    };
    crate::paced::run(&load).await
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
        "   prism-{:<8} {:<3} round {} {:<31}{}",
        r.plugin,
        r.op,
        r.round + 1,
        r.variant.label,
        r.rate
            .map(|rate| format!(" at {rate:.0}/s"))
            .unwrap_or_default()
    );
    match &r.result {
        Ok(m) => format!(
            "{head} {:>7.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  CPU {} µs/call  errors {}  RSS {} (peak {}){}",
            m.ops_per_sec,
            m.p50_us as f64 / 1e3,
            m.p99_us as f64 / 1e3,
            dash(m.plugin_cpu_us.map(|c| format!("{c:.1}"))),
            m.errors_text(),
            mib(r.rss_after_kb),
            mib(Some(r.peak_rss_kb)),
            r.spans
                .map(|s| format!("  spans received {s}"))
                .unwrap_or_default()
        ),
        Err(e) => format!("{head} failed: {e}"),
    }
}

/// The rounds of one (plugin, op, variant), at saturation or at a fixed rate.
fn rounds<'a>(runs: &'a [Run], plugin: &str, op: &str, label: &str, paced: bool) -> Vec<&'a Run> {
    let mut v: Vec<&Run> = runs
        .iter()
        .filter(|r| r.plugin == plugin && r.op == op && r.variant.label == label)
        .filter(|r| r.rate.is_some() == paced)
        .collect();
    v.sort_by_key(|r| r.round);
    v
}

/// `f` of the rounds that succeeded.
fn values(runs: &[&Run], f: impl Fn(&Measure) -> Option<f64>) -> Vec<f64> {
    runs.iter()
        .filter_map(|r| r.result.as_ref().ok().and_then(&f))
        .collect()
}

/// The median of `f` over the rounds that succeeded.
fn median_of(runs: &[&Run], f: impl Fn(&Measure) -> Option<f64>) -> Option<f64> {
    median(&values(runs, f))
}

fn ops(m: &Measure) -> Option<f64> {
    Some(m.ops_per_sec)
}
