//! `prism-kafka` with SASL against a real broker: tansu behind the test
//! proxy, which terminates SASL (and TLS) itself and records who
//! authenticated, because tansu's own SASL cannot be used (see
//! `testkit/src/kafka_proxy.rs`). For SCRAM it runs the server side (RFC
//! 5802/7677: salted, 4096 PBKDF2 iterations, proof checked against the
//! stored key, server signature that librdkafka verifies) and accepts no
//! other mechanism. One suite, each mechanism a row: the right password
//! round-trips as that user (`sasl_plaintext` and `sasl_ssl`); a wrong
//! password or an unknown user is refused by the broker, the plugin stays
//! alive with readiness NOT_SERVING and the reason in its log and health,
//! and no password is logged.

mod common;

use prism_testkit::SaslMechanism::{self, Plain, ScramSha256, ScramSha512};

use common::pubsub::round_trip;
use common::secured::Secured;
use common::{ready_channel, refused_with, stop};

const USER: (&str, &str) = ("prism-app", "sasl-secret-6d1f");
const SCRAM_USER: (&str, &str) = ("prism-scram-app", "scram-secret-0f3e9a");
/// librdkafka's reason for a SCRAM-SHA-512 login the broker refused.
const SCRAM_REFUSED: &str = "invalid credentials with SASL mechanism SCRAM-SHA-512";

common::cases! {
    sasl_plaintext_with_the_right_password_round_trips_as_that_user =>
        round_trips_as_the_user(Plain, false, USER);
    sasl_ssl_with_the_right_password_round_trips_as_that_user =>
        round_trips_as_the_user(Plain, true, USER);
    a_wrong_password_keeps_readiness_off_with_the_reason_and_leaks_nothing =>
        refused(Plain, USER, (USER.0, "not-the-password-93ab"), "Authentication failed");
    scram_sha_256_publish_and_subscribe_round_trip_as_that_user =>
        round_trips_as_the_user(ScramSha256, false, SCRAM_USER);
    scram_sha_512_publish_and_subscribe_round_trip_as_that_user_over_tls =>
        round_trips_as_the_user(ScramSha512, true, SCRAM_USER);
    a_wrong_scram_password_keeps_readiness_off_with_the_reason_and_leaks_nothing =>
        refused(ScramSha512, SCRAM_USER, (SCRAM_USER.0, "not-the-scram-password-71c2"), SCRAM_REFUSED);
    an_unknown_scram_user_is_refused_like_a_wrong_password =>
        refused(ScramSha512, SCRAM_USER, ("nobody-here", "unknown-user-password-5b8d"), SCRAM_REFUSED);
}

/// The proxy knows `user`/`password` for `mechanism` (over TLS when `tls`);
/// the plugin logs in with them, publishes and subscribes, and every
/// connection it opened authenticated as `user`.
async fn round_trips_as_the_user(
    mechanism: SaslMechanism,
    tls: bool,
    (user, password): (&str, &str),
) {
    let mut secured = Secured::sasl(tls, mechanism, &[(user, password)]).await;
    secured.login(mechanism, user, password);
    let (mut plugin, port) = secured.spawn(&[("PRISM_LOG_LEVEL", "debug")]).await;
    let channel = ready_channel(&plugin, port).await;
    let payload = format!("{} over {}", mechanism.name(), secured.protocol());
    round_trip(&channel, "sasl-topic", "sasl-group", &payload).await;
    // Producer, admin client and the subscription's consumer each
    // authenticated (with SCRAM they also verified the proxy's server
    // signature: librdkafka drops the connection otherwise).
    let authenticated = secured.proxy.authenticated();
    assert!(authenticated.len() >= 2, "{authenticated:?}");
    assert!(authenticated.iter().all(|u| u == user), "{authenticated:?}");
    assert!(secured.proxy.rejected().is_empty());
    let logs = stop(&mut plugin).await;
    assert!(!logs.contains(password), "password leaked into logs");
}

/// The proxy knows only `known` (user, password) for `mechanism`; the
/// plugin logs in as `presented`: refused with `reason` (logged, reported
/// by a probe, every status that follows the backend off, liveness on), the
/// proxy rejected only that user, and neither password is logged.
async fn refused(
    mechanism: SaslMechanism,
    known: (&str, &str),
    (user, password): (&str, &str),
    reason: &str,
) {
    let mut secured = Secured::sasl(false, mechanism, &[known]).await;
    secured.login(mechanism, user, password);
    let (mut plugin, port) = secured.spawn(&[("PRISM_LOG_LEVEL", "debug")]).await;
    refused_with(&mut plugin, port, reason, &["readiness", "", "kafka"]).await;
    assert!(secured.proxy.authenticated().is_empty());
    let rejected = secured.proxy.rejected();
    assert!(
        !rejected.is_empty() && rejected.iter().all(|u| u == user),
        "{rejected:?}"
    );
    let logs = stop(&mut plugin).await;
    assert!(
        !logs.contains(password) && !logs.contains(known.1),
        "password leaked"
    );
}
