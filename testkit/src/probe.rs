//! Protocol-level readiness probes spoken directly over a loopback `TcpStream`, so
//! readiness means "answers requests", not merely "accepts TCP": RESP `PING` for
//! Redis, a Kafka `ApiVersions` v0 request for tansu, and an HTTP/1.1
//! `GET /v1/sys/health` for OpenBao. No client crates are needed for any of them.
//! Each probe is bounded by a short timeout and reports "not ready" on any failure.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for one probe round trip.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a Redis server on `port` answers `PING`. Auth errors (`-NOAUTH`,
/// `-NOPERM`, `-WRONGPASS`) count as answered, because a server started with ACLs
/// or `requirepass` is up even though the anonymous PING is refused; `-LOADING` and
/// other errors do not.
pub(crate) async fn redis_ping(port: u16) -> bool {
    let reply = round_trip(port, b"*1\r\n$4\r\nPING\r\n", |buf| {
        buf.windows(2).any(|w| w == b"\r\n")
    })
    .await;
    match reply {
        Some(reply) => {
            reply.starts_with(b"+PONG")
                || reply.starts_with(b"-NOAUTH")
                || reply.starts_with(b"-NOPERM")
                || reply.starts_with(b"-WRONGPASS")
        }
        None => false,
    }
}

/// Whether a Kafka broker on `port` answers an `ApiVersions` v0 request with error
/// code 0.
pub(crate) async fn kafka_api_versions(port: u16) -> bool {
    const CORRELATION_ID: i32 = 0x7072_6973; // "pris"
    const CLIENT_ID: &[u8] = b"prism-testkit";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    body.extend_from_slice(CLIENT_ID);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);

    let reply = round_trip(port, &request, |buf| {
        buf.len() >= 4
            && buf.len()
                >= 4 + usize::try_from(i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]))
                    .unwrap_or(0)
    })
    .await;
    // Response: length, correlation id, error code (int16), api array.
    match reply {
        Some(r) if r.len() >= 10 => r[4..8] == CORRELATION_ID.to_be_bytes() && r[8..10] == [0, 0],
        _ => false,
    }
}

/// The HTTP status code of `GET <path>` on 127.0.0.1:`port`, or `None` if the
/// server did not answer.
pub(crate) async fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let reply = round_trip(port, request.as_bytes(), |buf| {
        buf.windows(2).any(|w| w == b"\r\n")
    })
    .await?;
    let status_line = String::from_utf8_lossy(&reply);
    status_line.split_whitespace().nth(1)?.parse().ok()
}

/// Connects, sends `request` and reads until `complete` says the reply is whole,
/// EOF, or [`PROBE_TIMEOUT`].
async fn round_trip(
    port: u16,
    request: &[u8],
    complete: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
            if complete(&reply) {
                break;
            }
        }
        Some(reply)
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
}
