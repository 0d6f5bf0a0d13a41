//! Vault credential rotation (DESIGN.md §5), shared by the plugins whose
//! backend users come from Vault: one task per plugin that watches
//! core's [`CredentialSource`] and, for every new set of credentials, builds
//! and checks a new backend, swaps it into the [`Slot`] the services read per
//! request, and lets the old one drain before closing it.
//!
//! Guarantees: a request holds the backend it loaded for its whole duration,
//! and the old backend is closed only once no request holds it any more, so
//! a rotation fails no call. When the server rejects the credentials in use
//! (revoked from outside) the backend raises the [`AuthAlarm`]; the task asks
//! Vault for new credentials at once (once per credential set), and the calls
//! that failed meanwhile are counted.
//!
//! Plugins use it through [`crate::Rotated`], which owns the slot, the
//! swap at initialize and the order of stopping.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Slot;
use crate::vault::{CredentialSource, Credentials};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// Delays before each attempt to connect with a new credential set: the user
/// exists when Vault hands it out, so a failure is usually transient (the
/// server busy); a few quick tries, then the set is given up.
const CONNECT_DELAYS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];
/// Shortest time between two requests for new credentials (after an auth
/// failure or a set that never connected), so a broken server cannot make
/// the plugin mint users in a loop.
const REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// How often a replaced backend is checked for requests still using it.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Longest a replaced backend is kept for requests still running on it
/// (backend operations are bounded by their own timeouts).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the task waits for replaced backends to close when it stops.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a checked backend from one credential set.
pub type Connect<B> = Arc<
    dyn Fn(Arc<Credentials>, AuthHook) -> Pin<Box<dyn Future<Output = Result<B, Error>> + Send>>
        + Send
        + Sync,
>;

/// A backend that can be closed once drained.
pub trait Drain: Send + Sync + 'static {
    /// Closes the connections; called when no request holds the backend.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Raised by a backend whose credentials the server rejected.
#[derive(Debug, Default)]
pub(crate) struct AuthAlarm {
    /// Calls (and probes) that failed on rejected credentials.
    failures: AtomicU64,
    /// Highest credential generation that was rejected.
    rejected: AtomicU64,
    notify: Notify,
}

/// What a backend keeps to report rejected credentials: the shared alarm and
/// the generation of the credentials it was built with.
#[derive(Debug, Clone)]
pub struct AuthHook {
    alarm: Arc<AuthAlarm>,
    generation: u64,
}

impl AuthHook {
    /// Counts one failure and wakes the rotation task.
    pub fn raise(&self) {
        self.alarm.failures.fetch_add(1, Ordering::Relaxed);
        self.alarm
            .rejected
            .fetch_max(self.generation, Ordering::Relaxed);
        self.alarm.notify.notify_one();
    }
}

/// Counters for health details.
#[derive(Debug, Default)]
struct Stats {
    /// Generation of the credentials the current backend uses.
    active: AtomicU64,
    /// Backends swapped in after a rotation.
    swaps: AtomicU64,
    /// Credential sets given up because no connection could be made with them.
    abandoned: AtomicU64,
}

/// The running rotation: what health reads, and the task.
pub(crate) struct Rotator {
    view: Arc<View>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// What health reports about the rotation: the source's own details and
/// expiry, and the counters of the task.
pub(crate) struct View {
    source: Arc<CredentialSource>,
    alarm: Arc<AuthAlarm>,
    stats: Arc<Stats>,
}

/// The first backend of a rotation, built by [`Rotator::first`].
pub(crate) struct First<B> {
    /// The credential source (logged in, first credentials fetched).
    pub(crate) source: CredentialSource,
    /// The alarm every backend of this source raises.
    pub(crate) alarm: Arc<AuthAlarm>,
    /// A backend connected with the first credentials.
    pub(crate) backend: B,
}

impl Rotator {
    /// Logs in to Vault, fetches the first credentials and builds the first
    /// backend with them. On failure the source is shut down (its lease
    /// revoked), so a retried initialize leaves no user behind.
    pub(crate) async fn first<B>(
        vault: &crate::vault::VaultConfig,
        shutdown: &CancellationToken,
        connect: &Connect<B>,
    ) -> Result<First<B>, Error> {
        let source = CredentialSource::start(vault, shutdown.clone()).await?;
        let alarm = Arc::new(AuthAlarm::default());
        let creds = source.current();
        let hook = AuthHook {
            alarm: alarm.clone(),
            generation: creds.generation,
        };
        match connect(creds, hook).await {
            Ok(backend) => Ok(First {
                source,
                alarm,
                backend,
            }),
            Err(err) => {
                source.shutdown().await;
                Err(err)
            }
        }
    }

    /// Starts watching `first.source` for new credentials; the first backend
    /// must already be in `slot`.
    pub(crate) fn spawn<B: Drain>(
        source: CredentialSource,
        alarm: Arc<AuthAlarm>,
        slot: Arc<Slot<B>>,
        connect: Connect<B>,
        shutdown: &CancellationToken,
    ) -> Self {
        let source = Arc::new(source);
        let stats = Arc::new(Stats::default());
        stats
            .active
            .store(source.current().generation, Ordering::Relaxed);
        let cancel = shutdown.child_token();
        let task = tokio::spawn(
            Task {
                source: source.clone(),
                alarm: alarm.clone(),
                stats: stats.clone(),
                slot,
                connect,
                cancel: cancel.clone(),
                drains: JoinSet::new(),
                last_request: None,
            }
            .run(),
        );
        Rotator {
            view: Arc::new(View {
                source,
                alarm,
                stats,
            }),
            cancel,
            task,
        }
    }

    /// The health view (shares the source; drop it before [`Source::shutdown`]).
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.clone()
    }

