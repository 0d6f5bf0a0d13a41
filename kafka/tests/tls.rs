//! `prism-kafka` over TLS (`security_protocol: ssl`) to a real broker: tansu
//! behind a TLS-terminating proxy whose certificate comes from a throwaway
//! CA (tansu has no TLS listener librdkafka can use). With the right CA
//! file publish and subscribe work; with a wrong one readiness stays
//! NOT_SERVING with a clear reason while the plugin keeps serving health.

mod common;

use common::{Secured, ready_channel, refused_with, round_trip, spawn, stop};
use prism_testkit::TestCa;

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
    let channel = ready_channel(&plugin, port).await;
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
    // The TLS handshake fails on every attempt; librdkafka's reason is
    // logged, a probe reports it, and every status that follows the backend
    // is off while liveness stays on.
    let reason = "certificate verify failed";
    refused_with(&mut plugin, port, reason, &["readiness", "", "kafka"]).await;
    let logs = stop(&mut plugin).await;
    assert!(!logs.contains("panicked"), "{logs}");
}
