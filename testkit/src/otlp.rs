//! A test OTLP/gRPC trace receiver (the `opentelemetry-proto` collector
//! service, served on a free port) that keeps every span it is sent, a
//! black-hole "collector" that accepts connections and never answers, and the
//! trace assertions the plugins' tracing tests share.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use tokio::sync::Notify;
use tonic::transport::server::TcpIncoming;

/// W3C trace id and parent span id the tests send in `traceparent`.
pub const TEST_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The caller's span id in [`TEST_TRACEPARENT`].
pub const TEST_PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
/// A sampled `traceparent` naming the test's trace and span.
pub const TEST_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One exported span, ids in lowercase hex, attribute values as text.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id.
    pub trace_id: String,
    /// Span id.
    pub span_id: String,
    /// Parent span id ("" for a root).
    pub parent_span_id: String,
    /// OTLP `SpanKind` (2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Attributes, values rendered as text.
    pub attributes: Vec<(String, String)>,
    /// Links as (trace id, span id).
    pub links: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    changed: Notify,
}

/// A running OTLP/gRPC trace receiver; stops when dropped.
pub struct OtlpReceiver {
    endpoint: String,
    env: Vec<(&'static str, String)>,
    store: Arc<Store>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Serves the trace collector service on a free loopback port.
    pub async fn start() -> OtlpReceiver {
        let (listener, endpoint) = listen("the OTLP receiver").await;
        let store = Arc::new(Store::default());
        let service = TraceServiceServer::new(Collector(store.clone()));
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await;
        });
        OtlpReceiver {
            env: tracing_env(&endpoint),
            endpoint,
            store,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, for `telemetry.otlp_endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// [`tracing_env`] for this receiver, borrowed: the environment that
    /// sends a plugin's traces here.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        crate::borrowed_env(&self.env)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `found` picks a result out of the received spans; panics
    /// naming `what` (and listing the spans) after `timeout`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&[ReceivedSpan]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.store.changed.notified();
            if let Some(result) = found(&self.spans()) {
                return result;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no {what} within {timeout:?}; received: {:#?}",
                    self.spans()
                );
            }
            let _ = tokio::time::timeout(left, changed).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Collector(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                        .collect(),
                });
            }
        }
        self.0
            .spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(received);
        self.0.changed.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A listener on a free loopback port, and its `http://` address.
async fn listen(what: &str) -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    (listener, endpoint)
}

/// A "collector" that accepts connections and never reads or answers them:
/// every export hangs until the exporter's timeout.
pub struct BlackHole {
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// Listens on a free loopback port.
    pub async fn start() -> BlackHole {
        let (listener, endpoint) = listen("the black hole").await;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        BlackHole { endpoint, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The environment that points a plugin's traces at `endpoint` (every
/// call sampled, short export timeout).
pub fn tracing_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PRISM_TELEMETRY__OTLP_ENDPOINT", endpoint.to_string()),
        ("PRISM_TELEMETRY__EXPORT_TIMEOUT", "2s".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ]
}

/// `request` carrying [`TEST_TRACEPARENT`].
pub fn traced<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
    request.metadata_mut().insert(
        "traceparent",
        TEST_TRACEPARENT.parse().expect("ascii metadata"),
    );
    request
}

/// The span of the test trace whose parent is `parent` and whose kind is
/// `kind` and which satisfies `also`.
pub fn child_of<'a>(
    spans: &'a [ReceivedSpan],
    parent: &str,
    kind: i32,
    also: impl Fn(&ReceivedSpan) -> bool,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.trace_id == TEST_TRACE_ID && s.parent_span_id == parent && s.kind == kind && also(s)
    })
}

/// Server span kind in OTLP.
pub const SERVER: i32 = 2;
/// Client span kind in OTLP.
pub const CLIENT: i32 = 3;
/// Producer span kind in OTLP.
pub const PRODUCER: i32 = 4;
/// Consumer span kind in OTLP.
pub const CONSUMER: i32 = 5;

/// Waits for the trace of one traced call to `/rpc_path` (`pkg.Service/Method`):
/// the plugin's server span as the caller's child and a backend client span
/// (`db.system.name = db_system`) as the server span's child. Returns both.
pub async fn expect_call_trace(
    receiver: &OtlpReceiver,
    rpc_path: &str,
    db_system: &str,
) -> (ReceivedSpan, ReceivedSpan) {
    let (service, method) = rpc_path.split_once('/').expect("pkg.Service/Method");
    receiver
        .wait_for(
            &format!("server span {rpc_path} with a {db_system} child"),
            Duration::from_secs(20),
            |spans| {
                let server = child_of(spans, TEST_PARENT_SPAN_ID, SERVER, |s| {
                    s.attr("rpc.service") == Some(service) && s.attr("rpc.method") == Some(method)
                })?;
                let backend = child_of(spans, &server.span_id, CLIENT, |s| {
                    s.attr("db.system.name") == Some(db_system)
                })?;
                Some((server.clone(), backend.clone()))
            },
        )
        .await
}

