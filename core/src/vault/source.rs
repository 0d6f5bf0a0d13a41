//! [`CredentialSource`]: the handle a plugin holds. Starting it logs in and
//! fetches the first credentials; it then owns the worker task and offers
//! the current set, a subscription to new sets, rotation on request, the
//! expiry check and health details.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::VaultConfig;
use super::credentials::Credentials;
use super::status::{self, SharedStatus, Status};
use super::worker::Worker;
use crate::Error;

/// Keeps one set of credentials fresh. Dropping it (or [`shutdown`](Self::shutdown))
/// stops the background task.
pub struct CredentialSource {
    rx: watch::Receiver<Arc<Credentials>>,
    status: SharedStatus,
    rotate: Arc<Notify>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl CredentialSource {
    /// Logs in and fetches the first credentials (an error means the plugin
    /// cannot start yet: `Error::Unavailable`), then keeps them fresh until
    /// `shutdown` is cancelled.
    pub async fn start(config: &VaultConfig, shutdown: CancellationToken) -> Result<Self, Error> {
        let secret = config
            .secret
            .clone()
            .ok_or_else(|| Error::config("`vault.secret`: not configured"))?;
        let engine = secret.engine;
        let status = SharedStatus::default();
        let mut worker = Worker::new(config.clone(), secret, status.clone())?;
        worker.login().await?;
        let first = worker.fetch().await?;
        *status::lock(&status) = Status {
            vault_reachable: true,
            expires_at: first.lease.as_ref().map(|l| l.expires_at),
            ..Status::default()
        };
        let lease_end = first.lease.as_ref().map(|l| l.expires_at.into_std());
        crate::backend_metrics::get().rotated(lease_end);
        tracing::info!(
            engine = ?engine,
            username = %first.username,
            lease_seconds = first.lease.as_ref().map(|l| l.initial.as_secs()),
            "credentials obtained from Vault"
        );
        let (tx, rx) = watch::channel(Arc::new(first));
        let rotate = Arc::new(Notify::new());
        let cancel = shutdown.child_token();
        let task = tokio::spawn(worker.run(tx, rotate.clone(), cancel.clone()));
        Ok(CredentialSource {
            rx,
            status,
            rotate,
            cancel,
            task: Mutex::new(Some(task)),
        })
    }

    /// The current credentials.
    pub fn current(&self) -> Arc<Credentials> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every new set.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Credentials>> {
        self.rx.clone()
    }

    /// The backend rejected the credentials (revoked?): fetch new ones now.
    pub fn request_rotation(&self) {
        self.rotate.notify_one();
    }

    /// True once the current credentials' lease has run out without renewal.
    pub fn expired(&self) -> bool {
        status::lock(&self.status).expired(Instant::now())
    }

    /// Health details: Vault reachability, rotations, seconds to expiry. No secrets.
    pub fn health_details(&self) -> BTreeMap<String, String> {
        let s = status::lock(&self.status).clone();
        s.details(&self.current().username, Instant::now())
    }

    /// Stops the background task (revoking the current lease) and waits for
    /// it. Takes `&self` so a source shared behind an `Arc` can be shut down.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for CredentialSource {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
