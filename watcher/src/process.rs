//! `--mode process`: the plugin processes the watcher started, and replacing one
//! with a new binary the way the gateway would want it — SIGTERM (the plugin
//! drains: health NOT_SERVING, in-flight calls finish), wait, start the new
//! binary, wait until it is up.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::cli::Ready;
use crate::error::{Error, Result};
use crate::ready::{Up, wait_up};
use crate::workspace::Plugin;

/// One running plugin.
#[derive(Debug)]
struct Running {
    child: Child,
    pid: u32,
}

/// The plugin processes started by the watcher, by plugin name.
#[derive(Debug)]
pub struct Processes {
    running: BTreeMap<String, Running>,
    ready: Ready,
    ready_timeout: Duration,
    stop_timeout: Duration,
}

impl Processes {
    /// No processes yet.
    pub fn new(ready: Ready, ready_timeout: Duration, stop_timeout: Duration) -> Self {
        Processes {
            running: BTreeMap::new(),
            ready,
            ready_timeout,
            stop_timeout,
        }
    }

    /// Whether `plugin` has a live process.
    pub fn is_running(&mut self, plugin: &str) -> bool {
        match self.running.get_mut(plugin) {
            Some(running) => matches!(running.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the running `plugin` (if any), starts `binary --grpc-port PORT` and
    /// waits until it is up. `Ok(None)` if cancelled meanwhile.
    pub async fn replace(
        &mut self,
        plugin: &Plugin,
        binary: &Path,
        cancel: &CancellationToken,
    ) -> Result<Option<Up>> {
        self.stop(&plugin.name).await;
        let mut cmd = Command::new(binary);
        cmd.args(["--grpc-port", &plugin.port.to_string()])
            .stdin(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal reaches only the
            // watcher, which then stops the plugin with one SIGTERM (a second
            // signal would make the plugin skip its drain).
            .process_group(0)
            .kill_on_drop(true);
        // ...and it dies with the watcher even when the watcher is SIGKILLed.
        crate::orphan::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", binary.display()), e))?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(plugin = %plugin.name, pid, port = plugin.port, "plugin started");
        self.running
            .insert(plugin.name.clone(), Running { child, pid });
        let running = &mut self.running;
        let name = plugin.name.clone();
        let exited = || -> Option<ExitStatus> {
            running
                .get_mut(&name)
                .and_then(|r| r.child.try_wait().ok().flatten())
        };
        let up = wait_up(
            &plugin.name,
            plugin.port,
            self.ready,
            self.ready_timeout,
            exited,
            cancel,
        )
        .await;
        if matches!(up, Err(Error::ExitedEarly { .. })) {
            self.running.remove(&plugin.name);
        }
        up
    }

    /// SIGTERM, then up to the stop timeout for the plugin to drain and exit, then
    /// SIGKILL.
    pub async fn stop(&mut self, plugin: &str) {
        if let Some(mut running) = self.running.remove(plugin) {
            let deadline = tokio::time::Instant::now() + self.stop_timeout;
            if terminate(plugin, &mut running) {
                self.wait_or_kill(plugin, running, deadline).await;
            }
        }
    }

    /// Stops every plugin: SIGTERM to all at once (each drains on its own), then
    /// waits for each within the one stop timeout.
    pub async fn stop_all(&mut self) {
        let deadline = tokio::time::Instant::now() + self.stop_timeout;
        let running = std::mem::take(&mut self.running);
        let mut signalled = Vec::new();
        for (name, mut r) in running {
            if terminate(&name, &mut r) {
                signalled.push((name, r));
            }
        }
        for (name, r) in signalled {
            self.wait_or_kill(&name, r, deadline).await;
        }
    }

    async fn wait_or_kill(
        &self,
        plugin: &str,
        mut running: Running,
        deadline: tokio::time::Instant,
    ) {
        match tokio::time::timeout_at(deadline, running.child.wait()).await {
            Ok(Ok(status)) => {
                tracing::info!(plugin = %plugin, pid = running.pid, %status, "plugin stopped")
            }
            Ok(Err(err)) => {
                tracing::warn!(plugin = %plugin, error = %err, "waiting for the plugin failed")
            }
            Err(_) => {
                tracing::warn!(
                    plugin = %plugin,
                    timeout = ?self.stop_timeout,
                    "plugin did not exit after SIGTERM; killing it"
                );
                let _ = running.child.kill().await;
            }
        }
    }

    /// Logs (once) every plugin that exited on its own since the last call.
    pub fn reap(&mut self) {
        let exited: Vec<(String, ExitStatus)> = self
            .running
            .iter_mut()
            .filter_map(|(name, r)| {
                r.child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|status| (name.clone(), status))
            })
            .collect();
        for (name, status) in exited {
            tracing::warn!(plugin = %name, %status, "plugin exited on its own; it restarts after the next good build");
            self.running.remove(&name);
        }
    }
}

/// Sends SIGTERM unless the process already exited; `true` if it is still to be
/// waited for. (Checking `try_wait` first means a recycled pid is never signalled.)
fn terminate(plugin: &str, running: &mut Running) -> bool {
    if let Ok(Some(status)) = running.child.try_wait() {
        tracing::info!(plugin = %plugin, %status, "plugin had already exited");
        return false;
    }
    let pid = Pid::from_raw(i32::try_from(running.pid).unwrap_or(i32::MAX));
    if let Err(err) = kill(pid, Signal::SIGTERM) {
        tracing::warn!(plugin = %plugin, error = %err, "SIGTERM failed");
    }
    true
}