/// The spans one traced KeyValue call produced: the plugin's server span and
/// the backend client span under it.
#[derive(Debug, Clone)]
pub struct CallTrace {
    /// The plugin's server span (the caller's child).
    pub server: ReceivedSpan,
    /// The backend span (the server span's child).
    pub backend: ReceivedSpan,
}

/// Sends a traced Set of `key` = `value` and a traced Get of it to the
/// KeyValue plugin on `channel`, then waits for the trace of each (see
/// [`expect_call_trace`]; `db_system` names the backend). Checks both server
/// spans are successful gRPC calls and that no exported attribute holds
/// `key`, `value` or one of `secrets`. Returns the (Set, Get) traces.
pub async fn trace_set_and_get(
    receiver: &OtlpReceiver,
    channel: &tonic::transport::Channel,
    db_system: &str,
    (key, value): (&str, &str),
    secrets: &[&str],
) -> (CallTrace, CallTrace) {
    let mut kv = crate::kv::basic(channel);
    let set = crate::kv::req(None, crate::kv::set(key, value, 0));
    kv.set(traced(set)).await.expect("traced set");
    let get = crate::kv::req(None, crate::kv::get(key));
    let got = kv.get(traced(get)).await.expect("traced get").into_inner();
    assert_eq!(got.value, value.as_bytes(), "{got:?}");
    let mut traces = Vec::new();
    for method in ["Set", "Get"] {
        let rpc = format!("prism.interfaces.keyvalue.KeyValueBasicInterface/{method}");
        let (server, backend) = expect_call_trace(receiver, &rpc, db_system).await;
        assert_eq!(server.attr("rpc.system"), Some("grpc"), "{server:?}");
        assert_eq!(server.attr("rpc.grpc.status_code"), Some("0"), "{server:?}");
        traces.push(CallTrace { server, backend });
    }
    let mut hidden = vec![key, value];
    hidden.extend_from_slice(secrets);
    assert_no_attribute_contains(receiver, &hidden);
    let get = traces.pop().expect("Get's trace");
    let set = traces.pop().expect("Set's trace");
    (set, get)
}

/// Panics when any attribute of any received span contains one of `secrets`
/// (keys, values, passwords used by the test).
pub fn assert_no_attribute_contains(receiver: &OtlpReceiver, secrets: &[&str]) {
    for span in receiver.spans() {
        for (key, value) in &span.attributes {
            for secret in secrets {
                assert!(
                    !value.contains(secret) && !key.contains(secret),
                    "span {:?} attribute {key}={value:?} contains {secret:?}",
                    span.name
                );
            }
        }
    }
}

/// What [`drive_sets`] measured.
#[derive(Debug)]
pub struct Driven {
    /// Calls that failed.
    pub failed: u64,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Calls per second over the run.
    pub ops_per_second: f64,
}

/// `calls` traced Sets (each with a fresh key) over `clients` concurrent
/// clients of `channel`.
pub async fn drive_sets(
    channel: &tonic::transport::Channel,
    calls: usize,
    clients: usize,
) -> Driven {
    drive_sets_with(channel, calls, clients, true).await
}

/// [`drive_sets`], each call carrying [`TEST_TRACEPARENT`] when `with_parent`.
pub async fn drive_sets_with(
    channel: &tonic::transport::Channel,
    calls: usize,
    clients: usize,
    with_parent: bool,
) -> Driven {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut kv = crate::kv::basic(channel);
            tokio::spawn(async move {
                let (mut failed, mut latencies) = (0u64, Vec::new());
                for i in (c..calls).step_by(clients) {
                    let request = crate::kv::req(None, crate::kv::set(&format!("k{i}"), "v", 0));
                    let sent = Instant::now();
                    let request = if with_parent {
                        traced(request)
                    } else {
                        request
                    };
                    if kv.set(request).await.is_err() {
                        failed += 1;
                    }
                    latencies.push(sent.elapsed());
                }
                (failed, latencies)
            })
        })
        .collect();
    let (mut failed, mut latencies) = (0, Vec::new());
    for task in tasks {
        let (f, l) = task.await.expect("client task");
        failed += f;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    Driven {
        failed,
        p99,
        ops_per_second: calls as f64 / elapsed.as_secs_f64(),
    }
}

/// Resident memory of process `pid` in KiB (Linux `/proc`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU time (user + system) process `pid` has used, in seconds (Linux `/proc`).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}
