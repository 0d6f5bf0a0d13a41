//! A plugin's current backend together with the Vault rotation that replaces
//! it: what `initialize`, `health` and `stop` of every plugin do alike around
//! a pool, a connection or a producer, written once.
//!
//! [`Rotated`] owns the [`Slot`] the services read per request, the running
//! [`Rotator`] and its health [`View`]. The ordering rules live here:
//! - the old rotation stops before a new backend goes in, so it cannot swap
//!   in a backend built from the previous config afterwards;
//! - a replaced backend is retired (closed once no request holds it) and
//!   only then is its lease revoked, so a re-initialize fails no call;
//! - at stop the backend is closed before the last lease is revoked.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::rotation::{Connect, Drain, Rotator, Source, View, retire};
use crate::{Context, Error, HealthReport, HealthStatus, Slot};

/// How long [`Stopped::close`] waits for the backend to close (requests are
/// bounded by their own timeouts, but a stop must not hang on one).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A plugin's current backend (in a [`Slot`] the services share) and, with
/// Vault, the rotation that swaps in a backend built with new credentials.
pub struct Rotated<B> {
    slot: Arc<Slot<B>>,
    /// Serialises initialize and stop; the rotation, `None` without Vault.
    rotator: tokio::sync::Mutex<Option<Rotator>>,
    /// What health reports about Vault; `None` without Vault.
    view: RwLock<Option<Arc<View>>>,
}

impl<B> Default for Rotated<B> {
    fn default() -> Self {
        Rotated {
            slot: Arc::default(),
            rotator: tokio::sync::Mutex::default(),
            view: RwLock::default(),
        }
    }
}

impl<B: Drain> Rotated<B> {
    /// The slot the services (and a plugin's own tasks) load the current
    /// backend from, per request.
    pub fn slot(&self) -> Arc<Slot<B>> {
        self.slot.clone()
    }

    /// Builds a backend and swaps it in for the previous one (if any). With
    /// Vault (`ctx.vault.enabled()`) it logs in, builds the backend with
    /// `connect` from the first credentials and starts the rotation, which
    /// calls `connect` again for every new set; without, `plain` builds it.
    /// On failure nothing changes: the previous backend keeps serving.
    pub async fn initialize(
        &self,
        ctx: &Context,
        connect: Connect<B>,
        plain: impl Future<Output = Result<B, Error>> + Send,
    ) -> Result<(), Error> {
        let mut rotator = self.rotator.lock().await;
        let (backend, rotation) = if ctx.vault.enabled() {
            let first = Rotator::first(&ctx.vault, &ctx.shutdown, &connect).await?;
            (first.backend, Some((first.source, first.alarm)))
        } else {
            (plain.await?, None)
        };
        // The old rotation stops first, so it cannot swap in a backend built
        // from the previous config after this one.
        let old_source = match rotator.take() {
            Some(old) => Some(old.stop().await),
            None => None,
        };
        let old = self.slot.replace(Arc::new(backend));
        let view = rotation.map(|(source, alarm)| {
            let started = Rotator::spawn(source, alarm, self.slot.clone(), connect, &ctx.shutdown);
            let view = started.view();
            *rotator = Some(started);
            view
        });
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
        // Requests still holding the old backend finish on it; it is closed
        // once none does, off the lifecycle call, and only then is its lease
        // revoked. Nothing awaits it: it is bounded, and if the process exits
        // first the sockets close with it.
        if let Some(old) = old {
            tokio::spawn(async move {
                retire(old).await;
                if let Some(source) = old_source {
                    source.shutdown().await;
                }
            });
        } else if let Some(source) = old_source {
            source.shutdown().await;
        }
        Ok(())
    }

    /// The plugin's health: `Unhealthy` before initialize, otherwise what
    /// `probe` reports about the current backend, with the Vault overlay
    /// (see [`Rotated::with_vault`]).
    pub async fn health<F, Fut>(&self, probe: F) -> HealthReport
    where
        F: FnOnce(Arc<B>) -> Fut,
        Fut: Future<Output = HealthReport>,
    {
        match self.slot.get() {
            Ok(backend) => self.with_vault(probe(backend).await),
            Err(err) => HealthReport::new(HealthStatus::Unhealthy, err.to_string()),
        }
    }

