//! Admission control: a tower layer in front of every data service that bounds
//! the calls a plugin holds at once, so a burst or a misbehaving client gets
//! `RESOURCE_EXHAUSTED` at once instead of queueing without limit (measured
//! before this layer: ~8 KiB of RSS per queued call, 800 MiB and 5 s latency
//! at 100,000 calls offered).
//!
//! Two budgets, so long streams cannot starve unary calls:
//! - **unary** (every method that is neither client- nor server-streaming):
//!   `max_in_flight` calls run, up to `max_queue` more wait for one to end,
//!   the rest are refused;
//! - **stream** (Subscribe, Tail, Consume, TimeSeries Query, …): `max_streams`
//!   open at once, the rest refused (a stream lasts indefinitely, so waiting
//!   for a slot would be waiting for another client to leave).
//!
//! Which budget a method uses is read from the compiled descriptor set (the
//! method's streaming kind), not from a list of plugin methods. The control
//! plane (lifecycle, health, reflection) passes untouched: kubelet probes must
//! pass under overload. A permit lives until the response body ends.
//!
//! The per-connection bound (`max_concurrent_streams_per_connection`) is the
//! HTTP/2 setting, applied by the server builder together with the keepalive
//! and connection limits of [`ConnectionConfig`] (see `crate::connections`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

use crate::around::{self, Around, AroundLayer, Before, Response, Watch};

/// Paths never subject to admission (the same control plane the drain gate
/// never closes).
const CONTROL_PREFIXES: &[&str] = &[
    "/prism.interfaces.LifecycleInterface/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
];

/// `control_plane.admission:` — bounds on the calls one plugin holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Unary data calls running at once (0 = unbounded).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Unary data calls waiting for one of `max_in_flight` to end; beyond
    /// this a call is refused with RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// A queued unary call that waited this long without a slot is refused
    /// with RESOURCE_EXHAUSTED instead of running late (0s = wait as long as
    /// it takes). The queue is FIFO.
    #[serde(default = "default_max_queue_wait", with = "humantime_serde")]
    pub max_queue_wait: Duration,
    /// Streaming calls (Subscribe, Tail, Consume, Query) open at once
    /// (0 = unbounded); counted apart from unary calls.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection (0 = unbounded);
    /// a client opens no more streams on one connection at once.
    #[serde(default = "default_max_concurrent_streams_per_connection")]
    pub max_concurrent_streams_per_connection: u32,
}

// Defaults measured on 2 cores against release prism-redis (root README,
// "Admission control"): throughput stops growing at ~64 calls in flight, and
// under a 100,000-call flood 64 + 64 kept the median admitted call at ~25 ms
// where 256 + 256 gave ~150 ms (the queue's drain time at the throughput
// left beside the flood).
fn default_max_in_flight() -> usize {
    64
}
fn default_max_queue() -> usize {
    64
}
// Off by default: under the 100,000-call flood on a CPU-starved 2-core
// machine the timer fired as late as the queue drained (queue p99 1.6 s with
// a 100 ms bound), so it bought nothing measurable there, and its refusals
// come late (≥ the bound) where the limit's come at once.
fn default_max_queue_wait() -> Duration {
    Duration::ZERO
}
fn default_max_streams() -> usize {
    1024
}
// 100 connections × 64 streams took prism-redis's peak RSS to 45 MiB in a
// flood, × 32 to 28 MiB; 32 in flight per connection still saturates a plugin.
fn default_max_concurrent_streams_per_connection() -> u32 {
    32
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_in_flight: default_max_in_flight(),
            max_queue: default_max_queue(),
            max_queue_wait: default_max_queue_wait(),
            max_streams: default_max_streams(),
            max_concurrent_streams_per_connection: default_max_concurrent_streams_per_connection(),
        }
    }
}

/// Which budget a call draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unary,
    Stream,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::Stream => "stream",
        }
    }
}

/// Labels of the admission counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    budget: &'static str,
}

/// Admission metrics, registered in the process registry by `Metrics::new`.
#[derive(Clone)]
pub(crate) struct AdmissionMetrics {
    admitted: Family<BudgetLabels, Counter>,
    queued: Family<BudgetLabels, Counter>,
    shed: Family<BudgetLabels, Counter>,
    waiting: Family<BudgetLabels, Gauge>,
    /// Unary calls: time in the queue, and from admission to the response's end.
    queue_wait: Histogram,
    run: Histogram,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_refused: Counter,
}

impl Default for AdmissionMetrics {
    fn default() -> Self {
        // 50 µs .. ~13 s, the buckets of the per-method latency histogram.
        let buckets = || Histogram::new(exponential_buckets(0.00005, 2.0, 19));
        AdmissionMetrics {
            admitted: Family::default(),
            queued: Family::default(),
            shed: Family::default(),
            waiting: Family::default(),
            queue_wait: buckets(),
            run: buckets(),
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
        }
    }
}

