//! Backend credentials from Vault / OpenBao (DESIGN.md §5): the `vault:`
//! config section, login (token, token file, AppRole, Kubernetes), token
//! renewal, dynamic database credentials with lease renewal and rotation, and
//! KV v2 secrets with version polling.
//!
//! A [`CredentialSource`] owns one background task that keeps credentials
//! fresh and publishes each new set on a `watch` channel; a plugin builds a new
//! pool/connection from every published set and swaps it in. vaultrs covers
//! login, token lookup/renewal and KV v2; it has no lease renewal or
//! revocation and its `database::role::creds` drops `lease_id`,
//! `lease_duration` and `renewable`, so those three calls are made over HTTP
//! here (see [`Http`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};

use crate::Error;

/// The `vault:` config section. Vault is used only when `secret` is set, so a
/// stray `VAULT_ADDR` in the environment does not switch it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault address (`VAULT_ADDR`).
    #[serde(default = "default_address")]
    pub address: String,
    /// Enterprise/OpenBao namespace (`VAULT_NAMESPACE`); empty = none.
    #[serde(default)]
    pub namespace: String,
    /// How to log in.
    #[serde(default)]
    pub auth: AuthConfig,
    /// What to read; unset = Vault is not used.
    #[serde(default)]
    pub secret: Option<SecretConfig>,
    /// TLS to Vault.
    #[serde(default)]
    pub tls: VaultTls,
    /// Timeout of one Vault HTTP request.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_address() -> String {
    "http://127.0.0.1:8200".to_string()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            address: default_address(),
            namespace: String::new(),
            auth: AuthConfig::default(),
            secret: None,
            tls: VaultTls::default(),
            request_timeout: default_request_timeout(),
        }
    }
}

/// Login method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// A token given directly or in a file.
    #[default]
    Token,
    /// AppRole `role_id` + `secret_id`.
    Approle,
    /// The pod's service-account JWT.
    Kubernetes,
}

/// `vault.auth`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `token`, `approle` or `kubernetes`.
    #[serde(default)]
    pub method: AuthMethod,
    /// Token (`VAULT_TOKEN`), for `token`.
    #[serde(default)]
    pub token: SecretString,
    /// File holding the token (re-read at every login), for `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// AppRole role id.
    #[serde(default)]
    pub role_id: String,
    /// AppRole secret id.
    #[serde(default)]
    pub secret_id: SecretString,
    /// File holding the AppRole secret id.
    #[serde(default)]
    pub secret_id_file: Option<PathBuf>,
    /// Kubernetes auth role.
    #[serde(default)]
    pub role: String,
    /// Service-account token file (default: the in-pod path).
    #[serde(default)]
    pub jwt_file: Option<PathBuf>,
    /// Auth mount (default `approle` / `kubernetes`).
    #[serde(default)]
    pub mount: String,
}

/// Secrets engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretEngine {
    /// Dynamic database users with leases.
    Database,
    /// A static KV v2 secret (username/password fields), polled for new versions.
    Kv2,
}

/// `vault.secret`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// `database` or `kv2`.
    pub engine: SecretEngine,
    /// Engine mount (default `database` / `secret`).
    #[serde(default)]
    pub mount: String,
    /// Database role (database engine).
    #[serde(default)]
    pub role: String,
    /// Secret path (kv2 engine).
    #[serde(default)]
    pub path: String,
    /// How often a KV v2 secret is checked for a new version.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}

/// `vault.tls`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultTls {
    /// CA bundle (PEM) to verify Vault's certificate.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for Vault's TLS client auth.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// Environment aliases for the `vault` section.
pub const VAULT_ENV_ALIASES: &[(&str, &str)] = &[
    ("VAULT_ADDR", "vault.address"),
    ("VAULT_NAMESPACE", "vault.namespace"),
    ("VAULT_TOKEN", "vault.auth.token"),
];

/// How long a replaced lease stays valid for the plugin's old pool to drain.
const REVOKE_GRACE: Duration = Duration::from_secs(5);

