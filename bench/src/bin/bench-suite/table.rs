//! Results as text: the line printed after each scenario, and the tables
//! (comparisons, plugin-only scenarios, processes) that the summary at the
//! end and the markdown report both render.

use std::sync::atomic::Ordering;

use crate::fmt::{affix, dash, mib, mib_bytes, scenario_name};
use crate::grid::Grid;
use crate::results::{Measure, Pair, ProcessFacts, Solo};

/// Ops/s, or a dash.
pub(crate) fn ops(m: &Option<Measure>) -> String {
    dash(m.as_ref().map(|m| format!("{:.0}", m.ops_per_sec)))
}

/// "p50 / p99" in ms, or a dash.
pub(crate) fn lat(m: &Option<Measure>) -> String {
    dash(
        m.as_ref()
            .map(|m| format!("{} / {}", millis(m.p50_us), millis(m.p99_us))),
    )
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
            "   prism-{:<9} {:<12} @{:<3} {:>8.0} ops/s  p50 {} ms  p99 {} ms  CPU µs/op plugin/client {}  errors {}{}",
            s.plugin,
            scenario_name(s.scenario),
            s.in_flight,
            m.ops_per_sec,
            millis(m.p50_us),
            millis(m.p99_us),
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

/// The plugin-vs-direct comparisons; with `detail` also the CPU per
/// operation, the plugin's errors and the direct tool (the report's columns).
pub(crate) fn comparisons(pairs: &[Pair], detail: bool) -> Grid {
    let mut grid = Grid::new(
        "| backend | op | in flight | plugin ops/s | direct ops/s | **plugin / direct** | plugin p50 / p99 ms | direct p50 / p99 ms | added p99 |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    );
    if detail {
        grid.add_columns(
            "| CPU µs/op plugin / client | plugin errors | direct tool |",
            "|--:|--:|---|",
        );
    }
    for p in pairs {
        let mut cells = vec![
            p.backend.to_string(),
            format!("{} (`{}`)", p.op, scenario_name(p.scenario)),
            p.in_flight.to_string(),
            ops(&p.plugin),
            ops(&p.direct),
            format!("**{}**", p.ratio_text()),
            lat(&p.plugin),
            lat(&p.direct),
            p.added_p99_text(" ms"),
        ];
        if detail {
            cells.extend([
                cpu(p.plugin.as_ref()),
                dash(p.plugin.as_ref().map(Measure::errors_text)),
                format!("{}{}", p.direct_tool, affix(" (", p.note.trim(), ")")),
            ]);
        }
        grid.row(cells);
    }
    grid
}

/// The plugin-only scenarios.
pub(crate) fn solos(solos: &[Solo]) -> Grid {
    let mut grid = Grid::new(
        "| plugin | scenario | in flight | ops/s | p50 ms | p99 ms | p99.9 ms | CPU µs/op plugin / client | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    );
    for s in solos {
        let mut cells = vec![
            format!("prism-{}", s.plugin),
            format!("`{}`", scenario_name(s.scenario)),
            s.in_flight.to_string(),
        ];
        match &s.result {
            Ok(m) => cells.extend([
                format!("{:.0}", m.ops_per_sec),
                millis(m.p50_us),
                millis(m.p99_us),
                millis(m.p999_us),
                cpu(Some(m)),
                m.errors_text(),
            ]),
            Err(e) => cells.push(format!("failed: {e}")),
        }
        grid.row(cells);
    }
    grid
}

/// Start times, RSS, binary and image sizes of each plugin.
pub(crate) fn processes(facts: &[ProcessFacts]) -> Grid {
    let mut grid = Grid::new(
        "| plugin | start → SERVING, first | start → SERVING, restart (median of 2) | idle RSS | max RSS under load | release binary | image |",
        "|---|--:|--:|--:|--:|--:|--:|",
    );
    for f in facts {
        grid.row([
            format!("prism-{}", f.name),
            f.first_start(" ms"),
            f.restart(" ms"),
            mib(f.idle_rss_kb),
            mib(Some(f.max_rss_kb.load(Ordering::Relaxed))),
            dash(f.binary_bytes.map(mib_bytes)),
            f.image_bytes
                .map(mib_bytes)
                .unwrap_or("not built (`make images`, then `make sizes`)".into()),
        ]);
    }
    grid
}

/// The tables printed at the end of the run.
pub(crate) fn summary_table(pairs: &[Pair], solos: &[Solo], facts: &[ProcessFacts]) -> String {
    [
        comparisons(pairs, false),
        self::solos(solos),
        processes(facts),
    ]
    .iter()
    .map(Grid::text)
    .collect::<Vec<_>>()
    .join("\n")
}

/// Microseconds in ms with two decimals.
pub(crate) fn millis(us: u64) -> String {
    format!("{:.2}", us as f64 / 1e3)
}
