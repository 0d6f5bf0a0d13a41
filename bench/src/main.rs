//! `prism-bench` command line: one scenario against one running plugin.
//!
//! ```text
//! prism-bench --target http://localhost:9092 --scenario cache-get -c 4 -m 16 -d 10s
//! ```

use std::time::Duration;

use clap::Parser;
use prism_bench::{Options, Scenario, run};

/// Load generator for Prism plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Plugin address.
    #[arg(long, default_value = "http://localhost:9090")]
    target: String,
    /// Scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// HTTP/2 connections.
    #[arg(short = 'c', long, default_value_t = 4)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(short = 'm', long, default_value_t = 16)]
    concurrency: usize,
    /// Measured duration (e.g. 10s).
    #[arg(short = 'd', long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many requests instead of a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// Untimed warm-up.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Value / payload size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Keys per BatchGet (kv-batch).
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Namespace header for KeyValue scenarios.
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Topic for pub/sub scenarios.
    #[arg(long, default_value = "prism-bench")]
    topic: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Options {
        target: args.target,
        scenario: args.scenario,
        connections: args.connections.max(1),
        concurrency: args.concurrency.max(1),
        duration: args.duration,
        requests: args.requests,
        warmup: args.warmup,
        value_size: args.value_size,
        keys: args.keys.max(1),
        batch_size: args.batch_size.max(1),
        namespace: args.namespace,
        topic: args.topic,
    };
    let report = run(opts, |elapsed, done| {
        if elapsed.is_zero() {
            return;
        }
        eprint!(
            "\r  {:>4}s  {:>10} requests  {:>10.0} ops/s ",
            elapsed.as_secs(),
            done,
            done as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    })
    .await?;
    eprintln!();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.line());
    }
    Ok(())
}
