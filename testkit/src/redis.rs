//! A real `redis-server` for tests on a free 127.0.0.1 port with its own temp dir,
//! persistence off, optional extra arguments (ACL users, cluster mode, ...), outage
//! simulation and a `redis-cli` helper.
//!
//! Persistence is disabled (`--save "" --appendonly no`), so data does not survive
//! [`Redis::stop`] / [`Redis::start_again`]; files the server writes into its dir
//! (e.g. a cluster config file) do.
//!
//! A cluster-enabled node (`--cluster-enabled yes`) also binds its cluster bus on
//! its port + [`CLUSTER_BUS_OFFSET`], so that port is reserved with the main one:
//! a node whose bus port is taken fails to start.

use std::path::PathBuf;

use tokio::process::Command;

use crate::error::Result;
use crate::paths::tool;
use crate::ports::{free_port, free_port_with_companion};
use crate::probe;
use crate::process::{self, ServerProcess};
use crate::server::server_handle;

/// How far above its port a Redis Cluster node binds its cluster bus (Redis's
/// default when `--cluster-port` is not given).
const CLUSTER_BUS_OFFSET: u16 = 10_000;

/// A running (or deliberately stopped) `redis-server` owning its temp dir.
///
/// Dropping it kills the server and removes the dir.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    server_bin: PathBuf,
    cli_bin: PathBuf,
    extra_args: Vec<String>,
    process: ServerProcess,
}

server_handle!(
    Redis,
    "redis-server",
    signals,
    "Data is lost (no persistence)."
);

impl Redis {
    /// Starts `redis-server` with the default test settings.
    pub async fn start() -> Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// Starts `redis-server` with `args` appended after the defaults (later
    /// arguments win), e.g. `["--requirepass", "pw"]`,
    /// `["--user", "alice", "on", ">pw", "~*", "+@all"]` or
    /// `["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]`
    /// (relative paths resolve inside the temp dir). In cluster mode the bus port
    /// (port + 10000) is reserved too, unless `--cluster-port` is given.
    pub async fn start_with_args(args: &[&str]) -> Result<Self> {
        let server_bin = tool("redis-server")?;
        let cli_bin = tool("redis-cli")?;
        let port = if needs_bus_port(args) {
            free_port_with_companion(CLUSTER_BUS_OFFSET)?
        } else {
            free_port()
        };
        let extra_args = args.iter().map(|a| (*a).to_owned()).collect();
        let process = ServerProcess::in_temp_dir("redis", "redis-server")?;
        let redis = Self {
            port,
            server_bin,
            cli_bin,
            extra_args,
            process,
        };
        redis.launched().await
    }

    /// Spawns the server and waits until it answers `PING`.
    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.server_bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(self.process.dir())
            .args(&self.extra_args)
            .current_dir(self.process.dir());
        let port = self.port;
        let ready = move || probe::redis_ping(port);
        self.process.launch(cmd, port, ready).await
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` and returns its stdout with the
    /// trailing newline removed. Options such as `--user`/`--pass` go before the
    /// command: `cli(&["--user", "alice", "--pass", "pw", "GET", "k"])`. Redis error
    /// replies are printed to stdout (`ERR ...`); they do not make this fail.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.cli_bin);
        cmd.args(["-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("--no-auth-warning")
            .args(args)
            .env_remove("REDISCLI_AUTH");
        let out = process::run_output(cmd).await?;
        Ok(out.trim_end_matches('\n').to_owned())
    }
}

/// Whether `args` enable cluster mode with the bus on the default offset (the
/// last `--cluster-enabled` wins, as in redis-server).
fn needs_bus_port(args: &[&str]) -> bool {
    let value_of = |option: &str| {
        args.windows(2)
            .rev()
            .find(|pair| pair[0].eq_ignore_ascii_case(option))
            .map(|pair| pair[1])
    };
    value_of("--cluster-enabled").is_some_and(|v| v.eq_ignore_ascii_case("yes"))
        && value_of("--cluster-port").is_none_or(|v| v == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_mode_needs_the_bus_port() {
        assert!(!needs_bus_port(&[]));
        assert!(!needs_bus_port(&["--requirepass", "pw"]));
        assert!(needs_bus_port(&["--cluster-enabled", "yes"]));
        assert!(needs_bus_port(&[
            "--cluster-enabled",
            "YES",
            "--cluster-port",
            "0"
        ]));
        assert!(!needs_bus_port(&[
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            "7000"
        ]));
        assert!(!needs_bus_port(&[
            "--cluster-enabled",
            "yes",
            "--cluster-enabled",
            "no"
        ]));
    }
}
