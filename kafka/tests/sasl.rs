//! `prism-kafka` with SASL (`sasl_plaintext`, `sasl_ssl`, mechanism PLAIN)
//! against a real broker: tansu behind a proxy that terminates SASL/PLAIN
//! (and TLS) itself and records who authenticated, because tansu's own SASL
//! cannot be used (see `testkit/src/kafka_proxy.rs`). Right credentials:
//! round trip works and the proxy saw that user; a wrong password: readiness
//! NOT_SERVING with the broker's reason, the plugin keeps serving, and the
//! password appears in no log line.

mod common;

use common::{Secured, ready_channel, refused_with, round_trip, spawn, stop};

const USER: &str = "prism-app";
const PASSWORD: &str = "sasl-secret-6d1f";

async fn round_trip_with(tls: bool) {
    let secured = Secured::start(tls, Some(&[(USER, PASSWORD)])).await;
    let ca_file = secured.ca_file.to_string_lossy().into_owned();
    let brokers = secured.proxy.bootstrap();
    let protocol = if tls { "sasl_ssl" } else { "sasl_plaintext" };
    let mut envs = vec![
        ("KAFKA_BROKERS", brokers.as_str()),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", protocol),
        ("PRISM_BACKEND__SASL__MECHANISM", "PLAIN"),
        ("KAFKA_SASL_USERNAME", USER),
        ("KAFKA_SASL_PASSWORD", PASSWORD),
        ("PRISM_LOG_LEVEL", "debug"),
    ];
    if tls {
        envs.push(("PRISM_BACKEND__TLS__CA_FILE", ca_file.as_str()));
    }
    let (mut plugin, port) = spawn(&envs).await;
    let channel = ready_channel(&plugin, port).await;
    let got = round_trip(&channel, "sasl-topic", "sasl-group", protocol).await;
    assert_eq!(got, protocol);
    let authenticated = secured.proxy.authenticated();
    // Producer, admin client and the subscription's consumer each connect.
    assert!(authenticated.len() >= 2, "{authenticated:?}");
    assert!(authenticated.iter().all(|u| u == USER), "{authenticated:?}");
    assert!(secured.proxy.rejected().is_empty());
    let logs = stop(&mut plugin).await;
    assert!(!logs.contains(PASSWORD), "password leaked into logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_plaintext_with_the_right_password_round_trips_as_that_user() {
    round_trip_with(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_with_the_right_password_round_trips_as_that_user() {
    round_trip_with(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_keeps_readiness_off_with_the_reason_and_leaks_nothing() {
    const WRONG: &str = "not-the-password-93ab";
    let secured = Secured::start(false, Some(&[(USER, PASSWORD)])).await;
    let brokers = secured.proxy.bootstrap();
    let (mut plugin, port) = spawn(&[
        ("KAFKA_BROKERS", &brokers),
        ("PRISM_BACKEND__SECURITY_PROTOCOL", "sasl_plaintext"),
        ("PRISM_BACKEND__SASL__MECHANISM", "PLAIN"),
        ("KAFKA_SASL_USERNAME", USER),
        ("KAFKA_SASL_PASSWORD", WRONG),
        ("PRISM_LOG_LEVEL", "debug"),
    ])
    .await;
    // The broker rejects it: logged, reported by a probe, readiness off and
    // liveness on.
    refused_with(&mut plugin, port, "Authentication failed", &["readiness"]).await;
    assert!(secured.proxy.authenticated().is_empty());
    assert!(secured.proxy.rejected().iter().all(|u| u == USER));
    assert!(!secured.proxy.rejected().is_empty());
    let logs = stop(&mut plugin).await;
    assert!(
        !logs.contains(WRONG) && !logs.contains(PASSWORD),
        "password leaked"
    );
}
