//! Prometheus metrics (per-method request count and latency by gRPC status,
//! in-flight data calls, backend health) and the optional HTTP endpoint that
//! serves them with `/health/live` and `/health/ready`.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Labels of one gRPC method outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    pub(crate) method: String,
    pub(crate) code: String,
}

/// The process's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub(crate) requests: Family<RpcLabels, Counter>,
    pub(crate) latency: Family<RpcLabels, Histogram>,
    pub(crate) in_flight: Gauge<i64, AtomicI64>,
    pub(crate) backend_up: Gauge<i64, AtomicI64>,
    pub(crate) admission: crate::admission::AdmissionMetrics,
}

impl Metrics {
    pub(crate) fn new(plugin: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "prism",
            [(
                std::borrow::Cow::Borrowed("plugin"),
                std::borrow::Cow::Owned(plugin.to_string()),
            )]
            .into_iter(),
        );
        let requests = Family::<RpcLabels, Counter>::default();
        let latency = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            // 50 µs .. ~13 s: loopback calls sit at the low end, slow backends at the top.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 2.0, 19,
            ))
        });
        let in_flight = Gauge::<i64, AtomicI64>::default();
        let backend_up = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "grpc_requests",
            "gRPC calls handled, by method and status code",
            requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency until the response ends, by method and status code",
            latency.clone(),
        );
        registry.register(
            "grpc_in_flight",
            "Data calls currently in flight",
            in_flight.clone(),
        );
        registry.register(
            "backend_up",
            "1 when the backend is healthy or degraded, 0 when unreachable",
            backend_up.clone(),
        );
        crate::backend_metrics::get().register(&mut registry);
        let admission = crate::admission::AdmissionMetrics::default();
        admission.register(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            requests,
            latency,
            in_flight,
            backend_up,
            admission,
        }
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/health/live` and `/health/ready` on `listener` until
/// `shutdown` is cancelled.
pub(crate) async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::routing::get;

    let ready_health = health.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/health/live", get(move || probe(health.is_live())))
        .route("/health/ready", get(move || probe(ready_health.is_ready())));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A probe's answer: 200 `SERVING` while `serving`, else 503 `NOT_SERVING`.
fn probe(serving: bool) -> std::future::Ready<(axum::http::StatusCode, &'static str)> {
    use axum::http::StatusCode;
    std::future::ready(if serving {
        (StatusCode::OK, "SERVING\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    })
}
