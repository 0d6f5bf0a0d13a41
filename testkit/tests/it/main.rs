//! Integration tests for prism-testkit: every server really starts, answers a real
//! client, survives an outage (stop / start_again on the same port), and two
//! instances run side by side; plus the plugin-process and gRPC health helpers.

mod health;
mod kafka;
mod plugin;
mod postgres;
mod redis;
mod vault;

use std::future::Future;
use std::time::{Duration, Instant};

use prism_testkit::Server;

/// Runs `fut`, printing how long it took (visible with `--nocapture`).
async fn timed<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = fut.await;
    eprintln!("[timing] {what}: {:?}", start.elapsed());
    out
}

/// A generous bound for operations that should take milliseconds.
const WAIT: Duration = Duration::from_secs(20);

/// Starts a server with `start`, timed.
async fn start<S: Server>(start: impl Future<Output = prism_testkit::Result<S>>) -> S {
    timed(&format!("{} start", S::NAME), start)
        .await
        .unwrap_or_else(|e| panic!("{} starts: {e}", S::NAME))
}

/// Two servers started at once, each on its own port.
async fn two_at_once<S: Server, F: Future<Output = prism_testkit::Result<S>>>(
    start: impl Fn() -> F,
) -> (S, S) {
    let what = format!("2x {} start", S::NAME);
    let (a, b) = timed(&what, async { tokio::join!(start(), start()) }).await;
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_ne!(a.port(), b.port());
    (a, b)
}

/// Stops `server` (timed) and checks it is down.
async fn stop<S: Server>(server: &mut S) {
    timed(&format!("{} stop", S::NAME), server.stop())
        .await
        .expect("stop");
    assert!(!server.is_running());
}

/// Restarts the stopped `server` (timed) and checks it kept its port.
async fn start_again<S: Server>(server: &mut S) {
    let port = server.port();
    timed(&format!("{} start_again", S::NAME), server.start_again())
        .await
        .expect("restart");
    assert_eq!(server.port(), port);
}
