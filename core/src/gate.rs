//! The request gate: a tower layer in front of every service that counts data
//! calls in flight (until their response body ends, so streams count too),
//! rejects new ones with `UNAVAILABLE` once draining starts, and records
//! per-method metrics by final gRPC status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tonic::body::Body;

use crate::around::{self, Around, AroundLayer, Before, Response, Watch};
use crate::metrics::{Metrics, RpcLabels};

/// Services that are never gated: the control plane itself must keep answering
/// while data calls drain.
pub(crate) const CONTROL_PREFIXES: &[&str] = &[
    "/prism.interfaces.LifecycleInterface/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
];

/// True for a data call: anything but the control plane's own services.
pub(crate) fn is_data_path(path: &str) -> bool {
    !CONTROL_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Counts of a finished drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Calls that were in flight when draining began and finished in time.
    pub drained: i64,
    /// Calls still in flight when the timeout expired.
    pub aborted: i64,
}

/// Shared gate state; cloning shares it.
#[derive(Clone)]
pub(crate) struct Gate {
    inner: Arc<GateInner>,
}

struct GateInner {
    open: AtomicBool,
    in_flight: AtomicI64,
    idle: Notify,
    metrics: Metrics,
    known_services: Vec<String>,
    /// Metric handles per method path, created on first use, so a call costs
    /// one map lookup instead of label allocations and two family lookups.
    methods: std::sync::RwLock<std::collections::HashMap<String, Arc<MethodMetrics>>>,
    /// Shared by every path outside the served services (bounded cardinality).
    unknown: Arc<MethodMetrics>,
}

/// Number of gRPC status codes (OK = 0 .. UNAUTHENTICATED = 16).
const CODES: usize = 17;

/// Counter and histogram of one method, per status code, resolved lazily.
struct MethodMetrics {
    method: String,
    per_code: [std::sync::OnceLock<(
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::histogram::Histogram,
    )>; CODES],
}

impl MethodMetrics {
    fn new(method: String) -> Self {
        MethodMetrics {
            method,
            per_code: std::array::from_fn(|_| std::sync::OnceLock::new()),
        }
    }

    fn record(&self, metrics: &Metrics, code: i32, seconds: f64) {
        let index = usize::try_from(code)
            .ok()
            .filter(|i| *i < CODES)
            .unwrap_or(tonic::Code::Unknown as usize);
        let (count, latency) = self.per_code[index].get_or_init(|| {
            let labels = RpcLabels {
                method: self.method.clone(),
                code: format!("{:?}", tonic::Code::from_i32(index as i32)),
            };
            (
                metrics.requests.get_or_create(&labels).clone(),
                metrics.latency.get_or_create(&labels).clone(),
            )
        });
        count.inc();
        latency.observe(seconds);
    }
}

impl Gate {
    pub(crate) fn new(metrics: Metrics, known_services: Vec<String>) -> Self {
        Gate {
            inner: Arc::new(GateInner {
                open: AtomicBool::new(true),
                in_flight: AtomicI64::new(0),
                idle: Notify::new(),
                metrics,
                known_services,
                methods: Default::default(),
                unknown: Arc::new(MethodMetrics::new("unknown".to_string())),
            }),
        }
    }

    /// Data calls in flight now.
    pub(crate) fn in_flight(&self) -> i64 {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// True while new data calls are accepted.
    pub(crate) fn is_open(&self) -> bool {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// Re-opens intake (a re-Initialize after a Drain).
    pub(crate) fn open(&self) {
        self.inner.open.store(true, Ordering::SeqCst);
    }

    /// Closes intake: new data calls get UNAVAILABLE from now on. Returns the
    /// number of calls in flight at that moment.
    pub(crate) fn close(&self) -> i64 {
        self.inner.open.store(false, Ordering::SeqCst);
        self.in_flight()
    }

    /// Waits up to `timeout` for in-flight calls to finish; `at_close` is
    /// what [`close`](Self::close) returned.
    pub(crate) async fn wait_idle(&self, at_close: i64, timeout: Duration) -> DrainOutcome {
        let wait = async {
            loop {
                let idle = self.inner.idle.notified();
                if self.in_flight() <= 0 {
                    return;
                }
                idle.await;
            }
        };
        let aborted = match tokio::time::timeout(timeout, wait).await {
            Ok(()) => 0,
            Err(_) => self.in_flight().max(0),
        };
        DrainOutcome {
            drained: (at_close - aborted).max(0),
            aborted,
        }
    }

    fn method_metrics(&self, path: &str) -> Arc<MethodMetrics> {
        let inner = &self.inner;
        if let Some(m) = inner
            .methods
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return m.clone();
        }
        let known = inner.known_services.iter().any(|svc| {
            path.len() > svc.len() + 1
                && path[1..].starts_with(svc.as_str())
                && path.as_bytes()[svc.len() + 1] == b'/'
        });
        if !known {
            return inner.unknown.clone();
        }
        inner
            .methods
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(path.to_string())
            .or_insert_with(|| Arc::new(MethodMetrics::new(path.to_string())))
            .clone()
    }
}

/// Tower layer installing the gate.
pub(crate) type GateLayer = AroundLayer<Gate>;

impl Around for Gate {
    type Call = CallGuard;

    fn before<B>(&self, req: &mut http::Request<B>) -> Before<CallGuard> {
        // When the call arrived, for its deadline (see `crate::deadline()`):
        // time spent in admission's queue counts against the client's budget.
        req.extensions_mut()
            .insert(crate::deadline::Arrived(tokio::time::Instant::now()));
        let path = req.uri().path();
        let mut guard = CallGuard {
            gate: self.clone(),
            method: self.method_metrics(path),
            started: Instant::now(),
            counted: false,
            code: None,
        };
        if is_data_path(path) {
            if !self.is_open() {
                guard.code = Some(tonic::Code::Unavailable as i32);
                drop(guard);
                let status = tonic::Status::unavailable(
                    "plugin is draining and accepts no new calls; retry against another instance",
                );
                return Before::Answer(status.into_http::<Body>());
            }
            guard.counted = true;
            self.inner.in_flight.fetch_add(1, Ordering::SeqCst);
            self.inner.metrics.in_flight.inc();
        }
        Before::Run(guard)
    }

    fn after(guard: CallGuard, response: Response) -> Response {
        around::watch(response, guard)
    }
}

/// Lives as long as the call (its response body): decrements in-flight and
/// records metrics on drop.
pub(crate) struct CallGuard {
    gate: Gate,
    method: Arc<MethodMetrics>,
    started: Instant,
    counted: bool,
    code: Option<i32>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let inner = &self.gate.inner;
        if self.counted && inner.in_flight.fetch_sub(1, Ordering::SeqCst) <= 1 {
            inner.idle.notify_waiters();
        }
        if self.counted {
            inner.metrics.in_flight.dec();
        }
        // A body dropped before its trailers means the client went away.
        let code = self.code.unwrap_or(tonic::Code::Cancelled as i32);
        self.method
            .record(&inner.metrics, code, self.started.elapsed().as_secs_f64());
    }
}

impl Watch for CallGuard {
    fn status(&mut self, code: i32) {
        self.code = Some(code);
    }
}
