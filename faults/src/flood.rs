//! A raw HTTP/2 gRPC load generator for the overload test: many connections,
//! every call offered at once, and per call its gRPC status and its latency
//! from the moment its stream was sent to the moment its status arrived.
//!
//! It speaks HTTP/2 with the `h2` crate (what tonic's client sits on) and
//! writes the gRPC frame by hand (5-byte prefix + the protobuf), so the client
//! side costs as little as possible beside the plugin on a 2-core machine.
//! Each connection sends at most `streams_per_connection` streams at once
//! (the server's HTTP/2 limit). A call's latency runs from the moment its
//! stream is opened (its HEADERS handed to the connection) to its status:
//! what a client sees once its request has left, without the time the call
//! spent in this client's own backlog of 100,000 offered calls, which is
//! reported apart ([`Call::waited`]).

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
    /// From opening the call's (first) stream to its status (headers or
    /// trailers), re-sends of a refused stream included.
    pub latency: Duration,
    /// From the call's turn on its connection (a slot of
    /// `streams_per_connection` free) to its stream being opened: time the
    /// client waited for the server's HTTP/2 stream limit.
    pub waited: Duration,
    /// Streams the server refused (`REFUSED_STREAM`) and this client re-sent.
    pub resent: u8,
    /// A RESOURCE_EXHAUSTED whose message names the admission limit
    /// (`control_plane.admission.…`).
    pub names_limit: bool,
}

/// What a flood saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One per offered call.
    pub calls: Vec<Call>,
    /// The calls of a well-behaved client on its own connection, one at a
    /// time while the flood ran: what any other client saw meanwhile.
    pub probe: Vec<Call>,
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
    /// connections count their calls as failed), and the probe's calls.
    pub async fn run(&self) -> Outcome {
        let body = grpc_frame(&self.message);
        let mut connections = Vec::with_capacity(self.connections);
        for _ in 0..self.connections {
            connections.push(connect(self.port).await);
        }
        let probe = connect(self.port).await;
        let mut tasks = tokio::task::JoinSet::new();
        for connection in connections {
            let Ok(send) = connection else {
                for _ in 0..self.calls_per_connection {
                    tasks.spawn(async {
                        Call {
                            code: None,
                            latency: Duration::ZERO,
                            waited: Duration::ZERO,
                            resent: 0,
                            names_limit: false,
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
        let done = std::sync::atomic::AtomicBool::new(false);
        let flood = async {
            let calls = tasks.join_all().await;
            done.store(true, std::sync::atomic::Ordering::Release);
            calls
        };
        let probe = async {
            let mut calls = Vec::new();
            let Ok(send) = probe else { return calls };
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                calls.push(call(send.clone(), &self.path, body.clone()).await);
            }
            calls
        };
        let (calls, probe) = tokio::join!(flood, probe);
        Outcome { calls, probe }
    }
}

/// One unary gRPC call on `send`. A stream the server refused before
/// processing it (`REFUSED_STREAM`: the client opened it before learning that
/// a slot was free) is sent again, as every gRPC client does transparently.
async fn call(send: h2::client::SendRequest<Bytes>, path: &str, body: Bytes) -> Call {
    let turn = Instant::now();
    let mut opened = None;
    let mut code = None;
    let mut names_limit = false;
    let mut resent = 0;
    for _ in 0..3 {
        match exchange(send.clone(), path, body.clone(), &mut opened).await {
            Ok(got) => {
                (code, names_limit) = got;
                break;
            }
            Err(err) if err.reason() == Some(h2::Reason::REFUSED_STREAM) => resent += 1,
            Err(_) => break,
        }
    }
    let opened = opened.unwrap_or_else(Instant::now);
    Call {
        code,
        latency: opened.elapsed(),
        waited: opened.saturating_duration_since(turn),
        resent,
        names_limit,
    }
}

/// The call's gRPC status (`None`: no status came back) and whether its
/// message names an admission limit, or the HTTP/2 error that ended it;
/// sets `opened` when the first stream is opened.
async fn exchange(
    send: h2::client::SendRequest<Bytes>,
    path: &str,
    body: Bytes,
    opened: &mut Option<Instant>,
) -> Result<(Option<u8>, bool), h2::Error> {
    let mut send = send.ready().await?;
    let Ok(request) = http::Request::post(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
    else {
        return Ok((None, false));
    };
    let (response, mut stream) = send.send_request(request, false)?;
    opened.get_or_insert_with(Instant::now);
    // A server may answer before it has read the request (a refusal does) and then
    // reset the stream with NO_ERROR (RFC 9113 §8.1); sending the body then fails
    // although the answer is there, so the answer decides, as in every gRPC client.
    // A failed send that matters (a refused stream, a lost connection) fails the
    // answer too, with its reason.
    let _ = stream.send_data(body, true);
    let response = response.await?;
    if let Some(code) = status(response.headers()) {
        // Trailers-only: refused or failed.
        let names_limit = response.headers().get("grpc-message").is_some_and(|m| {
            m.to_str()
                .is_ok_and(|m| m.contains("control_plane.admission."))
        });
        return Ok((Some(code), names_limit));
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok((body.trailers().await?.as_ref().and_then(status), false))
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

/// CPU time (user + system) `pid` has used so far, from `/proc/<pid>/stat`
/// (`"self"` for this process); zero if it cannot be read.
pub fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime the 14th, stime the 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let total = ticks(14).unwrap_or(0) + ticks(15).unwrap_or(0);
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(total * 10)
}

/// Time the threads of `pid` (`"self"`: this process) have spent runnable
/// but waiting for a CPU, summed over its threads (the second field of
/// `/proc/<pid>/task/<tid>/schedstat`): on a machine shared with other jobs,
/// the latency the OS scheduler adds. Threads that already ended are not
/// counted; zero if it cannot be read.
pub fn run_queue_wait(pid: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Pins every thread of `pid` (`"self"`: this process) to `cpus` (a
/// `taskset` list such as `"0"`), so a load generator and the plugin it
/// measures do not share a core; false if `taskset` failed.
pub fn pin(pid: &str, cpus: &str) -> bool {
    let pid = if pid == "self" {
        std::process::id().to_string()
    } else {
        pid.to_string()
    };
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
