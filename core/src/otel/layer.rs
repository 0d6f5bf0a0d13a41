//! The server span of every data call: a tower layer that continues the
//! caller's W3C trace context (gRPC metadata `traceparent`/`tracestate`),
//! opens a span per the OpenTelemetry RPC conventions (`rpc.system=grpc`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and keeps it open
//! until the response body ends, so streaming calls are timed whole. Control
//! calls (lifecycle, health, reflection) are not traced. While tracing is off
//! the layer calls straight through.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::Frame;
use tonic::body::Body;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::around::{self, Around, AroundLayer, Before, Response, Watch};
use crate::gate::CONTROL_PREFIXES;

/// Installs the server span.
pub(crate) type TraceLayer = AroundLayer<Trace>;

/// The layer, tracing when the export pipeline is on (fixed when the server
/// is built).
pub(crate) fn layer() -> TraceLayer {
    AroundLayer::new(Trace {
        enabled: super::enabled(),
    })
}

/// Whether calls are traced.
#[derive(Clone, Copy)]
pub(crate) struct Trace {
    enabled: bool,
}

impl Around for Trace {
    type Call = Span;

    fn before<B>(&self, req: &mut http::Request<B>) -> Before<Span> {
        let path = req.uri().path();
        if !self.enabled || CONTROL_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Before::Pass;
        }
        let parent = super::propagate::extract_headers(req.headers());
        if super::parent_only() && !sampled(&parent) {
            return Before::Pass;
        }
        let span = server_span(path);
        let _ = span.set_parent(parent);
        Before::Run(span)
    }

    async fn run<F, E>(span: Span, inner: F) -> Result<Response, E>
    where
        F: Future<Output = Result<Response, E>> + Send + 'static,
        E: Send + 'static,
    {
        // The inner service is called, and its future polled, in the span.
        let response = inner.instrument(span.clone()).await?;
        Ok(around::watch(
            response,
            TracedBody {
                span,
                recorded: false,
            },
        ))
    }
}

/// True when the caller's context says "sampled".
fn sampled(parent: &opentelemetry::Context) -> bool {
    use opentelemetry::trace::TraceContextExt;
    parent.span().span_context().is_sampled()
}

/// `/pkg.Service/Method` → a span named `pkg.Service/Method`.
fn server_span(path: &str) -> Span {
    let name = path.trim_start_matches('/');
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    tracing::info_span!(
        target: super::TARGET,
        "grpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// Watches the response body, holding the span open until the call's last
/// frame.
struct TracedBody {
    span: Span,
    recorded: bool,
}

impl Watch for TracedBody {
    fn status(&mut self, code: i32) {
        self.recorded = true;
        self.span.record("rpc.grpc.status_code", code);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
    }

    fn poll_inner(
        &mut self,
        body: Pin<&mut Body>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, tonic::Status>>> {
        let _entered = self.span.enter();
        http_body::Body::poll_frame(body, cx)
    }
}

/// The codes the RPC conventions count as a server-side error.
fn is_server_error(code: i32) -> bool {
    use tonic::Code;
    [
        Code::Unknown,
        Code::DeadlineExceeded,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

impl Drop for TracedBody {
    fn drop(&mut self) {
        // A body dropped before its trailers: the client went away.
        if !self.recorded {
            self.status(tonic::Code::Cancelled as i32);
        }
    }
}
