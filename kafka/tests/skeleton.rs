//! `prism-kafka` against a real Kafka-protocol broker (tansu): health follows
//! the broker (outage and recovery without restarting the plugin), liveness
//! never does, a plugin started before the broker catches up, and bad keys are
//! fatal. tansu keeps topics in memory, so a restart empties it; health only
//! needs the broker to answer metadata requests.

use std::time::{Duration, Instant};

use prism_plugin_core::proto::lifecycle::{HealthStatus, InitializeResponse};
use prism_testkit::lifecycle::{
    health_check, health_detail, initialize, spawn_plugin, text, wait_all_health,
};
use prism_testkit::{Kafka, PluginProcess, ServingStatus, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_prism-kafka");
/// Statuses that follow the backend.
const READY: &[&str] = &["", "readiness", "kafka"];
/// First SERVING after spawn (process start plus first metadata round trip).
const STARTUP: Duration = Duration::from_secs(15);

#[tokio::test]
async fn serves_all_health_statuses_and_broker_details_without_leaking_the_password() {
    const PASSWORD: &str = "kafka-test-secret-4711";
    let kafka = Kafka::start().await.expect("tansu starts");
    let started = Instant::now();
    // A comma-separated list with blanks exercises the KAFKA_BROKERS convention.
    let brokers = format!(" {} ,", kafka.bootstrap());
    let (mut plugin, port) = spawn_plugin(
        BIN,
        &[
            ("KAFKA_BROKERS", &brokers),
            ("KAFKA_SASL_PASSWORD", PASSWORD),
            ("PRISM_LOG_LEVEL", "debug"),
        ],
    )
    .await;
    wait_all_health(
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

    let report = health_check(port).await;
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
    let (mut plugin, port) = spawn_plugin(BIN, &[("KAFKA_BROKERS", &kafka.bootstrap())]).await;
    wait_all_health(port, READY, ServingStatus::Serving, STARTUP).await;

    kafka.stop().await.expect("tansu stops");
    let down = wait_all_health(
        port,
        &["readiness", ""],
        ServingStatus::NotServing,
        Duration::from_secs(3),
    )
    .await;
    eprintln!("[timing] kafka outage noticed after {down:?}");
    wait_all_health(
        port,
        &["liveness"],
        ServingStatus::Serving,
        Duration::from_secs(1),
    )
    .await;
    plugin.assert_running();

    kafka.start_again().await.expect("tansu restarts");
    let up = wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(5)).await;
    eprintln!("[timing] kafka recovery noticed after {up:?}");
    plugin.assert_running();

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
    let (mut plugin, port) = spawn_plugin(BIN, &[("KAFKA_BROKERS", &kafka.bootstrap())]).await;
    wait_all_health(port, &["liveness"], ServingStatus::Serving, STARTUP).await;
    wait_all_health(
        port,
        READY,
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;
    // Give the initialize retry loop a few rounds: it must neither exit nor flip.
    tokio::time::sleep(Duration::from_secs(1)).await;
    plugin.assert_running();
    wait_all_health(
        port,
        &["readiness"],
        ServingStatus::NotServing,
        Duration::from_secs(1),
    )
    .await;

    kafka.start_again().await.expect("tansu starts");
    let up = wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(10)).await;
    eprintln!("[timing] kafka late start noticed after {up:?}");
    plugin.assert_running();
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

#[tokio::test]
async fn reinitialize_swaps_the_producer_and_a_failed_one_keeps_the_old() {
    let (first, second) = tokio::join!(Kafka::start(), Kafka::start());
    let (first, second) = (first.expect("tansu starts"), second.expect("tansu starts"));
    let (_plugin, port) = spawn_plugin(BIN, &[("KAFKA_BROKERS", &first.bootstrap())]).await;
    wait_all_health(port, READY, ServingStatus::Serving, STARTUP).await;
    assert_eq!(health_detail(port, "bootstrap").await, first.bootstrap());

    let InitializeResponse {
        success: ok, error, ..
    } = initialize(port, vec![("brokers", text(&second.bootstrap()))]).await;
    assert!(ok, "{error}");
    assert_eq!(
        health_detail(port, "bootstrap").await,
        second.bootstrap(),
        "new producer in use"
    );

    // Unreachable broker: retriable failure, the previous producer stays.
    let dead = format!("127.0.0.1:{}", free_port());
    let InitializeResponse {
        success: ok, error, ..
    } = initialize(port, vec![("brokers", text(&dead))]).await;
    assert!(!ok && error.contains("unavailable"), "{error}");
    // Bad setting: a configuration error naming the key.
    let InitializeResponse {
        success: ok, error, ..
    } = initialize(port, vec![("security_protocol", text("tls"))]).await;
    assert!(
        !ok && error.contains("backend.security_protocol"),
        "{error}"
    );
    wait_all_health(port, READY, ServingStatus::Serving, Duration::from_secs(1)).await;
    assert_eq!(
        health_detail(port, "bootstrap").await,
        second.bootstrap(),
        "old producer kept"
    );
}
