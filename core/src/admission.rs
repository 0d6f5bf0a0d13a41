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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
#[cfg(test)]
use std::time::Duration;

use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

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
#[derive(Clone, Default)]
pub(crate) struct AdmissionMetrics {
    admitted: Family<BudgetLabels, Counter>,
    queued: Family<BudgetLabels, Counter>,
    shed: Family<BudgetLabels, Counter>,
    waiting: Family<BudgetLabels, Gauge>,
    pub(crate) connections_open: Gauge,
    pub(crate) connections_refused: Counter,
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
    waiting: AtomicUsize,
    refusal: String,
    admitted: Counter,
    queued: Counter,
    shed: Counter,
    waiting_gauge: Gauge,
}

impl Budget {
    fn new(
        kind: Kind,
        limit: usize,
        max_queue: usize,
        refusal: String,
        m: &AdmissionMetrics,
    ) -> Self {
        let labels = BudgetLabels {
            budget: kind.label(),
        };
        Budget {
            permits: (limit > 0).then(|| Arc::new(Semaphore::new(limit))),
            max_queue,
            waiting: AtomicUsize::new(0),
            refusal,
            admitted: m.admitted.get_or_create(&labels).clone(),
            queued: m.queued.get_or_create(&labels).clone(),
            shed: m.shed.get_or_create(&labels).clone(),
            waiting_gauge: m.waiting.get_or_create(&labels).clone(),
        }
    }
}

