//! Helpers shared by the security tests (`tls.rs`, `mtls.rs`, `sasl.rs`,
//! `scram.rs`, `vault.rs`): tansu behind a TLS- (optionally mTLS) and/or
//! SASL-terminating [`KafkaProxy`], the plugin
//! spawned against it, and a publish → subscribe round trip.

#![allow(dead_code, unreachable_pub)] // each test binary uses a different subset

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::{HealthCheckResponse, HealthStatus};
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use prism_plugin_core::proto::pubsub::{PublishRequest, SubscribeRequest};
use prism_testkit::lifecycle::wait_all_health;
use prism_testkit::{
    Kafka, KafkaProxy, PluginProcess, ProxyOptions, SaslMechanism, ServingStatus, TestCa, free_port,
};
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_prism-kafka");
pub const STARTUP: Duration = Duration::from_secs(20);
/// Longest wait for one expected message (a new group member first waits
/// for its partitions: about half the session timeout with tansu).
pub const RECV: Duration = Duration::from_secs(20);

/// tansu behind a proxy, plus the CA that signed the proxy's certificate.
pub struct Secured {
    pub kafka: Kafka,
    pub proxy: KafkaProxy,
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
    /// The CA certificate (PEM) as a file, for `backend.tls.ca_file`.
    pub ca_file: PathBuf,
}

impl Secured {
    /// Starts tansu advertising the proxy's port, and the proxy (TLS when
    /// `tls`, SASL/PLAIN with `users` when given).
    pub async fn start(tls: bool, users: Option<&[(&str, &str)]>) -> Self {
        Self::start_with(tls, false, users, SaslMechanism::Plain).await
    }

    /// [`Secured::start`] with SASL `mechanism` for `users`, and with
    /// `mtls` (needs `tls`) a required client certificate from [`Secured::ca`].
    pub async fn start_with(
        tls: bool,
        mtls: bool,
        users: Option<&[(&str, &str)]>,
        mechanism: SaslMechanism,
    ) -> Self {
        Self::start_inner(tls, users, mechanism, |ca| mtls.then(|| ca.ca_pem())).await
    }

    /// TLS, no SASL, and a required client certificate signed by `client_ca`
    /// (PEM; e.g. the root of Vault's PKI engine) instead of [`Secured::ca`].
    pub async fn start_trusting(client_ca: String) -> Self {
        Self::start_inner(true, None, SaslMechanism::Plain, |_| Some(client_ca)).await
    }

