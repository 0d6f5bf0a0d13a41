//! `prism-kafka` against a real Kafka-protocol broker (tansu): health follows
//! the broker (outage and recovery without restarting the plugin), liveness
//! never does, a plugin started before the broker catches up, and bad keys are
//! fatal (the shared suite, `prism_testkit::skeleton`, plus the broker details
//! and quiet librdkafka logs). tansu keeps topics in memory, so a restart
//! empties it; health only needs the broker to answer metadata requests.

use prism_testkit::lifecycle::text;
use prism_testkit::skeleton::{self, Subject, Swap};
use prism_testkit::{Kafka, free_port};

const PLUGIN: Subject<Kafka> = Subject::new(env!("CARGO_BIN_EXE_prism-kafka"), "kafka", |kafka| {
    vec![("KAFKA_BROKERS", kafka.bootstrap())]
});

prism_testkit::skeleton_tests!(PLUGIN;
    started_before_the_broker_it_stays_up_and_catches_up => late_start,
);

#[tokio::test]
async fn serves_all_health_statuses_and_broker_details_without_leaking_the_password() {
    const PASSWORD: &str = "kafka-test-secret-4711";
    let kafka = Kafka::start().await.expect("tansu starts");
    // A comma-separated list with blanks exercises the KAFKA_BROKERS convention.
    let brokers = format!(" {} ,", kafka.bootstrap());
    let envs = [
        ("KAFKA_BROKERS", &*brokers),
        ("KAFKA_SASL_PASSWORD", PASSWORD),
    ];
    let report = skeleton::serves_all_health_statuses(&PLUGIN, &envs, PASSWORD).await;
    let brokers = report.details.get("brokers").map(String::as_str);
    assert_eq!(brokers, Some("1"), "{report:?}");
}

#[tokio::test]
async fn outage_turns_readiness_off_and_recovery_turns_it_back_on() {
    let plugin = skeleton::outage(&PLUGIN).await;
    // While the broker was down librdkafka reports every failed reconnect;
    // those must not flood the log at WARN.
    let logs = plugin.logs();
    let warnings = logs
        .lines()
        .filter(|l| l.contains("librdkafka") && l.contains("WARN"));
    let warnings = warnings.count();
    assert!(warnings <= 5, "{warnings} librdkafka warnings:\n{logs}");
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
    let (first, second) = skeleton::two_backends::<Kafka>().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let swap = Swap {
        detail: "bootstrap",
        before: first.bootstrap(),
        to: vec![("brokers", text(&second.bootstrap()))],
        after: second.bootstrap(),
        unreachable: vec![("brokers", text(&dead))],
        secret: None,
        invalid: vec![("security_protocol", text("tls"))],
        invalid_key: "backend.security_protocol",
    };
    skeleton::reinitialize_swaps_and_a_failed_one_keeps_the_old(&PLUGIN, &first, swap).await;
}
