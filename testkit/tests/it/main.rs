//! Integration tests for prism-testkit: every server really starts, answers a real
//! client, survives an outage (stop / start_again on the same port), and two
//! instances run side by side; plus the plugin-process and gRPC health helpers.

mod health;
mod kafka;
mod plugin;
mod postgres;
mod redis;
mod vault;

use std::time::{Duration, Instant};

/// Runs `fut`, printing how long it took (visible with `--nocapture`).
async fn timed<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = fut.await;
    eprintln!("[timing] {what}: {:?}", start.elapsed());
    out
}

/// A generous bound for operations that should take milliseconds.
const WAIT: Duration = Duration::from_secs(20);