/// What admission decided for one call.
enum Decision {
    /// Run now (holding the permit, if the budget is bounded).
    Run(Option<OwnedSemaphorePermit>),
    /// Wait for a permit, holding a slot of the queue.
    Wait(Arc<Semaphore>, QueueSlot),
    /// Refuse with RESOURCE_EXHAUSTED.
    Refuse,
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
                    config.max_in_flight,
                    config.max_queue,
                    unary_refusal,
                    metrics,
                ),
                stream: Budget::new(Kind::Stream, config.max_streams, 0, stream_refusal, metrics),
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

    fn decide(&self, kind: Kind) -> Decision {
        let budget = self.budget(kind);
        let Some(permits) = &budget.permits else {
            return Decision::Run(None);
        };
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Decision::Run(Some(permit));
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
            Decision::Wait(permits.clone(), slot)
        } else {
            Decision::Refuse
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
#[derive(Clone)]
pub(crate) struct AdmissionLayer {
    admission: Admission,
}

impl AdmissionLayer {
    pub(crate) fn new(admission: Admission) -> Self {
        AdmissionLayer { admission }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService {
            inner,
            admission: self.admission.clone(),
        }
    }
}

/// The service produced by [`AdmissionLayer`].
#[derive(Clone)]
pub(crate) struct AdmissionService<S> {
    inner: S,
    admission: Admission,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for AdmissionService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        // Take the service that was driven to readiness, leave a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(kind) = self.admission.kind(req.uri().path()) else {
            return Box::pin(inner.call(req));
        };
        let admission = self.admission.clone();
        let decision = admission.decide(kind);
        Box::pin(async move {
            let budget = admission.budget(kind);
            let permit = match decision {
                Decision::Run(permit) => permit,
                Decision::Refuse => {
                    budget.shed.inc();
                    let status = tonic::Status::resource_exhausted(budget.refusal.clone());
                    return Ok(status.into_http::<Body>());
                }
                Decision::Wait(permits, slot) => {
                    budget.queued.inc();
                    // The semaphore is never closed, so this cannot fail; if
                    // the client leaves, the future (and its slot) is dropped.
                    let permit = permits.acquire_owned().await.ok();
                    drop(slot);
                    permit
                }
            };
            budget.admitted.inc();
            let response = inner.call(req).await?;
            Ok(match permit {
                Some(permit) => response.map(|body| {
                    Body::new(PermitBody {
                        inner: body,
                        _permit: permit,
                    })
                }),
                None => response,
            })
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

/// Response body that holds the call's permit until the body ends (so a
/// stream holds its slot for as long as it is open).
struct PermitBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for PermitBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Service, ServiceExt};

    use super::*;

    const GET: &str = "/prism.interfaces.keyvalue.KeyValueBasicInterface/Get";
    const SUBSCRIBE: &str = "/prism.interfaces.pubsub.PubSubBasicInterface/Subscribe";

    #[test]
    fn streaming_methods_come_from_the_descriptors() {
        let paths = streaming_methods(&[crate::proto::FILE_DESCRIPTOR_SET]);
        for streaming in [
            SUBSCRIBE,
            "/prism.interfaces.pubsub.StreamInterface/Tail",
            "/prism.interfaces.pubsub.StreamInterface/Consume",
        ] {
            assert!(
                paths.contains(streaming),
                "{streaming} missing from {paths:?}"
            );
        }
        assert!(!paths.contains(GET));
        assert!(!paths.contains("/prism.interfaces.pubsub.PubSubBasicInterface/Publish"));
    }

    /// A layered service whose handler waits until `release` says true.
    fn service(
        config: &AdmissionConfig,
        release: tokio::sync::watch::Receiver<bool>,
    ) -> impl Service<
        http::Request<()>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = BoxFuture<Result<http::Response<Body>, Infallible>>,
    > + Clone
    + use<> {
        let admission = Admission::new(
            config,
            &[crate::proto::FILE_DESCRIPTOR_SET],
            &AdmissionMetrics::default(),
        );
        let handler = tower::service_fn(move |_req: http::Request<()>| {
            let mut release = release.clone();
            async move {
                let _ = release.wait_for(|go| *go).await;
                Ok::<_, Infallible>(http::Response::new(Body::new("x".to_string())))
            }
        });
        tower::Layer::layer(&AdmissionLayer::new(admission), handler)
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    fn status(response: &http::Response<Body>) -> Option<String> {
        response
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[tokio::test]
    async fn beyond_in_flight_and_queue_calls_are_refused_at_once() {
        let config = AdmissionConfig {
            max_in_flight: 2,
            max_queue: 1,
            max_streams: 1,
            max_concurrent_streams_per_connection: 0,
        };
        let (release, rx) = tokio::sync::watch::channel(false);
        let svc = service(&config, rx);
        // Two run, one waits: all three pending.
        let mut pending: Vec<_> = (0..3)
            .map(|_| tokio::spawn(svc.clone().oneshot(request(GET))))
            .collect();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(pending.iter().all(|p| !p.is_finished()));

        // The fourth is refused without waiting, naming the limits.
        let refused = svc.clone().oneshot(request(GET)).await.unwrap();
        assert_eq!(status(&refused).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
        let message = refused.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("max_in_flight"), "{message}");

        // A stream draws from its own budget; health is never refused.
        let stream = tokio::spawn(svc.clone().oneshot(request(SUBSCRIBE)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!stream.is_finished(), "the stream budget is separate");
        let second_stream = svc.clone().oneshot(request(SUBSCRIBE)).await.unwrap();
        let message = second_stream.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("max_streams"), "{message}");
        let health = tokio::spawn(svc.clone().oneshot(request("/grpc.health.v1.Health/Check")));

        // Released: every admitted call (the queued one too) completes OK.
        release.send(true).unwrap();
        pending.push(stream);
        pending.push(health);
        for call in pending {
            let response = call.await.unwrap().unwrap();
            assert_eq!(status(&response), None, "admitted calls run");
        }
    }

    #[tokio::test]
    async fn a_permit_is_held_until_the_response_body_ends() {
        let config = AdmissionConfig {
            max_in_flight: 1,
            max_queue: 0,
            ..AdmissionConfig::default()
        };
        let (_release, rx) = tokio::sync::watch::channel(true);
        let svc = service(&config, rx);
        let first = svc.clone().oneshot(request(GET)).await.unwrap();
        let refused = svc.clone().oneshot(request(GET)).await.unwrap();
        assert_eq!(status(&refused).as_deref(), Some("8"));
        drop(first);
        let after = svc.clone().oneshot(request(GET)).await.unwrap();
        assert_eq!(status(&after), None);
    }
}
