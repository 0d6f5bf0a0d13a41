//! The credential worker's decisions, as pure functions of tokio's clock:
//! when the token and a lease are renewed (at 2/3 of their TTL), when a
//! renewal means logging in again or fetching a new user instead, when a KV
//! v2 secret changed, and how long to wait before the next round (backing off
//! while Vault is unreachable). No I/O here, so a paused test clock drives
//! all of it.

use std::time::Duration;

use tokio::time::Instant;

use super::config::SecretEngine;
use super::credentials::Lease;
use crate::Error;

/// How long a replaced lease stays valid for the plugin's old pool to drain.
pub(super) const REVOKE_GRACE: Duration = Duration::from_secs(5);
/// First retry delay after a failed round while Vault is unreachable.
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest retry delay while Vault is unreachable: short, so new credentials
/// arrive soon after Vault is back, well before the current ones run out.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long the worker sleeps when nothing is due (a token that never
/// expires and no lease).
const IDLE: Duration = Duration::from_secs(3600);

/// Fraction of a lease or token TTL after which it is renewed.
pub(super) fn renew_point(obtained: Instant, ttl: Duration) -> Instant {
    obtained + ttl * 2 / 3
}

/// The Vault token's lifetime as the worker tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenState {
    /// When to renew (2/3 of the TTL); None for tokens that never expire.
    pub(super) renew_at: Option<Instant>,
    pub(super) renewable: bool,
    pub(super) ttl: Duration,
}

/// What refreshing the token takes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TokenRefresh {
    /// Ask Vault to extend it by its TTL.
    Renew { asked: Duration },
    /// It cannot be renewed (or there is none): log in again.
    Login,
}

impl TokenState {
    /// A token just looked up: `ttl` zero means it never expires.
    pub(super) fn looked_up(now: Instant, ttl: Duration, renewable: bool) -> Self {
        TokenState {
            renew_at: (!ttl.is_zero()).then(|| renew_point(now, ttl)),
            renewable,
            ttl,
        }
    }

    /// True once the token should be renewed.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.renew_at.is_some_and(|at| at <= now)
    }

    /// How to refresh `token`.
    pub(super) fn refresh(token: Option<&TokenState>) -> TokenRefresh {
        match token {
            Some(t) if t.renewable => TokenRefresh::Renew { asked: t.ttl },
            _ => TokenRefresh::Login,
        }
    }

    /// The token after Vault renewed it for `granted`, or None when Vault
    /// granted less than half of what was asked: the token is near its max
    /// TTL, so log in again rather than renew ever shorter.
    pub(super) fn renewed(
        asked: Duration,
        granted: Duration,
        renewable: bool,
        now: Instant,
    ) -> Option<Self> {
        (granted >= asked / 2).then(|| TokenState {
            renew_at: Some(renew_point(now, granted)),
            renewable,
            ttl: granted,
        })
    }
}

/// True when the lease should be renewed (2/3 of its initial duration has
/// passed since it was issued or last renewed), or there is none yet.
pub(super) fn lease_due(lease: Option<&Lease>, now: Instant) -> bool {
    lease.is_none_or(|l| {
        // = renew_point(expires_at - initial, initial) <= now, without
        // subtracting from an Instant (which could underflow).
        l.expires_at.saturating_duration_since(now) <= l.initial - l.initial * 2 / 3
    })
}

/// What a lease renewal came to.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LeaseRenewal {
    /// Renewed; the lease now runs out at this instant.
    Renewed { expires_at: Instant },
    /// Fetch a new user instead.
    Replace,
}

/// Judges Vault's answer to renewing a (renewable) `lease`: the duration
/// granted, or the error. A lease that was refused (4xx: gone or not ours)
/// or granted less than its initial duration (near the role's max TTL) is
/// replaced — now, while the old user still has the most time left for the
/// plugin to swap pools and drain the old one. Any other error means Vault
/// is unreachable: the caller keeps the current credentials.
pub(super) fn lease_renewal(
    lease: &Lease,
    answer: Result<Duration, Error>,
    now: Instant,
) -> Result<LeaseRenewal, Error> {
    match answer {
        Ok(granted) if granted < lease.initial => Ok(LeaseRenewal::Replace),
        Ok(granted) => Ok(LeaseRenewal::Renewed {
            expires_at: now + granted,
        }),
        Err(Error::Config(_)) => Ok(LeaseRenewal::Replace),
        Err(e) => Err(e),
    }
}

/// True when a KV v2 secret must be read again: asked to, or its current
/// version differs from the one in use.
pub(super) fn kv2_changed(force: bool, current_version: u64, in_use: u64) -> bool {
    force || current_version != in_use
}

/// When the next round is due while Vault is reachable: the token's renewal
/// point or the secret's (2/3 of a lease's remaining time; a KV v2 poll
/// interval), whichever comes first. Database credentials without a lease
/// are fetched at once.
pub(super) fn next_wakeup(
    now: Instant,
    token: Option<&TokenState>,
    engine: SecretEngine,
    lease: Option<&Lease>,
    poll_interval: Duration,
) -> Instant {
    let token = token.and_then(|t| t.renew_at).unwrap_or(now + IDLE);
    let secret = match (engine, lease) {
        (SecretEngine::Database | SecretEngine::Pki, Some(lease)) => {
            now + lease.expires_at.saturating_duration_since(now) * 2 / 3
        }
        (SecretEngine::Kv2, _) => now + poll_interval,
        (SecretEngine::Database | SecretEngine::Pki, None) => now,
    };
    token.min(secret)
}

