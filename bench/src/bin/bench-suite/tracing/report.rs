//! The tracing section of the report: every run's numbers, then each
//! variant's medians against tracing off, at saturation and at the fixed
//! rate.

use std::fmt::Write as _;

use super::{Collector, PACED_SHARE, ROUNDS, Run, VARIANTS, median_of, ops, rounds, values};
use crate::fmt::{dash, mib};
use crate::results::Measure;

/// RSS after each round, and the highest sampled in any, MiB.
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

/// The spread between the rounds of `f`: max − min.
fn spread(runs: &[&Run], f: impl Fn(&Measure) -> Option<f64>) -> Option<f64> {
    let values = values(runs, f);
    let max = values.iter().copied().reduce(f64::max)?;
    let min = values.iter().copied().reduce(f64::min)?;
    Some(max - min)
}

fn p99(m: &Measure) -> Option<f64> {
    Some(m.p99_us as f64 / 1e3)
}
fn cpu(m: &Measure) -> Option<f64> {
    m.plugin_cpu_us
}

/// Worse than off beyond noise: the median is further from off's median, in
/// the bad direction, than off's own spread between rounds or 10 % of off's
/// median, whichever is larger.
fn beyond_noise(
    off: &[&Run],
    v: &[&Run],
    f: fn(&Measure) -> Option<f64>,
    higher_worse: bool,
) -> Option<bool> {
    let (base, m) = (median_of(off, f)?, median_of(v, f)?);
    let band = spread(off, f)?.max(0.1 * base);
    let worse = if higher_worse { m - base } else { base - m };
    Some(worse > band)
}

/// The report section: every run, then each variant against "off", at
/// saturation and at the fixed rate.
pub(crate) fn markdown(runs: &[Run], md: &mut String) {
    if runs.is_empty() {
        return;
    }
    let in_flight = runs.first().map_or(0, |r| r.in_flight);
    let _ = writeln!(
        md,
        "## Tracing overhead (issue #18)\n\n\
         Release plugin, real backend, one scenario per fresh plugin process, variants interleaved \
         in {ROUNDS} rounds (every other one in reverse order); values are round 1 / 2 / 3. \
         Calls carry no `traceparent`: at `sample_ratio` 1 each is a new sampled trace (server span + \
         backend span), at 0 none is traced. Live collector: testkit's OTLP/gRPC receiver in the \
         load generator's process (its CPU counts as client CPU); down: a closed port; \
         black-holing: accepts TCP, never answers. Exporter settings are the defaults \
         (`max_queue_size` 2048, `export_timeout` 5 s). Plugin CPU per call: `/proc/<pid>/stat` \
         over the measured window, exporter thread included.\n\n\
         **At saturation**: {in_flight} calls in flight over the suite's connections (closed loop).\n"
    );
    section(runs, false, md);
    let _ = writeln!(
        md,
        "**At a fixed rate**: {:.0} % of the untraced plugin's median saturated ops/s of the same \
         run, offered open loop over the suite's connections whatever the answers take; latency \
         counts from when a call was due.\n",
        PACED_SHARE * 100.0
    );
    section(runs, true, md);
}

/// One table of runs (saturated or `paced`) and its comparison with "off".
fn section(runs: &[Run], paced: bool, md: &mut String) {
    let _ = writeln!(
        md,
        "| plugin | op | tracing | ops/s | p50 ms | p99 ms | plugin CPU µs/call | failed calls | RSS after, MiB | spans received |\n\
         |---|---|---|--:|--:|--:|--:|--:|--:|--:|"
    );
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in runs.iter().filter(|r| r.rate.is_some() == paced) {
        if !keys.contains(&(r.plugin, r.op)) {
            keys.push((r.plugin, r.op));
        }
    }
    for &(plugin, op) in &keys {
        for v in VARIANTS {
            let rs = rounds(runs, plugin, op, v.label, paced);
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
    against_off(runs, &keys, paced, md);
}

/// Each variant's median against "off": Δ ops/s, Δ CPU per call, Δ p99, and
/// what is worse beyond the noise of "off"; for a collector that is down or
/// black-holing also against the live collector (same spans, only the
/// collector differs).
fn against_off(runs: &[Run], keys: &[(&str, &str)], paced: bool, md: &mut String) {
    let _ = writeln!(
        md,
        "\nAgainst tracing off (medians of the rounds, spread = max − min; **beyond noise** = \
         worse than the baseline by more than the baseline's own spread or 10 % of it, whichever \
         is larger; the last column compares a dead collector with the live one):\n\n\
         | plugin | op | tracing | ops/s vs off | plugin CPU µs/call vs off | p99 ms vs off (spread) | worse than off beyond noise | worse than the live collector beyond noise |\n\
         |---|---|---|--:|--:|--:|---|---|"
    );
    for &(plugin, op) in keys {
        let off = rounds(runs, plugin, op, VARIANTS[0].label, paced);
        let live = rounds(runs, plugin, op, VARIANTS[2].label, paced);
        for v in &VARIANTS[1..] {
            let rs = rounds(runs, plugin, op, v.label, paced);
            if rs.is_empty() || off.is_empty() {
                continue;
            }
            let both = |f: fn(&Measure) -> Option<f64>| median_of(&off, f).zip(median_of(&rs, f));
            let rel = dash(both(ops).map(|(a, b)| format!("{:+.0} %", (b / a - 1.0) * 100.0)));
            let cpu = dash(both(cpu).map(|(a, b)| format!("{a:.1} → {b:.1} ({:+.1})", b - a)));
            let p99 = dash(
                both(p99)
                    .zip(spread(&off, p99).zip(spread(&rs, p99)))
                    .map(|((a, b), (sa, sb))| format!("{a:.2} (±{sa:.2}) → {b:.2} (±{sb:.2})")),
            );
            let dead = matches!(v.collector, Collector::Down | Collector::BlackHole);
            let _ = writeln!(
                md,
                "| prism-{plugin} | {op} | {} | {rel} | {cpu} | {p99} | {} | {} |",
                v.label,
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
