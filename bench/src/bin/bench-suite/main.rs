//! `bench-suite` (`make bench` / `scripts/bench.sh`): starts real PostgreSQL,
//! Redis and (if available) a Kafka-protocol broker with `prism-testkit`,
//! starts the release plugin binaries next to this executable, and measures
//! each plugin against the backend's own benchmark tool **in the same run**,
//! at the same concurrency, value size and key space:
//!
//! | plugin scenario | direct baseline |
//! |---|---|
//! | `cache-get` / `cache-set` on prism-redis | `redis-benchmark GET/SET prism:bench:bench-__rand_int__` (the plugin's exact keys) |
//! | `kv-get` / `kv-set` on prism-postgres | `pgbench -M prepared` scripts running the plugin's own SELECT / upsert (`prism_postgres::get_statement` / `set_statement`) on the plugin's table |
//! | `kv-increment` / `kv-cas` on prism-redis | `redis-benchmark INCR` / `EVAL` of the plugin's swap script, same keys |
//! | `kv-increment` / `kv-cas` on prism-postgres | `pgbench -M prepared` running the plugin's own Increment / swap statement |
//! | `publish` / `publish-subscribe` on prism-kafka | a librdkafka producer (and consumer) with prism-kafka's defaults, in this process |
//! | TimeSeries Insert / Query on prism-kafka (events/s) | a librdkafka producer / consumer writing and reading the same records (`timeseries`) |
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
//!
//! Modules: `args` (flags, settings, the workload both sides share),
//! `processes` (backend servers, plugin processes, RSS), `load` (plugin
//! scenarios), `baseline` with one module per direct tool (`redis`,
//! `pgbench`, `kafka`; `tool` runs one), `timeseries` (Insert/Query vs
//! librdkafka, its own section), `tracing` (the cost of OpenTelemetry tracing,
//! its own section), `results`, `table`, `grid` and `fmt` (the numbers and
//! their text: one table formatter for the terminal and the report), `machine`
//! and `report` (the markdown file).

mod args;
mod baseline;
mod floor;
mod fmt;
mod grid;
mod kafka;
mod load;
mod machine;
mod paced;
mod pgbench;
mod processes;
mod redis;
mod report;
mod results;
mod table;
mod timeseries;
mod tool;
mod tracing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use prism_bench::Scenario;

use crate::args::{Args, Settings};
use crate::baseline::{Baseline, atomic_rows, compare};
use crate::load::run_solos;
use crate::machine::{loadavg, machine_info, tool_versions};
use crate::pgbench::Statement;
use crate::processes::{Backends, Running, bin_dir, sample_rss, stop_plugins};
use crate::redis::RedisCommand;
use crate::report::Markdown;
use crate::results::{Pair, Solo};
use crate::table::summary_table;

/// The cargo command that builds everything this suite runs.
const BUILD_HINT: &str =
    "cargo build --release --bins -p prism-postgres -p prism-redis -p prism-kafka -p prism-bench";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = plugin_bins(&args)?;
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

    let backends = Backends::start(&args, &bins).await?;
    let mut running = backends.start_plugins(&bins, &settings).await?;
    let stop_sampling = Arc::new(AtomicBool::new(false));
    sample_rss(
        running
            .values()
            .map(|r| (r.process.pid(), r.facts.max_rss_kb.clone()))
            .collect(),
        stop_sampling.clone(),
    );
    let (pairs, solos, kafka_note, timeseries) =
        scenarios(&args, &settings, &backends, &running, work.path()).await;
    let floor_rows = floor::measure(&args, &running, work.path()).await;
    let tracing_runs = tracing::measure(&args, &settings, &backends, &bins).await;
    if let Some(r) = running.get_mut("kafka") {
        r.facts.note = kafka_note.clone();
    }
    stop_sampling.store(true, Ordering::Relaxed);

    if args.keep_running {
        keep_running(&running).await?;
    }
    let facts = stop_plugins(running).await?;
    drop(backends);

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
        timeseries: &timeseries,
        floor: &floor_rows,
        tracing: &tracing_runs,
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

/// The directory of the plugin binaries, once the wanted ones are there.
fn plugin_bins(args: &Args) -> anyhow::Result<PathBuf> {
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
    Ok(bins)
}

/// Every scenario, in order: the gRPC floor, Redis and PostgreSQL against
/// their tools, the plugin-only ones, then Kafka. Returns the comparisons,
/// the plugin-only results, why Kafka was not measured (if it was not) and
/// the TimeSeries rows.
async fn scenarios(
    args: &Args,
    settings: &Settings,
    backends: &Backends,
    running: &BTreeMap<&'static str, Running>,
    work: &Path,
) -> (Vec<Pair>, Vec<Solo>, String, Vec<timeseries::TsRow>) {
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
    let mut solos = run_solos(args, running, floor_runs).await;
    let mut pairs = Vec::new();
    if let (Some(r), Some(redis)) = (running.get("redis"), &backends.redis) {
        let port = redis.port();
        let redis_benchmark = |command| Baseline::RedisBenchmark { port, command };
        let table = levels.iter().flat_map(|&n| {
            [
                (
                    "Get",
                    Scenario::CacheGet,
                    n,
                    redis_benchmark(RedisCommand::Get),
                ),
                (
                    "Set",
                    Scenario::CacheSet,
                    n,
                    redis_benchmark(RedisCommand::Set),
                ),
            ]
        });
        let (incr, cas) = (RedisCommand::Incr, RedisCommand::Cas);
        let atomics = atomic_rows(first_level, redis_benchmark(incr), redis_benchmark(cas));
        let table = table.chain(atomics);
        pairs.extend(compare(args, "Redis", r, table).await);
    }
    if let (Some(r), Some(pg)) = (running.get("postgres"), &backends.pg) {
        let pgbench = |statement| Baseline::Pgbench {
            pg,
            work,
            statement,
        };
        let table = levels.iter().flat_map(|&n| {
            [
                ("Get", Scenario::KvGet, n, pgbench(Statement::Get)),
                ("Set", Scenario::KvSet, n, pgbench(Statement::Set)),
            ]
        });
        let (increment, cas) = (Statement::Increment, Statement::Cas);
        let atomics = atomic_rows(first_level, pgbench(increment), pgbench(cas));
        let table = table.chain(atomics);
        pairs.extend(compare(args, "PostgreSQL", r, table).await);
    }
    solos.extend(
        run_solos(
            args,
            running,
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
    let mut ts_rows = Vec::new();
    if let (Some(r), Some(kafka)) = (running.get("kafka"), &backends.kafka) {
        match kafka::publish_served(r.port).await {
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
                pairs.extend(compare(args, "Kafka", r, table).await);
                let events = if args.quick { 20_000 } else { 200_000 };
                let extra = &settings.kafka_direct;
                ts_rows = timeseries::run(r.port, &bootstrap, extra, events).await;
            }
            Err(e) => kafka_note = e,
        }
    } else if args.wants("kafka") {
        kafka_note = if backends.kafka_bin.exists() {
            "prism-kafka or its broker did not start".to_string()
        } else {
            format!("{} not built", backends.kafka_bin.display())
        };
    }
    (pairs, solos, kafka_note, ts_rows)
}

/// `--keep-running`: prints where the plugins are and waits for Ctrl-C.
async fn keep_running(running: &BTreeMap<&'static str, Running>) -> anyhow::Result<()> {
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
    Ok(())
}