impl AdmissionMetrics {
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "admission_admitted",
            "Data calls admitted (ran at once or after waiting), by budget",
            self.admitted.clone(),
        );
        registry.register(
            "admission_queued",
            "Data calls that waited in the admission queue before running, by budget",
            self.queued.clone(),
        );
        registry.register(
            "admission_shed",
            "Data calls refused with RESOURCE_EXHAUSTED by admission control, by budget",
            self.shed.clone(),
        );
        registry.register(
            "admission_waiting",
            "Data calls waiting in the admission queue now, by budget",
            self.waiting.clone(),
        );
        registry.register(
            "admission_queue_wait_seconds",
            "Time unary data calls waited in the admission queue (admitted or not)",
            self.queue_wait.clone(),
        );
        registry.register(
            "admission_run_seconds",
            "Time from a unary data call's admission to the end of its response",
            self.run.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open on the gRPC port",
            self.connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections closed at once because control_plane.connections.max_connections were open",
            self.connections_refused.clone(),
        );
    }
}

/// One budget: a semaphore of permits plus a bounded count of waiters.
struct Budget {
    /// `None`: unbounded.
    permits: Option<Arc<Semaphore>>,
    max_queue: usize,
    /// `None`: queued calls wait as long as it takes.
    max_wait: Option<Duration>,
    waiting: AtomicUsize,
    refusal: String,
    /// The refusal of a call that waited `max_wait` in the queue.
    late_refusal: String,
    admitted: Counter,
    queued: Counter,
    shed: Counter,
    waiting_gauge: Gauge,
    /// Unary budget only: queue wait and run time.
    timing: Option<(Histogram, Histogram)>,
}

impl Budget {
    fn new(
        kind: Kind,
        (limit, max_queue, max_wait): (usize, usize, Duration),
        refusal: String,
        m: &AdmissionMetrics,
    ) -> Self {
        let labels = BudgetLabels {
            budget: kind.label(),
        };
        Budget {
            permits: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            max_queue,
            max_wait: (!max_wait.is_zero()).then_some(max_wait),
            waiting: AtomicUsize::new(0),
            late_refusal: format!(
                "plugin overloaded: the call waited {max_wait:?} in the admission queue, the \
                 limit control_plane.admission.max_queue_wait; retry with backoff"
            ),
            refusal,
            admitted: m.admitted.get_or_create(&labels).clone(),
            queued: m.queued.get_or_create(&labels).clone(),
            shed: m.shed.get_or_create(&labels).clone(),
            waiting_gauge: m.waiting.get_or_create(&labels).clone(),
            timing: (kind == Kind::Unary).then(|| (m.queue_wait.clone(), m.run.clone())),
        }
    }
}

/// What admission decided for one call.
enum Decision {
    /// Run now (holding the permit, if the budget is bounded).
    Run(Option<OwnedSemaphorePermit>),
    /// Wait for a permit, holding a slot of the queue.
    Wait(Arc<Semaphore>, QueueSlot),
}

/// Shared admission state; cloning shares it.
#[derive(Clone)]
pub(crate) struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    unary: Budget,
    stream: Budget,
    /// `/<package>.<Service>/<Method>` of every client- or server-streaming method.
    streaming: HashSet<String>,
}

impl Admission {
    /// Admission for `config`; `descriptor_sets` are the encoded
    /// `FileDescriptorSet`s of every service served (their streaming methods
    /// use the stream budget).
    pub(crate) fn new(
        config: &AdmissionConfig,
        descriptor_sets: &[&[u8]],
        metrics: &AdmissionMetrics,
    ) -> Self {
        let unary_refusal = format!(
            "plugin overloaded: {} calls running and {} waiting, the limits \
             control_plane.admission.max_in_flight and max_queue; retry with backoff",
            config.max_in_flight, config.max_queue
        );
        let stream_refusal = format!(
            "plugin overloaded: {} streams open, the limit control_plane.admission.max_streams; \
             retry with backoff",
            config.max_streams
        );
        Admission {
            inner: Arc::new(Inner {
                unary: Budget::new(
                    Kind::Unary,
                    (
                        config.max_in_flight,
                        config.max_queue,
                        config.max_queue_wait,
                    ),
                    unary_refusal,
                    metrics,
                ),
                stream: Budget::new(
                    Kind::Stream,
                    (config.max_streams, 0, Duration::ZERO),
                    stream_refusal,
                    metrics,
                ),
                streaming: streaming_methods(descriptor_sets),
            }),
        }
    }

    /// The budget of a call to `path`; `None` for the control plane.
    fn kind(&self, path: &str) -> Option<Kind> {
        if CONTROL_PREFIXES.iter().any(|p| path.starts_with(p)) {
            None
        } else if self.inner.streaming.contains(path) {
            Some(Kind::Stream)
        } else {
            Some(Kind::Unary)
        }
    }

