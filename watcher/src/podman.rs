//! `--mode podman`: after a good image build, replace the plugin's container
//! (`podman stop` sends SIGTERM and waits, like process mode), run the new image
//! on the host network, and wait until it is up. Containers run read-only as the
//! image's user with every `PRISM_*` variable and the conventional backend ones
//! (the plugins' declared aliases, see `Containers::passing_env`) passed through.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::cli::Ready;
use crate::error::{Error, Result};
use crate::ready::{Up, wait_up};
use crate::workspace::Plugin;

/// The containers the watcher started.
#[derive(Debug)]
pub struct Containers {
    podman: Vec<String>,
    run_args: Vec<String>,
    image: String,
    started: BTreeSet<String>,
    ready: Ready,
    ready_timeout: Duration,
    stop_timeout: Duration,
    /// Conventional (non-`PRISM_*`) variables passed into the containers.
    conventional_env: Vec<String>,
}

impl Containers {
    /// `podman` and `run_args` are split on whitespace; `image` has `{plugin}`.
    pub fn new(
        podman: &str,
        run_args: &str,
        image: &str,
        ready: Ready,
        ready_timeout: Duration,
        stop_timeout: Duration,
    ) -> Self {
        Containers {
            podman: podman.split_whitespace().map(str::to_owned).collect(),
            run_args: run_args.split_whitespace().map(str::to_owned).collect(),
            image: image.to_owned(),
            started: BTreeSet::new(),
            ready,
            ready_timeout,
            stop_timeout,
            conventional_env: Vec::new(),
        }
    }

    /// Also passes these conventional variables (besides every `PRISM_*` one)
    /// into the containers: the plugins' declared aliases
    /// ([`conventional_env`](prism_plugin_core::manifest::conventional_env)).
    pub fn passing_env(mut self, names: Vec<String>) -> Self {
        self.conventional_env = names;
        self
    }

    fn container(plugin: &str) -> String {
        format!("prism-{plugin}-dev")
    }

    /// The image reference for `plugin`.
    pub fn image(&self, plugin: &str) -> String {
        self.image.replace("{plugin}", plugin)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(self.podman.first().map_or("podman", String::as_str));
        cmd.args(self.podman.iter().skip(1))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn podman(&self, args: &[&str]) -> Result<String> {
        let what = format!("podman {}", args.join(" "));
        let output = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(|e| Error::io(format!("running {what}"), e))?;
        if !output.status.success() {
            eprint!("{}", String::from_utf8_lossy(&output.stderr));
            return Err(Error::Command {
                what,
                status: output.status,
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The image id of `plugin`'s image, if it exists (to skip a restart when a
    /// rebuild produced the same image).
    pub async fn image_id(&self, plugin: &str) -> Option<String> {
        let image = self.image(plugin);
        self.podman(&["image", "inspect", "--format", "{{.Id}}", &image])
            .await
            .ok()
    }

    /// Whether `plugin`'s container is running.
    pub async fn is_running(&self, plugin: &str) -> bool {
        let name = Self::container(plugin);
        self.podman(&[
            "container",
            "inspect",
            "--format",
            "{{.State.Running}}",
            &name,
        ])
        .await
        .is_ok_and(|s| s == "true")
    }

    /// Stops and removes the old container, runs the new image, waits until up.
    pub async fn replace(
        &mut self,
        plugin: &Plugin,
        cancel: &CancellationToken,
    ) -> Result<Option<Up>> {
        self.stop(&plugin.name).await;
        let name = Self::container(&plugin.name);
        let port = plugin.port.to_string();
        let image = self.image(&plugin.name);
        let mut args: Vec<String> = [
            "run",
            "--detach",
            "--rm",
            "--name",
            &name,
            "--network",
            "host",
            "--read-only",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            // `--env NAME` without a value copies the watcher's: no secret on the
            // podman command line.
            if key.starts_with("PRISM_") || self.conventional_env.contains(&key) {
                args.push("--env".to_owned());
                args.push(key);
            }
        }
        args.extend(self.run_args.iter().cloned());
        args.extend([image, "--grpc-port".to_owned(), port]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.podman(&args).await?;
        self.started.insert(plugin.name.clone());
        tracing::info!(plugin = %plugin.name, container = %name, id = %id.chars().take(12).collect::<String>(), port = plugin.port, "container started");
        wait_up(
            &plugin.name,
            plugin.port,
            self.ready,
            self.ready_timeout,
            || None,
            cancel,
        )
        .await
    }

    /// `podman stop` (SIGTERM, then SIGKILL after the stop timeout) and remove.
    pub async fn stop(&mut self, plugin: &str) {
        let name = Self::container(plugin);
        let timeout = self.stop_timeout.as_secs().max(1).to_string();
        // Also clears a container left over by an earlier watcher.
        let _ = self
            .podman(&["rm", "--force", "--ignore", "--time", &timeout, &name])
            .await;
        if self.started.remove(plugin) {
            tracing::info!(plugin = %plugin, container = %name, "container stopped");
        }
    }

    /// Stops every container this watcher started.
    pub async fn stop_all(&mut self) {
        let started: Vec<String> = self.started.iter().cloned().collect();
        for plugin in started {
            self.stop(&plugin).await;
        }
    }
}
