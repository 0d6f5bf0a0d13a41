//! W3C trace context (`traceparent`, `tracestate`) read from gRPC metadata
//! and Kafka record headers, and written into record headers.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The header names of the W3C trace context.
pub(super) const FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// The context a caller sent in its request headers (empty if none or invalid).
pub(crate) fn extract_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The context carried in a record's headers.
pub(super) fn extract_map(headers: &HashMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(headers)
}

/// `cx` as header name/value pairs.
pub(super) fn inject(cx: &Context) -> Vec<(&'static str, String)> {
    let mut out = Collect(Vec::new());
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out.0
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Collect(Vec<(&'static str, String)>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        if let Some(name) = FIELDS.iter().find(|f| **f == key) {
            self.0.push((name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn a_traceparent_round_trips_through_headers() {
        let mut headers = http::HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", parent.parse().expect("header"));
        let cx = extract_headers(&headers);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_sampled() && sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let written: HashMap<String, String> = inject(&cx)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(written["traceparent"], parent);
        let again = extract_map(&written);
        assert_eq!(again.span().span_context().span_id(), sc.span_id());
    }

    #[test]
    fn garbage_is_no_context() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", "nonsense".parse().expect("header"));
        assert!(!extract_headers(&headers).span().span_context().is_valid());
    }
}
