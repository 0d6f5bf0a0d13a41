//! Files reloaded while the plugin runs (the TLS certificates that
//! cert-manager rotates, the authorization grants): their modification times
//! are polled, and a change is loaded and applied; a change that cannot be
//! loaded yet keeps the old value and is retried at the next tick (a writer
//! replacing several files one by one is seen half-way).

use std::fmt::Display;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Every `interval` until `shutdown`: when `modified()` differs from what it
/// was at the last successful load, `load()` and hand the result to `apply`.
/// `what` names the files in the log lines (`reloaded {what}`).
pub(crate) async fn watch<M: PartialEq, T, E: Display>(
    what: &str,
    interval: Duration,
    shutdown: CancellationToken,
    modified: impl Fn() -> M,
    load: impl Fn() -> Result<T, E>,
    mut apply: impl FnMut(T),
) {
    let mut seen = modified();
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        let now = modified();
        if now == seen {
            continue;
        }
        match load() {
            Ok(value) => {
                apply(value);
                seen = now;
                tracing::info!("reloaded {what}");
            }
            Err(e) => tracing::warn!(
                error = %e,
                "{what} changed but cannot be loaded yet; keeping the old ones"
            ),
        }
    }
}
