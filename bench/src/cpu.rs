//! CPU accounting for a measured window: the whole machine (`/proc/stat`),
//! this process and its reaped children (`/proc/self/stat`), and any other
//! process by pid. Throughput on a machine whose CPUs are all busy is set by
//! the CPU time each operation costs, so these counters explain a ratio:
//! where the time goes on the plugin path versus the direct tool's.

/// Clock ticks per second of `/proc` times (`USER_HZ`, 100 on Linux).
pub const USER_HZ: f64 = 100.0;

/// CPU counters at one instant, in `USER_HZ` ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Busy time summed over all CPUs (everything but idle and iowait).
    pub machine_busy: u64,
    /// Busy + idle time summed over all CPUs.
    pub machine_total: u64,
    /// This process: user + system time of all its threads.
    pub own: u64,
    /// This process's children that it has waited for (a direct tool such
    /// as `pgbench` once its run is over).
    pub children: u64,
}

impl Snapshot {
    /// The counters now; `None` where `/proc` cannot be read.
    pub fn now() -> Option<Snapshot> {
        let (machine_busy, machine_total) = machine_ticks()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let [utime, stime, cutime, cstime] = stat_times(&stat)?;
        Some(Snapshot {
            machine_busy,
            machine_total,
            own: utime + stime,
            children: cutime + cstime,
        })
    }
}

/// What one window cost, per completed operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// All CPUs' busy time per operation, µs: client, server, backend,
    /// kernel, and whatever else ran on the machine meanwhile.
    pub machine_us: f64,
    /// Share of the machine's CPU time that was busy (0–1).
    pub busy: f64,
    /// This process's own CPU time per operation, µs.
    pub own_us: f64,
    /// CPU time per operation of the children reaped in the window, µs.
    pub children_us: f64,
}

impl Window {
    /// The cost of `ops` operations between `start` and `end`; `None`
    /// without operations or without elapsed time.
    pub fn between(start: Snapshot, end: Snapshot, ops: u64) -> Option<Window> {
        let total = end.machine_total.checked_sub(start.machine_total)?;
        if ops == 0 || total == 0 {
            return None;
        }
        let busy = end.machine_busy.saturating_sub(start.machine_busy);
        Some(Window {
            machine_us: per_op(busy, ops),
            busy: busy as f64 / total as f64,
            own_us: per_op(end.own.saturating_sub(start.own), ops),
            children_us: per_op(end.children.saturating_sub(start.children), ops),
        })
    }
}

/// `ticks` of CPU time spread over `ops` operations, in µs each.
pub fn per_op(ticks: u64, ops: u64) -> f64 {
    ticks as f64 / USER_HZ * 1e6 / ops.max(1) as f64
}

/// User + system CPU time of a process (all threads), in ticks.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let [utime, stime, _, _] = stat_times(&stat)?;
    Some(utime + stime)
}

/// `utime stime cutime cstime` of a `/proc/<pid>/stat` line: its 14th to
/// 17th fields, i.e. the 12th to 15th after the parenthesised command name
/// (which may itself contain spaces and parentheses).
fn stat_times(stat: &str) -> Option<[u64; 4]> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || fields.next()?.parse::<u64>().ok();
    Some([next()?, next()?, next()?, next()?])
}

/// `(busy, total)` ticks of all CPUs from the `cpu` line of `/proc/stat`:
/// `user nice system idle iowait irq softirq steal [guest guest_nice]`
/// (guest time is already counted in user).
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine(stat.lines().next()?)
}

fn parse_machine(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.strip_prefix("cpu ")?.split_whitespace();
    let values: Vec<u64> = fields
        .by_ref()
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    let total: u64 = values.iter().sum();
    let idle = values[3] + values[4];
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_machine_line_without_double_counting_guests() {
        let line = "cpu  100 5 50 800 20 3 2 0 40 0";
        assert_eq!(parse_machine(line), Some((160, 980)));
        assert_eq!(parse_machine("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_machine("cpu  1 2"), None);
    }

    #[test]
    fn reads_times_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 2 1 20 0 1 0";
        assert_eq!(stat_times(stat), Some([7, 3, 2, 1]));
    }

    #[test]
    fn a_window_charges_each_operation_its_share() {
        let start = Snapshot {
            machine_busy: 100,
            machine_total: 400,
            own: 10,
            children: 0,
        };
        let end = Snapshot {
            machine_busy: 300,
            machine_total: 600,
            own: 60,
            children: 100,
        };
        // 200 busy ticks = 2 s of CPU over 1,000 ops = 2,000 µs each.
        let w = Window::between(start, end, 1_000).expect("window");
        assert_eq!(w.machine_us, 2_000.0);
        assert_eq!(w.busy, 1.0);
        assert_eq!(w.own_us, 500.0);
        assert_eq!(w.children_us, 1_000.0);
        assert_eq!(Window::between(start, end, 0), None);
        assert!(Snapshot::now().is_some(), "/proc is readable here");
    }
}
