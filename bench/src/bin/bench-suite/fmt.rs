//! Small text helpers of the terminal lines and the markdown report: a dash
//! for a missing value, optional affixes, sizes in MiB, scenario names.

use prism_bench::Scenario;

/// The value, or a dash where there is none.
pub(crate) fn dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "–".to_string())
}

/// `text` between `before` and `after`, or nothing if `text` is empty.
pub(crate) fn affix(before: &str, text: &str, after: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{before}{text}{after}")
    }
}

/// The scenario's command-line name (`kv-get`, …).
pub(crate) fn scenario_name(s: Scenario) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{s:?}"))
}

/// The median of `values` (the upper one of an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// `bytes` in MiB.
pub(crate) fn mib_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// `kb` KiB in MiB, or a dash for none.
pub(crate) fn mib(kb: Option<u64>) -> String {
    match kb {
        Some(kb) if kb > 0 => format!("{:.1} MiB", kb as f64 / 1024.0),
        _ => "–".to_string(),
    }
}

/// A target's "met" cell.
pub(crate) fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// `text` indented two spaces (inside a markdown list item).
pub(crate) fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
