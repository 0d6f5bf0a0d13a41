//! An open-loop load generator: KeyValue Set or Get calls sent at a fixed
//! rate, whatever the plugin's answers take (unlike `prism_bench::run`, whose
//! workers send the next call when the previous one answers, so a slower
//! plugin is offered less load and any extra CPU per call shows as latency
//! at saturation). Below capacity this measures what a call waits for, not
//! how the machine's spare CPU is shared.
//!
//! Each call's latency counts from the moment it was due, not from when the
//! generator got round to sending it, so a stall on either side is not
//! hidden (no coordinated omission).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use prism_bench::cpu;
use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::{GetRequest, SetRequest};
use tokio::sync::Semaphore;

use crate::args::NAMESPACE;
use crate::results::Measure;

/// Calls outstanding at once before a due call is counted as not sent
/// (the plugin has stalled; queueing more would only measure the queue).
const MAX_OUTSTANDING: usize = 2_000;
/// Untimed start, so connections and pools are warm.
const WARMUP: Duration = Duration::from_secs(1);
/// How often the generator wakes to send what has come due.
const TICK: Duration = Duration::from_millis(1);

/// The load: `rate` calls/s of Set (`set`) or Get for `duration` against the
/// plugin on `port` (process `pid`), over `connections` HTTP/2 connections.
pub(crate) struct Load {
    pub(crate) port: u16,
    pub(crate) pid: u32,
    pub(crate) set: bool,
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) connections: usize,
    pub(crate) keys: u64,
    pub(crate) value_size: usize,
}

/// Latencies and failures of the measured window.
struct Tally {
    hist: Histogram<u64>,
    failed: u64,
    unsent: u64,
}

/// Runs `load`: a warm-up, then the measured window. Calls not sent because
/// [`MAX_OUTSTANDING`] were already waiting (the plugin, or the machine, fell
/// that far behind) are not failed calls: they are named in the error detail.
pub(crate) async fn run(load: &Load) -> Result<Measure, String> {
    let target = format!("http://127.0.0.1:{}", load.port);
    let clients: Vec<_> = prism_bench::connect(&target, load.connections.max(1))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?
        .into_iter()
        .map(|channel| {
            KeyValueBasicInterfaceClient::new(channel)
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(usize::MAX)
        })
        .collect();
    let namespace: tonic::metadata::MetadataValue<_> =
        NAMESPACE.parse().map_err(|e| format!("namespace: {e}"))?;
    let value = Bytes::from(vec![b'p'; load.value_size]);
    let tally = Arc::new(Mutex::new(Tally {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        failed: 0,
        unsent: 0,
    }));
    let outstanding = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let interval = Duration::from_secs_f64(1.0 / load.rate.max(1.0));
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + load.duration;
    let mut cpu_start = None;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent: u64 = 0;
    let mut calls = tokio::task::JoinSet::new();
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if cpu_start.is_none() && now >= measure_from {
            cpu_start = cpu::process_ticks(load.pid);
        }
        // Send every call due by now, each stamped with its due time.
        loop {
            let due = start + interval.mul_f64(sent as f64);
            if due > now || due >= end {
                break;
            }
            let measured = due >= measure_from;
            sent += 1;
            let Ok(permit) = outstanding.clone().try_acquire_owned() else {
                if measured {
                    lock(&tally).unsent += 1;
                }
                continue;
            };
            let mut client = clients[(sent as usize) % clients.len()].clone();
            let key = format!("bench-{:012}", (sent * 7_919) % load.keys.max(1));
            let (set, value, ns, tally) =
                (load.set, value.clone(), namespace.clone(), tally.clone());
            calls.spawn(async move {
                let result = if set {
                    let mut req = tonic::Request::new(SetRequest {
                        key,
                        value,
                        ..Default::default()
                    });
                    req.metadata_mut().insert("x-prism-namespace", ns);
                    client.set(req).await.map(drop)
                } else {
                    let mut req = tonic::Request::new(GetRequest { key });
                    req.metadata_mut().insert("x-prism-namespace", ns);
                    client.get(req).await.map(drop)
                };
                drop(permit);
                if measured {
                    let mut t = lock(&tally);
                    match result {
                        Ok(()) => {
                            let _ = t.hist.record(due.elapsed().as_micros().max(1) as u64);
                        }
                        Err(_) => t.failed += 1,
                    }
                }
            });
        }
        while calls.try_join_next().is_some() {}
        if now >= end {
            break;
        }
    }
    let cpu_end = cpu::process_ticks(load.pid);
    while calls.join_next().await.is_some() {}
    let t = lock(&tally);
    let ok = t.hist.len();
    let cpu_us = cpu_start
        .zip(cpu_end)
        .map(|(a, b)| cpu::per_op(b.saturating_sub(a), ok));
    Ok(Measure {
        ops_per_sec: ok as f64 / load.duration.as_secs_f64(),
        p50_us: t.hist.value_at_quantile(0.50),
        p99_us: t.hist.value_at_quantile(0.99),
        p999_us: t.hist.value_at_quantile(0.999),
        errors: t.failed,
        detail: match t.unsent {
            0 => String::new(),
            n => format!("{} ({n} not sent: {MAX_OUTSTANDING} outstanding)", t.failed),
        },
        plugin_cpu_us: cpu_us,
        ..Measure::default()
    })
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}
