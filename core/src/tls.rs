//! TLS and mTLS on the plugin port (rustls), with certificates reloaded from
//! disk when they change (cert-manager rotates them) without touching open
//! connections: every new handshake uses the newest config.
//!
//! tonic's own `ServerTlsConfig` is fixed at startup, so the listener here
//! accepts TCP, performs the handshake with the current `ServerConfig`, and
//! hands finished TLS streams to tonic.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Error;

/// `control_plane.tls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Server private key (PEM).
    pub key_file: PathBuf,
    /// CA bundle (PEM); when set, clients must present a certificate it signed (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are checked for changes.
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// Bound on one TLS handshake, so a silent client cannot hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsConfig {
    /// Pure checks.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cert_file.as_os_str().is_empty() {
            problems.push("`control_plane.tls.cert_file`: required when tls is set".into());
        }
        if self.key_file.as_os_str().is_empty() {
            problems.push("`control_plane.tls.key_file`: required when tls is set".into());
        }
        if self.reload_interval < Duration::from_millis(100) {
            problems.push("`control_plane.tls.reload_interval`: must be at least 100ms".into());
        }
        problems
    }

    /// Loads the files into a rustls config (ALPN h2 for gRPC).
    pub(crate) fn load(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = read_certs(&self.cert_file, "control_plane.tls.cert_file")?;
        if let Some(at) = crate::tls_expiry::not_after(&certs[0]) {
            crate::backend_metrics::get().certificate_expiry("server", at as f64);
        }
        let key = PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| {
            Error::config(format!(
                "`control_plane.tls.key_file`: cannot read a private key from {}: {e}",
                self.key_file.display()
            ))
        })?;
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.client_ca_file {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca, "control_plane.tls.client_ca_file")? {
                    roots.add(cert).map_err(|e| {
                        Error::config(format!("`control_plane.tls.client_ca_file`: {e}"))
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                    .build()
                    .map_err(|e| {
                        Error::config(format!("`control_plane.tls.client_ca_file`: {e}"))
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| Error::config(format!("`control_plane.tls`: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        [
            Some(&self.cert_file),
            Some(&self.key_file),
            self.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::config(format!("`{key}`: cannot read {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "`{key}`: no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Accepts TCP connections, completes TLS handshakes with the current config
/// and yields the streams to tonic. Owns a reload task and per-connection
/// handshake tasks, all stopped by `shutdown`.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: TlsConfig,
    initial: Arc<rustls::ServerConfig>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let current = Arc::new(RwLock::new(initial));
    tasks.spawn(reload_loop(tls, current.clone(), shutdown.clone()));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.cancelled() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let config = current.read().unwrap_or_else(|e| e.into_inner()).clone();
            let tx = tx.clone();
            handshakes.spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    // A failed handshake (no client certificate, wrong CA,
                    // plaintext client) concerns that client only.
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Swaps in the newest certificates when the files change (see
/// [`crate::reload`]). cert-manager writes the files one by one: a
/// half-written pair fails to load and is retried at the next tick, the old
/// config stays.
async fn reload_loop(
    tls: TlsConfig,
    current: Arc<RwLock<Arc<rustls::ServerConfig>>>,
    shutdown: CancellationToken,
) {
    let apply = |config| *current.write().unwrap_or_else(|e| e.into_inner()) = config;
    let (modified, load) = (|| tls.modified(), || tls.load());
    crate::reload::watch(
        "TLS certificates",
        tls.reload_interval,
        shutdown,
        modified,
        load,
        apply,
    )
    .await;
}
