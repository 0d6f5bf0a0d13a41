//! A TLS- and/or SASL/PLAIN-terminating TCP proxy in front of a tansu broker,
//! because tansu itself cannot test either: it has no TLS listener that
//! librdkafka can use, and with `--authentication` it refuses every request
//! before SASL, including the `AlterUserScramCredentials` that would create
//! the first user (its in-memory storage cannot be seeded otherwise).
//!
//! Per client connection the proxy (optionally) completes a TLS handshake
//! with a certificate from [`TestCa`](crate::TestCa), then (optionally)
//! plays the broker's part of Kafka SASL: it relays `ApiVersions` to tansu
//! (which already lists `SaslHandshake` (17) and `SaslAuthenticate` (36)),
//! answers `SaslHandshake` and `SaslAuthenticate` itself, checking the PLAIN
//! username/password against its user table, and records who authenticated.
//! After that it splices bytes both ways. Any other request before
//! authentication closes the connection, as a Kafka broker does.
//!
//! tansu must advertise the proxy's port (see
//! [`Kafka::start_advertising`](crate::Kafka::start_advertising)), so that
//! the metadata a client receives sends it back through the proxy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
use crate::pki::IssuedCert;

/// Kafka API keys the proxy handles.
const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
/// Kafka error codes the proxy answers with.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// Largest request frame accepted before authentication.
const MAX_PRE_AUTH_FRAME: usize = 1 << 20;

/// What the proxy terminates.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Serve TLS with this certificate (PEM) instead of plain TCP.
    pub tls: Option<IssuedCert>,
    /// Require SASL/PLAIN with these `(username, password)` pairs.
    pub sasl_users: Option<Vec<(String, String)>>,
}

/// A running proxy. Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct KafkaProxy {
    port: u16,
    state: Arc<State>,
    task: JoinHandle<()>,
}

/// What connections share: the user table and the authentication record.
#[derive(Debug, Default)]
struct State {
    users: Mutex<Option<HashMap<String, String>>>,
    authenticated: Mutex<Vec<String>>,
    rejected: Mutex<Vec<String>>,
}

impl State {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client-side stream: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl KafkaProxy {
    /// Listens on 127.0.0.1:`port` and forwards to the broker on
    /// 127.0.0.1:`upstream`.
    pub async fn start(port: u16, upstream: u16, options: ProxyOptions) -> Result<Self> {
        let acceptor = options.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| Error::io(format!("binding the kafka proxy on port {port}"), e))?;
        let state = Arc::new(State {
            users: Mutex::new(
                options
                    .sasl_users
                    .map(|users| users.into_iter().collect::<HashMap<_, _>>()),
            ),
            ..State::default()
        });
        let task = tokio::spawn(accept_loop(listener, upstream, acceptor, state.clone()));
        Ok(KafkaProxy { port, state, task })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bootstrap servers string, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Adds or changes a SASL user (no effect without SASL).
    pub fn set_user(&self, username: &str, password: &str) {
        if let Some(users) = State::lock(&self.state.users).as_mut() {
            users.insert(username.to_string(), password.to_string());
        }
    }

    /// Removes a SASL user: new connections with it fail authentication.
    pub fn remove_user(&self, username: &str) {
        if let Some(users) = State::lock(&self.state.users).as_mut() {
            users.remove(username);
        }
    }

    /// Usernames of every successful SASL authentication, in order (one
    /// entry per connection).
    pub fn authenticated(&self) -> Vec<String> {
        State::lock(&self.state.authenticated).clone()
    }

    /// Usernames of every failed SASL authentication, in order.
    pub fn rejected(&self) -> Vec<String> {
        State::lock(&self.state.rejected).clone()
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

fn tls_acceptor(cert: &IssuedCert) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error("certificate PEM", e))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| tls_error("key PEM", e))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error("TLS versions", e))?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| tls_error("TLS certificate", e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(
        format!("kafka proxy {what}"),
        std::io::Error::other(e.to_string()),
    )
}

