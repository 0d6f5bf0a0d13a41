//! `prism-kafka` with SASL/SCRAM (SCRAM-SHA-256 and SCRAM-SHA-512) against a
//! real broker: tansu behind the test proxy, which runs the server side of
//! SCRAM (RFC 5802/7677: salted, 4096 PBKDF2 iterations, proof checked
//! against the stored key, server signature that librdkafka verifies) and
//! accepts no other mechanism. Right password: round trip as that user; a
//! wrong password or an unknown user: refused by the broker, the plugin
//! stays alive with readiness NOT_SERVING and the reason in its log and
//! health, and no password is logged.

mod common;

use common::{Secured, ready_channel, refused_with, round_trip, spawn, stop};
use prism_testkit::SaslMechanism;

const USER: &str = "prism-scram-app";
const PASSWORD: &str = "scram-secret-0f3e9a";

async fn round_trip_with(mechanism: SaslMechanism, tls: bool) {
    let secured = Secured::start_with(tls, false, Some(&[(USER, PASSWORD)]), mechanism).await;
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let brokers = secured.proxy.bootstrap();
    let protocol = if tls { "sasl_ssl" } else { "sasl_plaintext" };
    let mut envs = vec![
        ("KAFKA_BROKERS", brokers.as_str()),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", protocol),
        ("PRISM_BACKEND__SASL__MECHANISM", mechanism.name()),
        ("KAFKA_SASL_USERNAME", USER),
        ("KAFKA_SASL_PASSWORD", PASSWORD),
        ("PRISM_LOG_LEVEL", "debug"),
    ];
    if tls {
        envs.push(("PRISM_BACKEND__TLS__CA_FILE", ca_file.as_str()));
    }
    let (mut plugin, port) = spawn(&envs).await;
    let channel = ready_channel(&plugin, port).await;
    let payload = format!("over {}", mechanism.name());
    let got = round_trip(&channel, "scram-topic", "scram-group", &payload).await;
    assert_eq!(got, payload);
    // Producer, admin client and the subscription's consumer each
    // authenticated with SCRAM (the proxy offers nothing else) and verified
    // the proxy's server signature (librdkafka drops the connection otherwise).
    let authenticated = secured.proxy.authenticated();
    assert!(authenticated.len() >= 2, "{authenticated:?}");
    assert!(authenticated.iter().all(|u| u == USER), "{authenticated:?}");
    assert!(secured.proxy.rejected().is_empty());
    let logs = stop(&mut plugin).await;
    assert!(!logs.contains(PASSWORD), "password leaked into logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_sha_256_publish_and_subscribe_round_trip_as_that_user() {
    round_trip_with(SaslMechanism::ScramSha256, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_sha_512_publish_and_subscribe_round_trip_as_that_user_over_tls() {
    round_trip_with(SaslMechanism::ScramSha512, true).await;
}

/// The plugin with `user`/`password` against a SCRAM-SHA-512 proxy that
/// knows only [`USER`]/[`PASSWORD`]: refused with the broker's reason.
async fn refused(user: &str, password: &str) {
    let mechanism = SaslMechanism::ScramSha512;
    let secured = Secured::start_with(false, false, Some(&[(USER, PASSWORD)]), mechanism).await;
    let brokers = secured.proxy.bootstrap();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "sasl_plaintext"),
        ("PRISM_BACKEND__SASL__MECHANISM", "SCRAM-SHA-512"),
        ("KAFKA_SASL_USERNAME", user),
        ("KAFKA_SASL_PASSWORD", password),
        ("PRISM_LOG_LEVEL", "debug"),
    ])
    .await;
    let reason = "invalid credentials with SASL mechanism SCRAM-SHA-512";
    refused_with(&mut plugin, port, reason, &["readiness", "", "kafka"]).await;
    assert!(secured.proxy.authenticated().is_empty());
    let rejected = secured.proxy.rejected();
    assert!(
        !rejected.is_empty() && rejected.iter().all(|u| u == user),
        "{rejected:?}"
    );
    let logs = stop(&mut plugin).await;
    assert!(
        !logs.contains(password) && !logs.contains(PASSWORD),
        "password leaked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_scram_password_keeps_readiness_off_with_the_reason_and_leaks_nothing() {
    refused(USER, "not-the-scram-password-71c2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_scram_user_is_refused_like_a_wrong_password() {
    refused("nobody-here", "unknown-user-password-5b8d").await;
}
