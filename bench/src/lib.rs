//! `prism-bench`: drives a running plugin over gRPC with N connections × M
//! concurrent requests for a duration or a request count, and reports
//! throughput, latency percentiles (HDR histogram, µs resolution) and errors
//! by gRPC status.
//!
//! Every worker records into its own histogram (merged at the end) so the
//! measuring itself adds no shared-state contention.

pub mod atomic;
pub mod cpu;
pub mod kafka;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use prism_plugin_core::proto::keyvalue::{
    BatchGetRequest, BatchSetRequest, GetRequest, SetRequest,
    key_value_basic_interface_client::KeyValueBasicInterfaceClient,
    key_value_batch_interface_client::KeyValueBatchInterfaceClient,
};
use prism_plugin_core::proto::pubsub::{
    PublishRequest, SubscribeRequest, pub_sub_basic_interface_client::PubSubBasicInterfaceClient,
};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// KeyValue Get of preloaded keys.
    KvGet,
    /// KeyValue Set.
    KvSet,
    /// 90 % Get, 10 % Set.
    KvMixed,
    /// BatchGet of `batch_size` keys.
    KvBatch,
    /// Same as kv-get, against the Redis cache plugin.
    CacheGet,
    /// Same as kv-set, against the Redis cache plugin.
    CacheSet,
    /// Publish to a topic.
    Publish,
    /// Publish while a subscriber receives; latency is publish → delivery.
    PublishSubscribe,
    /// grpc.health.v1 Check: the gRPC floor, no backend involved.
    Health,
    /// KeyValueAtomic Increment(+1) of one of `keys` counters.
    KvIncrement,
    /// KeyValueAtomic CompareAndSwap of a preloaded key (see `atomic.rs`).
    KvCas,
}

/// Load shape and data shape.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// `http://host:port` of the plugin.
    pub target: String,
    /// Scenario.
    pub scenario: Scenario,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub concurrency: usize,
    /// Stop after this long (after warm-up)...
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// ...or after this many requests, if set.
    pub requests: Option<u64>,
    /// Untimed warm-up.
    #[serde(with = "humantime_serde")]
    pub warmup: Duration,
    /// Value/payload size in bytes.
    pub value_size: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Keys per BatchGet.
    pub batch_size: usize,
    /// `x-prism-namespace` for KeyValue scenarios.
    pub namespace: String,
    /// Topic for pub/sub scenarios.
    pub topic: String,
}

/// One run's results.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The options used.
    pub options: Options,
    /// Successful operations.
    pub ops: u64,
    /// Measured wall time, seconds.
    pub seconds: f64,
    /// ops / seconds.
    pub ops_per_sec: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
    /// Failed operations by gRPC status code.
    pub errors: BTreeMap<String, u64>,
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Could not connect.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// Target URL.
        target: String,
        /// Cause.
        source: tonic::transport::Error,
    },
    /// Preloading or setting up the scenario failed.
    #[error("setup failed: {0}")]
    Setup(tonic::Status),
}

fn key(i: u64) -> String {
    format!("bench-{i:012}")
}

/// The `x-prism-namespace` header value, parsed once per worker (a clone is a
/// reference-count bump, not a re-validation and copy per request).
type NamespaceValue = Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>;

fn namespace_value(ns: &str) -> NamespaceValue {
    ns.parse().ok()
}

fn with_namespace<T>(msg: T, ns: &NamespaceValue) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(v) = ns {
        req.metadata_mut().insert("x-prism-namespace", v.clone());
    }
    req
}

/// Splitmix64: cheap, good-enough key choice without a RNG dependency.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `connections` HTTP/2 connections to `target` (nodelay, 5 s connect
/// timeout): the load generator's, shared with the bench suite's paced load.
pub async fn connect(target: &str, connections: usize) -> Result<Vec<Channel>, Error> {
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = Endpoint::from_shared(target.to_string())
            .map_err(|source| Error::Connect {
                target: target.to_string(),
                source,
            })?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|source| Error::Connect {
                target: target.to_string(),
                source,
            })?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Writes every key once (in batches), so reads find data.
async fn preload(channel: Channel, opts: &Options) -> Result<(), Error> {
    let value = Bytes::from(vec![b'v'; opts.value_size]);
    let ns = namespace_value(&opts.namespace);
    let mut client = KeyValueBatchInterfaceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let chunk = (4 * 1024 * 1024 / opts.value_size.max(1)).clamp(1, 1000) as u64;
    let mut start = 0;
    while start < opts.keys {
        let end = (start + chunk).min(opts.keys);
        let requests = (start..end)
            .map(|i| SetRequest {
                key: key(i),
                value: value.clone(),
                ..Default::default()
            })
            .collect();
        client
            .batch_set(with_namespace(BatchSetRequest { requests }, &ns))
            .await
            .map_err(Error::Setup)?;
        start = end;
    }
    Ok(())
}

