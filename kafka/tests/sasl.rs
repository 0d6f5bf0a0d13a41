//! `prism-kafka` with SASL (`sasl_plaintext`, `sasl_ssl`, mechanism PLAIN)
//! against a real broker: tansu behind a proxy that terminates SASL/PLAIN
//! (and TLS) itself and records who authenticated, because tansu's own SASL
//! cannot be used (see `testkit/src/kafka_proxy.rs`). Right credentials:
//! round trip works and the proxy saw that user; a wrong password: readiness
//! NOT_SERVING with the broker's reason, the plugin keeps serving, and the
//! password appears in no log line. The suite is `common/sasl.rs`, shared
//! with `scram.rs`.

mod common;

use common::sasl::{refused, round_trips_as_the_user};
use prism_testkit::SaslMechanism::Plain;

const USER: (&str, &str) = ("prism-app", "sasl-secret-6d1f");

common::cases! {
    sasl_plaintext_with_the_right_password_round_trips_as_that_user =>
        round_trips_as_the_user(Plain, false, USER);
    sasl_ssl_with_the_right_password_round_trips_as_that_user =>
        round_trips_as_the_user(Plain, true, USER);
    a_wrong_password_keeps_readiness_off_with_the_reason_and_leaks_nothing =>
        refused(Plain, USER, (USER.0, "not-the-password-93ab"), "Authentication failed");
}
