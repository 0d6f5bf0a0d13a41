//! The expiry reaper: a background task owned by the plugin that deletes
//! expired rows in bounded batches every `reaper_interval`. Reads never
//! depend on it (they filter on `expires_at`); it only gives the space back.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use prism_plugin_core::Slot;

use crate::backend::Backend;

/// Rows per DELETE: small enough to keep each statement short and its row
/// locks brief, large enough that a backlog clears in few round trips.
const BATCH: i64 = 1000;
/// Most batches per round, so one round cannot monopolise a connection; the
/// rest waits for the next tick.
const MAX_BATCHES_PER_ROUND: u32 = 100;

/// A running reaper; [`Reaper::stop`] ends it and waits for it.
pub(crate) struct Reaper {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Reaper {
    /// Starts reaping every `interval` whatever backend is in `slot` at each
    /// tick (a Vault rotation swaps it; holding one would keep a replaced
    /// pool from draining), until `shutdown` (the plugin's token) is
    /// cancelled or [`Reaper::stop`].
    pub(crate) fn spawn(
        slot: Arc<Slot<Backend>>,
        interval: std::time::Duration,
        shutdown: &CancellationToken,
    ) -> Self {
        let stop = shutdown.child_token();
        let task = tokio::spawn(run(slot, interval, stop.clone()));
        Reaper { stop, task }
    }

    /// Cancels the task (a statement in flight is dropped) and waits for it.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "expiry reaper task failed");
        }
    }
}

async fn run(slot: Arc<Slot<Backend>>, interval: std::time::Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the first sweep waits one interval.
    ticks.tick().await;
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Ok(backend) = slot.get() else { continue };
        if !backend.is_up() {
            // Health reports the outage; sweeping would only add noise.
            continue;
        }
        let mut deleted = 0u64;
        for _ in 0..MAX_BATCHES_PER_ROUND {
            let batch = tokio::select! {
                () = stop.cancelled() => return,
                batch = backend.reap(BATCH) => batch,
            };
            match batch {
                Ok(n) => {
                    deleted += n;
                    if failing {
                        tracing::info!("expiry reaper working again");
                        failing = false;
                    }
                    if n < BATCH.unsigned_abs() {
                        break;
                    }
                }
                Err(err) => {
                    if !failing {
                        tracing::warn!(error = %err, "expiry reaper failed; retrying next interval");
                        failing = true;
                    }
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::debug!(deleted, "expiry reaper deleted expired rows");
        }
    }
}
