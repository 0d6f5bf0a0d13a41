//! `prism-kafka` against a real Kafka-protocol broker (tansu): health follows
//! the broker (outage and recovery without restarting the plugin), liveness
//! never does, a plugin started before the broker catches up, and bad keys are
//! fatal. tansu keeps topics in memory, so a restart empties it; health only
//! needs the broker to answer metadata requests.

use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::lifecycle::{HealthCheckRequest, HealthStatus, InitializeRequest};
use prism_testkit::{Kafka, PluginProcess, ServingStatus, free_port, wait_for_health};

const BIN: &str = env!("CARGO_BIN_EXE_prism-kafka");
/// Statuses that follow the backend.
const READY: &[&str] = &["", "readiness", "kafka"];
/// First SERVING after spawn (process start plus first metadata round trip).
const STARTUP: Duration = Duration::from_secs(15);

async fn spawn(envs: &[(&str, &str)]) -> (PluginProcess, u16) {
    let port = free_port();
    let mut all = vec![("PRISM_LOG_FORMAT", "text")];
    all.extend_from_slice(envs);
    let plugin = PluginProcess::spawn(BIN, &["--grpc-port", &port.to_string()], &all)
        .await
        .expect("plugin spawns");
    (plugin, port)
}

/// Waits until every service in `services` reports `want`; returns how long it took.
async fn wait_all(
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

fn assert_running(plugin: &mut PluginProcess) {
    let status = plugin.try_status().expect("status");
    assert!(
        status.is_none(),
        "plugin exited: {status:?}\n{}",
        plugin.logs()
    );
}

#[tokio::test]
async fn serves_all_health_statuses_and_broker_details_without_leaking_the_password() {
    const PASSWORD: &str = "kafka-test-secret-4711";
    let kafka = Kafka::start().await.expect("tansu starts");
    let started = Instant::now();
    // A comma-separated list with blanks exercises the KAFKA_BROKERS convention.
    let brokers = format!(" {} ,", kafka.bootstrap());
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("KAFKA_SASL_PASSWORD", PASSWORD),
        ("PRISM_LOG_LEVEL", "debug"),
    ])
    .await;
    wait_all(
        port,
        &["", "readiness", "liveness", "kafka"],
        ServingStatus::Serving,
        STARTUP,
    )
    .await;
    eprintln!(
        "[timing] kafka plugin SERVING after {:?}",
        started.elapsed()
    );

    let mut client = LifecycleInterfaceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let report = client
        .health_check(HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner();
    assert!(
        report.status == HealthStatus::Healthy as i32
            || report.status == HealthStatus::Degraded as i32,
        "{report:?}"
    );
    assert!(report.details.contains_key("latency_ms"), "{report:?}");
    assert_eq!(
        report.details.get("brokers").map(String::as_str),
        Some("1"),
        "{report:?}"
    );
    assert!(!format!("{report:?}").contains(PASSWORD));

    plugin.sigterm().expect("sigterm");
    let status = plugin
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", plugin.logs());
    assert!(
        !plugin.logs().contains(PASSWORD),
        "password leaked into logs"
    );
}

