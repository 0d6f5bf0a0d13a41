//! Plumbing shared by the server handles: spawning a server with its output appended
//! to a log file, polling it until ready, stopping it with a signal, killing it on
//! drop, and running short helper commands (psql, redis-cli, bao) for their stdout.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::error::{Error, Result};

/// How often readiness is polled.
pub(crate) const POLL: Duration = Duration::from_millis(20);
/// How long a server may take to become ready (generous: CI boxes have 2 cores and
/// many tests start servers at once).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the server is killed.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many log lines error messages quote.
const TAIL_LINES: usize = 30;

/// A long-running server child process owning its temp dir, whose stdout and
/// stderr go to `<name>.log` in that dir. The dir is removed when this is
/// dropped (after the handle's `Drop` has stopped the server).
#[derive(Debug)]
pub(crate) struct ServerProcess {
    name: &'static str,
    log: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// A not-yet-started `name` server in `dir`.
    pub(crate) fn new(name: &'static str, dir: tempfile::TempDir) -> Self {
        Self {
            name,
            log: dir.path().join(format!("{name}.log")),
            child: None,
            dir,
        }
    }

    /// A not-yet-started `name` server in a new temp dir `prism-<what>-XXXX`.
    pub(crate) fn in_temp_dir(what: &str, name: &'static str) -> Result<Self> {
        Ok(Self::new(name, temp_dir(what)?))
    }

    /// The server's temp dir.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log file.
    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the server logged so far (all runs, separated by header lines).
    pub(crate) fn log_contents(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of the server log.
    pub(crate) fn log_tail(&self) -> String {
        tail(&self.log_contents(), TAIL_LINES)
    }

    /// Spawns `cmd` with stdin closed and stdout/stderr appended to the log file.
    pub(crate) fn spawn(&mut self, mut cmd: Command) -> Result<()> {
        if self.child.is_some() {
            return Err(Error::AlreadyRunning(self.name.to_owned()));
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(format!("opening {}", self.log.display()), e))?;
        // Best effort: the header only helps humans reading the log.
        let _ = writeln!(log, "==== testkit: starting {}", describe(&cmd));
        let stderr = log
            .try_clone()
            .map_err(|e| Error::io("duplicating log file handle", e))?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", describe(&cmd)), e))?;
        self.child = Some(child);
        Ok(())
    }

    /// Spawns `cmd` (see [`spawn`](Self::spawn)) and waits, as
    /// [`wait_ready`](Self::wait_ready) does, up to [`START_TIMEOUT`] for
    /// `ready` on `port`.
    pub(crate) async fn launch<F, Fut>(&mut self, cmd: Command, port: u16, ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.spawn(cmd)?;
        self.wait_ready(port, START_TIMEOUT, ready).await
    }

    /// Polls `ready` every [`POLL`] until it returns true, failing early (with the log
    /// tail) if the process exits, or after `timeout`.
    pub(crate) async fn wait_ready<F, Fut>(
        &mut self,
        port: u16,
        timeout: Duration,
        mut ready: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                self.child = None;
                return Err(Error::ExitedEarly {
                    server: self.name,
                    status,
                    log: self.log.clone(),
                    log_tail: self.log_tail(),
                });
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    server: self.name,
                    port,
                    timeout,
                    log: self.log.clone(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The exit status if the process has exited, `None` while it runs or when it
    /// was never started.
    pub(crate) fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .map_err(|e| Error::io(format!("polling {}", self.name), e)),
            None => Ok(None),
        }
    }

    /// Whether the process is started and has not exited.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.is_some() && matches!(self.try_status(), Ok(None))
    }

    /// The pid of the running process.
    pub(crate) fn pid(&self) -> Result<u32> {
        self.child
            .as_ref()
            .and_then(Child::id)
            .ok_or_else(|| Error::NotRunning(self.name.to_owned()))
    }

    /// Sends `signal` without waiting (SIGSTOP/SIGCONT to simulate a stall).
    pub(crate) fn signal(&mut self, signal: Signal) -> Result<()> {
        send_signal(self.pid()?, signal)
    }

    /// Sends `signal` and waits for the process to exit; kills it if it is still
    /// running after `timeout`.
    pub(crate) async fn stop(&mut self, signal: Signal, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::NotRunning(self.name.to_owned()));
        };
        if let Some(pid) = child.id() {
            send_signal(pid, signal)?;
        }
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.map_err(|e| Error::io(format!("waiting for {}", self.name), e)),
            Err(_) => {
                // Killing an already-exited child can fail; `wait` reports the truth.
                let _ = child.start_kill();
                child
                    .wait()
                    .await
                    .map_err(|e| Error::io(format!("waiting for {}", self.name), e))
            }
        }
    }

    /// Synchronous best-effort shutdown for `Drop`: sends `signal`, waits up to
    /// `grace` for the exit (so the temp dir is not removed under a live server),
    /// then kills.
    pub(crate) fn shutdown_blocking(&mut self, signal: Signal, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = child.id() {
            let _ = send_signal(pid, signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(1);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Sends `signal` to `pid`.
pub(crate) fn send_signal(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).map_err(|_| Error::Signal {
        signal,
        pid,
        source: nix::errno::Errno::ESRCH,
    })?;
    kill(Pid::from_raw(raw), signal).map_err(|source| Error::Signal {
        signal,
        pid,
        source,
    })
}

/// Runs a short helper command to completion and returns its stdout; a non-zero
/// exit becomes [`Error::CommandFailed`] quoting stderr and stdout.
pub(crate) async fn run_output(mut cmd: Command) -> Result<String> {
    // `output()` closes stdin and captures stdout and stderr.
    cmd.kill_on_drop(true);
    let output = cmd
        .output()
        .await
        .map_err(|e| Error::io(format!("running {}", describe(&cmd)), e))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(Error::CommandFailed {
            command: describe(&cmd),
            status: output.status,
            output: format!("{}{stdout}", String::from_utf8_lossy(&output.stderr)),
        })
    }
}

/// A printable command line.
pub(crate) fn describe(cmd: &Command) -> String {
    let std = cmd.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Creates a temp dir named `prism-<what>-XXXX` in the system temp dir.
pub(crate) fn temp_dir(what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("prism-{what}-"))
        .tempdir()
        .map_err(|e| Error::io(format!("creating temp dir for {what}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }
}
