//! `prism-kafka` authenticating to the broker with a TLS client certificate
//! (`backend.tls.cert_file` / `key_file`, librdkafka's
//! `ssl.certificate.location` / `ssl.key.location`): tansu behind the test
//! proxy, which requires a client certificate signed by the test CA and
//! records the ones it accepted. With a certificate from files publish and
//! subscribe work and the proxy saw exactly that certificate; without one,
//! or with one from another CA, the handshake is refused, the plugin stays
//! alive with readiness NOT_SERVING and the reason in its log, and the
//! private key appears in no log line.

mod common;

use common::pubsub::round_trip;
use common::secured::Secured;
use common::{assert_no_key_in, ready_channel, stop};
use prism_testkit::TestCa;

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_subscribe_through_the_mtls_proxy_with_a_client_certificate_from_files() {
    let mut secured = Secured::mtls().await;
    let client = secured.ca.client("prism-kafka-client").expect("cert");
    secured.present(&client);
    let (mut plugin, port) = secured.spawn(&[("PRISM_LOG_LEVEL", "debug")]).await;
    let channel = ready_channel(&plugin, port).await;
    round_trip(&channel, "mtls-topic", "mtls-group", "with a client cert").await;
    // Producer, admin client and consumer each presented the certificate.
    let presented = secured.proxy.client_certificates();
    assert!(presented.len() >= 2, "{} handshakes", presented.len());
    let ours = client.cert_der();
    assert!(presented.iter().all(|der| *der == ours));
    let logs = stop(&mut plugin).await;
    assert_no_key_in(&logs, "logs", [client.key_pem.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_certificate_is_refused_and_the_plugin_keeps_serving() {
    let secured = Secured::mtls().await;
    // TLS 1.3: the client learns of the refusal from the server's alert.
    secured.handshake_refused("certificate required").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_another_ca_is_refused_and_its_key_never_logged() {
    let mut secured = Secured::mtls().await;
    let other = TestCa::new("some-other-ca").expect("CA");
    let client = other.client("prism-kafka-client").expect("cert");
    secured.present(&client);
    let logs = secured.handshake_refused("unknown ca").await;
    assert_no_key_in(&logs, "logs", [client.key_pem.as_str()]);
}