    /// Adds the rotation's details (no secrets: user name, counters) to
    /// `report`, and makes it `Unhealthy` once the credentials expired
    /// without renewal. Vault being unreachable alone changes nothing: the
    /// current credentials keep working until they expire.
    pub fn with_vault(&self, mut report: HealthReport) -> HealthReport {
        let view = self.view.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(view) = view {
            report.details.extend(view.details());
            if view.expired() {
                report.status = HealthStatus::Unhealthy;
                report.message =
                    "the Vault credentials expired without renewal (Vault unreachable?)".into();
            }
        }
        report
    }

    /// Stops the rotation (no swap happens after this) and forgets its
    /// health view. The backend stays in the slot until [`Stopped::close`],
    /// so the plugin can wind down what still uses it first; no initialize
    /// runs in between.
    pub async fn stop(&self) -> Stopped<'_, B> {
        let mut rotator = self.rotator.lock().await;
        let source = match rotator.take() {
            Some(rotator) => Some(rotator.stop().await),
            None => None,
        };
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = None;
        Stopped {
            _serial: rotator,
            slot: &self.slot,
            source,
        }
    }
}

/// A stopped rotation: what is left to close.
pub struct Stopped<'a, B> {
    /// Held until closed, so no initialize runs in between.
    _serial: tokio::sync::MutexGuard<'a, Option<Rotator>>,
    slot: &'a Slot<B>,
    source: Option<Source>,
}

impl<B: Drain> Stopped<'_, B> {
    /// Takes the backend out of the slot and closes it (waiting at most
    /// 5 s for connections still busy), then revokes the last lease, which
    /// drops the backend user. `false` when the backend was still busy and
    /// is being closed anyway.
    pub async fn close(self) -> bool {
        let mut closed = true;
        if let Some(backend) = self.slot.take() {
            closed = tokio::time::timeout(CLOSE_TIMEOUT, backend.close())
                .await
                .is_ok();
        }
        // Last: revoking the lease drops the backend user.
        if let Some(source) = self.source {
            source.shutdown().await;
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A backend that records being closed.
    #[derive(Default)]
    struct Fake {
        closed: AtomicBool,
    }

    impl Drain for Fake {
        async fn close(&self) {
            self.closed.store(true, Ordering::Relaxed);
        }
    }

    fn context() -> Context {
        Context {
            shutdown: tokio_util::sync::CancellationToken::new(),
            health_changed: Arc::default(),
            vault: crate::vault::VaultConfig::default(),
        }
    }

    fn no_vault() -> Connect<Fake> {
        Arc::new(|_, _| Box::pin(async { Err(Error::Internal("no Vault here".into())) }))
    }

    #[tokio::test]
    async fn a_reinitialize_swaps_and_closes_the_old_backend_once_released() {
        let rotated = Rotated::<Fake>::default();
        let ctx = context();
        let report = rotated
            .health(|_| async { HealthReport::new(HealthStatus::Healthy, "up") })
            .await;
        assert_eq!(report.status, HealthStatus::Unhealthy, "before initialize");

        rotated
            .initialize(&ctx, no_vault(), async { Ok(Fake::default()) })
            .await
            .expect("first");
        let first = rotated.slot().get().expect("installed");
        let failed = rotated
            .initialize(&ctx, no_vault(), async {
                Err(Error::Unavailable("down".into()))
            })
            .await;
        assert!(failed.is_err());
        assert!(
            Arc::ptr_eq(&first, &rotated.slot().get().expect("kept")),
            "a failed initialize keeps the backend"
        );

        rotated
            .initialize(&ctx, no_vault(), async { Ok(Fake::default()) })
            .await
            .expect("second");
        assert!(!Arc::ptr_eq(
            &first,
            &rotated.slot().get().expect("swapped")
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!first.closed.load(Ordering::Relaxed), "held by a request");
        let held = Arc::downgrade(&first);
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), async {
            while held.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("retired once released");

        let report = rotated
            .health(|_| async { HealthReport::new(HealthStatus::Healthy, "up") })
            .await;
        assert_eq!(report.status, HealthStatus::Healthy);
        assert!(report.details.is_empty(), "no Vault details without Vault");

        let current = rotated.slot().get().expect("current");
        assert!(rotated.stop().await.close().await);
        assert!(current.closed.load(Ordering::Relaxed), "closed at stop");
        assert!(rotated.slot().get().is_err(), "taken out at stop");
    }
}