const KUBERNETES_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

impl VaultConfig {
    /// Pure checks, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(secret) = &self.secret else {
            return problems;
        };
        if !(self.address.starts_with("http://") || self.address.starts_with("https://")) {
            problems.push(format!(
                "`vault.address`: {:?} must start with http:// or https://",
                self.address
            ));
        }
        match self.auth.method {
            AuthMethod::Token if self.auth.token.is_empty() && self.auth.token_file.is_none() => {
                problems.push(
                    "`vault.auth.token`: required for method token (or set `vault.auth.token_file`)"
                        .into(),
                )
            }
            AuthMethod::Approle if self.auth.role_id.is_empty() => {
                problems.push("`vault.auth.role_id`: required for method approle".into())
            }
            AuthMethod::Approle
                if self.auth.secret_id.is_empty() && self.auth.secret_id_file.is_none() =>
            {
                problems.push(
                    "`vault.auth.secret_id`: required for method approle (or `secret_id_file`)"
                        .into(),
                )
            }
            AuthMethod::Kubernetes if self.auth.role.is_empty() => {
                problems.push("`vault.auth.role`: required for method kubernetes".into())
            }
            _ => {}
        }
        match secret.engine {
            SecretEngine::Database if secret.role.is_empty() => {
                problems.push("`vault.secret.role`: required for engine database".into())
            }
            SecretEngine::Kv2 if secret.path.is_empty() => {
                problems.push("`vault.secret.path`: required for engine kv2".into())
            }
            _ => {}
        }
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            problems.push(
                "`vault.tls.client_cert`: client_cert and client_key must be set together".into(),
            );
        }
        problems
    }

    /// True when credentials come from Vault.
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }
}

/// A secret string: never printed by `Debug`. Serializes as the plain string
/// (config round trips need it; `--check-config` redacts by key name).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        SecretString(s.into())
    }
    /// The secret itself, for handing to a driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One set of backend credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: SecretString,
    /// Other string fields of a KV v2 secret (e.g. `mechanism`).
    pub extra: BTreeMap<String, String>,
    /// Increases with every new set (rotation counter or KV version).
    pub generation: u64,
    /// The lease, for dynamic credentials.
    pub lease: Option<Lease>,
}

/// A Vault lease on dynamic credentials.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Lease id (not a secret: it cannot be used without a token).
    pub id: String,
    /// Whether Vault will renew it.
    pub renewable: bool,
    /// When it runs out unless renewed.
    pub expires_at: Instant,
    /// The duration granted when first issued.
    pub initial: Duration,
}

/// What the source reports in health details.
#[derive(Debug, Clone, Default)]
struct Status {
    vault_reachable: bool,
    last_error: Option<String>,
    renewals: u64,
    rotations: u64,
    expires_at: Option<Instant>,
}

