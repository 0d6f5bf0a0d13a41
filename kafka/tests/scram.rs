//! `prism-kafka` with SASL/SCRAM (SCRAM-SHA-256 and SCRAM-SHA-512) against a
//! real broker: tansu behind the test proxy, which runs the server side of
//! SCRAM (RFC 5802/7677: salted, 4096 PBKDF2 iterations, proof checked
//! against the stored key, server signature that librdkafka verifies) and
//! accepts no other mechanism. Right password: round trip as that user; a
//! wrong password or an unknown user: refused by the broker, the plugin
//! stays alive with readiness NOT_SERVING and the reason in its log and
//! health, and no password is logged. The suite is `common/sasl.rs`, shared
//! with `sasl.rs`.

mod common;

use common::sasl::{refused, round_trips_as_the_user};
use prism_testkit::SaslMechanism::{ScramSha256, ScramSha512};

const USER: (&str, &str) = ("prism-scram-app", "scram-secret-0f3e9a");
/// librdkafka's reason for a SCRAM-SHA-512 login the broker refused.
const REFUSED: &str = "invalid credentials with SASL mechanism SCRAM-SHA-512";

common::cases! {
    scram_sha_256_publish_and_subscribe_round_trip_as_that_user =>
        round_trips_as_the_user(ScramSha256, false, USER);
    scram_sha_512_publish_and_subscribe_round_trip_as_that_user_over_tls =>
        round_trips_as_the_user(ScramSha512, true, USER);
    a_wrong_scram_password_keeps_readiness_off_with_the_reason_and_leaks_nothing =>
        refused(ScramSha512, USER, (USER.0, "not-the-scram-password-71c2"), REFUSED);
    an_unknown_scram_user_is_refused_like_a_wrong_password =>
        refused(ScramSha512, USER, ("nobody-here", "unknown-user-password-5b8d"), REFUSED);
}
