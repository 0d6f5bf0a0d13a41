//! The background task of a [`CredentialSource`](super::CredentialSource):
//! logs in, renews the token, renews the lease or polls the KV v2 version,
//! fetches new credentials when needed and publishes them, and revokes
//! replaced leases. The decisions (when, and whether to renew or replace)
//! are in [`policy`](super::policy); this module does the calls and keeps the
//! state. All timing is on tokio's clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Client, TokenRenewal};
use super::config::{SecretConfig, SecretEngine, VaultConfig};
use super::credentials::{Credentials, Lease, SecretString};
use super::http::Http;
use super::pki;
use super::policy::{self, LeaseRenewal, TokenRefresh, TokenState};
use super::status::{self, SharedStatus};
use crate::Error;

/// How long the last lease may take to revoke when the plugin stops.
const FINAL_REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The background task's state.
pub(super) struct Worker {
    config: VaultConfig,
    secret: SecretConfig,
    client: Client,
    http: Http,
    token: Option<TokenState>,
    current: Option<Credentials>,
    generation: u64,
    status: SharedStatus,
}

impl Worker {
    /// A worker that reports to `status`; not logged in yet.
    pub(super) fn new(
        config: VaultConfig,
        secret: SecretConfig,
        status: SharedStatus,
    ) -> Result<Self, Error> {
        // reqwest is built without a bundled crypto provider (no aws-lc build
        // on 2 cores); ring is installed once per process. Err = already set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(&config)?;
        let http = Http::new(&config)?;
        Ok(Worker {
            config,
            secret,
            client,
            http,
            token: None,
            current: None,
            generation: 0,
            status,
        })
    }

    /// Logs in with the configured method and records the token's TTL.
    pub(super) async fn login(&mut self) -> Result<(), Error> {
        let token = self.client.login(&self.config.auth).await?;
        self.client.set_token(&token);
        self.http.set_token(&token);
        let info = self.client.lookup_self().await?;
        self.token = Some(TokenState::looked_up(
            Instant::now(),
            info.ttl,
            info.renewable,
        ));
        tracing::info!(method = ?self.config.auth.method, ttl_s = info.ttl.as_secs(), renewable = info.renewable, "logged in to Vault");
        Ok(())
    }

    /// Renews the token, or logs in again when it cannot be renewed, Vault
    /// refuses, or it is near its max TTL (Vault then grants less than asked).
    async fn refresh_token(&mut self) -> Result<(), Error> {
        let TokenRefresh::Renew { asked } = TokenState::refresh(self.token.as_ref()) else {
            return self.login().await;
        };
        match self.client.renew_self(asked).await? {
            TokenRenewal::Granted(info) => {
                match TokenState::renewed(asked, info.ttl, info.renewable, Instant::now()) {
                    Some(token) => {
                        self.token = Some(token);
                        Ok(())
                    }
                    None => {
                        tracing::info!(
                            granted_s = info.ttl.as_secs(),
                            "Vault token near its max TTL; logging in again"
                        );
                        self.login().await
                    }
                }
            }
            TokenRenewal::Refused(e) => {
                tracing::info!(error = %e, "logging in to Vault again");
                self.login().await
            }
        }
    }

    /// Fetches a new set of credentials.
    pub(super) async fn fetch(&mut self) -> Result<Credentials, Error> {
        self.generation += 1;
        let mount = self.secret.mount_or_default().to_string();
        let creds = match self.secret.engine {
            SecretEngine::Database => {
                let got = self.http.database_creds(&mount, &self.secret.role).await?;
                let duration = Duration::from_secs(got.lease_duration);
                Credentials {
                    username: got.data.username,
                    password: SecretString::new(got.data.password),
                    extra: Default::default(),
                    generation: self.generation,
                    lease: Some(Lease::issued(
                        got.lease_id,
                        got.renewable,
                        duration,
                        Instant::now(),
                    )),
                    certificate: None,
                }
            }
            SecretEngine::Pki => {
                let cn = &self.secret.common_name;
                let issued = self
                    .http
                    .pki_issue(&mount, &self.secret.role, cn, self.secret.ttl)
                    .await?;
                let creds =
                    issued.into_credentials(cn, self.generation, pki::unix_now(), Instant::now());
                if let Some(cert) = &creds.certificate {
                    tracing::info!(common_name = %cn, serial = %cert.serial, "issued a client certificate");
                }
                creds
            }
            SecretEngine::Kv2 => {
                let version = self.client.kv2_version(&mount, &self.secret.path).await?;
                let data = self.client.kv2_read(&mount, &self.secret.path).await?;
                self.generation = version;
                Credentials::from_kv2(&data, version)
            }
        };
        self.current = Some(creds.clone());
        Ok(creds)
    }

