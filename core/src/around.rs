//! The shape every per-call tower layer of core shares — the drain gate,
//! admission control, the server span and namespace authorization: look at
//! a request, then pass it through untouched, answer it here (a refusal), or
//! run it holding per-call state that may wait first and that wraps the
//! response, often its body, until the call ends.
//!
//! Each of those layers implements [`Around`] with its per-call decision;
//! [`AroundLayer`] is the `Layer`/`Service`/`poll_ready`/`call` boilerplate
//! once, and [`Watched`] the response body that sees the call's final gRPC
//! status and lives until the last frame (or until the client goes away).

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;

/// What every layer here answers with.
pub(crate) type Response = http::Response<Body>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a layer decided for one request.
pub(crate) enum Before<C> {
    /// Not this layer's business: the inner service's own future, unwrapped.
    Pass,
    /// Answered here; the inner service is not called.
    Answer(Response),
    /// Run the inner service with this per-call state.
    Run(C),
}

/// The per-call decision of one layer.
pub(crate) trait Around: Clone + Send + Sync + 'static {
    /// State carried from [`before`](Self::before) through the call.
    type Call: Send + 'static;

    /// Looks at (and may annotate) a request before anything runs.
    fn before<B>(&self, req: &mut http::Request<B>) -> Before<Self::Call>;

    /// Wraps the response of a call that ran (by default: unchanged).
    fn after(call: Self::Call, response: Response) -> Response {
        drop(call);
        response
    }

    /// Runs a call: `inner` calls the inner service when first polled. By
    /// default at once, then [`after`](Self::after); a layer that must wait
    /// first (admission's queue) or run it inside something (the span)
    /// overrides this.
    fn run<F, E>(call: Self::Call, inner: F) -> impl Future<Output = Result<Response, E>> + Send
    where
        F: Future<Output = Result<Response, E>> + Send + 'static,
        E: Send + 'static,
    {
        async move {
            let response = inner.await?;
            Ok(Self::after(call, response))
        }
    }
}

/// Tower layer installing an [`Around`].
#[derive(Clone)]
pub(crate) struct AroundLayer<A> {
    around: A,
}

impl<A> AroundLayer<A> {
    pub(crate) fn new(around: A) -> Self {
        AroundLayer { around }
    }
}

impl<A: Clone, S> tower::Layer<S> for AroundLayer<A> {
    type Service = AroundService<A, S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService {
            inner,
            around: self.around.clone(),
        }
    }
}

/// The service produced by [`AroundLayer`].
#[derive(Clone)]
pub(crate) struct AroundService<A, S> {
    inner: S,
    around: A,
}

impl<A, S, ReqBody> tower::Service<http::Request<ReqBody>> for AroundService<A, S>
where
    A: Around,
    S: tower::Service<http::Request<ReqBody>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<
        S::Future,
        Either<Ready<Result<Response, S::Error>>, BoxFuture<Result<Response, S::Error>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<ReqBody>) -> Self::Future {
        match self.around.before(&mut req) {
            Before::Pass => Either::Left(self.inner.call(req)),
            Before::Answer(response) => {
                Either::Right(Either::Left(futures::future::ready(Ok(response))))
            }
            Before::Run(call) => {
                // Take the service that was driven to readiness, leave a fresh clone.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let inner = async move { inner.call(req).await };
                Either::Right(Either::Right(Box::pin(A::run(call, inner))))
            }
        }
    }
}

/// What a [`Watched`] body tells its watcher.
pub(crate) trait Watch: Send + Unpin + 'static {
    /// The call's gRPC status, once known: from a trailers-only response's
    /// headers, the trailers, or OK at a clean end; called at most once.
    fn status(&mut self, code: i32) {
        let _ = code;
    }

    /// Polls the inner body (the server span enters itself here).
    fn poll_inner(
        &mut self,
        body: Pin<&mut Body>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, tonic::Status>>> {
        body.poll_frame(cx)
    }
}

/// `response` with its body watched by `watch` (which it owns until the
/// body is dropped: the end of the call, or the client going away).
pub(crate) fn watch<W: Watch>(response: Response, watch: W) -> Response {
    let mut body = Watched {
        inner: Body::empty(),
        watch,
        told: false,
    };
    // Trailers-only responses (errors) carry grpc-status in the headers.
    if let Some(code) = grpc_status(response.headers()) {
        body.tell(code);
    }
    response.map(|inner| Body::new(Watched { inner, ..body }))
}

/// The `grpc-status` in `headers` (or trailers), if any.
pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A response body that tells its [`Watch`] the call's status.
pub(crate) struct Watched<W> {
    inner: Body,
    watch: W,
    told: bool,
}

impl<W: Watch> Watched<W> {
    fn tell(&mut self, code: i32) {
        if !self.told {
            self.told = true;
            self.watch.status(code);
        }
    }
}

impl<W: Watch> HttpBody for Watched<W> {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = this.watch.poll_inner(Pin::new(&mut this.inner), cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.tell(code);
                }
            }
            Poll::Ready(None) => this.tell(tonic::Code::Ok as i32),
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