/// Keeps one set of credentials fresh. Dropping it (or [`shutdown`](Self::shutdown))
/// stops the background task.
pub struct CredentialSource {
    rx: watch::Receiver<Arc<Credentials>>,
    status: Arc<Mutex<Status>>,
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
        let mut worker = Worker::new(config.clone(), secret)?;
        worker.login().await?;
        let first = worker.fetch().await?;
        let status = Arc::new(Mutex::new(Status {
            vault_reachable: true,
            expires_at: first.lease.as_ref().map(|l| l.expires_at),
            ..Status::default()
        }));
        tracing::info!(
            engine = ?worker.secret.engine,
            username = %first.username,
            lease_seconds = first.lease.as_ref().map(|l| l.initial.as_secs()),
            "credentials obtained from Vault"
        );
        let (tx, rx) = watch::channel(Arc::new(first));
        let rotate = Arc::new(Notify::new());
        let cancel = shutdown.child_token();
        worker.status = status.clone();
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
        self.lock_status()
            .expires_at
            .is_some_and(|at| at <= Instant::now())
    }

    /// Health details: Vault reachability, rotations, seconds to expiry. No secrets.
    pub fn health_details(&self) -> BTreeMap<String, String> {
        let s = self.lock_status().clone();
        let mut d = BTreeMap::new();
        d.insert("vault_reachable".into(), s.vault_reachable.to_string());
        d.insert("vault_renewals".into(), s.renewals.to_string());
        d.insert("vault_rotations".into(), s.rotations.to_string());
        d.insert("vault_user".into(), self.current().username.clone());
        if let Some(at) = s.expires_at {
            let left = at.saturating_duration_since(Instant::now());
            d.insert("credentials_expire_in_s".into(), left.as_secs().to_string());
        }
        if let Some(err) = s.last_error {
            d.insert("vault_last_error".into(), err);
        }
        d
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
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

/// The background task's state.
struct Worker {
    config: VaultConfig,
    secret: SecretConfig,
    client: VaultClient,
    http: Http,
    token: Option<TokenState>,
    current: Option<Credentials>,
    generation: u64,
    status: Arc<Mutex<Status>>,
}

struct TokenState {
    /// When to renew (2/3 of the TTL); None for tokens that never expire.
    renew_at: Option<Instant>,
    renewable: bool,
    ttl: Duration,
}

/// Fraction of a lease or token TTL after which it is renewed.
fn renew_point(obtained: Instant, ttl: Duration) -> Instant {
    obtained + ttl * 2 / 3
}

impl Worker {
    fn new(config: VaultConfig, secret: SecretConfig) -> Result<Self, Error> {
        // reqwest is built without a bundled crypto provider (no aws-lc build
        // on 2 cores); ring is installed once per process. Err = already set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = build_client(&config, String::new())?;
        let http = Http::new(&config)?;
        Ok(Worker {
            config,
            secret,
            client,
            http,
            token: None,
            current: None,
            generation: 0,
            status: Arc::new(Mutex::new(Status::default())),
        })
    }

    fn mount(&self) -> &str {
        match (&self.secret.mount, self.secret.engine) {
            (m, _) if !m.is_empty() => m,
            (_, SecretEngine::Database) => "database",
            (_, SecretEngine::Kv2) => "secret",
        }
    }

    /// Logs in with the configured method and records the token's TTL.
    async fn login(&mut self) -> Result<(), Error> {
        let auth = &self.config.auth;
        let token = match auth.method {
            AuthMethod::Token => match &auth.token_file {
                Some(path) => read_secret_file(path, "vault.auth.token_file")?,
                None => auth.token.expose().to_string(),
            },
            AuthMethod::Approle => {
                let secret_id = match &auth.secret_id_file {
                    Some(path) => read_secret_file(path, "vault.auth.secret_id_file")?,
                    None => auth.secret_id.expose().to_string(),
                };
                let mount = if auth.mount.is_empty() {
                    "approle"
                } else {
                    &auth.mount
                };
                vaultrs::auth::approle::login(&self.client, mount, &auth.role_id, &secret_id)
                    .await
                    .map_err(|e| vault_error("AppRole login", e))?
                    .client_token
            }
            AuthMethod::Kubernetes => {
                let path = auth
                    .jwt_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(KUBERNETES_JWT));
                let jwt = read_secret_file(&path, "vault.auth.jwt_file")?;
                let mount = if auth.mount.is_empty() {
                    "kubernetes"
                } else {
                    &auth.mount
                };
                vaultrs::auth::kubernetes::login(&self.client, mount, &auth.role, &jwt)
                    .await
                    .map_err(|e| vault_error("Kubernetes login", e))?
                    .client_token
            }
        };
        self.client.set_token(&token);
        self.http.token = SecretString::new(token);
        let info = vaultrs::token::lookup_self(&self.client)
            .await
            .map_err(|e| vault_error("token lookup", e))?;
        let ttl = Duration::from_secs(info.ttl);
        self.token = Some(TokenState {
            renew_at: (info.ttl > 0).then(|| renew_point(Instant::now(), ttl)),
            renewable: info.renewable.unwrap_or(false),
            ttl,
        });
        tracing::info!(method = ?auth.method, ttl_s = info.ttl, renewable = info.renewable.unwrap_or(false), "logged in to Vault");
        Ok(())
    }

    /// Renews the token, or logs in again when it cannot be renewed or is
    /// near its max TTL (Vault then grants less than asked).
    async fn refresh_token(&mut self) -> Result<(), Error> {
        let Some(token) = &self.token else {
            return self.login().await;
        };
        if !token.renewable {
            return self.login().await;
        }
        let asked = token.ttl;
        match vaultrs::token::renew_self(&self.client, Some(&format!("{}s", asked.as_secs()))).await
        {
            Ok(auth) => {
                let granted = Duration::from_secs(auth.lease_duration);
                if granted < asked / 2 {
                    tracing::info!(
                        granted_s = granted.as_secs(),
                        "Vault token near its max TTL; logging in again"
                    );
                    return self.login().await;
                }
                self.token = Some(TokenState {
                    renew_at: Some(renew_point(Instant::now(), granted)),
                    renewable: auth.renewable,
                    ttl: granted,
                });
                Ok(())
            }
            Err(e) if is_client_error(&e) => {
                tracing::info!(error = %vault_error("token renewal", e), "logging in to Vault again");
                self.login().await
            }
            Err(e) => Err(vault_error("token renewal", e)),
        }
    }

    /// Fetches a new set of credentials.
    async fn fetch(&mut self) -> Result<Credentials, Error> {
        self.generation += 1;
        let mount = self.mount().to_string();
        let creds = match self.secret.engine {
            SecretEngine::Database => {
                let got = self.http.database_creds(&mount, &self.secret.role).await?;
                let initial = Duration::from_secs(got.lease_duration);
                Credentials {
                    username: got.data.username,
                    password: SecretString::new(got.data.password),
                    extra: BTreeMap::new(),
                    generation: self.generation,
                    lease: Some(Lease {
                        id: got.lease_id,
                        renewable: got.renewable,
                        expires_at: Instant::now() + initial,
                        initial,
                    }),
                }
            }
            SecretEngine::Kv2 => {
                let meta = vaultrs::kv2::read_metadata(&self.client, &mount, &self.secret.path)
                    .await
                    .map_err(|e| vault_error("KV v2 metadata read", e))?;
                let data: BTreeMap<String, serde_json::Value> =
                    vaultrs::kv2::read(&self.client, &mount, &self.secret.path)
                        .await
                        .map_err(|e| vault_error("KV v2 read", e))?;
                let text = |k: &str| {
                    data.get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string()
                };
                let extra = data
                    .iter()
                    .filter(|(k, _)| *k != "username" && *k != "password")
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect();
                self.generation = meta.current_version;
                Credentials {
                    username: text("username"),
                    password: SecretString::new(text("password")),
                    extra,
                    generation: meta.current_version,
                    lease: None,
                }
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
        match self.http.renew_lease(&lease.id, lease.initial).await {
            Ok(granted) => {
                let granted = Duration::from_secs(granted);
                // Near the role's max TTL Vault grants less than asked: rotate
                // now, while the old credentials still have the most time left
                // for the plugin to swap pools and drain the old one.
                if granted < lease.initial {
                    return Ok(false);
                }
                if let Some(Credentials { lease: Some(l), .. }) = self.current.as_mut() {
                    l.expires_at = Instant::now() + granted;
                }
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                status.renewals += 1;
                status.expires_at = Some(Instant::now() + granted);
                Ok(true)
            }
            Err(Error::Config(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn set_status(&self, reachable: bool, error: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.vault_reachable != reachable {
            if reachable {
                tracing::info!("Vault reachable again");
            } else {
                tracing::warn!(
                    error = error.as_deref().unwrap_or(""),
                    "Vault unreachable; keeping current credentials"
                );
            }
        }
        status.vault_reachable = reachable;
        status.last_error = error;
    }

    fn next_wakeup(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let token = self.token.as_ref().and_then(|t| t.renew_at).unwrap_or(far);
        let secret = match (
            &self.secret.engine,
            self.current.as_ref().and_then(|c| c.lease.as_ref()),
        ) {
            (SecretEngine::Database, Some(lease)) => {
                let left = lease.expires_at.saturating_duration_since(Instant::now());
                Instant::now() + left * 2 / 3
            }
            (SecretEngine::Kv2, _) => Instant::now() + self.secret.poll_interval,
            _ => Instant::now(),
        };
        token.min(secret)
    }

    /// One round of maintenance: token, then lease or KV version. Returns the
    /// new credentials if they changed.
    async fn tick(&mut self, force_rotation: bool) -> Result<Option<Credentials>, Error> {
        if self
            .token
            .as_ref()
            .and_then(|t| t.renew_at)
            .is_some_and(|at| at <= Instant::now())
        {
            self.refresh_token().await?;
        }
        match self.secret.engine {
            SecretEngine::Database => {
                let due = self
                    .current
                    .as_ref()
                    .and_then(|c| c.lease.as_ref())
                    .is_none_or(|l| {
                        renew_point(l.expires_at - l.initial, l.initial) <= Instant::now()
                            || l.expires_at.saturating_duration_since(Instant::now())
                                <= l.initial / 3
                    });
                if !force_rotation && (!due || self.renew_lease().await?) {
                    return Ok(None);
                }
                let old = self.current.as_ref().and_then(|c| c.lease.clone());
                let new = self.fetch().await?;
                if let Some(old) = old {
                    self.revoke_later(old);
                }
                Ok(Some(new))
            }
            SecretEngine::Kv2 => {
                let mount = self.mount().to_string();
                let meta = vaultrs::kv2::read_metadata(&self.client, &mount, &self.secret.path)
                    .await
                    .map_err(|e| vault_error("KV v2 metadata read", e))?;
                if force_rotation || meta.current_version != self.generation {
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
        let http = self.http.clone();
        // A fixed grace for the plugin to swap and drain: if the lease runs
        // out first, Vault revokes it itself and this call is a no-op.
        let grace = REVOKE_GRACE;
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Err(e) = http.revoke_lease(&lease.id).await {
                tracing::debug!(error = %e, "revoking a replaced lease failed; Vault expires it anyway");
            }
        });
    }

    async fn run(
        mut self,
        tx: watch::Sender<Arc<Credentials>>,
        rotate: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(250);
        let mut force = false;
        loop {
            let wake = if self
                .status
                .lock()
                .map(|s| s.vault_reachable)
                .unwrap_or(true)
            {
                self.next_wakeup()
            } else {
                Instant::now() + backoff
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = rotate.notified() => {
                    tracing::info!("credentials rejected by the backend; fetching new ones");
                    force = true;
                }
                _ = cancel.cancelled() => break,
            }
            match self.tick(force).await {
                Ok(changed) => {
                    force = false;
                    backoff = Duration::from_millis(250);
                    self.set_status(true, None);
                    if let Some(creds) = changed {
                        {
                            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                            status.rotations += 1;
                            status.expires_at = creds.lease.as_ref().map(|l| l.expires_at);
                        }
                        tracing::info!(username = %creds.username, generation = creds.generation, "rotated credentials");
                        let _ = tx.send(Arc::new(creds));
                    }
                }
                Err(e) => {
                    self.set_status(false, Some(e.to_string()));
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Leave no dynamic user behind when the plugin stops.
        if let Some(lease) = self.current.as_ref().and_then(|c| c.lease.as_ref()) {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.http.revoke_lease(&lease.id))
                .await;
        }
    }
}

fn read_secret_file(path: &std::path::Path, key: &str) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::Unavailable(format!("`{key}`: cannot read {}: {e}", path.display())))
}

fn build_client(config: &VaultConfig, token: String) -> Result<VaultClient, Error> {
    let mut settings = VaultClientSettingsBuilder::default();
    settings
        .address(&config.address)
        .token(token)
        .timeout(Some(config.request_timeout));
    if !config.namespace.is_empty() {
        settings.namespace(Some(config.namespace.clone()));
    }
    if let Some(ca) = &config.tls.ca_cert {
        settings.ca_certs(vec![ca.display().to_string()]);
    }
    let settings = settings
        .build()
        .map_err(|e| Error::config(format!("`vault.address`: {e}")))?;
    VaultClient::new(settings).map_err(|e| Error::config(format!("`vault`: {e}")))
}

/// Client-side (4xx) errors mean "this token/lease is no good": log in again
/// or fetch new credentials, rather than retry.
fn is_client_error(e: &vaultrs::error::ClientError) -> bool {
    matches!(e, vaultrs::error::ClientError::APIError { code, .. } if (400..500).contains(code))
}

fn vault_error(what: &str, e: vaultrs::error::ClientError) -> Error {
    match &e {
        vaultrs::error::ClientError::APIError { code, errors } => Error::Unavailable(format!(
            "Vault {what} failed: HTTP {code}: {}",
            errors.join("; ")
        )),
        _ => Error::Unavailable(format!("Vault {what} failed: {e}")),
    }
}

/// The calls vaultrs lacks, over plain HTTP: database credentials with their
/// lease, lease renewal and lease revocation.
#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    address: String,
    namespace: String,
    token: SecretString,
}

#[derive(Deserialize)]
struct DbCredsResponse {
    lease_id: String,
    lease_duration: u64,
    renewable: bool,
    data: DbCreds,
}

#[derive(Deserialize)]
struct DbCreds {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct LeaseResponse {
    lease_duration: u64,
}

impl Http {
    fn new(config: &VaultConfig) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder().timeout(config.request_timeout);
        if let Some(ca) = &config.tls.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::config(format!(
                    "`vault.tls.ca_cert`: cannot read {}: {e}",
                    ca.display()
                ))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Error::config(format!("`vault.tls.ca_cert`: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Http {
            client: builder
                .build()
                .map_err(|e| Error::config(format!("`vault`: HTTP client: {e}")))?,
            address: config.address.trim_end_matches('/').to_string(),
            namespace: config.namespace.clone(),
            token: SecretString::new(String::new()),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", self.token.expose());
        if !self.namespace.is_empty() {
            req = req.header("X-Vault-Namespace", &self.namespace);
        }
        req
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<T>, Error> {
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("Vault {what} failed: {}", e.without_url())))?;
        let status = resp.status();
        if status.is_client_error() {
            // Lease gone or token lacks permission: the caller fetches anew.
            return Err(Error::config(format!(
                "Vault {what} refused: HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(Error::Unavailable(format!(
                "Vault {what} failed: HTTP {status}"
            )));
        }
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        resp.json::<T>().await.map(Some).map_err(|e| {
            Error::Unavailable(format!("Vault {what}: bad response: {}", e.without_url()))
        })
    }

    async fn database_creds(&self, mount: &str, role: &str) -> Result<DbCredsResponse, Error> {
        let req = self.request(reqwest::Method::GET, &format!("{mount}/creds/{role}"));
        self.send("database credentials", req)
            .await
            .and_then(|r| {
                r.ok_or_else(|| Error::Unavailable("Vault returned no credentials".into()))
            })
            .map_err(|e| match e {
                Error::Config(p) => Error::Unavailable(p.join("; ")),
                other => other,
            })
    }

    async fn renew_lease(&self, lease_id: &str, increment: Duration) -> Result<u64, Error> {
        let req = self
            .request(reqwest::Method::PUT, "sys/leases/renew")
            .json(&serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() }));
        Ok(self
            .send::<LeaseResponse>("lease renewal", req)
            .await?
            .map(|r| r.lease_duration)
            .unwrap_or(0))
    }

    async fn revoke_lease(&self, lease_id: &str) -> Result<(), Error> {
        let req = self
            .request(reqwest::Method::PUT, "sys/leases/revoke")
            .json(&serde_json::json!({ "lease_id": lease_id }));
        self.send::<serde_json::Value>("lease revocation", req)
            .await
            .map(|_| ())
    }
}
