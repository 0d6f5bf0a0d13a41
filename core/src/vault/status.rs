//! What the credential source reports: whether Vault answered the last
//! round, its last error, renewal and rotation counts, and when the current
//! credentials run out. The worker writes it; health details and the
//! "credentials expired" check read it. No secrets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

/// The source's state as health reports it.
#[derive(Debug, Clone, Default)]
pub(super) struct Status {
    pub(super) vault_reachable: bool,
    pub(super) last_error: Option<String>,
    pub(super) renewals: u64,
    pub(super) rotations: u64,
    pub(super) expires_at: Option<Instant>,
}

/// The status shared between the worker and the [`CredentialSource`](super::CredentialSource).
pub(super) type SharedStatus = Arc<Mutex<Status>>;

/// Locks the status; a panicked holder cannot leave it half-written (every
/// update is a plain field store), so a poisoned lock is used as is.
pub(super) fn lock(status: &SharedStatus) -> MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

impl Status {
    /// True once the current credentials' lease has run out without renewal.
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Records the outcome of a round, logging when reachability changes:
    /// while Vault is unreachable the current credentials stay in use until
    /// they expire.
    pub(super) fn set_reachable(&mut self, reachable: bool, error: Option<String>) {
        if self.vault_reachable != reachable {
            if reachable {
                tracing::info!("Vault reachable again");
            } else {
                tracing::warn!(
                    error = error.as_deref().unwrap_or(""),
                    "Vault unreachable; keeping current credentials"
                );
            }
        }
        if !reachable {
            crate::backend_metrics::get().vault_failed();
        }
        self.vault_reachable = reachable;
        self.last_error = error;
    }

    /// A lease renewal that now runs out at `expires_at`.
    pub(super) fn renewed(&mut self, expires_at: Instant) {
        self.renewals += 1;
        self.expires_at = Some(expires_at);
        crate::backend_metrics::get().lease_renewed(expires_at.into_std());
    }

    /// A new credential set, running out at `expires_at` (None: no lease).
    pub(super) fn rotated(&mut self, expires_at: Option<Instant>) {
        self.rotations += 1;
        self.expires_at = expires_at;
        crate::backend_metrics::get().rotated(expires_at.map(Instant::into_std));
    }

    /// Health details: Vault reachability, rotations, seconds to expiry, the
    /// user name in use. No secrets.
    pub(super) fn details(&self, user: &str, now: Instant) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert("vault_reachable".into(), self.vault_reachable.to_string());
        d.insert("vault_renewals".into(), self.renewals.to_string());
        d.insert("vault_rotations".into(), self.rotations.to_string());
        d.insert("vault_user".into(), user.to_string());
        if let Some(at) = self.expires_at {
            let left = at.saturating_duration_since(now);
            d.insert("credentials_expire_in_s".into(), left.as_secs().to_string());
        }
        if let Some(err) = &self.last_error {
            d.insert("vault_last_error".into(), err.clone());
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::advance;

    fn obtained(lease: Duration) -> Status {
        Status {
            vault_reachable: true,
            expires_at: Some(Instant::now() + lease),
            ..Status::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_vault_keeps_credentials_until_they_expire() {
        let mut s = obtained(Duration::from_secs(30));
        advance(Duration::from_secs(20)).await;
        s.set_reachable(false, Some("Vault lease renewal failed".into()));
        // A failed round changes nothing about the credentials in use.
        assert!(!s.expired(Instant::now()));
        assert_eq!(s.details("u", Instant::now())["vault_reachable"], "false");
        advance(Duration::from_secs(9)).await;
        assert!(!s.expired(Instant::now()));
        advance(Duration::from_secs(1)).await;
        assert!(s.expired(Instant::now()), "expired at the lease's end");
        // Back: the error clears; only a renewal or rotation moves the end.
        s.set_reachable(true, None);
        assert!(s.expired(Instant::now()));
        s.renewed(Instant::now() + Duration::from_secs(30));
        assert!(!s.expired(Instant::now()));
        assert_eq!(s.renewals, 1);
    }

    #[test]
    fn credentials_without_a_lease_never_expire() {
        let mut s = obtained(Duration::from_secs(1));
        s.rotated(None);
        assert!(!s.expired(Instant::now() + Duration::from_secs(3600)));
        assert_eq!(s.rotations, 1);
        assert!(
            !s.details("kafka", Instant::now())
                .contains_key("credentials_expire_in_s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn health_details_count_down_and_carry_the_last_error() {
        let mut s = obtained(Duration::from_secs(60));
        s.renewed(Instant::now() + Duration::from_secs(60));
        s.rotated(Some(Instant::now() + Duration::from_secs(90)));
        advance(Duration::from_millis(30_500)).await;
        let d = s.details("v-prism-1", Instant::now());
        let expect = [
            ("credentials_expire_in_s", "59"),
            ("vault_reachable", "true"),
            ("vault_renewals", "1"),
            ("vault_rotations", "1"),
            ("vault_user", "v-prism-1"),
        ];
        assert_eq!(
            d.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            expect
        );
        s.set_reachable(false, Some("Vault token renewal failed: timeout".into()));
        let d = s.details("v-prism-1", Instant::now());
        assert_eq!(d["vault_last_error"], "Vault token renewal failed: timeout");
        advance(Duration::from_secs(120)).await;
        let d = s.details("v-prism-1", Instant::now());
        assert_eq!(d["credentials_expire_in_s"], "0");
    }
}