#[tokio::test]
async fn outage_turns_readiness_off_and_recovery_turns_it_back_on() {
    let mut kafka = Kafka::start().await.expect("tansu starts");
    let (mut plugin, port) = spawn(&[("KAFKA_BROKERS", &kafka.bootstrap())]).await;
    wait_all(port, READY, ServingStatus::Serving, STARTUP).await;

    kafka.stop().await.expect("tansu stops");
    let down = wait_all(
        port,
        &["readiness", ""],
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("[timing] kafka outage noticed after {down:?}");
    wait_all(
        port,
        &["liveness"],
        ServingStatus::Serving,
        Duration::from_secs(1),
    )
    .await;
    assert_running(&mut plugin);

    kafka.start_again().await.expect("tansu restarts");
    let up = wait_all(port, READY, ServingStatus::Serving, Duration::from_secs(5)).await;
    eprintln!("[timing] kafka recovery noticed after {up:?}");
    assert_running(&mut plugin);

    // While the broker was down librdkafka reports every failed reconnect;
    // those must not flood the log at WARN.
    let warnings = plugin
        .logs()
        .lines()
        .filter(|l| l.contains("librdkafka") && l.contains("WARN"))
        .count();
    assert!(
        warnings <= 5,
        "{warnings} librdkafka warnings:\n{}",
        plugin.logs()
    );
}

#[tokio::test]
async fn started_before_the_broker_it_stays_up_and_catches_up() {
    let mut kafka = Kafka::start().await.expect("tansu starts");
    kafka.stop().await.expect("tansu stops");
    let (mut plugin, port) = spawn(&[("KAFKA_BROKERS", &kafka.bootstrap())]).await;
    wait_all(port, &["liveness"], ServingStatus::Serving, STARTUP).await;
    wait_all(
        port,
        READY,
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;
    // Give the initialize retry loop a few rounds: it must neither exit nor flip.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_running(&mut plugin);
    wait_all(
        port,
        &["readiness"],
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;

    kafka.start_again().await.expect("tansu starts");
    let up = wait_all(port, READY, ServingStatus::Serving, Duration::from_secs(10)).await;
    eprintln!("[timing] kafka late start noticed after {up:?}");
    assert_running(&mut plugin);
}

#[tokio::test]
async fn misspelt_key_and_unknown_security_protocol_exit_64_naming_the_key() {
    for (env, key) in [
        ("PRISM_BACKEND__BROKER", "backend.broker"),
        (
            "PRISM_BACKEND__SECURITY_PROTOCOL",
            "backend.security_protocol",
        ),
    ] {
        let value = if env.ends_with("PROTOCOL") {
            "tls"
        } else {
            "x:1"
        };
        let mut plugin = PluginProcess::spawn(BIN, &["--grpc-port", "0"], &[(env, value)])
            .await
            .expect("spawn");
        let status = plugin
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exits");
        assert_eq!(status.code(), Some(64), "{}", plugin.logs());
        assert!(plugin.logs().contains(key), "{}", plugin.logs());
    }
}

fn text(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue(s.to_string())),
    }
}

fn initialize_with(fields: Vec<(&str, prost_types::Value)>) -> InitializeRequest {
    InitializeRequest {
        name: "test-gateway".into(),
        version: String::new(),
        config: Some(prost_types::Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }),
    }
}

/// The value of health detail `key` as the lifecycle HealthCheck reports it.
async fn detail(port: u16, key: &str) -> String {
    let mut client = LifecycleInterfaceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let report = client
        .health_check(HealthCheckRequest {})
        .await
        .expect("HealthCheck")
        .into_inner();
    report.details.get(key).cloned().unwrap_or_default()
}

async fn initialize(port: u16, fields: Vec<(&str, prost_types::Value)>) -> (bool, String) {
    let mut client = LifecycleInterfaceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let reply = client
        .initialize(initialize_with(fields))
        .await
        .expect("Initialize")
        .into_inner();
    (reply.success, reply.error)
}

#[tokio::test]
async fn reinitialize_swaps_the_producer_and_a_failed_one_keeps_the_old() {
    let (first, second) = tokio::join!(Kafka::start(), Kafka::start());
    let (first, second) = (first.expect("tansu starts"), second.expect("tansu starts"));
    let (_plugin, port) = spawn(&[("KAFKA_BROKERS", &first.bootstrap())]).await;
    wait_all(port, READY, ServingStatus::Serving, STARTUP).await;
    assert_eq!(detail(port, "bootstrap").await, first.bootstrap());

    let (ok, error) = initialize(port, vec![("brokers", text(&second.bootstrap()))]).await;
    assert!(ok, "{error}");
    assert_eq!(
        detail(port, "bootstrap").await,
        second.bootstrap(),
        "new producer in use"
    );

    // Unreachable broker: retriable failure, the previous producer stays.
    let dead = format!("127.0.0.1:{}", free_port());
    let (ok, error) = initialize(port, vec![("brokers", text(&dead))]).await;
    assert!(!ok && error.contains("unavailable"), "{error}");
    // Bad setting: a configuration error naming the key.
    let (ok, error) = initialize(port, vec![("security_protocol", text("tls"))]).await;
    assert!(
        !ok && error.contains("backend.security_protocol"),
        "{error}"
    );
    wait_all(port, READY, ServingStatus::Serving, Duration::from_secs(1)).await;
    assert_eq!(
        detail(port, "bootstrap").await,
        second.bootstrap(),
        "old producer kept"
    );
}
