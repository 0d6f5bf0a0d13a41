//! [`Link`]: whether the server is reachable, as last seen, and when it last
//! answered a data statement. The backend's calls fail fast on it (see the
//! `backend` module docs); the health probe and lost connections set it.
//! Knows nothing of the pool or the statements.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::error::Error;

/// The server's reachability as last seen, and its last answer.
pub(super) struct Link {
    /// `host:port/database`, for messages and logs.
    target: String,
    up: watch::Sender<bool>,
    /// Why it is down (free of secrets), for error messages.
    reason: Mutex<String>,
    /// Reference point of `answered`.
    epoch: Instant,
    /// When the server last answered a data statement (ms since `epoch`):
    /// tells a slow server from a stalled one when a health probe times out.
    answered: AtomicU64,
}

impl Link {
    /// A link to `target`, up (the connect that precedes it just succeeded).
    pub(super) fn new(target: String) -> Self {
        Link {
            target,
            up: watch::Sender::new(true),
            reason: Mutex::new(String::new()),
            epoch: Instant::now(),
            answered: AtomicU64::new(0),
        }
    }

    /// True while the server is believed reachable.
    pub(super) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// `None` when the link is down now; otherwise a future that completes
    /// as soon as it goes down (for calls waiting for a connection).
    pub(super) fn until_down(&self) -> Option<impl Future<Output = ()> + Send> {
        let mut link = self.up.subscribe();
        if !*link.borrow_and_update() {
            return None;
        }
        Some(async move {
            // The sender lives in the backend, so this only ends when the link
            // drops.
            let _ = link.wait_for(|up| !*up).await;
        })
    }

    /// The error of a call refused because the link is down.
    pub(super) fn unreachable(&self) -> Error {
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Error::Unreachable {
            target: self.target.clone(),
            reason,
        }
    }

    /// Marks the link down because of `err` (logged once, when it changes).
    pub(super) fn mark_down(&self, err: &Error) {
        let reason = match err {
            // The message already names the target; keep only the cause.
            Error::Postgres { source, .. } => source.to_string(),
            Error::Timeout { what, timeout, .. } => {
                format!("no answer to {what} within {} ms", timeout.as_millis())
            }
            other => other.to_string(),
        };
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        if self.set(false) {
            tracing::warn!(target = %self.target, error = %err, "lost postgres; failing calls fast until it answers");
        }
    }

    /// Marks the link up (logged once, when it changes).
    pub(super) fn mark_up(&self) {
        if self.set(true) {
            tracing::info!(target = %self.target, "postgres answers again");
        }
    }

    /// Sets the link state; true when it changed (only then are waiters woken).
    fn set(&self, up: bool) -> bool {
        self.up.send_if_modified(|state| {
            let changed = *state != up;
            *state = up;
            changed
        })
    }

    /// Records that the server answered a statement (any answer, errors
    /// included: the server is there).
    pub(super) fn note_answer(&self) {
        let at = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.answered.fetch_max(at, Ordering::Relaxed);
    }

    /// Whether the server answered a data statement at or after `since`.
    pub(super) fn answered_since(&self, since: Instant) -> bool {
        let since = u64::try_from(since.duration_since(self.epoch).as_millis()).unwrap_or(0);
        self.answered.load(Ordering::Relaxed) >= since
    }
}
