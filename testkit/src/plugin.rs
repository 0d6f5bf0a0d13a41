//! [`PluginProcess`]: spawns a plugin binary under test with a hermetic environment,
//! captures its stdout and stderr into a shared in-memory buffer (echoed to the
//! test's stderr, prefixed with the binary name), and offers signal / exit / log
//! assertions. The child is killed when the handle is dropped.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::process::{describe, send_signal, tail};

/// How long [`PluginProcess::wait_exit`] waits for the output pipes to drain after
/// the process exited (a grandchild may keep them open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How many log lines timeout errors quote.
const TAIL_LINES: usize = 40;

/// Output captured from the child, shared with the reader tasks.
#[derive(Debug, Default)]
struct Captured {
    text: Mutex<String>,
    open_streams: AtomicUsize,
    changed: Notify,
}

impl Captured {
    fn text(&self) -> String {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn contains(&self, needle: &str) -> bool {
        self.text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(needle)
    }

    fn drained(&self) -> bool {
        self.open_streams.load(Ordering::SeqCst) == 0
    }
}

/// A running plugin binary with captured output.
#[derive(Debug)]
pub struct PluginProcess {
    name: String,
    pid: u32,
    child: Child,
    captured: Arc<Captured>,
}

impl PluginProcess {
    /// Spawns `path` with `args`. The inherited environment is kept except every
    /// `PRISM_*` variable and the conventional names a plugin's config understands
    /// (the plugins' declared aliases), so plugin tests are hermetic; then `envs` is applied.
    /// stdin is closed; stdout and stderr are captured (see [`logs`](Self::logs)).
    pub async fn spawn(
        path: impl AsRef<Path>,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());

        let mut cmd = hermetic_command(path, args, envs, std::env::vars_os().map(|(k, _)| k));
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("spawning {}", describe(&cmd)), e))?;
        let pid = child.id().ok_or_else(|| Error::NotRunning(name.clone()))?;
        let captured = Arc::new(Captured::default());
        if let Some(stdout) = child.stdout.take() {
            spawn_reader(stdout, name.clone(), Arc::clone(&captured));
        }
        if let Some(stderr) = child.stderr.take() {
            spawn_reader(stderr, name.clone(), Arc::clone(&captured));
        }
        Ok(Self {
            name,
            pid,
            child,
            captured,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The binary's file name (the prefix of echoed log lines).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything captured from stdout and stderr so far, interleaved by line in
    /// arrival order.
    pub fn logs(&self) -> String {
        self.captured.text()
    }

    /// The last lines of [`logs`](Self::logs) (as many as timeout errors quote).
    pub fn log_tail(&self) -> String {
        tail(&self.logs(), TAIL_LINES)
    }

    /// Waits until the captured output contains `needle`. Fails with the log tail
    /// on timeout, or early if the process closed its output without logging it.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.captured.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.captured.contains(needle) {
                return Ok(());
            }
            if self.captured.drained() {
                return Err(Error::Timeout {
                    what: format!(
                        "{} to log {needle:?}; it closed its output first. Last lines:\n{}",
                        self.name,
                        self.log_tail()
                    ),
                    timeout,
                });
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() || tokio::time::timeout(remaining, notified).await.is_err() {
                if self.captured.contains(needle) {
                    return Ok(());
                }
                return Err(Error::Timeout {
                    what: format!(
                        "{} to log {needle:?}. Last lines:\n{}",
                        self.name,
                        self.log_tail()
                    ),
                    timeout,
                });
            }
        }
    }

    /// Sends `signal` to the process; fails with [`Error::NotRunning`] if it has
    /// already exited (so a recycled pid is never signalled).
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.try_status()?.is_some() {
            return Err(Error::NotRunning(self.name.clone()));
        }
        send_signal(self.pid, signal)
    }

    /// Sends `SIGTERM` (graceful shutdown request).
    pub fn sigterm(&mut self) -> Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends `SIGTERM` and waits up to `timeout` for the exit (see
    /// [`wait_exit`](Self::wait_exit)); panics when it is not running or does
    /// not exit in time.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.sigterm().expect("sigterm");
        self.wait_exit(timeout).await.expect("exits after SIGTERM")
    }

    /// Waits up to `timeout` for the process to exit and returns its status; the
    /// output pipes are then drained (briefly) so [`logs`](Self::logs) is complete.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.map_err(|e| Error::io(format!("waiting for {}", self.name), e))?,
            Err(_) => {
                return Err(Error::Timeout {
                    what: format!(
                        "{} (pid {}) to exit. Last lines:\n{}",
                        self.name,
                        self.pid,
                        self.log_tail()
                    ),
                    timeout,
                });
            }
        };
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while !self.captured.drained() && Instant::now() < deadline {
            let notified = self.captured.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.captured.drained() {
                break;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let _ = tokio::time::timeout(remaining, notified).await;
        }
        Ok(status)
    }

    /// The exit status if the process has exited, else `None` (never blocks).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| Error::io(format!("polling {}", self.name), e))
    }

    /// Panics, with the last log lines, if the process has exited (every
    /// line was echoed to stderr already).
    pub fn assert_running(&mut self) {
        let status = self.try_status().expect("process status");
        assert!(
            status.is_none(),
            "{} (pid {}) exited ({status:?}). Last lines:\n{}",
            self.name,
            self.pid,
            self.log_tail()
        );
    }
}

