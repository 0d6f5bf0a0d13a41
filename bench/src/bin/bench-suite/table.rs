//! Results as text: the line printed after each scenario, the summary
//! table at the end, and the cells the markdown report shares with them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::fmt::{affix, dash, mib, scenario_name};
use crate::results::{Measure, Pair, ProcessFacts, Solo};

/// Ops/s, or a dash.
pub(crate) fn ops(m: &Option<Measure>) -> String {
    dash(m.as_ref().map(|m| format!("{:.0}", m.ops_per_sec)))
}

/// "p50 / p99" in ms, or a dash.
pub(crate) fn lat(m: &Option<Measure>) -> String {
    dash(m.as_ref().map(|m| {
        format!(
            "{:.2} / {:.2}",
            m.p50_us as f64 / 1e3,
            m.p99_us as f64 / 1e3
        )
    }))
}

/// "plugin / client" CPU µs per op.
pub(crate) fn cpu(m: Option<&Measure>) -> String {
    match m {
        Some(Measure {
            plugin_cpu_us: Some(p),
            client_cpu_us: Some(c),
            ..
        }) => format!("{p:.0} / {c:.0}"),
        _ => "–".to_string(),
    }
}

/// The line printed after a comparison.
pub(crate) fn pair_line(p: &Pair) -> String {
    format!(
        "   {:<10} {:<3} @{:<3} plugin {:>8} ops/s (p50/p99 {:>13} ms, CPU µs/op plugin/client {}) | direct {:>8} ops/s ({:>13} ms) | ratio {} | added p99 {}{}{}",
        p.backend,
        p.op,
        p.in_flight,
        ops(&p.plugin),
        lat(&p.plugin),
        cpu(p.plugin.as_ref()),
        ops(&p.direct),
        lat(&p.direct),
        p.ratio_text(),
        p.added_p99_text(" ms"),
        match p.plugin.as_ref().map(|m| m.errors) {
            Some(e) if e > 0 => format!(" | plugin errors {e}"),
            _ => String::new(),
        },
        affix(" | ", &p.note, "")
    )
}

/// The line printed after a plugin-only scenario.
pub(crate) fn solo_line(s: &Solo) -> String {
    match &s.result {
        Ok(m) => format!(
            "   prism-{:<9} {:<12} @{:<3} {:>8.0} ops/s  p50 {:.2} ms  p99 {:.2} ms  CPU µs/op plugin/client {}  errors {}{}",
            s.plugin,
            scenario_name(s.scenario),
            s.in_flight,
            m.ops_per_sec,
            m.p50_us as f64 / 1e3,
            m.p99_us as f64 / 1e3,
            cpu(Some(m)),
            m.errors,
            affix(" ", &m.detail, "")
        ),
        Err(e) => format!(
            "   prism-{:<9} {:<12} @{:<3} failed: {e}",
            s.plugin,
            scenario_name(s.scenario),
            s.in_flight
        ),
    }
}

/// The table printed at the end of the run.
pub(crate) fn summary_table(pairs: &[Pair], solos: &[Solo], facts: &[ProcessFacts]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<4} {:>9} {:>11} {:>11} {:>6} {:>15} {:>15} {:>10}",
        "backend",
        "op",
        "in flight",
        "plugin/s",
        "direct/s",
        "ratio",
        "plugin p50/p99",
        "direct p50/p99",
        "added p99"
    );
    for p in pairs {
        let _ = writeln!(
            out,
            "{:<10} {:<4} {:>9} {:>11} {:>11} {:>6} {:>15} {:>15} {:>10}",
            p.backend,
            p.op,
            p.in_flight,
            ops(&p.plugin),
            ops(&p.direct),
            p.ratio_text(),
            lat(&p.plugin),
            lat(&p.direct),
            p.added_p99_text("ms"),
        );
    }
    for s in solos {
        let _ = writeln!(out, "{}", solo_line(s).trim_start());
    }
    for f in facts {
        let _ = writeln!(
            out,
            "prism-{:<9} start→SERVING first {} ms, restart {} ms; idle RSS {}; max RSS {}",
            f.name,
            f.first_start(""),
            f.restart(""),
            mib(f.idle_rss_kb),
            mib(Some(f.max_rss_kb.load(Ordering::Relaxed)))
        );
    }
    out
}
