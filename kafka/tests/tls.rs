//! `prism-kafka` over TLS (`security_protocol: ssl`) to a real broker: tansu
//! behind a TLS-terminating proxy whose certificate comes from a throwaway
//! CA (tansu has no TLS listener librdkafka can use). With the right CA
//! file publish and subscribe work; with a wrong one readiness stays
//! NOT_SERVING with a clear reason while the plugin keeps serving health.

mod common;

use common::pubsub::round_trip;
use common::ready_channel;
use common::secured::Secured;
use prism_testkit::TestCa;

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_subscribe_over_tls_with_the_ca_file() {
    let secured = Secured::tls().await;
    let (plugin, port) = secured.spawn(&[]).await;
    let channel = ready_channel(&plugin, port).await;
    round_trip(&channel, "tls-topic", "tls-group", "over tls").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_keeps_readiness_off_with_a_clear_reason_and_the_plugin_serving() {
    let mut secured = Secured::tls().await;
    let other = TestCa::new("some-other-ca").expect("CA");
    let wrong = secured.write("wrong-ca.pem", &other.ca_pem());
    secured.set("PRISM_BACKEND__TLS__CA_FILE", wrong.to_string_lossy());
    // The plugin refuses the proxy's certificate on every attempt.
    let logs = secured.handshake_refused("certificate verify failed").await;
    assert!(!logs.contains("panicked"), "{logs}");
}