/// `envs` with borrowed values, the form [`PluginProcess::spawn`] and the
/// plugins' test helpers take.
pub fn borrowed_env<'a>(envs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    envs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Whether an inherited variable is removed before spawning a plugin.
fn is_scrubbed(key: &OsStr) -> bool {
    let key = key.to_string_lossy();
    key.starts_with("PRISM_") || conventional_env().iter().any(|name| *name == key)
}

/// The workspace plugins' declared aliases and core's (Vault), read once.
fn conventional_env() -> &'static [String] {
    static CONVENTIONAL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CONVENTIONAL.get_or_init(|| {
        prism_plugin_core::manifest::conventional_env(&crate::paths::workspace_root())
            .expect("the workspace's plugin.toml files")
    })
}

/// The command for a plugin: inherited variables named in `inherited` that are
/// scrubbed are removed, then `envs` is applied; stdio is set up for capture.
fn hermetic_command(
    path: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    inherited: impl Iterator<Item = OsString>,
) -> Command {
    let mut cmd = Command::new(path);
    cmd.args(args);
    for key in inherited.filter(|k| is_scrubbed(k)) {
        cmd.env_remove(key);
    }
    for key in conventional_env() {
        cmd.env_remove(key);
    }
    cmd.envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads `stream` line by line into `captured`, echoing each line to stderr.
fn spawn_reader<R>(stream: R, name: String, captured: Arc<Captured>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    captured.open_streams.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw);
                    let line = line.trim_end_matches(['\n', '\r']);
                    eprintln!("[{name}] {line}");
                    {
                        let mut text = captured.text.lock().unwrap_or_else(PoisonError::into_inner);
                        text.push_str(line);
                        text.push('\n');
                    }
                    captured.changed.notify_waiters();
                }
            }
        }
        captured.open_streams.fetch_sub(1, Ordering::SeqCst);
        captured.changed.notify_waiters();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_prism_and_conventional_vars_then_applies_envs() {
        let inherited = ["PRISM_LISTEN", "PRISM_X", "HOME", "PATH", "REDIS_PASSWORD"]
            .into_iter()
            .map(OsString::from);
        let cmd = hermetic_command(
            Path::new("/bin/true"),
            &[],
            &[("PRISM_LISTEN", "127.0.0.1:1"), ("X", "1")],
            inherited,
        );
        let envs: Vec<(String, Option<String>)> = cmd
            .as_std()
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let get = |name: &str| envs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(
            get("PRISM_LISTEN"),
            Some(Some("127.0.0.1:1".into())),
            "explicit wins"
        );
        assert_eq!(get("X"), Some(Some("1".into())));
        assert_eq!(get("PRISM_X"), Some(None), "removed");
        assert_eq!(get("REDIS_PASSWORD"), Some(None), "removed");
        assert_eq!(
            get("DATABASE_URL"),
            Some(None),
            "removed even if not inherited"
        );
        assert_eq!(get("HOME"), None, "inherited untouched");
        assert_eq!(get("PATH"), None, "inherited untouched");
    }
}
