//! OpenTelemetry tracing: the OTLP export pipeline ([`exporter`]), the
//! server span of every data call ([`layer`]), W3C trace context in and out
//! ([`propagate`]), the spans plugins open around backend calls (here), and
//! trace ids on log lines ([`logfmt`]).
//!
//! Off unless `telemetry.otlp_endpoint` is set; while off, every helper here
//! returns [`Span::none`] after one relaxed atomic load, and the server layer
//! passes calls through untouched.
//!
//! Span attributes follow the OpenTelemetry semantic conventions and carry
//! names only (service, method, operation, topic): never a key, value,
//! payload or credential.

mod config;
pub(crate) mod exporter;
pub(crate) mod layer;
pub(crate) mod logfmt;
mod propagate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use config::{OtlpProtocol, TelemetryConfig};

/// The target of every span this module opens; the exporter sees only these
/// (never a dependency's span or a log event's fields).
pub const TARGET: &str = "prism::otel";

/// Set once the export pipeline is installed.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// `sample_ratio` is 0: only calls whose caller sampled them are traced, so
/// the others skip span creation altogether.
static PARENT_ONLY: AtomicBool = AtomicBool::new(false);

/// True while traces are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled(sample_ratio: f64) {
    PARENT_ONLY.store(sample_ratio <= 0.0, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
}

/// True when a call (or delivery) without a sampled parent is not traced.
pub(crate) fn parent_only() -> bool {
    PARENT_ONLY.load(Ordering::Relaxed)
}

/// True when a child span has a traced parent to hang from (with
/// `sample_ratio` 0, untraced calls open none).
fn in_trace() -> bool {
    enabled() && !(parent_only() && Span::current().is_none())
}

/// A client span around one database call: `db.system.name` (`postgresql`,
/// `redis`) and `db.operation.name` (the command or statement kind, e.g.
/// `GET`, `SELECT`). Its parent is the current span (the server span).
pub fn db_span(system: &'static str, operation: &'static str) -> Span {
    if !in_trace() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "db",
        otel.name = operation,
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        otel.status_code = tracing::field::Empty,
    )
}

/// Marks `span` failed (OpenTelemetry status ERROR), without a message: an
/// error text may quote what the caller sent.
pub fn record_error(span: &Span) {
    if !span.is_none() {
        span.record("otel.status_code", "ERROR");
    }
}

/// Runs `call` inside `span`, marking the span failed when it errs.
pub async fn traced<T, E>(span: Span, call: impl Future<Output = Result<T, E>>) -> Result<T, E> {
    if span.is_none() {
        return call.await;
    }
    let result = call.instrument(span.clone()).await;
    if result.is_err() {
        record_error(&span);
    }
    result
}

/// A Kafka span after the OpenTelemetry messaging conventions: named
/// `<operation type> <topic>`, of span kind `$kind`, with the operation's
/// type and name (`$name`, also the tracing span's name), the topic and any
/// further `$field`s. (A macro: tracing needs the span's fields and name at
/// compile time.)
macro_rules! kafka_span {
    ($name:literal, $kind:literal, $type:literal, $topic:expr $(, $($field:tt)+)?) => {
        tracing::info_span!(
            target: TARGET,
            $name,
            otel.name = format!("{} {}", $type, $topic),
            otel.kind = $kind,
            messaging.system = "kafka",
            messaging.operation.type = $type,
            messaging.operation.name = $name,
            messaging.destination.name = $topic
            $(, $($field)+)?
        )
    };
}

/// A producer span for one Kafka publish to `topic`; [`inject`] puts its
/// context into the record's headers.
pub fn publish_span(topic: &str) -> Span {
    if !in_trace() {
        return Span::none();
    }
    let status = tracing::field::Empty;
    kafka_span!("send", "producer", "send", topic, otel.status_code = status)
}

/// The W3C `traceparent` (and `tracestate`) of `span` as record headers;
/// empty when tracing is off.
pub fn inject(span: &Span) -> Vec<(&'static str, String)> {
    if !enabled() || span.is_none() {
        return Vec::new();
    }
    propagate::inject(&span.context())
}

/// True for the header names [`inject`] writes (a caller's own copies are
/// replaced by the plugin's).
pub fn is_trace_header(name: &str) -> bool {
    propagate::FIELDS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// Records one delivery of a Kafka record from `topic` to a client: a
/// consumer span continuing the publisher's trace (from the record's
/// `traceparent` header) and linked to it. Ends at once.
pub fn delivered(topic: &str, headers: &HashMap<String, String>) {
    if !enabled() {
        return;
    }
    let publisher = propagate::extract_map(headers);
    let linked = {
        use opentelemetry::trace::TraceContextExt;
        publisher.span().span_context().clone()
    };
    if parent_only() && !linked.is_sampled() {
        return;
    }
    let span = kafka_span!("deliver", "consumer", "process", topic);
    if linked.is_valid() {
        let _ = span.set_parent(publisher);
        span.add_link(linked);
    }
}
