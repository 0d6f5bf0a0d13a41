//! The server span of every data call: a tower layer that continues the
//! caller's W3C trace context (gRPC metadata `traceparent`/`tracestate`),
//! opens a span per the OpenTelemetry RPC conventions (`rpc.system=grpc`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code`) and keeps it open
//! until the response body ends, so streaming calls are timed whole. Control
//! calls (lifecycle, health, reflection) are not traced. While tracing is off
//! the layer calls straight through.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::Either;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::gate::{CONTROL_PREFIXES, grpc_status};

/// Installs the server span; `enabled` is fixed when the server is built.
#[derive(Clone, Copy)]
pub(crate) struct TraceLayer {
    enabled: bool,
}

impl TraceLayer {
    /// A layer that traces when the export pipeline is on.
    pub(crate) fn new() -> Self {
        TraceLayer {
            enabled: super::enabled(),
        }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            enabled: self.enabled,
        }
    }
}

/// The service produced by [`TraceLayer`].
#[derive(Clone)]
pub(crate) struct TraceService<S> {
    inner: S,
    enabled: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for TraceService<S>
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
    type Future = Either<S::Future, BoxFuture<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        if !self.enabled || CONTROL_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Either::Left(self.inner.call(req));
        }
        let parent = super::propagate::extract_headers(req.headers());
        if super::parent_only() && !sampled(&parent) {
            return Either::Left(self.inner.call(req));
        }
        let span = server_span(path);
        let _ = span.set_parent(parent);
        let response = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Either::Right(Box::pin(async move {
            let response = response.instrument(span.clone()).await?;
            // Trailers-only responses (errors) carry grpc-status in the headers.
            let code = grpc_status(response.headers());
            Ok(response.map(|inner| {
                let mut body = TracedBody {
                    inner,
                    span,
                    recorded: false,
                };
                if let Some(code) = code {
                    body.record(code);
                }
                Body::new(body)
            }))
        }))
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

/// The response body, holding the span open until the call's last frame.
struct TracedBody {
    inner: Body,
    span: Span,
    recorded: bool,
}

impl TracedBody {
    fn record(&mut self, code: i32) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        self.span.record("rpc.grpc.status_code", code);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
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
        self.record(tonic::Code::Cancelled as i32);
    }
}

impl HttpBody for TracedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = {
            let _entered = this.span.enter();
            Pin::new(&mut this.inner).poll_frame(cx)
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.record(code);
                }
            }
            Poll::Ready(None) => this.record(tonic::Code::Ok as i32),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
