//! `prism-watcher`, the dev loop: watch the workspace (crate directories from
//! `cargo metadata`), map each burst of edits to the plugins it affects (a
//! `core/` or `proto/` change affects all), rebuild them once per burst and
//! reload them — local processes (`--mode process`) or containers
//! (`--mode podman`). A failed build leaves the running plugins serving and
//! prints the compiler errors.
//!
//! Modules: [`cli`] flags, [`workspace`] the crate graph and change mapping,
//! [`watch`] notify + debounce, [`builder`] cargo / image builds, [`process`] and
//! [`podman`] what runs, [`ready`] the "is it up" probe.

pub mod builder;
pub mod cli;
pub mod error;
mod orphan;
pub mod podman;
pub mod process;
pub mod ready;
pub mod watch;
pub mod workspace;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use crate::cli::{Cli, Mode, Ready};
pub use crate::error::{Error, Result};

use crate::builder::{BuildOutcome, CargoBuild, Stamp};
use crate::podman::Containers;
use crate::process::Processes;
use crate::ready::Up;
use crate::workspace::{Plugin, Workspace};

/// How often plugins that exited on their own are looked for.
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// What a `--once` run or the watch loop ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `--once` built successfully, or the watch loop was stopped.
    Done,
    /// `--once` and the build failed.
    BuildFailed,
}

/// What runs the built plugins.
#[derive(Debug)]
enum Runner {
    Process(Processes),
    Podman(Containers),
}

/// The watcher's state between bursts.
#[derive(Debug)]
struct Loop {
    cli: Cli,
    workspace: Workspace,
    selected: Vec<Plugin>,
    cargo: CargoBuild,
    runner: Runner,
    /// Binary stamp (process mode) or image id (podman mode) each running plugin was
    /// started from; a rebuild that changes neither restarts nothing.
    started_from: std::collections::BTreeMap<String, String>,
}

/// Runs the watcher until `cancel` fires (or, with `--once`, until the build ends).
/// Every process or container it started is stopped before it returns.
pub async fn run(cli: Cli, cancel: CancellationToken) -> Result<Outcome> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = Workspace::load(&cargo, &cli.dir, &cli.core_package, &cli.ports).await?;
    let selected = workspace.select(&cli.plugins, &cli.core_package)?;
    tracing::info!(
        root = %workspace.root.display(),
        plugins = %names(selected.iter()),
        mode = ?cli.mode,
        "workspace loaded"
    );
    let runner = match cli.mode {
        Mode::Process => Runner::Process(Processes::new(
            cli.ready,
            cli.ready_timeout,
            cli.stop_timeout,
        )),
        Mode::Podman => Runner::Podman(
            Containers::new(
                &cli.podman,
                &cli.run_args,
                &cli.image,
                cli.ready,
                cli.ready_timeout,
                cli.stop_timeout,
            )
            .passing_env(prism_plugin_core::manifest::conventional_env(
                &workspace.root,
            )?),
        ),
    };
    let mut state = Loop {
        cargo: CargoBuild {
            cargo,
            release: cli.release,
        },
        cli,
        workspace,
        selected,
        runner,
        started_from: Default::default(),
    };
    if state.cli.once {
        let all: Vec<String> = state.selected.iter().map(|p| p.name.clone()).collect();
        return Ok(match state.build(&all, &cancel).await? {
            Some(outcome) if outcome.ok => Outcome::Done,
            Some(_) => Outcome::BuildFailed,
            None => Outcome::Done,
        });
    }
    let result = state.watch(&cancel).await;
    state.stop_all().await;
    result.map(|()| Outcome::Done)
}

impl Loop {
    /// Watch first (so no edit made during the initial build is lost), build and
    /// start everything, then one rebuild per burst until cancelled.
    async fn watch(&mut self, cancel: &CancellationToken) -> Result<()> {
        let mut watcher = watch::Watcher::start(
            &self.workspace.watch_dirs(),
            std::slice::from_ref(&self.workspace.root),
        )?;
        let all: Vec<String> = self.selected.iter().map(|p| p.name.clone()).collect();
        self.rebuild(&all, cancel).await?;
        let mut reap = tokio::time::interval(REAP_INTERVAL);
        loop {
            let workspace = &self.workspace;
            let selected = &self.selected;
            let relevant =
                |path: &std::path::Path| !workspace.affected_by(path, selected).is_empty();
            let burst = tokio::select! {
                burst = watcher.next_burst(
                    self.cli.debounce,
                    relevant,
                    |dir: &std::path::Path| workspace.is_ignored(dir),
                    cancel,
                ) => burst,
                _ = reap.tick() => {
                    self.reap();
                    continue;
                }
            };
            let Some(paths) = burst else {
                return Ok(());
            };
            let affected = self.workspace.affected(&paths, &self.selected);
            let plugins: Vec<String> = affected.plugins.into_iter().collect();
            tracing::info!(
                changed = affected.paths,
                first = %paths.first().map(|p| p.display().to_string()).unwrap_or_default(),
                plugins = %plugins.join(","),
                "change detected"
            );
            self.rebuild(&plugins, cancel).await?;
        }
    }

