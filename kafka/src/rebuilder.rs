//! The producer rebuilder: a background task owned by the plugin that
//! replaces a producer that failed fatally (see [`Backend::broken`]) with a
//! new one built from the same settings and credentials. Health only
//! reports a broken producer (UNHEALTHY); this task is what repairs it, so a
//! probe never waits on building librdkafka clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use prism_plugin_core::{Context, Slot};

use crate::backend::Backend;

/// How often the current backend is checked for a broken producer (a lock
/// and a flag, no I/O), so a replacement starts soon after the breakage.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Least time between the starts of two attempts: each creates librdkafka
/// clients and waits for a metadata round trip.
const REBUILD_INTERVAL: Duration = Duration::from_secs(1);
/// Longest one attempt may take: its metadata check is bounded by the
/// health timeout (at most 1 s); this also covers creating the clients
/// (the same bound core puts on a whole health check).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the rebuilder tells health: replacements so far and why the latest
/// attempt failed.
#[derive(Default)]
pub(crate) struct Rebuilds {
    /// Producers replaced (health detail `producer_rebuilds`).
    count: AtomicU64,
    /// Why the latest attempt failed; cleared once a producer works again.
    last_failure: Mutex<Option<String>>,
}

impl Rebuilds {
    /// Producers replaced after a fatal error.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// What is being done about a broken producer, for the health message.
    pub(crate) fn progress(&self) -> String {
        match &*self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(err) => format!("building a new producer failed ({err}); retrying"),
            None => "a new producer is being built".to_string(),
        }
    }

    fn set_failure(&self, failure: Option<String>) {
        *self.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }
}

/// A running rebuilder; [`Rebuilder::stop`] ends it and waits for it.
pub(crate) struct Rebuilder {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Rebuilder {
    /// Starts watching whatever backend is in `slot` (initialize and a
    /// Vault rotation swap it) until `ctx.shutdown` (the plugin's token) is
    /// cancelled or [`Rebuilder::stop`]; reports into `rebuilds`.
    pub(crate) fn spawn(slot: Arc<Slot<Backend>>, rebuilds: Arc<Rebuilds>, ctx: &Context) -> Self {
        let stop = ctx.shutdown.child_token();
        let task = tokio::spawn(run(slot, rebuilds, ctx.clone(), stop.clone()));
        Rebuilder { stop, task }
    }

    /// Cancels the task (an attempt in progress is dropped; the clients it
    /// created are closed on a blocking thread) and waits for it.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "kafka producer rebuilder task failed");
        }
    }
}

async fn run(
    slot: Arc<Slot<Backend>>,
    rebuilds: Arc<Rebuilds>,
    ctx: Context,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_attempt: Option<Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Ok(broken) = slot.get() else { continue };
        if broken.broken().is_none() {
            rebuilds.set_failure(None);
            continue;
        }
        if last_attempt.is_some_and(|at| at.elapsed() < REBUILD_INTERVAL) {
            continue;
        }
        last_attempt = Some(Instant::now());
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, broken.rebuild()) => attempt,
        };
        let fresh = match attempt {
            Ok(Ok(fresh)) => fresh,
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "building a new kafka producer failed; retrying");
                rebuilds.set_failure(Some(err.to_string()));
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = ATTEMPT_TIMEOUT.as_millis() as u64,
                    "building a new kafka producer timed out; retrying"
                );
                rebuilds.set_failure(Some(format!(
                    "timed out after {} ms",
                    ATTEMPT_TIMEOUT.as_millis()
                )));
                continue;
            }
        };
        // Only the backend that failed is replaced: a re-initialize or a
        // Vault rotation may have swapped in a newer one meanwhile. The
        // swap is the same as theirs: publishes in flight on the old
        // producer end with its error (UNAVAILABLE) or at their deadline,
        // and it is closed when the last of them lets go. Records it
        // acknowledged were acknowledged by the broker; nothing is resent.
        match slot.get() {
            Ok(current) if Arc::ptr_eq(&current, &broken) => {
                drop(slot.replace(Arc::new(fresh)));
                rebuilds.set_failure(None);
                let count = rebuilds.count.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    rebuilds = count,
                    "replaced the failed kafka producer with a new one"
                );
                // Readiness comes back with the next probe; ask for it now.
                ctx.health_changed();
            }
            _ => tracing::debug!("the kafka backend was replaced meanwhile; new producer dropped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_says_why_the_last_attempt_failed_until_one_succeeds() {
        let rebuilds = Rebuilds::default();
        assert_eq!(rebuilds.progress(), "a new producer is being built");
        rebuilds.set_failure(Some("no broker answered".into()));
        assert_eq!(
            rebuilds.progress(),
            "building a new producer failed (no broker answered); retrying"
        );
        rebuilds.set_failure(None);
        assert_eq!(rebuilds.progress(), "a new producer is being built");
        assert_eq!(rebuilds.count(), 0);
    }
}
