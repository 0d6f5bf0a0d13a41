//! Driving a spawned plugin's control plane the way the gateway and Kubernetes
//! do: spawn it on a free port, wait for several health services, call
//! `Initialize` with a config `Struct`, read the lifecycle `HealthCheck` report.

use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::lifecycle::{
    HealthCheckRequest, HealthCheckResponse, InitializeRequest, InitializeResponse,
};
use tonic::transport::Channel;

use crate::{PluginProcess, ServingStatus, free_port, wait_for_health};

/// Spawns the plugin binary `bin` on a free port with text logs and `envs`.
pub async fn spawn_plugin(bin: &str, envs: &[(&str, &str)]) -> (PluginProcess, u16) {
    let port = free_port();
    let mut all = vec![("PRISM_LOG_FORMAT", "text")];
    all.extend_from_slice(envs);
    let plugin = PluginProcess::spawn(bin, &["--grpc-port", &port.to_string()], &all)
        .await
        .expect("plugin spawns");
    (plugin, port)
}

/// Waits until every health service in `services` reports `want`; returns how
/// long it took. Panics with the reason on timeout.
pub async fn wait_all_health(
    port: u16,
    services: &[&str],
    want: ServingStatus,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    for service in services {
        let left = timeout.saturating_sub(start.elapsed());
        wait_for_health(port, service, want, left)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    start.elapsed()
}

/// A string config value.
pub fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.to_owned())),
    }
}

/// A number config value.
pub fn number(n: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::NumberValue(n)),
    }
}

/// The gateway's `Initialize` carrying `fields` as the plugin's config.
pub fn initialize_request(fields: Vec<(&str, prost_types::Value)>) -> InitializeRequest {
    InitializeRequest {
        name: "test-gateway".into(),
        version: String::new(),
        config: Some(prost_types::Struct {
            fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }),
    }
}

async fn client(port: u16) -> LifecycleInterfaceClient<Channel> {
    LifecycleInterfaceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect to the plugin")
}

/// Calls `Initialize` with `fields` on the plugin at `port`.
pub async fn initialize(port: u16, fields: Vec<(&str, prost_types::Value)>) -> InitializeResponse {
    client(port)
        .await
        .initialize(initialize_request(fields))
        .await
        .expect("Initialize")
        .into_inner()
}

/// The lifecycle `HealthCheck` report of the plugin at `port`.
pub async fn health_check(port: u16) -> HealthCheckResponse {
    client(port)
        .await
        .health_check(HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner()
}

/// Health detail `key` of the plugin at `port` ("" when absent).
pub async fn health_detail(port: u16, key: &str) -> String {
    health_check(port)
        .await
        .details
        .get(key)
        .cloned()
        .unwrap_or_default()
}
