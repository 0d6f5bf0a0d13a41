//! A TLS- and/or SASL-terminating TCP proxy in front of a tansu broker,
//! because tansu itself cannot test either: it has no TLS listener that
//! librdkafka can use, and with `--authentication` it refuses every request
//! before SASL, including the `AlterUserScramCredentials` that would create
//! the first user (its in-memory storage cannot be seeded otherwise).
//!
//! Per client connection the proxy (optionally) completes a TLS handshake
//! with a certificate from [`TestCa`](crate::TestCa) — and, for mTLS,
//! requires a client certificate signed by a given CA — then (optionally)
//! plays the broker's part of Kafka SASL with PLAIN, SCRAM-SHA-256 or
//! SCRAM-SHA-512 ([`crate::kafka_sasl`]) and records who authenticated.
//! After that it splices bytes both ways.
//!
//! tansu must advertise the proxy's port (see
//! [`Kafka::start_advertising`](crate::Kafka::start_advertising)), so that
//! the metadata a client receives sends it back through the proxy.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};
use crate::kafka_sasl::{Outcome, Users, authenticate};
use crate::kafka_wire::Io;
use crate::pki::IssuedCert;
use crate::scram::SaslMechanism;

/// What the proxy terminates.
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Serve TLS with this certificate (PEM) instead of plain TCP.
    pub tls: Option<IssuedCert>,
    /// With `tls`: require a client certificate signed by this CA (PEM) —
    /// a client without one, or with one from another CA, fails the handshake.
    pub client_ca: Option<String>,
    /// Require SASL with these `(username, password)` pairs.
    pub sasl_users: Option<Vec<(String, String)>>,
    /// The one SASL mechanism accepted (default PLAIN); SCRAM users are
    /// stored as salted keys only.
    pub sasl_mechanism: SaslMechanism,
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
    users: Mutex<Option<Users>>,
    authenticated: Mutex<Vec<String>>,
    rejected: Mutex<Vec<String>>,
    /// Leaf certificates (DER) clients presented and the proxy accepted.
    client_certs: Mutex<Vec<Vec<u8>>>,
    /// TLS handshakes that failed (e.g. no or a foreign client certificate).
    failed_handshakes: Mutex<u64>,
}

impl State {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KafkaProxy {
    /// Listens on 127.0.0.1:`port` and forwards to the broker on
    /// 127.0.0.1:`upstream`.
    pub async fn start(port: u16, upstream: u16, options: ProxyOptions) -> Result<Self> {
        let acceptor = match &options.tls {
            Some(cert) => Some(tls_acceptor(cert, options.client_ca.as_deref())?),
            None if options.client_ca.is_some() => {
                return Err(tls_error("client_ca", "a client CA needs `tls` as well"));
            }
            None => None,
        };
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| Error::io(format!("binding the kafka proxy on port {port}"), e))?;
        let mechanism = options.sasl_mechanism;
        let state = Arc::new(State {
            users: Mutex::new(options.sasl_users.map(|users| Users::new(mechanism, users))),
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

    /// Adds or changes a SASL user (no effect without SASL); with SCRAM the
    /// password is salted and derived at once, as a broker stores it.
    pub fn set_user(&self, username: &str, password: &str) {
        if let Some(users) = State::lock(&self.state.users).as_mut() {
            users.set(username, password);
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

    /// Client certificates (DER of the leaf) of every accepted mTLS
    /// handshake, in order.
    pub fn client_certificates(&self) -> Vec<Vec<u8>> {
        State::lock(&self.state.client_certs).clone()
    }

    /// TLS handshakes that failed (a missing or untrusted client
    /// certificate, a client that does not trust the proxy).
    pub fn failed_handshakes(&self) -> u64 {
        *State::lock(&self.state.failed_handshakes)
    }
}

impl Drop for KafkaProxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

fn tls_acceptor(cert: &IssuedCert, client_ca: Option<&str>) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_error("certificate PEM", e))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())
        .map_err(|e| tls_error("key PEM", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("TLS versions", e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for der in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                let der = der.map_err(|e| tls_error("client CA PEM", e))?;
                roots.add(der).map_err(|e| tls_error("client CA", e))?;
            }
            // Anonymous clients are refused: mTLS is required, not offered.
            // No CA names in the CertificateRequest: OpenSSL would withhold a
            // certificate from another CA, so the verifier would never see
            // (and the test never prove the refusal of) a foreign one.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .clear_root_hint_subjects()
                .build()
                .map_err(|e| tls_error("client verifier", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
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
        Some(acceptor) => match acceptor.accept(client).await {
            Ok(tls) => {
                if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    State::lock(&state.client_certs).push(leaf.to_vec());
                }
                Box::new(tls)
            }
            Err(e) => {
                *State::lock(&state.failed_handshakes) += 1;
                return Err(e);
            }
        },
        None => Box::new(client),
    };
    let mut broker = TcpStream::connect(("127.0.0.1", upstream)).await?;
    broker.set_nodelay(true)?;
    let sasl = State::lock(&state.users).is_some();
    if sasl {
        match authenticate(&mut client, &mut broker, &state.users).await? {
            Outcome::Authenticated(user) => State::lock(&state.authenticated).push(user),
            Outcome::Rejected(user) => {
                State::lock(&state.rejected).push(user);
                return Ok(());
            }
            Outcome::Closed => return Ok(()),
        }
    }
    tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
    Ok(())
}
