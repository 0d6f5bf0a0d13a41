//! `prism-kafka` over TLS (`security_protocol: ssl`) to a real broker: tansu
//! behind a TLS-terminating proxy whose certificate comes from a throwaway
//! CA (tansu has no TLS listener librdkafka can use). With the right CA
//! file publish and subscribe work; with a wrong one readiness stays
//! NOT_SERVING with a clear reason while the plugin keeps serving health.

mod common;

use std::time::Duration;

use common::{STARTUP, Secured, round_trip, spawn, wait_for_report};
use prism_plugin_core::proto::lifecycle::HealthStatus;
use prism_testkit::lifecycle::wait_all_health;
use prism_testkit::{ServingStatus, TestCa, wait_for_health};

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_subscribe_over_tls_with_the_ca_file() {
    let secured = Secured::start(true, None).await;
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let brokers = secured.proxy.bootstrap();
    let (plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &ca_file),
    ])
    .await;
    wait_for_health(port, "readiness", ServingStatus::Serving, STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    let channel = prism_testkit::connect(port, STARTUP)
        .await
        .expect("connect");
    let got = round_trip(&channel, "tls-topic", "tls-group", "over tls").await;
    assert_eq!(got, "over tls");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_keeps_readiness_off_with_a_clear_reason_and_the_plugin_serving() {
    let secured = Secured::start(true, None).await;
    let other = TestCa::new("some-other-ca").expect("CA");
    let wrong = secured.write("wrong-ca.pem", &other.ca_pem());
    let wrong = wrong.to_string_lossy().into_owned();
    let brokers = secured.proxy.bootstrap();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &wrong),
    ])
    .await;
    wait_for_health(port, "liveness", ServingStatus::Serving, STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    // The TLS handshake fails on every attempt; librdkafka's reason is logged.
    plugin
        .wait_for_log("certificate verify failed", STARTUP)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", plugin.logs()));
    // A probe has run into the failure: the report names it, and every
    // status that follows the backend is off while liveness stays on.
    wait_for_report(
        port,
        HealthStatus::Unhealthy,
        "certificate verify failed",
        STARTUP,
    )
    .await;
    wait_all_health(
        port,
        &["readiness", "", "kafka"],
        ServingStatus::NotServing,
        STARTUP,
    )
    .await;
    wait_all_health(port, &["liveness"], ServingStatus::Serving, STARTUP).await;
    assert!(
        plugin.try_status().expect("status").is_none(),
        "plugin exited"
    );
    plugin.sigterm().expect("sigterm");
    let status = plugin
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0), "{}", plugin.logs());
    assert!(!plugin.logs().contains("panicked"), "{}", plugin.logs());
}
