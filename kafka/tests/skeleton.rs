//! `prism-kafka` against a real Kafka-protocol broker (tansu): health follows
//! the broker (outage and recovery without restarting the plugin), liveness
//! never does, a plugin started before the broker catches up, and bad keys are
//! fatal (the shared suite, `prism_testkit::skeleton`, plus the broker details
//! and quiet librdkafka logs). tansu keeps topics in memory, so a restart
//! empties it; health only needs the broker to answer metadata requests.

use std::time::Duration;

use prism_testkit::lifecycle::text;
use prism_testkit::skeleton::{self, Subject, Swap};
use prism_testkit::{Kafka, free_port};

const PLUGIN: Subject = Subject {
    bin: env!("CARGO_BIN_EXE_prism-kafka"),
    backend: "kafka",
    // Process start plus the first metadata round trip.
    startup: Duration::from_secs(15),
};

async fn kafka() -> (Kafka, String) {
    let kafka = Kafka::start().await.expect("tansu starts");
    let bootstrap = kafka.bootstrap();
    (kafka, bootstrap)
}

#[tokio::test]
async fn serves_all_health_statuses_and_broker_details_without_leaking_the_password() {
    const PASSWORD: &str = "kafka-test-secret-4711";
    let (_kafka, bootstrap) = kafka().await;
    // A comma-separated list with blanks exercises the KAFKA_BROKERS convention.
    let brokers = format!(" {bootstrap} ,");
    let envs = [
        ("KAFKA_BROKERS", &*brokers),
        ("KAFKA_SASL_PASSWORD", PASSWORD),
    ];
    let report = skeleton::serves_all_health_statuses(&PLUGIN, &envs, PASSWORD).await;
    assert_eq!(
        report.details.get("brokers").map(String::as_str),
        Some("1"),
        "{report:?}"
    );
}

#[tokio::test]
async fn outage_turns_readiness_off_and_recovery_turns_it_back_on() {
    let (kafka, bootstrap) = kafka().await;
    let envs = [("KAFKA_BROKERS", &*bootstrap)];
    let plugin =
        skeleton::outage_turns_readiness_off_and_recovery_turns_it_back_on(&PLUGIN, kafka, &envs)
            .await;
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
    let (kafka, bootstrap) = kafka().await;
    skeleton::started_before_the_backend_it_stays_up_and_catches_up(
        &PLUGIN,
        kafka,
        &[("KAFKA_BROKERS", &bootstrap)],
    )
    .await;
}

#[tokio::test]
async fn misspelt_key_and_unknown_security_protocol_exit_64_naming_the_key() {
    for (env, value, key) in [
        ("PRISM_BACKEND__BROKER", "x:1", "backend.broker"),
        (
            "PRISM_BACKEND__SECURITY_PROTOCOL",
            "tls",
            "backend.security_protocol",
        ),
    ] {
        skeleton::bad_config_exits_64_naming_the_key(&PLUGIN, &[], &[(env, value)], key).await;
    }
}

#[tokio::test]
async fn reinitialize_swaps_the_producer_and_a_failed_one_keeps_the_old() {
    let ((_first, bootstrap), (_second, next)) = tokio::join!(kafka(), kafka());
    let swap = Swap {
        detail: "bootstrap",
        before: bootstrap.clone(),
        to: vec![("brokers", text(&next))],
        after: next,
        unreachable: vec![("brokers", text(&format!("127.0.0.1:{}", free_port())))],
        secret: None,
        invalid: vec![("security_protocol", text("tls"))],
        invalid_key: "backend.security_protocol",
    };
    skeleton::reinitialize_swaps_and_a_failed_one_keeps_the_old(
        &PLUGIN,
        &[("KAFKA_BROKERS", &bootstrap)],
        swap,
    )
    .await;
}
