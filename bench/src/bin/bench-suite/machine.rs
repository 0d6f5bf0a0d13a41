//! The machine and tool versions a report names: CPUs, memory, kernel,
//! load, and the versions of rustc and the backends' servers and tools.

use std::path::Path;

/// nproc, memory, CPU model, kernel.
pub(crate) fn machine_info() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "?".to_string());
    let mem_kb = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    let load = loadavg();
    vec![
        (
            "cpus (nproc)",
            std::thread::available_parallelism()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into()),
        ),
        ("cpu model", model),
        (
            "memory",
            mem_kb
                .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
                .unwrap_or("?".into()),
        ),
        ("kernel", kernel),
        ("load at start", load),
    ]
}

/// The 1, 5 and 15 minute load averages: above the CPU count, other work
/// competed with the benchmark.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// rustc, redis-server, redis-benchmark, postgres and pgbench versions.
pub(crate) async fn tool_versions() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    out.push(("rustc", command_line(Path::new("rustc"), &["-V"]).await));
    for (label, name, arg) in [
        ("redis-server", "redis-server", "--version"),
        ("redis-benchmark", "redis-benchmark", "--version"),
        ("postgres", "postgres", "--version"),
        ("pgbench", "pgbench", "--version"),
    ] {
        let v = match prism_testkit::tool(name) {
            Ok(path) => command_line(&path, &[arg]).await,
            Err(_) => "not installed".to_string(),
        };
        out.push((label, v));
    }
    out
}

/// First line of a command's output, or `?`.
pub(crate) async fn command_line(program: &Path, args: &[&str]) -> String {
    match tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
    {
        Ok(out) => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("?")
                .trim()
                .to_string()
        }
        Err(_) => "?".to_string(),
    }
}
