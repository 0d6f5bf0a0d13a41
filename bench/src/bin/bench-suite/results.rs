//! What a run measured: one side of a comparison ([`Measure`]), a
//! plugin-vs-direct comparison ([`Pair`]), a plugin-only scenario ([`Solo`])
//! and the facts of one plugin process ([`ProcessFacts`]).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prism_bench::cpu::Window;
use prism_bench::{Report, Scenario};

use crate::fmt::{dash, median};

/// Throughput and latency of one side of a comparison.
#[derive(Debug, Clone, Default)]
pub(crate) struct Measure {
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) p999_us: u64,
    pub(crate) errors: u64,
    pub(crate) detail: String,
    /// Plugin process CPU time per successful operation, µs (plugin runs only).
    pub(crate) plugin_cpu_us: Option<f64>,
    /// CPU time per successful operation of the client side, µs: the load
    /// generator on a plugin run, the direct tool on a direct one.
    pub(crate) client_cpu_us: Option<f64>,
    /// CPU time of the whole machine per successful operation, µs.
    pub(crate) machine_cpu_us: Option<f64>,
    /// Share of the machine's CPU time that was busy in the window (0–1).
    pub(crate) busy: Option<f64>,
}

impl Measure {
    /// A direct tool's result (no error detail); `cpu` is its window and
    /// `tool_us` the tool's share of it.
    pub(crate) fn direct(
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
    pub(crate) fn backend_cpu_us(&self) -> Option<f64> {
        Some(self.machine_cpu_us? - self.client_cpu_us? - self.plugin_cpu_us.unwrap_or(0.0))
    }

    /// The error count, or the errors by kind when there were any.
    pub(crate) fn errors_text(&self) -> String {
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
pub(crate) struct Pair {
    pub(crate) backend: &'static str,
    pub(crate) op: &'static str,
    pub(crate) scenario: Scenario,
    pub(crate) in_flight: usize,
    pub(crate) plugin: Option<Measure>,
    pub(crate) direct: Option<Measure>,
    pub(crate) direct_tool: &'static str,
    pub(crate) note: String,
}

impl Pair {
    /// A comparison from the plugin run's and the direct run's outcomes; a
    /// failed side is noted instead of measured.
    pub(crate) fn new(
        backend: &'static str,
        op: &'static str,
        scenario: Scenario,
        in_flight: usize,
        plugin: Result<Measure, String>,
        direct: anyhow::Result<Measure>,
        direct_tool: &'static str,
    ) -> Pair {
        let mut note = String::new();
        let plugin = measured("plugin", plugin, &mut note);
        let direct = measured("direct", direct, &mut note);
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

    pub(crate) fn ratio(&self) -> Option<f64> {
        match (&self.plugin, &self.direct) {
            (Some(p), Some(d)) if d.ops_per_sec > 0.0 => Some(p.ops_per_sec / d.ops_per_sec),
            _ => None,
        }
    }

    pub(crate) fn added_p99_ms(&self) -> Option<f64> {
        match (&self.plugin, &self.direct) {
            (Some(p), Some(d)) => Some((p.p99_us as f64 - d.p99_us as f64) / 1000.0),
            _ => None,
        }
    }

    pub(crate) fn ratio_text(&self) -> String {
        dash(self.ratio().map(|r| format!("{r:.2}")))
    }

    /// Added p99 in ms, `unit` after the number.
    pub(crate) fn added_p99_text(&self, unit: &str) -> String {
        dash(self.added_p99_ms().map(|v| format!("{v:+.2}{unit}")))
    }
}

/// The measure of one side (`name`), or `None` with why in `note`
/// (`{:#}`: an error's whole chain).
fn measured<E: std::fmt::Display>(
    name: &str,
    outcome: Result<Measure, E>,
    note: &mut String,
) -> Option<Measure> {
    match outcome {
        Ok(m) => Some(m),
        Err(e) => {
            note.push_str(&format!("{name}: {e:#}. "));
            None
        }
    }
}

/// A plugin-only scenario.
#[derive(Debug, Clone)]
pub(crate) struct Solo {
    pub(crate) plugin: &'static str,
    pub(crate) scenario: Scenario,
    pub(crate) in_flight: usize,
    pub(crate) result: Result<Measure, String>,
}

/// Process facts of one plugin.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessFacts {
    pub(crate) name: &'static str,
    pub(crate) version: String,
    pub(crate) start_first_ms: Option<f64>,
    pub(crate) start_restart_ms: Vec<f64>,
    pub(crate) idle_rss_kb: Option<u64>,
    pub(crate) max_rss_kb: Arc<AtomicU64>,
    pub(crate) binary_bytes: Option<u64>,
    pub(crate) image_bytes: Option<u64>,
    pub(crate) note: String,
}

impl ProcessFacts {
    /// First start → SERVING, `unit` after the number.
    pub(crate) fn first_start(&self, unit: &str) -> String {
        dash(self.start_first_ms.map(|v| format!("{v:.0}{unit}")))
    }

    /// Median restart → SERVING, `unit` after the number.
    pub(crate) fn restart(&self, unit: &str) -> String {
        dash(median(&self.start_restart_ms).map(|v| format!("{v:.0}{unit}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_side_is_noted_with_its_whole_error_chain_and_gives_no_ratio() {
        let plugin = Measure {
            ops_per_sec: 50.0,
            ..Measure::default()
        };
        let direct = Err(anyhow::anyhow!("connection refused").context("pgbench"));
        let pair = Pair::new(
            "postgres",
            "get",
            Scenario::KvGet,
            1,
            Ok(plugin),
            direct,
            "x",
        );
        assert!(pair.plugin.is_some() && pair.direct.is_none());
        assert_eq!(pair.note, "direct: pgbench: connection refused. ");
        assert_eq!(pair.ratio(), None);

        let both = Pair::new(
            "redis",
            "set",
            Scenario::KvSet,
            1,
            Err("no SERVING".into()),
            Ok(Measure::default()),
            "y",
        );
        assert_eq!(both.note, "plugin: no SERVING. ");
        assert!(both.plugin.is_none() && both.direct.is_some());
    }
}
