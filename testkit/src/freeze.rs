//! [`FrozenTree`]: freezes a process and all its descendants with SIGSTOP and
//! thaws them with SIGCONT (or kills them all, a crash). A network stall to a server that forks per
//! connection (PostgreSQL: one backend process per session) needs the whole
//! tree frozen; stopping only the parent leaves open connections answered.

use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::process::send_signal;

/// A frozen process tree; [`thaw`](FrozenTree::thaw) (or drop) resumes it.
#[derive(Debug)]
pub struct FrozenTree {
    /// Root first, then descendants in the order they were frozen.
    pids: Vec<u32>,
}

impl FrozenTree {
    /// Sends SIGSTOP to `root`, then to its descendants until no unfrozen
    /// one is left (the root is stopped first so it cannot fork new ones).
    pub fn freeze(root: u32) -> Result<FrozenTree> {
        send_signal(root, Signal::SIGSTOP)?;
        let mut tree = FrozenTree { pids: vec![root] };
        loop {
            let new: Vec<u32> = descendants(root)
                .into_iter()
                .filter(|pid| !tree.pids.contains(pid))
                .collect();
            if new.is_empty() {
                return Ok(tree);
            }
            for pid in new {
                // A child may exit between the scan and the signal.
                if send_signal(pid, Signal::SIGSTOP).is_ok() {
                    tree.pids.push(pid);
                }
            }
        }
    }

    /// Freezes the tree of the PostgreSQL server whose data directory is
    /// `data_dir` (the postmaster's pid is the first line of
    /// `postmaster.pid`).
    pub fn freeze_postgres(data_dir: &Path) -> Result<FrozenTree> {
        let file = data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
        let pid = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                Error::io(
                    format!("parsing {}", file.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "no pid on line 1"),
                )
            })?;
        Self::freeze(pid)
    }

    /// The frozen pids, root first.
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Kills every frozen process with SIGKILL (a crash of the whole server:
    /// nothing gets to run a shutdown path). The parent of the root still has
    /// to reap it (for a testkit server: its `stop`, which then returns the
    /// kill status).
    pub fn kill(mut self) -> Result<()> {
        let mut first_error = None;
        for pid in std::mem::take(&mut self.pids) {
            match send_signal(pid, Signal::SIGKILL) {
                // Already gone is what the kill is for: a child that exited
                // before the freeze stays a zombie only while its frozen
                // parent lives; once the root is killed, init reaps it.
                Ok(())
                | Err(Error::Signal {
                    source: Errno::ESRCH,
                    ..
                }) => {}
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Resumes every frozen process (descendants first, the root last).
    pub fn thaw(mut self) -> Result<()> {
        self.resume_all()
    }

    fn resume_all(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(pid) = self.pids.pop() {
            if let Err(err) = send_signal(pid, Signal::SIGCONT) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for FrozenTree {
    fn drop(&mut self) {
        let _ = self.resume_all();
    }
}

/// Every live descendant of `root`, from `/proc/<pid>/stat`.
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may contain spaces and ')'.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn freezes_and_thaws_a_child_tree() {
        // sh forks a sleep: both must be stopped, then both resumed.
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .kill_on_drop(true)
            .spawn()
            .expect("sh");
        let root = child.id().expect("pid");
        let mut tries = 0;
        while descendants(root).is_empty() {
            tries += 1;
            assert!(tries < 200, "sleep never started");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let tree = FrozenTree::freeze(root).expect("freeze");
        assert!(tree.pids().len() >= 2, "{:?}", tree.pids());
        // SIGSTOP is delivered asynchronously: on a loaded machine a process
        // may still show as running for a moment.
        let state = |pid: u32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
            stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        for &pid in tree.pids() {
            let mut tries = 0;
            while state(pid) != "T" {
                tries += 1;
                assert!(tries < 200, "pid {pid} never stopped: {}", state(pid));
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let pids = tree.pids().to_vec();
        tree.thaw().expect("thaw");
        // Kill the whole tree, so no sleep keeps the test's pipes open.
        for pid in pids.iter().rev() {
            let _ = send_signal(*pid, Signal::SIGKILL);
        }
        let _ = child.wait().await;
    }
}
