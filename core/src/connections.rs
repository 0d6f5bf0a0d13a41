//! Connection limits of the gRPC port: HTTP/2 keepalive (so a dead client's
//! connection is closed instead of holding memory), a bound on open
//! connections, a maximum connection age, and the per-connection stream bound
//! of admission control — all applied to tonic's server builder here.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::Connected;

use crate::admission::{AdmissionConfig, AdmissionMetrics};

/// `control_plane.connections:` — keepalive and connection limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Interval of HTTP/2 PINGs the server sends on every connection (0s = off).
    #[serde(default = "default_keepalive_interval", with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A connection whose PING is not answered within this time is closed.
    #[serde(default = "default_keepalive_timeout", with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Client connections open at once (0 = unbounded); a connection beyond
    /// this is closed as soon as it is accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// After this age a connection is asked to go away (HTTP/2 GOAWAY; the
    /// client reconnects), so idle connections do not live forever (0s = off).
    #[serde(default, with = "humantime_serde")]
    pub max_connection_age: Duration,
}

fn default_keepalive_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(10)
}
// Measured (root README): an idle HTTP/2 connection costs ~15 KiB of RSS, so
// 2,048 of them stay well inside a 64 MiB budget.
fn default_max_connections() -> usize {
    2048
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            keepalive_interval: default_keepalive_interval(),
            keepalive_timeout: default_keepalive_timeout(),
            max_connections: default_max_connections(),
            max_connection_age: Duration::ZERO,
        }
    }
}

/// `Some(d)` unless `d` is zero (the config's "off").
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Applies keepalive, connection age and the per-connection stream bound.
pub(crate) fn configure<L>(
    builder: tonic::transport::Server<L>,
    connections: &ConnectionConfig,
    admission: &AdmissionConfig,
) -> tonic::transport::Server<L> {
    let streams = admission.max_concurrent_streams_per_connection;
    let builder = builder
        .max_concurrent_streams((streams > 0).then_some(streams))
        .http2_keepalive_interval(nonzero(connections.keepalive_interval))
        .http2_keepalive_timeout(nonzero(connections.keepalive_timeout));
    match nonzero(connections.max_connection_age) {
        Some(age) => builder.max_connection_age(age),
        None => builder,
    }
}

/// Bounds the connections `incoming` yields: beyond `max_connections` open
/// ones, a new connection is dropped (closed) at once and counted.
pub(crate) fn limit<S, IO, E>(
    incoming: S,
    max_connections: usize,
    metrics: &AdmissionMetrics,
) -> impl Stream<Item = Result<Limited<IO>, E>> + use<S, IO, E>
where
    S: Stream<Item = Result<IO, E>>,
{
    let permits = (max_connections > 0).then(|| Arc::new(Semaphore::new(max_connections)));
    let open = metrics.connections_open.clone();
    let refused = metrics.connections_refused.clone();
    incoming.filter_map(move |item| {
        let admitted = match item {
            Err(err) => Some(Err(err)),
            Ok(io) => match &permits {
                None => Some(Ok(Limited::new(io, None, &open))),
                Some(permits) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => Some(Ok(Limited::new(io, Some(permit), &open))),
                    Err(_) => {
                        refused.inc();
                        tracing::debug!(max_connections, "connection limit reached; closing");
                        None
                    }
                },
            },
        };
        std::future::ready(admitted)
    })
}

/// A connection counted against the limit until dropped.
pub(crate) struct Limited<IO> {
    io: IO,
    _permit: Option<OwnedSemaphorePermit>,
    open: Gauge,
}

impl<IO> Limited<IO> {
    fn new(io: IO, permit: Option<OwnedSemaphorePermit>, open: &Gauge) -> Self {
        open.inc();
        Limited {
            io,
            _permit: permit,
            open: open.clone(),
        }
    }
}

impl<IO> Drop for Limited<IO> {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl<IO: Connected> Connected for Limited<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_beyond_the_limit_are_dropped_and_counted() {
        let metrics = AdmissionMetrics::default();
        let items: Vec<Result<u32, ()>> = vec![Ok(1), Ok(2), Err(()), Ok(3)];
        let limited: Vec<_> = limit(futures::stream::iter(items), 2, &metrics)
            .collect()
            .await;
        // Two connections admitted, the error passed through, the third refused.
        assert_eq!(limited.len(), 3);
        assert!(limited[2].is_err());
        assert_eq!(metrics.connections_refused.get(), 1);
        assert_eq!(metrics.connections_open.get(), 2);
        drop(limited);
        assert_eq!(metrics.connections_open.get(), 0);
    }
}
