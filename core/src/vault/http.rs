//! The calls vaultrs lacks, over plain HTTP: database credentials with their
//! lease (vaultrs's `database::role::creds` drops `lease_id`,
//! `lease_duration` and `renewable`), lease renewal and lease revocation.
//! A 4xx answer is reported as `Error::Config` ("refused": the caller fetches
//! anew), anything else that fails as `Error::Unavailable`.

use std::time::Duration;

use serde::Deserialize;

use super::config::VaultConfig;
use super::credentials::SecretString;
use crate::Error;

/// A plain HTTP client for Vault, with the token the worker logged in with.
#[derive(Clone)]
pub(super) struct Http {
    client: reqwest::Client,
    address: String,
    namespace: String,
    token: SecretString,
}

/// `<mount>/creds/<role>`: a new database user and its lease.
#[derive(Deserialize)]
pub(super) struct DbCredsResponse {
    pub(super) lease_id: String,
    pub(super) lease_duration: u64,
    pub(super) renewable: bool,
    pub(super) data: DbCreds,
}

/// The user a database role minted.
#[derive(Deserialize)]
pub(super) struct DbCreds {
    pub(super) username: String,
    pub(super) password: String,
}

#[derive(Deserialize)]
struct LeaseResponse {
    lease_duration: u64,
}

impl Http {
    /// A client without a token yet; reads the CA bundle.
    pub(super) fn new(config: &VaultConfig) -> Result<Self, Error> {
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

    /// Sends `token` from now on.
    pub(super) fn set_token(&mut self, token: &str) {
        self.token = SecretString::new(token);
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

    /// A new user from a database role.
    pub(super) async fn database_creds(
        &self,
        mount: &str,
        role: &str,
    ) -> Result<DbCredsResponse, Error> {
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

    /// Renews a lease by `increment`; returns the seconds Vault granted.
    pub(super) async fn renew_lease(
        &self,
        lease_id: &str,
        increment: Duration,
    ) -> Result<u64, Error> {
        let req = self
            .request(reqwest::Method::PUT, "sys/leases/renew")
            .json(&serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() }));
        Ok(self
            .send::<LeaseResponse>("lease renewal", req)
            .await?
            .map(|r| r.lease_duration)
            .unwrap_or(0))
    }

    /// Revokes a lease (and so drops its database user).
    pub(super) async fn revoke_lease(&self, lease_id: &str) -> Result<(), Error> {
        let req = self
            .request(reqwest::Method::PUT, "sys/leases/revoke")
            .json(&serde_json::json!({ "lease_id": lease_id }));
        self.send::<serde_json::Value>("lease revocation", req)
            .await
            .map(|_| ())
    }
}
