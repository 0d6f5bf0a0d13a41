//! The SASL suite `sasl.rs` (PLAIN) and `scram.rs` (SCRAM-SHA-256/512) run
//! with their mechanism: the right password round-trips as that user, a
//! wrong one (or an unknown user) is refused with the broker's reason while
//! the plugin keeps serving, and no password is ever logged.

use prism_testkit::SaslMechanism;

use super::pubsub::round_trip;
use super::secured::Secured;
use super::{ready_channel, refused_with, stop};

/// The proxy knows `user`/`password` for `mechanism` (over TLS when `tls`);
/// the plugin logs in with them, publishes and subscribes, and every
/// connection it opened authenticated as `user`.
pub async fn round_trips_as_the_user(
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
pub async fn refused(
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
