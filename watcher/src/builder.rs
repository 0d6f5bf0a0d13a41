//! Builds: `cargo build` of the affected plugin binaries (process mode) or the
//! image command per plugin (podman mode). Output is captured and printed only
//! when the build fails, so a good build stays one log line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::workspace::{Plugin, Workspace};

/// The result of one build.
#[derive(Debug)]
pub struct BuildOutcome {
    /// Whether every command succeeded.
    pub ok: bool,
    /// The combined output of the failed command (compiler errors), empty on success.
    pub errors: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// Identity of a built binary: a relinked binary gets a new mtime. A build that
/// relinks nothing (the change was not a real input) restarts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    modified: SystemTime,
    len: u64,
}

impl Stamp {
    /// The stamp of `path`, or `None` if it does not exist.
    pub fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: meta.modified().ok()?,
            len: meta.len(),
        })
    }
}

/// How binaries are built for process mode.
#[derive(Debug, Clone)]
pub struct CargoBuild {
    /// The cargo command (`$CARGO` or `cargo`).
    pub cargo: String,
    /// Build with `--release`.
    pub release: bool,
}

impl CargoBuild {
    /// Where cargo puts `plugin`'s binary.
    pub fn binary(&self, workspace: &Workspace, plugin: &Plugin) -> PathBuf {
        let profile = if self.release { "release" } else { "debug" };
        workspace.target_dir.join(profile).join(&plugin.bin)
    }

    /// `cargo build --bin …` for `plugins`, in one cargo invocation (cargo builds
    /// shared crates once). `None` if cancelled (cargo is killed).
    pub async fn build(
        &self,
        workspace: &Workspace,
        plugins: &[&Plugin],
        cancel: &CancellationToken,
    ) -> Result<Option<BuildOutcome>> {
        let mut cmd = Command::new(&self.cargo);
        cmd.arg("build").current_dir(&workspace.root);
        if self.release {
            cmd.arg("--release");
        }
        for plugin in plugins {
            cmd.args(["-p", &plugin.package, "--bin", &plugin.bin]);
        }
        run_captured(cmd, "cargo build", cancel).await
    }
}

/// Runs the image command for each plugin in turn (`sh -c`, `{plugin}` replaced),
/// stopping at the first failure. `None` if cancelled.
pub async fn build_images(
    workspace: &Workspace,
    image_cmd: &str,
    plugins: &[&Plugin],
    cancel: &CancellationToken,
) -> Result<Option<BuildOutcome>> {
    let started = Instant::now();
    for plugin in plugins {
        let line = image_cmd.replace("{plugin}", &plugin.name);
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &line]).current_dir(&workspace.root);
        match run_captured(cmd, &line, cancel).await? {
            None => return Ok(None),
            Some(outcome) if !outcome.ok => {
                return Ok(Some(BuildOutcome {
                    elapsed: started.elapsed(),
                    ..outcome
                }));
            }
            Some(_) => {}
        }
    }
    Ok(Some(BuildOutcome {
        ok: true,
        errors: String::new(),
        elapsed: started.elapsed(),
    }))
}

/// Runs `cmd` with stdout and stderr captured (interleaving is lost, which is
/// fine: cargo writes its diagnostics to stderr only).
async fn run_captured(
    mut cmd: Command,
    what: &str,
    cancel: &CancellationToken,
) -> Result<Option<BuildOutcome>> {
    let started = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {what}"), e))?;
    let output = tokio::select! {
        // Dropping the future drops the child, which kills it.
        _ = cancel.cancelled() => return Ok(None),
        output = child.wait_with_output() => {
            output.map_err(|e| Error::io(format!("waiting for {what}"), e))?
        }
    };
    let ok = output.status.success();
    let errors = if ok {
        String::new()
    } else {
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        text
    };
    Ok(Some(BuildOutcome {
        ok,
        errors,
        elapsed: started.elapsed(),
    }))
}