    async fn start_inner(
        tls: bool,
        users: Option<&[(&str, &str)]>,
        mechanism: SaslMechanism,
        client_ca: impl FnOnce(&TestCa) -> Option<String>,
    ) -> Self {
        let ca = TestCa::new("prism-kafka-test-ca").expect("CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.ca_pem()).expect("write CA");
        let proxy_port = free_port();
        let kafka = Kafka::start_advertising(proxy_port)
            .await
            .expect("tansu starts");
        let options = ProxyOptions {
            tls: tls.then(|| ca.server(&["127.0.0.1", "localhost"]).expect("server cert")),
            client_ca: client_ca(&ca),
            sasl_users: users.map(|users| {
                users
                    .iter()
                    .map(|(u, p)| (u.to_string(), p.to_string()))
                    .collect()
            }),
            sasl_mechanism: mechanism,
        };
        let proxy = KafkaProxy::start(proxy_port, kafka.port(), options)
            .await
            .expect("proxy starts");
        Secured {
            kafka,
            proxy,
            ca,
            dir,
            ca_file,
        }
    }

    /// Writes a PEM file into the temp dir and returns its path.
    pub fn write(&self, name: &str, pem: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    }
}

/// Spawns the plugin with text logs and `envs`; returns it and its port.
pub async fn spawn(envs: &[(&str, &str)]) -> (PluginProcess, u16) {
    let port = free_port();
    let mut all = vec![
        ("PRISM_LOG_FORMAT", "text"),
        ("PRISM_BACKEND__SESSION_TIMEOUT", "6s"),
    ];
    all.extend_from_slice(envs);
    let plugin = PluginProcess::spawn(BIN, &["--grpc-port", &port.to_string()], &all)
        .await
        .expect("plugin spawns");
    (plugin, port)
}

/// Waits until `plugin` (on `port`) is ready and returns a channel to it;
/// panics with its logs if it never is.
pub async fn ready_channel(plugin: &PluginProcess, port: u16) -> Channel {
    prism_testkit::wait_for_health(port, "readiness", ServingStatus::Serving, STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    prism_testkit::connect(port, STARTUP)
        .await
        .expect("connect")
}

/// `plugin` (on `port`) comes up live, logs `reason` for every backend
/// attempt, and a probe reports it: Unhealthy naming `reason`, `not_ready`
/// statuses NOT_SERVING while liveness stays SERVING and the process runs.
pub async fn refused_with(plugin: &mut PluginProcess, port: u16, reason: &str, not_ready: &[&str]) {
    let logs = |e: prism_testkit::Error, plugin: &PluginProcess| panic!("{e}\n{}", plugin.logs());
    let live = prism_testkit::wait_for_health(port, "liveness", ServingStatus::Serving, STARTUP);
    live.await.unwrap_or_else(|e| logs(e, plugin));
    let logged = plugin.wait_for_log(reason, STARTUP).await;
    logged.unwrap_or_else(|e| logs(e, plugin));
    wait_for_report(port, HealthStatus::Unhealthy, reason, STARTUP).await;
    wait_all_health(port, not_ready, ServingStatus::NotServing, STARTUP).await;
    wait_all_health(port, &["liveness"], ServingStatus::Serving, STARTUP).await;
    let status = plugin.try_status().expect("status");
    assert!(status.is_none(), "plugin exited: {status:?}");
}

/// SIGTERMs `plugin`, waits up to 15 s for it to exit, returns its logs.
pub async fn stop(plugin: &mut PluginProcess) -> String {
    plugin.sigterm().expect("sigterm");
    let exited = plugin.wait_exit(Duration::from_secs(15)).await;
    let status = exited.expect("exits");
    assert_eq!(status.code(), Some(0), "{}", plugin.logs());
    plugin.logs()
}

/// Polls the lifecycle `HealthCheck` of the plugin at `port` until it
/// reports `status` with a message containing `reason` (so a probe has run
/// and seen it) and returns that report; panics with the last one after
/// `timeout`.
pub async fn wait_for_report(
    port: u16,
    status: HealthStatus,
    reason: &str,
    timeout: Duration,
) -> HealthCheckResponse {
    let deadline = Instant::now() + timeout;
    loop {
        let report = prism_testkit::lifecycle::health_check(port).await;
        if report.status == status as i32 && report.message.contains(reason) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "no {status:?} report mentioning {reason:?} within {timeout:?}; last: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn publish_request(topic: &str, payload: &str) -> PublishRequest {
    PublishRequest {
        topic: topic.to_string(),
        payload: payload.as_bytes().to_vec().into(),
        metadata: HashMap::from([("via".to_string(), "proxy".to_string())]),
        partition_key: "k".to_string(),
    }
}

/// Subscribes (group `group`, from earliest), publishes `payload` and
/// returns what the subscriber received.
pub async fn round_trip(channel: &Channel, topic: &str, group: &str, payload: &str) -> String {
    let mut client = PubSubBasicInterfaceClient::new(channel.clone());
    let reply = client
        .publish(publish_request(topic, payload))
        .await
        .expect("publish")
        .into_inner();
    assert!(reply.success, "{reply:?}");
    let mut stream = client
        .subscribe(SubscribeRequest {
            topic: topic.to_string(),
            subscriber_id: group.to_string(),
            options: HashMap::from([("start".to_string(), "earliest".to_string())]),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let message = tokio::time::timeout(RECV, stream.message())
        .await
        .expect("a message within the timeout")
        .expect("stream ok")
        .expect("stream open");
    assert_eq!(
        message.metadata.get("via").map(String::as_str),
        Some("proxy")
    );
    String::from_utf8(message.payload.to_vec()).expect("utf-8")
}