    /// Renews the current lease; returns false when new credentials are needed.
    async fn renew_lease(&mut self) -> Result<bool, Error> {
        let Some(lease) = self.current.as_ref().and_then(|c| c.lease.clone()) else {
            return Ok(false);
        };
        if !lease.renewable {
            return Ok(false);
        }
        let answer = self
            .http
            .renew_lease(&lease.id, lease.initial)
            .await
            .map(Duration::from_secs);
        match policy::lease_renewal(&lease, answer, Instant::now())? {
            LeaseRenewal::Renewed { expires_at } => {
                if let Some(Credentials { lease: Some(l), .. }) = self.current.as_mut() {
                    l.expires_at = expires_at;
                }
                status::lock(&self.status).renewed(expires_at);
                Ok(true)
            }
            LeaseRenewal::Replace => Ok(false),
        }
    }

    fn lease(&self) -> Option<&Lease> {
        self.current.as_ref().and_then(|c| c.lease.as_ref())
    }

    /// When the next round is due.
    fn next_wakeup(&self, backoff: Duration) -> Instant {
        let now = Instant::now();
        if !status::lock(&self.status).vault_reachable {
            return now + backoff;
        }
        policy::next_wakeup(
            now,
            self.token.as_ref(),
            self.secret.engine,
            self.lease(),
            self.secret.poll_interval,
        )
    }

