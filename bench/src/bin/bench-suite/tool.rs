//! Running a backend's own benchmark tool as a child process, with the CPU
//! counters around it (once waited for, a child's CPU time shows in this
//! process's `children` counter).

use prism_bench::cpu::{Snapshot, Window};

/// Runs a direct tool to completion; its output and the CPU counters just
/// before and after (once waited for, the tool's CPU time shows in this
/// process's `children` counter).
pub(crate) async fn run_tool(
    cmd: &mut tokio::process::Command,
) -> anyhow::Result<(std::process::Output, Option<(Snapshot, Snapshot)>)> {
    let start = Snapshot::now();
    let out = cmd.output().await?;
    Ok((out, start.zip(Snapshot::now())))
}

/// The CPU cost of a direct tool's run of `ops` operations, with the
/// tool's own share.
pub(crate) fn tool_cpu(window: Option<(Snapshot, Snapshot)>, ops: u64) -> Option<(Window, f64)> {
    let (start, end) = window?;
    let w = Window::between(start, end, ops)?;
    Some((w, w.children_us))
}