async fn accept_loop(
    listener: TcpListener,
    upstream: u16,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let state = state.clone();
                connections.spawn(async move {
                    // A failed connection is the client's problem (a wrong CA,
                    // a wrong password): it sees the close.
                    let _ = serve(client, upstream, acceptor, state).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(
    client: TcpStream,
    upstream: u16,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut client: Box<dyn Io> = match acceptor {
        Some(acceptor) => Box::new(acceptor.accept(client).await?),
        None => Box::new(client),
    };
    let mut broker = TcpStream::connect(("127.0.0.1", upstream)).await?;
    broker.set_nodelay(true)?;
    let sasl = State::lock(&state.users).is_some();
    if sasl && !authenticate(&mut client, &mut broker, &state).await? {
        return Ok(());
    }
    tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
    Ok(())
}

/// A parsed request header and the body after it.
struct Request {
    api_key: i16,
    api_version: i16,
    correlation_id: i32,
    /// The whole frame, length prefix included (for relaying).
    frame: Vec<u8>,
    /// Offset of the body in `frame`.
    body: usize,
}

/// Plays the broker's side of SASL/PLAIN until the client authenticated
/// (`true`) or failed (`false`, connection to be closed).
async fn authenticate(
    client: &mut Box<dyn Io>,
    broker: &mut TcpStream,
    state: &State,
) -> std::io::Result<bool> {
    let mut mechanism_ok = false;
    loop {
        let Some(request) = read_request(client).await? else {
            return Ok(false);
        };
        match request.api_key {
            API_VERSIONS => {
                broker.write_all(&request.frame).await?;
                let response = read_frame(broker).await?.ok_or_else(eof)?;
                client.write_all(&response).await?;
            }
            SASL_HANDSHAKE => {
                let mechanism = read_string(&request.frame, request.body).unwrap_or_default();
                mechanism_ok = mechanism == "PLAIN";
                let mut body = Vec::new();
                let code = if mechanism_ok {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                body.extend_from_slice(&code.to_be_bytes());
                body.extend_from_slice(&1i32.to_be_bytes());
                put_string(&mut body, "PLAIN");
                write_response(client, request.correlation_id, false, &body).await?;
                if !mechanism_ok {
                    return Ok(false);
                }
            }
            SASL_AUTHENTICATE if mechanism_ok => {
                let flexible = request.api_version >= 2;
                let token = read_auth_bytes(&request, flexible).unwrap_or_default();
                let (username, password) = parse_plain(&token);
                let accepted = State::lock(&state.users)
                    .as_ref()
                    .and_then(|users| users.get(&username))
                    .is_some_and(|expected| *expected == password);
                let list = if accepted {
                    &state.authenticated
                } else {
                    &state.rejected
                };
                State::lock(list).push(username);
                let (code, message) = if accepted {
                    (0, None)
                } else {
                    (
                        SASL_AUTHENTICATION_FAILED,
                        Some("Authentication failed: invalid username or password"),
                    )
                };
                let mut body = Vec::new();
                body.extend_from_slice(&code.to_be_bytes());
                if flexible {
                    put_compact_nullable_string(&mut body, message);
                    put_uvarint(&mut body, 1); // empty auth_bytes (length + 1)
                } else {
                    match message {
                        Some(m) => put_string(&mut body, m),
                        None => body.extend_from_slice(&(-1i16).to_be_bytes()),
                    }
                    body.extend_from_slice(&0i32.to_be_bytes()); // empty auth_bytes
                }
                if request.api_version >= 1 {
                    body.extend_from_slice(&0i64.to_be_bytes()); // session_lifetime_ms
                }
                if flexible {
                    body.push(0); // no tagged fields
                }
                write_response(client, request.correlation_id, flexible, &body).await?;
                return Ok(accepted);
            }
            // Anything else before authentication: a broker closes the connection.
            _ => return Ok(false),
        }
    }
}

fn eof() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "broker closed")
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// One length-prefixed Kafka frame (prefix included), or `None` at a clean EOF.
async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    stream: &mut R,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let size = usize::try_from(i32::from_be_bytes(len)).map_err(|_| invalid("negative size"))?;
    if size > MAX_PRE_AUTH_FRAME {
        return Err(invalid("frame too large before authentication"));
    }
    let mut frame = vec![0u8; 4 + size];
    frame[..4].copy_from_slice(&len);
    stream.read_exact(&mut frame[4..]).await?;
    Ok(Some(frame))
}

/// Reads a request frame and parses its header (v1, or v2 for flexible
/// SaslAuthenticate: the tagged fields after the client id are skipped).
async fn read_request(client: &mut Box<dyn Io>) -> std::io::Result<Option<Request>> {
    let Some(frame) = read_frame(client.as_mut()).await? else {
        return Ok(None);
    };
    let short = || invalid("short request header");
    let api_key = i16::from_be_bytes(
        frame
            .get(4..6)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let api_version = i16::from_be_bytes(
        frame
            .get(6..8)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let correlation_id = i32::from_be_bytes(
        frame
            .get(8..12)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let client_id_len = i16::from_be_bytes(
        frame
            .get(12..14)
            .ok_or_else(short)?
            .try_into()
            .unwrap_or_default(),
    );
    let mut body = 14 + usize::try_from(client_id_len).unwrap_or(0);
    let flexible_header = (api_key == SASL_AUTHENTICATE && api_version >= 2)
        || (api_key == API_VERSIONS && api_version >= 3);
    if flexible_header {
        body = skip_tagged_fields(&frame, body).ok_or_else(short)?;
    }
    Ok(Some(Request {
        api_key,
        api_version,
        correlation_id,
        frame,
        body,
    }))
}

/// Writes a response: header v0 (correlation id) or v1 (plus empty tagged fields).
async fn write_response(
    client: &mut Box<dyn Io>,
    correlation_id: i32,
    flexible: bool,
    body: &[u8],
) -> std::io::Result<()> {
    let header = if flexible { 5 } else { 4 };
    let size = i32::try_from(header + body.len()).map_err(|_| invalid("response too large"))?;
    let mut out = Vec::with_capacity(4 + header + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if flexible {
        out.push(0);
    }
    out.extend_from_slice(body);
    client.write_all(&out).await?;
    client.flush().await
}

fn read_uvarint(buf: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn skip_tagged_fields(buf: &[u8], at: usize) -> Option<usize> {
    let (count, mut at) = read_uvarint(buf, at)?;
    for _ in 0..count {
        let (_tag, next) = read_uvarint(buf, at)?;
        let (size, next) = read_uvarint(buf, next)?;
        at = next + usize::try_from(size).ok()?;
    }
    (at <= buf.len()).then_some(at)
}

/// A non-flexible STRING (int16 length) at `at`.
fn read_string(buf: &[u8], at: usize) -> Option<String> {
    let len = usize::try_from(i16::from_be_bytes(buf.get(at..at + 2)?.try_into().ok()?)).ok()?;
    let bytes = buf.get(at + 2..at + 2 + len)?;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// `auth_bytes` of a SaslAuthenticate request: BYTES (int32 length) or, when
/// flexible, COMPACT_BYTES (uvarint length + 1).
fn read_auth_bytes(request: &Request, flexible: bool) -> Option<Vec<u8>> {
    let buf = &request.frame;
    let at = request.body;
    if flexible {
        let (len, at) = read_uvarint(buf, at)?;
        let len = usize::try_from(len.checked_sub(1)?).ok()?;
        buf.get(at..at + len).map(<[u8]>::to_vec)
    } else {
        let len =
            usize::try_from(i32::from_be_bytes(buf.get(at..at + 4)?.try_into().ok()?)).ok()?;
        buf.get(at + 4..at + 4 + len).map(<[u8]>::to_vec)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::try_from(len).unwrap_or(0)]);
}

fn put_compact_nullable_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_uvarint(out, 0),
        Some(s) => {
            put_uvarint(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// SASL PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
fn parse_plain(token: &[u8]) -> (String, String) {
    let mut parts = token.split(|b| *b == 0);
    let _authzid = parts.next();
    let username = parts.next().unwrap_or_default();
    let password = parts.next().unwrap_or_default();
    (
        String::from_utf8_lossy(username).into_owned(),
        String::from_utf8_lossy(password).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarints_round_trip() {
        for value in [0u64, 1, 127, 128, 300, 16_384, u64::from(u32::MAX)] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, value);
            assert_eq!(read_uvarint(&buf, 0), Some((value, buf.len())));
        }
    }

    #[test]
    fn plain_token_is_split() {
        assert_eq!(
            parse_plain(b"\0alice\0pw"),
            ("alice".to_string(), "pw".to_string())
        );
        assert_eq!(parse_plain(b"junk"), (String::new(), String::new()));
    }
}
