//! The atomicity of `KeyValueAtomicInterface` under load: many separate
//! connections counting one key and swapping one key at once, as one harness
//! every KeyValue plugin's test suite calls (prism-postgres, prism-redis
//! standalone and cluster), so the load, its bound and its checks are the
//! same for all of them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::transport::Channel;

use super::atomic::{add, atomic, cas, swap, text};

/// Clients of [`sixty_four_clients_count_and_swap`].
pub const LOAD_CLIENTS: usize = 64;
/// Increments each of them sends.
pub const LOAD_INCREMENTS: usize = 500;

/// Safety bound on the 64 × 500 increments (nextest ends the test at 240 s,
/// see .config/nextest.toml). Measured with a debug plugin and client on 2
/// cores shared with other jobs (load average ~20): 70-160 s, CPU-bound in
/// gRPC (400/s standalone Redis, about the same as PostgreSQL), not in the
/// backend. The point of the test is the exact count, not the speed.
pub const LOAD_BOUND: Duration = Duration::from_secs(230);

/// The plugin on `port` under the atomic load of namespace `ns`:
/// [`LOAD_CLIENTS`] connections send [`LOAD_INCREMENTS`] Increments each and
/// lose none (within [`LOAD_BOUND`]), then swap one key at once with exactly
/// one winner. The tests calling this are named `sixty_four_clients_*`, which
/// puts them in nextest's `atomic-load` group (one at a time).
pub async fn sixty_four_clients_count_and_swap(port: u16, ns: &str) {
    let elapsed = concurrent_increments_lose_nothing(port, ns, LOAD_CLIENTS, LOAD_INCREMENTS).await;
    assert!(
        elapsed < LOAD_BOUND,
        "{LOAD_CLIENTS} x {LOAD_INCREMENTS} increments took {elapsed:?}"
    );
    concurrent_swaps_have_one_winner(port, ns, LOAD_CLIENTS).await;
}

/// `clients` connections to the plugin on `port` each send `per_client`
/// Increment(+1) of one key in `ns`, all at once; the counter ends at exactly
/// `clients × per_client` (no update lost). Returns the wall time.
pub async fn concurrent_increments_lose_nothing(
    port: u16,
    ns: &str,
    clients: usize,
    per_client: usize,
) -> Duration {
    let key = "atomic-concurrent-counter";
    let channels = connections(port, clients).await;
    let started = Instant::now();
    let tasks: Vec<_> = channels
        .into_iter()
        .map(|channel| {
            let ns = ns.to_owned();
            tokio::spawn(async move {
                let mut kv = atomic(&channel);
                let mut last = 0;
                for _ in 0..per_client {
                    last = add(&mut kv, &ns, key, 1, 0).await;
                }
                last
            })
        })
        .collect();
    let mut highest = 0;
    for task in tasks {
        highest = highest.max(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    let want = i64::try_from(clients * per_client).expect("fits");
    assert_eq!(highest, want, "the last increment saw every other one");
    let channel = connections(port, 1).await.remove(0);
    assert_eq!(text(&channel, ns, key).await, Some(want.to_string()));
    let rate = (clients * per_client) as f64 / elapsed.as_secs_f64();
    eprintln!("[timing] {clients} clients x {per_client} Increment: {elapsed:?} ({rate:.0}/s)");
    elapsed
}

/// `clients` connections swap one key in `ns` from the same expected value
/// at once, each to its own value: exactly one swaps, every other sees the
/// winner's value as `current`. Then the same from absent on a fresh key.
pub async fn concurrent_swaps_have_one_winner(port: u16, ns: &str, clients: usize) {
    let channels = connections(port, clients).await;
    let key = "atomic-contended";
    let mut kv = atomic(&channels[0]);
    let mut reset = cas(key, None, "start");
    reset.delete = true;
    let mut delete_any = reset.clone();
    delete_any.expect_absent = false;
    for expected in [Some("start"), None] {
        // Start from `expected`: the key holds "start", or nothing.
        let current = text(&channels[0], ns, key).await;
        if let Some(current) = current {
            delete_any.expected = Bytes::from(current);
            assert!(swap(&mut kv, ns, delete_any.clone()).await.swapped);
        }
        if expected.is_some() {
            assert!(swap(&mut kv, ns, cas(key, None, "start")).await.swapped);
        }
        let tasks: Vec<_> = channels
            .iter()
            .enumerate()
            .map(|(i, channel)| {
                let (channel, ns) = (channel.clone(), ns.to_owned());
                let request = cas(key, expected, &format!("winner-{i}"));
                tokio::spawn(async move { swap(&mut atomic(&channel), &ns, request).await })
            })
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.expect("client task"));
        }
        let winners: Vec<usize> = (0..clients).filter(|&i| replies[i].swapped).collect();
        assert_eq!(winners.len(), 1, "exactly one swap from {expected:?}");
        let won = format!("winner-{}", winners[0]);
        for reply in replies.iter().filter(|r| !r.swapped) {
            assert!(reply.current_found, "{reply:?}");
            assert_eq!(reply.current, won.as_bytes(), "losers see the winner");
        }
        assert_eq!(text(&channels[0], ns, key).await, Some(won));
    }
}

/// `n` separate connections (HTTP/2 each) to the plugin on `port`.
async fn connections(port: u16, n: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint");
        channels.push(endpoint.connect().await.expect("connects"));
    }
    channels
}
