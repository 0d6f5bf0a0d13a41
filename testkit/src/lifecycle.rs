//! Driving a spawned plugin's control plane the way the gateway and Kubernetes
//! do: spawn it on a free port, wait for several health services, call
//! `Initialize` with a config `Struct`, read the lifecycle `HealthCheck` report.

use std::path::Path;
use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::lifecycle::{
    HealthCheckRequest, HealthCheckResponse, InitializeRequest, InitializeResponse,
};
use tonic::transport::Channel;

use crate::{PluginProcess, ServingStatus, free_port, wait_for_health};

/// Spawns the plugin binary `bin` on a free port with text logs and `envs`.
pub async fn spawn_plugin(bin: impl AsRef<Path>, envs: &[(&str, &str)]) -> (PluginProcess, u16) {
    let port = free_port();
    (spawn_plugin_on(bin, port, &[], envs).await, port)
}

/// Spawns the plugin binary `bin` on `port` (e.g. a restarted plugin on the
/// address its clients know) with `args` after `--grpc-port`, text logs and
/// `envs` (applied last, so they win).
pub async fn spawn_plugin_on(
    bin: impl AsRef<Path>,
    port: u16,
    args: &[&str],
    envs: &[(&str, &str)],
) -> PluginProcess {
    let port = port.to_string();
    let mut all_args = vec!["--grpc-port", port.as_str()];
    all_args.extend_from_slice(args);
    let mut all_envs = vec![("PRISM_LOG_FORMAT", "text")];
    all_envs.extend_from_slice(envs);
    PluginProcess::spawn(bin, &all_args, &all_envs)
        .await
        .expect("plugin spawns")
}

/// Waits until every health service in `services` reports `want`; returns how
/// long it took. Panics with the reason on timeout.
pub async fn wait_all_health(
    port: u16,
    services: &[&str],
    want: ServingStatus,
    timeout: Duration,
) -> Duration {
    wait_health(None, port, services, want, timeout).await
}

/// Like [`wait_all_health`] for `plugin` listening on `port`: the panic on
/// timeout also quotes the plugin's last log lines.
pub async fn wait_plugin_health(
    plugin: &PluginProcess,
    port: u16,
    services: &[&str],
    want: ServingStatus,
    timeout: Duration,
) -> Duration {
    wait_health(Some(plugin), port, services, want, timeout).await
}

/// Waits up to `timeout` until health `service` of the plugin at `port` is
/// SERVING; panics with the reason (the status last seen) on timeout.
pub async fn expect_serving(port: u16, service: &str, timeout: Duration) {
    wait_health(None, port, &[service], ServingStatus::Serving, timeout).await;
}

/// Waits up to `timeout` until health `service` of the plugin at `port` is
/// NOT_SERVING; panics with the reason (the status last seen) on timeout.
pub async fn expect_not_serving(port: u16, service: &str, timeout: Duration) {
    wait_health(None, port, &[service], ServingStatus::NotServing, timeout).await;
}

async fn wait_health(
    plugin: Option<&PluginProcess>,
    port: u16,
    services: &[&str],
    want: ServingStatus,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    for service in services {
        let left = timeout.saturating_sub(start.elapsed());
        if let Err(err) = wait_for_health(port, service, want, left).await {
            match plugin {
                Some(plugin) => panic!(
                    "{err}\n{} last lines:\n{}",
                    plugin.name(),
                    plugin.log_tail()
                ),
                None => panic!("{err}"),
            }
        }
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