    /// Stops the task (waiting for replaced backends to close, bounded) and
    /// returns the source, which the caller shuts down once the current
    /// backend is closed (that revokes the last lease).
    pub(crate) async fn stop(self) -> Source {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "credential rotation task failed");
        }
        Source(self.view.source.clone())
    }
}

impl View {
    /// True once the credentials in use ran out without renewal (Vault away
    /// for longer than their TTL): the plugin cannot log in any more.
    pub(crate) fn expired(&self) -> bool {
        self.source.expired()
    }

    /// Health details of the source (no secrets) plus the rotation counters.
    pub(crate) fn details(&self) -> BTreeMap<String, String> {
        let mut details = self.source.health_details();
        let counters = [
            ("vault_auth_failures", &self.alarm.failures),
            ("vault_generation", &self.stats.active),
            ("vault_pool_swaps", &self.stats.swaps),
            ("vault_abandoned_credentials", &self.stats.abandoned),
        ];
        for (name, counter) in counters {
            details.insert(name.into(), counter.load(Ordering::Relaxed).to_string());
        }
        details
    }
}

/// A stopped rotator's credential source.
pub(crate) struct Source(Arc<CredentialSource>);

impl Source {
    /// Stops renewing and revokes the current lease.
    pub(crate) async fn shutdown(self) {
        // The task and the rotator are gone; a health check may still hold
        // the view for a moment. If it does not let go, dropping the source
        // still stops it (without waiting for the revocation).
        let mut source = self.0;
        for _ in 0..100 {
            match Arc::try_unwrap(source) {
                Ok(source) => return source.shutdown().await,
                Err(shared) => source = shared,
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

/// The rotation task's state.
struct Task<B> {
    source: Arc<CredentialSource>,
    alarm: Arc<AuthAlarm>,
    stats: Arc<Stats>,
    slot: Arc<Slot<B>>,
    connect: Connect<B>,
    cancel: CancellationToken,
    /// Replaced backends waiting for their last request, then closing.
    drains: JoinSet<()>,
    /// When new credentials were last asked for outside the schedule.
    last_request: Option<tokio::time::Instant>,
}

impl<B: Drain> Task<B> {
    async fn run(mut self) {
        let mut rx = self.source.subscribe();
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => break,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The source stopped (process shutting down).
                        break;
                    }
                    let creds = rx.borrow_and_update().clone();
                    self.rotate(creds, &mut rx).await;
                }
                () = self.alarm.notify.notified() => self.on_rejected(),
                Some(_) = self.drains.join_next(), if !self.drains.is_empty() => {}
            }
        }
        // Replaced backends still draining get a bounded last chance.
        let drained = tokio::time::timeout(STOP_TIMEOUT, async {
            while self.drains.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("replaced backends still busy at stop; closing anyway");
            self.drains.abort_all();
        }
    }

    /// The server rejected credentials: ask Vault for new ones, once per
    /// credential set in use (and not more often than REQUEST_INTERVAL).
    fn on_rejected(&mut self) {
        let rejected = self.alarm.rejected.load(Ordering::Relaxed);
        if rejected < self.stats.active.load(Ordering::Relaxed) {
            // Raised by a replaced backend: new credentials are already in use.
            return;
        }
        self.request_new("the server rejected the current credentials");
    }

    fn request_new(&mut self, why: &'static str) {
        let now = tokio::time::Instant::now();
        if self
            .last_request
            .is_some_and(|at| now.duration_since(at) < REQUEST_INTERVAL)
        {
            return;
        }
        self.last_request = Some(now);
        tracing::warn!(reason = why, "asking Vault for new credentials");
        self.source.request_rotation();
    }

    /// Builds a backend with `creds` (a few quick attempts; a newer set
    /// replaces it), swaps it in and drains the old one.
    async fn rotate(
        &mut self,
        mut creds: Arc<Credentials>,
        rx: &mut tokio::sync::watch::Receiver<Arc<Credentials>>,
    ) {
        if creds.generation <= self.stats.active.load(Ordering::Relaxed) {
            // The set the current backend was built with.
            return;
        }
        let mut attempt = 0;
        let backend = loop {
            let Some(delay) = CONNECT_DELAYS.get(attempt) else {
                self.stats.abandoned.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    username = %creds.username,
                    attempts = CONNECT_DELAYS.len(),
                    "cannot connect with the new Vault credentials; keeping the current connection"
                );
                self.request_new("new credentials did not connect");
                return;
            };
            attempt += 1;
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(*delay) => {}
            }
            if rx.has_changed().unwrap_or(false) {
                // A newer set superseded this one: start over with it.
                creds = rx.borrow_and_update().clone();
                attempt = 0;
                continue;
            }
            let hook = AuthHook {
                alarm: self.alarm.clone(),
                generation: creds.generation,
            };
            let built = tokio::select! {
                () = self.cancel.cancelled() => return,
                built = (self.connect)(creds.clone(), hook) => built,
            };
            match built {
                Ok(backend) => break backend,
                Err(err) => tracing::info!(
                    username = %creds.username,
                    attempt,
                    error = %err,
                    "new Vault credentials do not connect yet"
                ),
            }
        };
        self.stats.active.store(creds.generation, Ordering::Relaxed);
        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
        self.last_request = None;
        if let Some(old) = self.slot.replace(Arc::new(backend)) {
            self.drains.spawn(retire(old));
        }
        tracing::info!(
            username = %creds.username,
            generation = creds.generation,
            "switched to the rotated credentials"
        );
    }
}

/// Waits until no request holds `old` (the slot no longer does), then
/// closes it; bounded by [`DRAIN_TIMEOUT`].
pub(crate) async fn retire<B: Drain>(old: Arc<B>) {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while Arc::strong_count(&old) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    old.close().await;
}