/// Per-worker tallies, merged at the end.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            // 1 µs .. 60 s, 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds"),
            ok: 0,
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, started: Instant, result: Result<(), tonic::Status>, measure: bool) {
        if !measure {
            return;
        }
        match result {
            Ok(()) => {
                self.ok += 1;
                let _ = self
                    .hist
                    .record(started.elapsed().as_micros().max(1) as u64);
            }
            Err(status) => {
                *self
                    .errors
                    .entry(format!("{:?}", status.code()))
                    .or_default() += 1;
            }
        }
    }
}

/// Shared run state: the measuring window and the request budget.
struct Control {
    measuring: AtomicBool,
    stop: AtomicBool,
    issued: AtomicU64,
    done: AtomicU64,
    budget: Option<u64>,
}

impl Control {
    /// Claims the next request; false when the run is over.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(budget) = self.budget
            && self.measuring.load(Ordering::Relaxed)
        {
            return self.issued.fetch_add(1, Ordering::Relaxed) < budget;
        }
        true
    }
}

async fn worker(channel: Channel, opts: Arc<Options>, ctl: Arc<Control>, seed: u64) -> Tally {
    let mut tally = Tally::new();
    let mut rng = seed;
    let value = Bytes::from(vec![b'x'; opts.value_size]);
    let ns = namespace_value(&opts.namespace);
    let mut kv = KeyValueBasicInterfaceClient::new(channel.clone())
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let mut batch = KeyValueBatchInterfaceClient::new(channel.clone())
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let mut pubsub = PubSubBasicInterfaceClient::new(channel.clone());
    let mut atomic = prism_plugin_core::proto::keyvalue::key_value_atomic_interface_client::KeyValueAtomicInterfaceClient::new(channel.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    while ctl.claim() {
        let measure = ctl.measuring.load(Ordering::Relaxed);
        let k = next_random(&mut rng) % opts.keys.max(1);
        let started = Instant::now();
        let result = match opts.scenario {
            Scenario::KvGet
            | Scenario::CacheGet
            | Scenario::KvSet
            | Scenario::CacheSet
            | Scenario::KvMixed => {
                // KvMixed: one write in ten.
                let write = match opts.scenario {
                    Scenario::KvMixed => k.is_multiple_of(10),
                    scenario => matches!(scenario, Scenario::KvSet | Scenario::CacheSet),
                };
                if write {
                    let set = SetRequest {
                        key: key(k),
                        value: value.clone(),
                        ..Default::default()
                    };
                    kv.set(with_namespace(set, &ns)).await.map(drop)
                } else {
                    kv.get(with_namespace(GetRequest { key: key(k) }, &ns))
                        .await
                        .map(drop)
                }
            }
            Scenario::KvBatch => {
                let keys = (0..opts.batch_size)
                    .map(|_| key(next_random(&mut rng) % opts.keys.max(1)))
                    .collect();
                batch
                    .batch_get(with_namespace(BatchGetRequest { keys }, &ns))
                    .await
                    .map(drop)
            }
            Scenario::Publish | Scenario::PublishSubscribe => pubsub
                .publish(PublishRequest {
                    topic: opts.topic.clone(),
                    payload: stamp(&value),
                    partition_key: key(k),
                    ..Default::default()
                })
                .await
                .and_then(|r| {
                    let r = r.into_inner();
                    if r.success {
                        Ok(())
                    } else {
                        Err(tonic::Status::unknown(r.error))
                    }
                }),
            Scenario::KvIncrement | Scenario::KvCas => {
                atomic::call(&mut atomic, opts.scenario, k, &value, &ns).await
            }
            Scenario::Health => health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(drop),
        };
        tally.record(started, result, measure);
        ctl.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// Publish payloads start with the send time (µs since the Unix epoch), so a
/// subscriber can measure publish → delivery latency.
fn stamp(value: &Bytes) -> Bytes {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let mut out = Vec::with_capacity(value.len().max(8));
    out.extend_from_slice(&now.to_be_bytes());
    if value.len() > 8 {
        out.extend_from_slice(&value[8..]);
    }
    Bytes::from(out)
}

/// Subscribes and records delivery latency from the stamped payloads.
async fn subscriber(channel: Channel, opts: Arc<Options>, ctl: Arc<Control>) -> Tally {
    let mut tally = Tally::new();
    let mut client = PubSubBasicInterfaceClient::new(channel);
    let mut options = std::collections::HashMap::new();
    options.insert("start".to_string(), "latest".to_string());
    let stream = client
        .subscribe(SubscribeRequest {
            topic: opts.topic.clone(),
            subscriber_id: format!("bench-{}", std::process::id()),
            options,
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s.into_inner(),
        Err(status) => {
            tally.record(Instant::now(), Err(status), true);
            return tally;
        }
    };
    loop {
        let next = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
        match next {
            Ok(Ok(Some(msg))) => {
                if ctl.measuring.load(Ordering::Relaxed) && msg.payload.len() >= 8 {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&msg.payload[..8]);
                    let sent = u64::from_be_bytes(sent);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros() as u64)
                        .unwrap_or(0);
                    tally.ok += 1;
                    let _ = tally.hist.record(now.saturating_sub(sent).max(1));
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(status)) => {
                tally.record(Instant::now(), Err(status), true);
                break;
            }
            Err(_) if ctl.stop.load(Ordering::Relaxed) => break,
            Err(_) => {}
        }
    }
    tally
}

/// Runs one scenario and returns its report. `progress` is called with
/// `(Duration::ZERO, 0)` when the measured window starts (after connecting,
/// preloading and warming up), then about once a second with (elapsed,
/// completed requests).
pub async fn run(
    opts: Options,
    progress: impl Fn(Duration, u64) + Send + 'static,
) -> Result<Report, Error> {
    let channels = connect(&opts.target, opts.connections).await?;
    if matches!(
        opts.scenario,
        Scenario::KvGet
            | Scenario::CacheGet
            | Scenario::KvMixed
            | Scenario::KvBatch
            | Scenario::KvCas
    ) {
        preload(channels[0].clone(), &opts).await?;
    }
    let opts = Arc::new(opts);
    let ctl = Arc::new(Control {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        budget: opts.requests,
    });
    let mut tasks = tokio::task::JoinSet::new();
    let sub = if opts.scenario == Scenario::PublishSubscribe {
        let handle = tokio::spawn(subscriber(channels[0].clone(), opts.clone(), ctl.clone()));
        // A new consumer-group member takes a moment to get partitions.
        tokio::time::sleep(Duration::from_secs(3)).await;
        Some(handle)
    } else {
        None
    };
    for (c, channel) in channels.iter().enumerate() {
        for w in 0..opts.concurrency {
            let seed = (c * 1_000_003 + w) as u64 + 1;
            tasks.spawn(worker(channel.clone(), opts.clone(), ctl.clone(), seed));
        }
    }
    tokio::time::sleep(opts.warmup).await;
    ctl.measuring.store(true, Ordering::SeqCst);
    let base = ctl.done.load(Ordering::SeqCst);
    let started = Instant::now();
    progress(Duration::ZERO, 0);
    let deadline = started + opts.duration;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        let budget_done = opts
            .requests
            .is_some_and(|n| ctl.done.load(Ordering::Relaxed) - base >= n);
        if budget_done || (opts.requests.is_none() && Instant::now() >= deadline) {
            break;
        }
        tokio::select! {
            _ = tick.tick() => progress(started.elapsed(), ctl.done.load(Ordering::Relaxed) - base),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let elapsed = started.elapsed();
    ctl.stop.store(true, Ordering::SeqCst);
    let mut total = Tally::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(t) = joined {
            merge(&mut total, t);
        }
    }
    if let Some(sub) = sub
        && let Ok(t) = sub.await
    {
        // End-to-end latency replaces the publish latency.
        total.hist = t.hist;
        for (k, v) in t.errors {
            *total.errors.entry(format!("subscribe:{k}")).or_default() += v;
        }
    }
    let seconds = elapsed.as_secs_f64();
    let h = &total.hist;
    let pct = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    Ok(Report {
        options: (*opts).clone(),
        ops: total.ok,
        seconds,
        ops_per_sec: total.ok as f64 / seconds.max(1e-9),
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: if h.is_empty() { 0 } else { h.max() },
        errors: total.errors,
    })
}

fn merge(into: &mut Tally, from: Tally) {
    let _ = into.hist.add(&from.hist);
    into.ok += from.ok;
    for (k, v) in from.errors {
        *into.errors.entry(k).or_default() += v;
    }
}

impl Report {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let errors: u64 = self.errors.values().sum();
        format!(
            "{:<18} {:>10.0} ops/s  p50 {:>6} µs  p90 {:>6} µs  p99 {:>6} µs  p99.9 {:>7} µs  max {:>7} µs  errors {}{}",
            format!("{:?}", self.options.scenario),
            self.ops_per_sec,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            errors,
            if errors > 0 {
                format!(" {:?}", self.errors)
            } else {
                String::new()
            }
        )
    }
}