/// The retry delay after another failed round.
pub(super) fn next_backoff(backoff: Duration) -> Duration {
    (backoff * 2).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn lease(renewable: bool, initial: Duration) -> Lease {
        Lease::issued(
            "database/creds/prism/1".into(),
            renewable,
            initial,
            Instant::now(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_is_renewed_at_two_thirds_of_its_ttl() {
        let token = TokenState::looked_up(Instant::now(), S(30), true);
        advance(S(19)).await;
        assert!(!token.due(Instant::now()));
        advance(S(1)).await;
        assert!(token.due(Instant::now()));
        assert_eq!(
            TokenState::refresh(Some(&token)),
            TokenRefresh::Renew { asked: S(30) }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_without_ttl_is_never_renewed() {
        let token = TokenState::looked_up(Instant::now(), Duration::ZERO, false);
        advance(S(365 * 24 * 3600)).await;
        assert!(!token.due(Instant::now()));
        // Nothing else due either: the worker idles for an hour.
        let now = Instant::now();
        let wake = next_wakeup(now, Some(&token), SecretEngine::Kv2, None, S(7200));
        assert_eq!(wake, now + IDLE);
    }

    #[test]
    fn a_token_that_cannot_be_renewed_means_logging_in_again() {
        let fixed = TokenState::looked_up(Instant::now(), S(60), false);
        assert_eq!(TokenState::refresh(Some(&fixed)), TokenRefresh::Login);
        assert_eq!(TokenState::refresh(None), TokenRefresh::Login);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_near_its_max_ttl_means_logging_in_again() {
        let now = Instant::now();
        // Vault granted less than half of the 60 s asked for: log in again.
        assert_eq!(TokenState::renewed(S(60), S(29), true, now), None);
        let renewed = TokenState::renewed(S(60), S(30), true, now).unwrap();
        assert_eq!(renewed.renew_at, Some(now + S(20)));
        assert_eq!(renewed.ttl, S(30));
        // The next renewal asks for what was granted last.
        assert_eq!(
            TokenState::refresh(Some(&renewed)),
            TokenRefresh::Renew { asked: S(30) }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_renewed_at_two_thirds_of_its_duration() {
        let l = lease(true, S(60));
        assert!(lease_due(None, Instant::now()), "no lease yet: fetch one");
        advance(S(39)).await;
        assert!(!lease_due(Some(&l), Instant::now()));
        advance(S(1)).await;
        assert!(lease_due(Some(&l), Instant::now()));
        // Long past its end it is still due (no Instant underflow).
        advance(S(3600)).await;
        assert!(lease_due(Some(&l), Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_lease_is_due_again_two_thirds_into_the_new_grant() {
        let mut l = lease(true, S(60));
        advance(S(40)).await;
        let got = lease_renewal(&l, Ok(S(60)), Instant::now()).unwrap();
        let LeaseRenewal::Renewed { expires_at } = got else {
            panic!("{got:?}")
        };
        assert_eq!(expires_at, Instant::now() + S(60));
        l.expires_at = expires_at;
        advance(S(39)).await;
        assert!(!lease_due(Some(&l), Instant::now()));
        advance(S(1)).await;
        assert!(lease_due(Some(&l), Instant::now()));
    }

    #[test]
    fn a_short_grant_or_a_refusal_fetches_a_new_user() {
        let now = Instant::now();
        let l = lease(true, S(60));
        assert_eq!(
            lease_renewal(&l, Ok(S(59)), now).unwrap(),
            LeaseRenewal::Replace
        );
        let refused = Err(Error::config("Vault lease renewal refused: HTTP 400"));
        assert_eq!(
            lease_renewal(&l, refused, now).unwrap(),
            LeaseRenewal::Replace
        );
    }

    #[test]
    fn an_unreachable_vault_keeps_the_lease_as_it_is() {
        let l = lease(true, S(60));
        let down = Err(Error::Unavailable("Vault lease renewal failed".into()));
        assert!(matches!(
            lease_renewal(&l, down, Instant::now()),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn a_kv2_secret_is_read_again_on_a_new_version_or_on_request() {
        assert!(!kv2_changed(false, 3, 3));
        assert!(kv2_changed(false, 4, 3));
        assert!(kv2_changed(true, 3, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_round_is_the_earlier_of_token_and_secret() {
        let token = TokenState::looked_up(Instant::now(), S(30), true);
        let l = lease(true, S(60));
        let db = |now| next_wakeup(now, Some(&token), SecretEngine::Database, Some(&l), S(30));
        let now = Instant::now();
        // Lease: 2/3 of 60 s left = 40 s; token: 20 s.
        assert_eq!(db(now), now + S(20));
        advance(S(21)).await;
        let now = Instant::now();
        // Token already due: wake at once; 39 s of lease left → 26 s.
        assert_eq!(db(now), now - S(1));
        let renewed = TokenState::looked_up(now, S(300), true);
        let wake = next_wakeup(now, Some(&renewed), SecretEngine::Database, Some(&l), S(30));
        assert_eq!(wake, now + S(26));
        let kv = next_wakeup(now, Some(&renewed), SecretEngine::Kv2, None, S(30));
        assert_eq!(kv, now + S(30));
        let no_lease = next_wakeup(now, Some(&renewed), SecretEngine::Database, None, S(30));
        assert_eq!(no_lease, now);
        // A PKI certificate with 30 s left: the next issue in 20 s.
        let cert = Lease::issued(String::new(), false, S(30), now);
        let pki = next_wakeup(now, Some(&renewed), SecretEngine::Pki, Some(&cert), S(30));
        assert_eq!(pki, now + S(20));
    }

    #[test]
    fn backoff_doubles_up_to_five_seconds() {
        let mut b = FIRST_BACKOFF;
        let mut seen = Vec::new();
        for _ in 0..7 {
            b = next_backoff(b);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }
}