    /// Builds `plugins`; `None` if cancelled.
    async fn build(
        &self,
        plugins: &[String],
        cancel: &CancellationToken,
    ) -> Result<Option<BuildOutcome>> {
        let targets: Vec<&Plugin> = self
            .selected
            .iter()
            .filter(|p| plugins.contains(&p.name))
            .collect();
        tracing::info!(plugins = %names(targets.iter().copied()), "build started");
        let outcome = match self.cli.mode {
            Mode::Process => self.cargo.build(&self.workspace, &targets, cancel).await?,
            Mode::Podman => {
                builder::build_images(&self.workspace, &self.cli.image_cmd, &targets, cancel)
                    .await?
            }
        };
        match &outcome {
            Some(o) if o.ok => {
                tracing::info!(elapsed_ms = o.elapsed.as_millis() as u64, "build succeeded");
            }
            Some(o) => {
                eprintln!("{}", o.errors.trim_end());
                tracing::error!(
                    elapsed_ms = o.elapsed.as_millis() as u64,
                    "build failed; the running plugins keep serving the previous build"
                );
            }
            None => tracing::info!("build cancelled"),
        }
        Ok(outcome)
    }

    /// Builds `plugins` and, if that succeeded, restarts each whose binary or
    /// image changed (or that is not running).
    async fn rebuild(&mut self, plugins: &[String], cancel: &CancellationToken) -> Result<()> {
        match self.build(plugins, cancel).await? {
            Some(outcome) if outcome.ok => {}
            _ => return Ok(()),
        }
        let targets: Vec<Plugin> = self
            .selected
            .iter()
            .filter(|p| plugins.contains(&p.name))
            .cloned()
            .collect();
        for plugin in &targets {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let (identity, running) = match &mut self.runner {
                Runner::Process(processes) => {
                    let binary = self.cargo.binary(&self.workspace, plugin);
                    let identity = format!("{:?}", Stamp::of(&binary));
                    (identity, processes.is_running(&plugin.name))
                }
                Runner::Podman(containers) => (
                    containers.image_id(&plugin.name).await.unwrap_or_default(),
                    containers.is_running(&plugin.name).await,
                ),
            };
            if running && self.started_from.get(&plugin.name) == Some(&identity) {
                tracing::info!(plugin = %plugin.name, "unchanged; not restarted");
                continue;
            }
            let up = match &mut self.runner {
                Runner::Process(processes) => {
                    let binary = self.cargo.binary(&self.workspace, plugin);
                    processes.replace(plugin, &binary, cancel).await
                }
                Runner::Podman(containers) => containers.replace(plugin, cancel).await,
            };
            self.started_from.insert(plugin.name.clone(), identity);
            match up {
                Ok(Some(up)) => tracing::info!(
                    plugin = %plugin.name,
                    port = plugin.port,
                    backend_ready = match up {
                        Up::BackendReady => "yes",
                        Up::BackendNotReady => "no",
                        Up::Listening => "unknown",
                    },
                    "plugin ready"
                ),
                Ok(None) => return Ok(()),
                // A plugin that does not come up is reported; the loop goes on, and
                // the next good build starts it again.
                Err(err) => {
                    tracing::error!(plugin = %plugin.name, error = %err, "plugin failed to start")
                }
            }
        }
        Ok(())
    }

    fn reap(&mut self) {
        if let Runner::Process(processes) = &mut self.runner {
            processes.reap();
        }
    }

    async fn stop_all(&mut self) {
        match &mut self.runner {
            Runner::Process(processes) => processes.stop_all().await,
            Runner::Podman(containers) => containers.stop_all().await,
        }
    }
}

fn names<'a>(plugins: impl Iterator<Item = &'a Plugin>) -> String {
    plugins
        .map(|p| p.name.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(",")
}
