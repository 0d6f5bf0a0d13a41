//! The PostgreSQL baseline: `pgbench -M prepared` running prism-postgres's
//! own Get, Set, Increment or CompareAndSwap statement (from the
//! `prism_postgres` crate, so the two can never drift apart) on the plugin's
//! table, namespace and key format.

use std::path::Path;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use prism_postgres::{get_statement, increment_statement, set_statement, swap_statement};
use prism_testkit::Postgres;

use crate::args::{Args, NAMESPACE, PG_SCHEMA, PG_TABLE};
use crate::results::Measure;
use crate::tool::{run_tool, tool_cpu};

/// The prism-postgres statement a pgbench script runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Statement {
    Get,
    /// A Set without expiry.
    Set,
    /// Increment(+1) of a counter.
    Increment,
    /// CompareAndSwap of a key from the run's value to itself.
    Cas,
}

impl Statement {
    /// The script's file name (and the latency logs' prefix).
    fn name(self) -> &'static str {
        match self {
            Statement::Get => "get",
            Statement::Set => "set",
            Statement::Increment => "increment",
            Statement::Cas => "cas",
        }
    }

    /// The pgbench script doing what prism-postgres does for this call on
    /// one of `keys` keys chosen uniformly at random, with a
    /// `value_size`-byte value.
    pub(crate) fn script(self, keys: u64, value_size: usize) -> String {
        let value = format!("decode(repeat('78', {value_size}), 'hex')");
        // The statement, its key's prefix (as prism-bench writes keys: the
        // prefix + 12 digits) and its parameters after namespace and key.
        let (sql, key, rest) = match self {
            Statement::Get => (get_statement(PG_SCHEMA, PG_TABLE), "bench", vec![]),
            // The value and a TTL of 0 (none).
            Statement::Set => (
                set_statement(PG_SCHEMA, PG_TABLE),
                "bench",
                vec![&*value, "0"],
            ),
            // The delta and a TTL of 0.
            Statement::Increment => (
                increment_statement(PG_SCHEMA, PG_TABLE),
                "counter",
                vec!["1", "0"],
            ),
            // Expected value, new value and a TTL of 0.
            Statement::Cas => (
                swap_statement(PG_SCHEMA, PG_TABLE),
                "bench",
                vec![&*value, &*value, "0"],
            ),
        };
        // The plugin binds its parameters; the script puts the same values
        // in their place.
        let namespace = format!("'{NAMESPACE}'");
        let key = format!("'{key}-' || lpad(:k::text, 12, '0')");
        let params = [namespace.as_str(), key.as_str()].into_iter().chain(rest);
        let mut body = sql;
        for (i, value) in params.enumerate() {
            body = body.replace(&format!("${}", i + 1), value);
        }
        format!("\\set k random(0, {})\n{body};\n", keys.saturating_sub(1))
    }
}

/// `pgbench` running `statement` at `in_flight` connections for the suite's
/// duration, in `work` (script and latency logs).
pub(crate) async fn direct(
    args: &Args,
    pg: &Postgres,
    statement: Statement,
    in_flight: usize,
    work: &Path,
) -> anyhow::Result<Measure> {
    let script = statement.script(args.keys, args.value_size);
    run_script(args, pg, statement.name(), &script, in_flight, work).await
}

/// `pgbench -M prepared` running `script` (saved as `<name>.sql` in `work`)
/// at `in_flight` connections for the suite's duration.
async fn run_script(
    args: &Args,
    pg: &Postgres,
    name: &str,
    script: &str,
    in_flight: usize,
    work: &Path,
) -> anyhow::Result<Measure> {
    let tool = prism_testkit::tool("pgbench")?;
    let path = work.join(format!("{name}.sql"));
    std::fs::write(&path, script)?;
    let script = path;
    let prefix = work.join(format!("log-{name}-{in_flight}"));
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
    let tps = summary::<f64>(&stdout, "tps = ")
        .with_context(|| format!("no tps in pgbench output: {stdout}"))?;
    let processed = summary(&stdout, "number of transactions actually processed: ")
        .unwrap_or((tps * args.duration().as_secs_f64()) as u64);
    let failed = summary(&stdout, "number of failed transactions: ").unwrap_or(0);
    let hist = latencies(work, &prefix)?;
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

/// The number after `label` on the line of pgbench's summary starting with it.
fn summary<T: std::str::FromStr>(stdout: &str, label: &str) -> Option<T> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The transaction latencies (µs) of pgbench's logs named `prefix*` in
/// `work`, which are removed once read.
fn latencies(work: &Path, prefix: &Path) -> anyhow::Result<Histogram<u64>> {
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
    Ok(hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_run_the_plugins_statements_with_every_parameter_filled_in() {
        let set = Statement::Set.script(10_000, 100);
        assert!(set.starts_with("\\set k random(0, 9999)\n"), "{set}");
        assert!(set.contains("INSERT INTO \"public\".\"prism_kv\""), "{set}");
        assert!(
            set.contains("ON CONFLICT (namespace, key_md5) DO UPDATE"),
            "{set}"
        );
        assert!(set.contains("decode(repeat('78', 100), 'hex')"), "{set}");
        let get = Statement::Get.script(10, 100);
        assert!(
            get.contains("SELECT value FROM \"public\".\"prism_kv\""),
            "{get}"
        );
        assert!(get.contains("namespace = 'bench'"), "{get}");
        for script in [set, get] {
            assert!(!script.contains('$'), "a parameter left unbound: {script}");
            assert!(script.trim_end().ends_with(';'), "{script}");
        }
    }

    #[test]
    fn the_atomic_scripts_bind_every_parameter() {
        for statement in [Statement::Increment, Statement::Cas] {
            let script = statement.script(100, 8);
            let unbound = (1..=5).any(|i| script.contains(&format!("${i}")));
            assert!(!unbound, "a parameter left unbound: {script}");
            assert!(script.starts_with("\\set k random(0, 99)\n"), "{script}");
        }
        assert!(Statement::Increment.script(1, 1).contains("'counter-'"));
        assert!(Statement::Cas.script(1, 1).contains("FOR UPDATE"));
    }
}
