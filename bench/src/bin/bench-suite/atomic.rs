//! The atomic baselines: what the plugins' Increment and CompareAndSwap do,
//! run by the backends' own tools on the same keys, in the same run.
//!
//! - Redis: `redis-benchmark INCR` on the counters' keys (the plugin's
//!   Increment is a script around `INCRBY`), and `redis-benchmark EVAL` of
//!   the plugin's own compare-and-swap script (`prism_redis::SWAP_SCRIPT_SOURCE`);
//! - PostgreSQL: `pgbench -M prepared` scripts running the plugin's own
//!   statements (`prism_postgres::increment_statement` / `swap_statement`).

use std::path::Path;

use prism_bench::Scenario;
use prism_testkit::Postgres;

use crate::args::{Args, NAMESPACE, PG_SCHEMA, PG_TABLE, REDIS_PREFIX};
use crate::baseline::{Baseline, Comparison};
use crate::pgbench::run_script;
use crate::redis::redis_benchmark;
use crate::results::Measure;

/// The Increment and CAS rows of Redis at `in_flight`.
pub(crate) fn redis_rows<'a>(port: u16, in_flight: usize) -> [Comparison<'a>; 2] {
    [
        (
            "Increment",
            Scenario::KvIncrement,
            in_flight,
            Baseline::RedisAtomic { port, cas: false },
        ),
        (
            "CAS",
            Scenario::KvCas,
            in_flight,
            Baseline::RedisAtomic { port, cas: true },
        ),
    ]
}

/// The Increment and CAS rows of PostgreSQL at `in_flight`.
pub(crate) fn pg_rows<'a>(
    pg: &'a Postgres,
    work: &'a Path,
    in_flight: usize,
) -> [Comparison<'a>; 2] {
    [
        (
            "Increment",
            Scenario::KvIncrement,
            in_flight,
            Baseline::PgbenchAtomic {
                pg,
                work,
                cas: false,
            },
        ),
        (
            "CAS",
            Scenario::KvCas,
            in_flight,
            Baseline::PgbenchAtomic {
                pg,
                work,
                cas: true,
            },
        ),
    ]
}

/// `redis-benchmark INCR` (or `EVAL` of the swap script) on the plugin's
/// keys, calibrated to take about the suite's duration.
pub(crate) async fn redis_direct(
    args: &Args,
    port: u16,
    cas: bool,
    in_flight: usize,
) -> anyhow::Result<Measure> {
    let value = "x".repeat(args.value_size);
    let counter = format!("{REDIS_PREFIX}{NAMESPACE}:counter-__rand_int__");
    let item = format!("{REDIS_PREFIX}{NAMESPACE}:bench-__rand_int__");
    // On one line: redis-benchmark's CSV names the test by its command line,
    // which must stay one line to be parsed (Lua needs no newlines).
    let script = prism_redis::SWAP_SCRIPT_SOURCE.replace('\n', " ");
    let command: Vec<&str> = if cas {
        vec![
            "EVAL", &script, "1", &item, "value", &value, "write", &value, "0",
        ]
    } else {
        vec!["INCR", &counter]
    };
    let calibration = redis_benchmark(port, in_flight, 20_000, args.keys, &command).await?;
    let n = (calibration.ops_per_sec * args.duration().as_secs_f64()).max(20_000.0) as u64;
    redis_benchmark(port, in_flight, n, args.keys, &command).await
}

/// The pgbench script running the plugin's Increment(+1) of a random
/// counter, or its CompareAndSwap of a random key from the run's value to
/// itself.
pub(crate) fn pgbench_atomic_script(cas: bool, keys: u64, value_size: usize) -> String {
    let value = format!("decode(repeat('78', {value_size}), 'hex')");
    let body = if cas {
        prism_postgres::swap_statement(PG_SCHEMA, PG_TABLE)
            .replace("$1", &format!("'{NAMESPACE}'"))
            .replace("$2", "'bench-' || lpad(:k::text, 12, '0')")
            .replace("$3", &value)
            .replace("$4", &value)
            .replace("$5", "0")
    } else {
        prism_postgres::increment_statement(PG_SCHEMA, PG_TABLE)
            .replace("$1", &format!("'{NAMESPACE}'"))
            .replace("$2", "'counter-' || lpad(:k::text, 12, '0')")
            .replace("$3", "1")
            .replace("$4", "0")
    };
    format!("\\set k random(0, {})\n{body};\n", keys.saturating_sub(1))
}

/// `pgbench` running [`pgbench_atomic_script`].
pub(crate) async fn pgbench_direct(
    args: &Args,
    pg: &Postgres,
    cas: bool,
    in_flight: usize,
    work: &Path,
) -> anyhow::Result<Measure> {
    let name = if cas { "cas" } else { "increment" };
    let script = pgbench_atomic_script(cas, args.keys, args.value_size);
    run_script(args, pg, name, &script, in_flight, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_atomic_scripts_bind_every_parameter() {
        for cas in [false, true] {
            let script = pgbench_atomic_script(cas, 100, 8);
            let unbound = (1..=5).any(|i| script.contains(&format!("${i}")));
            assert!(!unbound, "a parameter left unbound: {script}");
            assert!(script.starts_with("\\set k random(0, 99)\n"), "{script}");
        }
        assert!(pgbench_atomic_script(false, 1, 1).contains("'counter-'"));
        assert!(pgbench_atomic_script(true, 1, 1).contains("FOR UPDATE"));
    }
}
