//! Helpers shared by the `prism-redis` integration tests: spawning the real
//! plugin binary against a real Redis, gRPC clients, namespaced requests.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_client::KeyValueBatchInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_client::KeyValueTtlInterfaceClient;
use prism_plugin_core::proto::keyvalue::{GetRequest, SetRequest};
use prism_testkit::{PluginProcess, ServingStatus, free_port, wait_for_health};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_prism-redis");
/// First SERVING after spawn (process start plus first connect).
pub const STARTUP: Duration = Duration::from_secs(15);
/// Largest message the test clients send or accept (fits 16 MiB + 1 values).
const CLIENT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A running plugin and gRPC clients on one channel.
pub struct Plugin {
    pub process: PluginProcess,
    pub port: u16,
    pub channel: Channel,
}

impl Plugin {
    /// Spawns the plugin with `envs` (plus text logs) and waits for readiness.
    pub async fn start(envs: &[(&str, &str)]) -> Plugin {
        let plugin = Self::spawn(envs).await;
        plugin.wait_ready(STARTUP).await;
        plugin
    }

    /// Spawns the plugin without waiting for readiness (liveness only).
    pub async fn spawn(envs: &[(&str, &str)]) -> Plugin {
        let port = free_port();
        let mut all = vec![("PRISM_LOG_FORMAT", "text")];
        all.extend_from_slice(envs);
        let process = PluginProcess::spawn(BIN, &["--grpc-port", &port.to_string()], &all)
            .await
            .expect("plugin spawns");
        wait_for_health(port, "liveness", ServingStatus::Serving, STARTUP)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", process.logs()));
        let channel = prism_testkit::connect(port, STARTUP)
            .await
            .expect("connect to the plugin");
        Plugin {
            process,
            port,
            channel,
        }
    }

    /// Waits until readiness is SERVING.
    pub async fn wait_ready(&self, timeout: Duration) {
        wait_for_health(self.port, "readiness", ServingStatus::Serving, timeout)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.process.logs()));
    }

    pub fn basic(&self) -> KeyValueBasicInterfaceClient<Channel> {
        KeyValueBasicInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE)
    }

    pub fn batch(&self) -> KeyValueBatchInterfaceClient<Channel> {
        KeyValueBatchInterfaceClient::new(self.channel.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE)
            .max_encoding_message_size(CLIENT_MAX_MESSAGE)
    }

    pub fn ttl(&self) -> KeyValueTtlInterfaceClient<Channel> {
        KeyValueTtlInterfaceClient::new(self.channel.clone())
    }

    /// Asserts the process is still running.
    pub fn assert_running(&mut self) {
        let status = self.process.try_status().expect("status");
        assert!(
            status.is_none(),
            "plugin exited: {status:?}\n{}",
            self.process.logs()
        );
    }
}

/// A request carrying `x-prism-namespace: ns` (no header for `None`).
pub fn req<T>(namespace: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(ns) = namespace {
        request
            .metadata_mut()
            .insert("x-prism-namespace", ns.parse().expect("ascii namespace"));
    }
    request
}

pub fn set(key: &str, value: impl Into<bytes::Bytes>, ttl_seconds: i64) -> SetRequest {
    SetRequest {
        key: key.to_string(),
        value: value.into(),
        tags: None,
        ttl_seconds,
    }
}

pub fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_string(),
    }
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes;
/// returns how long it took.
pub async fn poll_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
