//! The direct Kafka baseline: a librdkafka producer (and, for end-to-end
//! latency, a consumer) in this process, configured like prism-kafka's
//! defaults — `acks=all`, idempotence on, no compression, librdkafka's
//! default batching — with the same number of sends in flight, payload size
//! and topic as the plugin scenario it is compared with.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::task::JoinHandle;

use crate::cpu::{Snapshot, Window};

/// Applies extra `key=value` settings on top of a configuration.
trait WithExtra {
    fn with_extra(&mut self, extra: &[(String, String)]) -> &mut Self;
}

impl WithExtra for ClientConfig {
    fn with_extra(&mut self, extra: &[(String, String)]) -> &mut Self {
        for (key, value) in extra {
            self.set(key, value);
        }
        self
    }
}

/// The header prism-kafka adds to every message (same size here, so both
/// sides send the same bytes).
const MESSAGE_ID_HEADER: &str = "prism-message-id";

/// What a direct run measured.
#[derive(Debug, Clone)]
pub struct DirectReport {
    /// Acknowledged sends (or, end to end, deliveries) per second.
    pub ops_per_sec: f64,
    /// Latency percentiles, µs: send → acknowledgement, or send → delivery.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Failed sends.
    pub errors: u64,
    /// CPU cost of the measured window per acknowledged send (this process
    /// is the client: producer, consumer and their librdkafka threads).
    pub cpu: Option<crate::cpu::Window>,
}

/// What to run against the broker.
#[derive(Debug, Clone, Copy)]
pub struct Direct<'a> {
    /// `bootstrap.servers`.
    pub bootstrap: &'a str,
    /// Topic (must exist).
    pub topic: &'a str,
    /// Sends in flight.
    pub in_flight: usize,
    /// Payload size in bytes.
    pub value_size: usize,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Measure send → delivery through a consumer instead of send → ack.
    pub end_to_end: bool,
    /// Extra librdkafka settings for both clients (experiments).
    pub extra: &'a [(String, String)],
}

/// Runs `in_flight` concurrent sends of `value_size`-byte payloads to
/// `topic` for `warmup + duration`; measures the `duration`. With
/// `end_to_end`, a consumer subscribed beforehand records send → delivery
/// latency instead (the rate is still the acknowledged sends).
pub async fn run(direct: Direct<'_>) -> Result<DirectReport, rdkafka::error::KafkaError> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", direct.bootstrap)
        .set("client.id", "prism-bench-direct")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "none")
        .set("message.timeout.ms", "10000")
        .set("allow.auto.create.topics", "false")
        .with_extra(direct.extra)
        .create()?;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = if direct.end_to_end {
        let handle = spawn_consumer(&direct, measuring.clone(), stop.clone())?;
        // Same settling time as the plugin's publish-subscribe scenario: a new
        // group member takes a moment to get its partitions.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Some(handle)
    } else {
        None
    };
    let Sends {
        mut hist,
        ok,
        errors,
        seconds,
        cpu,
    } = send_for(&direct, &producer, &measuring).await;
    if let Some(handle) = consumer {
        // Let the last deliveries arrive before stopping the consumer.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        if let Ok((e2e, _)) = handle.await {
            hist = e2e;
        }
    }
    let pct = |q: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(q)
        }
    };
    Ok(DirectReport {
        ops_per_sec: ok as f64 / seconds.max(1e-9),
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        errors,
        cpu,
    })
}

/// A consumer subscribed to the topic that, while `measuring`, records the
/// send → delivery latency of each message (its payload starts with the
/// send time) until `stop`; its task returns the histogram and the count.
fn spawn_consumer(
    direct: &Direct<'_>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<(Histogram<u64>, u64)>, rdkafka::error::KafkaError> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", direct.bootstrap)
        .set(
            "group.id",
            format!("prism-bench-direct-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .set("session.timeout.ms", "6000")
        .set("allow.auto.create.topics", "false")
        .with_extra(direct.extra)
        .create()?;
    consumer.subscribe(&[direct.topic])?;
    Ok(tokio::spawn(async move {
        let mut hist = new_hist();
        let mut count = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await;
            if let Ok(Ok(msg)) = next
                && measuring.load(Ordering::Relaxed)
                && let Some(payload) = msg.payload()
                && payload.len() >= 8
            {
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&payload[..8]);
                let latency = now_us().saturating_sub(u64::from_be_bytes(sent));
                let _ = hist.record(latency.max(1));
                count += 1;
            }
        }
        (hist, count)
    }))
}

/// What the sends of a run measured.
struct Sends {
    /// Send → acknowledgement latencies (µs) of the measured window.
    hist: Histogram<u64>,
    /// Acknowledged sends in the measured window.
    ok: u64,
    /// Failed sends in the measured window.
    errors: u64,
    /// Length of the measured window.
    seconds: f64,
    /// The CPU counters of the measured window.
    cpu: Option<Window>,
}

/// Keeps `in_flight` sends going for `warmup + duration` and measures the
/// `duration` (setting `measuring` when it starts).
async fn send_for(direct: &Direct<'_>, producer: &FutureProducer, measuring: &AtomicBool) -> Sends {
    let filler = vec![b'x'; direct.value_size.max(8)];
    let started = Instant::now();
    let measure_from = started + direct.warmup;
    let end = measure_from + direct.duration;
    let mut hist = new_hist();
    let mut ok = 0u64;
    let mut errors = 0u64;
    let mut seq = 0u64;
    let mut pending = FuturesUnordered::new();
    let send = |seq: u64| {
        let mut payload = filler.clone();
        payload[..8].copy_from_slice(&now_us().to_be_bytes());
        let id = format!("{seq:032x}");
        let producer = producer.clone();
        let topic = direct.topic.to_string();
        async move {
            let sent = Instant::now();
            let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                key: MESSAGE_ID_HEADER,
                value: Some(id.as_bytes()),
            });
            let record = FutureRecord::<[u8], [u8]>::to(&topic)
                .payload(&payload)
                .headers(headers);
            let result = producer.send(record, Duration::from_secs(10)).await;
            (sent, result.is_ok())
        }
    };
    for _ in 0..direct.in_flight.max(1) {
        pending.push(send(seq));
        seq += 1;
    }
    let mut measured_at = None;
    let (mut cpu_start, mut cpu_end) = (None, None);
    while let Some((sent, success)) = pending.next().await {
        let now = Instant::now();
        if now >= measure_from && measured_at.is_none() {
            measured_at = Some(now);
            cpu_start = Snapshot::now();
            measuring.store(true, Ordering::SeqCst);
        }
        if now >= end && cpu_end.is_none() {
            cpu_end = Snapshot::now();
        }
        if sent >= measure_from && now <= end {
            if success {
                ok += 1;
                let _ = hist.record((now - sent).as_micros().max(1) as u64);
            } else {
                errors += 1;
            }
        }
        if now < end {
            pending.push(send(seq));
            seq += 1;
        }
    }
    Sends {
        hist,
        ok,
        errors,
        seconds: measured_at.map_or(0.0, |at| (end.min(Instant::now()) - at).as_secs_f64()),
        cpu: cpu_start
            .zip(cpu_end)
            .and_then(|(start, end)| Window::between(start, end, ok)),
    }
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
