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

use common::{Secured, ready_channel, refused_with, round_trip, spawn, stop};
use prism_testkit::{SaslMechanism, TestCa};

async fn mtls_proxy() -> Secured {
    Secured::start_with(true, true, None, SaslMechanism::Plain).await
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_subscribe_through_the_mtls_proxy_with_a_client_certificate_from_files() {
    let secured = mtls_proxy().await;
    let client = secured
        .ca
        .client("prism-kafka-client")
        .expect("client cert");
    let cert_file = secured.write("client.pem", &client.cert_pem);
    let key_file = secured.write("client-key.pem", &client.key_pem);
    let (cert_file, key_file) = (cert_file.to_string_lossy(), key_file.to_string_lossy());
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let brokers = secured.proxy.bootstrap();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &ca_file),
        ("PRISM_BACKEND__TLS__CERT_FILE", &cert_file),
        ("PRISM_BACKEND__TLS__KEY_FILE", &key_file),
        ("PRISM_LOG_LEVEL", "debug"),
    ])
    .await;
    let channel = ready_channel(&plugin, port).await;
    let got = round_trip(&channel, "mtls-topic", "mtls-group", "with a client cert").await;
    assert_eq!(got, "with a client cert");
    // Producer, admin client and consumer each presented the certificate.
    let presented = secured.proxy.client_certificates();
    assert!(presented.len() >= 2, "{} handshakes", presented.len());
    let ours = client.cert_der();
    assert!(presented.iter().all(|der| *der == ours));
    let logs = stop(&mut plugin).await;
    assert!(
        !logs.contains(key_body(&client.key_pem)),
        "the private key leaked"
    );
}

/// The base64 body of a PEM key (its first line of key material).
fn key_body(pem: &str) -> &str {
    pem.lines().nth(1).expect("PEM body")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_certificate_is_refused_and_the_plugin_keeps_serving() {
    let secured = mtls_proxy().await;
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let brokers = secured.proxy.bootstrap();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &ca_file),
    ])
    .await;
    // TLS 1.3: the client learns of the refusal from the server's alert.
    let reason = "certificate required";
    refused_with(&mut plugin, port, reason, &["readiness", "", "kafka"]).await;
    assert!(secured.proxy.client_certificates().is_empty());
    assert!(secured.proxy.failed_handshakes() > 0);
    stop(&mut plugin).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_another_ca_is_refused_and_its_key_never_logged() {
    let secured = mtls_proxy().await;
    let other = TestCa::new("some-other-ca").expect("CA");
    let client = other.client("prism-kafka-client").expect("client cert");
    let cert_file = secured.write("client.pem", &client.cert_pem);
    let key_file = secured.write("client-key.pem", &client.key_pem);
    let (cert_file, key_file) = (cert_file.to_string_lossy(), key_file.to_string_lossy());
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let brokers = secured.proxy.bootstrap();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "ssl"),
        ("PRISM_BACKEND__TLS__CA_FILE", &ca_file),
        ("PRISM_BACKEND__TLS__CERT_FILE", &cert_file),
        ("PRISM_BACKEND__TLS__KEY_FILE", &key_file),
        ("PRISM_LOG_LEVEL", "debug"),
    ])
    .await;
    let reason = "unknown ca";
    refused_with(&mut plugin, port, reason, &["readiness", "", "kafka"]).await;
    assert!(secured.proxy.client_certificates().is_empty());
    assert!(secured.proxy.failed_handshakes() > 0);
    let logs = stop(&mut plugin).await;
    assert!(
        !logs.contains(key_body(&client.key_pem)),
        "the private key leaked"
    );
}
