//! The direct baselines ([`Baseline`]: the backend's own tool doing what one
//! plugin scenario does) and the comparisons of one backend, each a plugin
//! scenario followed at once by its baseline at the same concurrency.

use std::path::Path;

use prism_bench::Scenario;
use prism_testkit::Postgres;

use crate::args::Args;
use crate::load::run_plugin;
use crate::pgbench::Statement;
use crate::processes::Running;
use crate::redis::RedisCommand;
use crate::results::{Measure, Pair};
use crate::table::pair_line;
use crate::{kafka, pgbench, redis};

/// The backend's own tool doing what one plugin scenario does.
#[derive(Clone, Copy)]
pub(crate) enum Baseline<'a> {
    /// `redis-benchmark` running one command on the plugin's keys.
    RedisBenchmark { port: u16, command: RedisCommand },
    /// `pgbench` running one of the plugin's statements.
    Pgbench {
        pg: &'a Postgres,
        work: &'a Path,
        statement: Statement,
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
    pub(crate) fn tool(self) -> &'static str {
        match self {
            Baseline::RedisBenchmark { command, .. } => command.tool(),
            Baseline::Pgbench { .. } => "pgbench -M prepared",
            Baseline::Librdkafka { .. } => "librdkafka producer (rdkafka)",
        }
    }

    /// Runs the baseline at `in_flight`.
    pub(crate) async fn run(self, args: &Args, in_flight: usize) -> anyhow::Result<Measure> {
        match self {
            Baseline::RedisBenchmark { port, command } => {
                redis::direct(args, port, command, in_flight).await
            }
            Baseline::Pgbench {
                pg,
                work,
                statement,
            } => pgbench::direct(args, pg, statement, in_flight, work).await,
            Baseline::Librdkafka {
                bootstrap,
                extra,
                end_to_end,
            } => kafka::direct(args, bootstrap, extra, in_flight, end_to_end).await,
        }
    }
}

/// One row of a backend's comparison table: the report's op name, the plugin
/// scenario, the requests in flight, and the direct baseline.
pub(crate) type Comparison<'a> = (&'static str, Scenario, usize, Baseline<'a>);

/// The Increment and CAS rows of one backend at `in_flight`: the plugin's
/// atomics against the backend's tool running the same operations
/// (`redis-benchmark` INCR and EVAL of the plugin's script, `pgbench` of the
/// plugin's statements) on the same keys.
pub(crate) fn atomic_rows<'a>(
    in_flight: usize,
    increment: Baseline<'a>,
    cas: Baseline<'a>,
) -> [Comparison<'a>; 2] {
    [
        ("Increment", Scenario::KvIncrement, in_flight, increment),
        ("CAS", Scenario::KvCas, in_flight, cas),
    ]
}

/// Runs each comparison of one backend in order: the plugin scenario, then
/// right after it the direct baseline at the same concurrency.
pub(crate) async fn compare<'a>(
    args: &Args,
    backend: &'static str,
    plugin: &Running,
    table: impl IntoIterator<Item = Comparison<'a>>,
) -> Vec<Pair> {
    let mut pairs = Vec::new();
    for (op, scenario, in_flight, baseline) in table {
        let measured = run_plugin(args, plugin, scenario, in_flight).await;
        let direct = baseline.run(args, in_flight).await;
        let pair = Pair::new(
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