    /// One round of maintenance: token, then lease or KV version. Returns the
    /// new credentials if they changed.
    async fn tick(&mut self, force_rotation: bool) -> Result<Option<Credentials>, Error> {
        if self.token.as_ref().is_some_and(|t| t.due(Instant::now())) {
            self.refresh_token().await?;
        }
        match self.secret.engine {
            // A PKI certificate's lease is not renewable: at 2/3 of its
            // life `renew_lease` says no and a new one is issued.
            SecretEngine::Database | SecretEngine::Pki => {
                let due = policy::lease_due(self.lease(), Instant::now());
                if !force_rotation && (!due || self.renew_lease().await?) {
                    return Ok(None);
                }
                let old = self.lease().cloned();
                let new = self.fetch().await?;
                if let Some(old) = old {
                    self.revoke_later(old);
                }
                Ok(Some(new))
            }
            SecretEngine::Kv2 => {
                let mount = self.secret.mount_or_default();
                let version = self.client.kv2_version(mount, &self.secret.path).await?;
                if policy::kv2_changed(force_rotation, version, self.generation) {
                    Ok(Some(self.fetch().await?))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Revokes a replaced lease once plugins had time to drain the old pool,
    /// so old database users do not linger until their max TTL.
    fn revoke_later(&self, lease: Lease) {
        if lease.id.is_empty() {
            // A certificate: it expires by itself.
            return;
        }
        let http = self.http.clone();
        // A fixed grace for the plugin to swap and drain: if the lease runs
        // out first, Vault revokes it itself and this call is a no-op.
        spawn_after(policy::REVOKE_GRACE, async move {
            if let Err(e) = http.revoke_lease(&lease.id).await {
                tracing::debug!(error = %e, "revoking a replaced lease failed; Vault expires it anyway");
            }
        });
    }

    /// Keeps the credentials fresh until `cancel`, publishing every new set
    /// on `tx`; `rotate` asks for a new set at once. Failed rounds are
    /// retried with backoff while the current credentials stay in use.
    pub(super) async fn run(
        mut self,
        tx: watch::Sender<Arc<Credentials>>,
        rotate: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut backoff = policy::FIRST_BACKOFF;
        let mut force = false;
        loop {
            let wake = self.next_wakeup(backoff);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = rotate.notified() => {
                    tracing::info!("credentials rejected by the backend; fetching new ones");
                    force = true;
                }
                _ = cancel.cancelled() => break,
            }
            match self.tick(force).await {
                Ok(changed) => {
                    force = false;
                    backoff = policy::FIRST_BACKOFF;
                    status::lock(&self.status).set_reachable(true, None);
                    if let Some(creds) = changed {
                        status::lock(&self.status)
                            .rotated(creds.lease.as_ref().map(|l| l.expires_at));
                        tracing::info!(username = %creds.username, generation = creds.generation, "rotated credentials");
                        let _ = tx.send(Arc::new(creds));
                    }
                }
                Err(e) => {
                    status::lock(&self.status).set_reachable(false, Some(e.to_string()));
                    backoff = policy::next_backoff(backoff);
                }
            }
        }
        // Leave no dynamic user behind when the plugin stops.
        if let Some(lease) = self.lease().filter(|l| !l.id.is_empty()) {
            let _ =
                tokio::time::timeout(FINAL_REVOKE_TIMEOUT, self.http.revoke_lease(&lease.id)).await;
        }
    }
}

/// Runs `task` after `delay` (on tokio's clock), detached.
fn spawn_after(delay: Duration, task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        task.await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::config::AuthConfig;
    use crate::vault::status::Status;

    #[tokio::test(start_paused = true)]
    async fn a_replaced_lease_is_revoked_after_the_grace() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let replaced = Instant::now();
        spawn_after(policy::REVOKE_GRACE, async move {
            let _ = tx.send(Instant::now());
        });
        // The paused clock jumps straight to the task's timer.
        let revoked = rx.await.unwrap();
        assert_eq!(revoked - replaced, policy::REVOKE_GRACE);
    }

    /// A worker holding credentials with a 30 s lease and a 30 s token,
    /// pointed at a port where no Vault listens.
    fn worker_with_vault_gone(status: &SharedStatus) -> (Worker, Credentials) {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", unused.local_addr().unwrap());
        drop(unused);
        let secret: SecretConfig = serde_yaml::from_str("{engine: database, role: prism}").unwrap();
        let config = VaultConfig {
            address,
            auth: AuthConfig {
                token: SecretString::new("s.token"),
                ..AuthConfig::default()
            },
            secret: Some(secret.clone()),
            request_timeout: Duration::from_secs(1),
            ..VaultConfig::default()
        };
        let mut worker = Worker::new(config, secret, status.clone()).unwrap();
        let now = Instant::now();
        let ttl = Duration::from_secs(30);
        let creds = Credentials {
            username: "v-prism-1".into(),
            password: SecretString::new("pw"),
            extra: Default::default(),
            generation: 1,
            lease: Some(Lease::issued(
                "database/creds/prism/1".into(),
                true,
                ttl,
                now,
            )),
            certificate: None,
        };
        worker.token = Some(TokenState::looked_up(now, ttl, true));
        worker.current = Some(creds.clone());
        worker.generation = 1;
        *status::lock(status) = Status {
            vault_reachable: true,
            expires_at: Some(now + ttl),
            ..Status::default()
        };
        (worker, creds)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_vault_keeps_the_credentials_until_they_expire() {
        let status = SharedStatus::default();
        let (worker, creds) = worker_with_vault_gone(&status);
        let started = Instant::now();
        let (tx, mut rx) = watch::channel(Arc::new(creds));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(worker.run(tx, Arc::new(Notify::new()), cancel.clone()));
        // The first round is due at 2/3 of the TTLs (20 s) and fails.
        while status::lock(&status).vault_reachable {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let failed_at = Instant::now() - started;
        assert!(failed_at >= Duration::from_secs(20), "{failed_at:?}");
        let error = status::lock(&status).last_error.clone().unwrap_or_default();
        assert!(error.contains("Vault token renewal failed"), "{error}");
        assert!(!status::lock(&status).expired(Instant::now()));
        // Retries with backoff change nothing until the lease runs out.
        tokio::time::sleep_until(started + Duration::from_secs(30)).await;
        assert!(status::lock(&status).expired(Instant::now()));
        assert!(!status::lock(&status).vault_reachable);
        assert!(!rx.has_changed().unwrap(), "no credentials were published");
        assert_eq!(rx.borrow_and_update().username, "v-prism-1");
        cancel.cancel();
        task.await.unwrap();
    }
}
