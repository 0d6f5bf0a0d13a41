//! Driving a plugin: one load-generator scenario (`prism_bench::run`)
//! against a running plugin, with the CPU counters of its measured window,
//! and the plugin-only scenarios in a row.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use prism_bench::cpu::{self, Snapshot, Window};
use prism_bench::{Options, Scenario};

use crate::args::{Args, NAMESPACE, TOPIC};
use crate::processes::Running;
use crate::results::{Measure, Solo};
use crate::table::solo_line;

/// Runs one load-generator scenario against a plugin.
pub(crate) async fn run_plugin(
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
        topic: TOPIC.to_string(),
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

/// Runs plugin-only scenarios `(plugin, scenario, in flight)` in order,
/// printing each result; plugins that are not running are skipped.
pub(crate) async fn run_solos(
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