    fn budget(&self, kind: Kind) -> &Budget {
        match kind {
            Kind::Unary => &self.inner.unary,
            Kind::Stream => &self.inner.stream,
        }
    }

    /// `None`: refuse with RESOURCE_EXHAUSTED.
    fn decide(&self, kind: Kind) -> Option<Decision> {
        let budget = self.budget(kind);
        let Some(permits) = &budget.permits else {
            return Some(Decision::Run(None));
        };
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Some(Decision::Run(Some(permit)));
        }
        // Take a queue slot only while one is free; never overshoot max_queue.
        let took = budget
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < budget.max_queue).then_some(n + 1)
            })
            .is_ok();
        if took {
            budget.waiting_gauge.inc();
            let slot = QueueSlot {
                admission: self.clone(),
                kind,
            };
            Some(Decision::Wait(permits.clone(), slot))
        } else {
            None
        }
    }
}

/// The `/<package>.<Service>/<Method>` paths of every streaming method in
/// the descriptor sets (a set that does not decode contributes nothing).
pub(crate) fn streaming_methods(descriptor_sets: &[&[u8]]) -> HashSet<String> {
    use prost::Message as _;
    let mut paths = HashSet::new();
    for bytes in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*bytes) else {
            tracing::warn!(
                "a descriptor set does not decode; its streaming methods count as unary"
            );
            continue;
        };
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let full = if package.is_empty() {
                    service.name().to_string()
                } else {
                    format!("{package}.{}", service.name())
                };
                for method in &service.method {
                    if method.server_streaming() || method.client_streaming() {
                        paths.insert(format!("/{full}/{}", method.name()));
                    }
                }
            }
        }
    }
    paths
}

/// Tower layer installing admission control.
pub(crate) type AdmissionLayer = AroundLayer<Admission>;

/// A call admission let through, or queued.
pub(crate) struct Admitted {
    admission: Admission,
    kind: Kind,
    decision: Decision,
}

impl Around for Admission {
    type Call = Admitted;

    fn before<B>(&self, req: &mut http::Request<B>) -> Before<Admitted> {
        let Some(kind) = self.kind(req.uri().path()) else {
            return Before::Pass;
        };
        match self.decide(kind) {
            None => {
                let budget = self.budget(kind);
                budget.shed.inc();
                let status = tonic::Status::resource_exhausted(budget.refusal.clone());
                Before::Answer(status.into_http::<Body>())
            }
            Some(decision) => Before::Run(Admitted {
                admission: self.clone(),
                kind,
                decision,
            }),
        }
    }

    async fn run<F, E>(call: Admitted, inner: F) -> Result<Response, E>
    where
        F: Future<Output = Result<Response, E>> + Send + 'static,
        E: Send + 'static,
    {
        let budget = call.admission.budget(call.kind);
        let permit = match call.decision {
            Decision::Run(permit) => permit,
            Decision::Wait(permits, slot) => {
                budget.queued.inc();
                let queued = Instant::now();
                // The semaphore is FIFO and never closed; if the client
                // leaves, the future (and its slot) is dropped.
                let acquire = permits.acquire_owned();
                let permit = match budget.max_wait {
                    Some(max_wait) => tokio::time::timeout(max_wait, acquire).await.ok(),
                    None => Some(acquire.await),
                };
                drop(slot);
                if let Some((wait, _)) = &budget.timing {
                    wait.observe(queued.elapsed().as_secs_f64());
                }
                let Some(permit) = permit else {
                    budget.shed.inc();
                    let status = tonic::Status::resource_exhausted(budget.late_refusal.clone());
                    return Ok(status.into_http::<Body>());
                };
                permit.ok()
            }
        };
        budget.admitted.inc();
        let admitted = Instant::now();
        let response = inner.await?;
        Ok(match permit {
            Some(permit) => around::watch(
                response,
                Held {
                    _permit: permit,
                    run: budget
                        .timing
                        .as_ref()
                        .map(|(_, run)| (run.clone(), admitted)),
                },
            ),
            None => response,
        })
    }
}

/// A taken queue slot; given back on drop (admitted, or the client left).
struct QueueSlot {
    admission: Admission,
    kind: Kind,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        let budget = self.admission.budget(self.kind);
        budget.waiting.fetch_sub(1, Ordering::AcqRel);
        budget.waiting_gauge.dec();
    }
}

/// Held by the response body until it ends, so a stream holds its slot for
/// as long as it is open; records the call's run time.
struct Held {
    _permit: OwnedSemaphorePermit,
    /// The run-time histogram and when the call was admitted.
    run: Option<(Histogram, Instant)>,
}

impl Watch for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((run, admitted)) = &self.run {
            run.observe(admitted.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
