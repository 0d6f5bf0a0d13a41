//! A raw HTTP/2 gRPC load generator for the overload test: many connections,
//! every call offered at once, and per call its gRPC status and its latency
//! from the moment its stream was sent to the moment its status arrived.
//!
//! It speaks HTTP/2 with the `h2` crate (what tonic's client sits on) and
//! writes the gRPC frame by hand (5-byte prefix + the protobuf), so the client
//! side costs as little as possible beside the plugin on a 2-core machine.
//! Each connection sends at most `streams_per_connection` streams at once
//! (the server's HTTP/2 limit), so a call's latency is the server's time, not
//! time queued inside this client waiting for a stream slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// One finished call.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The gRPC status code (`None`: the stream or connection failed).
    pub code: Option<u8>,
    /// From sending the stream to its status (headers or trailers).
    pub latency: Duration,
}

/// What to offer.
#[derive(Debug, Clone)]
pub struct Flood {
    /// The plugin's gRPC port on 127.0.0.1.
    pub port: u16,
    /// `/<package>.<Service>/<Method>`.
    pub path: String,
    /// The encoded request message (without the gRPC prefix).
    pub message: Bytes,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Calls per connection (all spawned at once).
    pub calls_per_connection: usize,
    /// Streams one connection sends at once.
    pub streams_per_connection: usize,
}

/// `message` behind the 5-byte gRPC prefix (uncompressed, big-endian length).
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// Opens an HTTP/2 connection to `port`; its driver runs on its own task.
pub async fn connect(port: u16) -> std::io::Result<h2::client::SendRequest<Bytes>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::handshake(tcp)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

impl Flood {
    /// Offers every call at once and returns one [`Call`] per call (failed
    /// connections count their calls as failed).
    pub async fn run(&self) -> Vec<Call> {
        let body = grpc_frame(&self.message);
        let mut connections = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            connections.push(connect(self.port).await);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for connection in connections {
            let Ok(send) = connection else {
                for _ in 0..self.calls_per_connection {
                    tasks.spawn(async {
                        Call {
                            code: None,
                            latency: Duration::ZERO,
                        }
                    });
                }
                continue;
            };
            let slots = Arc::new(Semaphore::new(self.streams_per_connection));
            for _ in 0..self.calls_per_connection {
                let (send, slots, body, path) =
                    (send.clone(), slots.clone(), body.clone(), self.path.clone());
                tasks.spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    call(send, &path, body).await
                });
            }
        }
        tasks.join_all().await
    }
}

/// One unary gRPC call on `send`. A stream the server refused before
/// processing it (`REFUSED_STREAM`: the client opened it before learning that
/// a slot was free) is sent again, as every gRPC client does transparently.
async fn call(send: h2::client::SendRequest<Bytes>, path: &str, body: Bytes) -> Call {
    let started = Instant::now();
    let mut code = None;
    for _ in 0..3 {
        match exchange(send.clone(), path, body.clone()).await {
            Ok(got) => {
                code = got;
                break;
            }
            Err(err) if err.reason() == Some(h2::Reason::REFUSED_STREAM) => continue,
            Err(_) => break,
        }
    }
    Call {
        code,
        latency: started.elapsed(),
    }
}

/// The call's gRPC status (`None`: no status came back), or the HTTP/2 error
/// that ended it.
async fn exchange(
    send: h2::client::SendRequest<Bytes>,
    path: &str,
    body: Bytes,
) -> Result<Option<u8>, h2::Error> {
    let mut send = send.ready().await?;
    let Ok(request) = http::Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
    else {
        return Ok(None);
    };
    let (response, mut stream) = send.send_request(request, false)?;
    stream.send_data(body, true)?;
    let response = response.await?;
    if let Some(code) = status(response.headers()) {
        return Ok(Some(code)); // trailers-only: refused or failed
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(body.trailers().await?.as_ref().and_then(status))
}

fn status(headers: &http::HeaderMap) -> Option<u8> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// The `q`-quantile (0..=1) of `values` (sorted here); zero when empty.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index]
}

/// `VmHWM` (peak resident set) and `VmRSS` of `pid`, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}
