//! The calls made through vaultrs: login (token, token file, AppRole,
//! Kubernetes), token lookup and renewal, and KV v2 reads. Its errors are
//! mapped to [`Error`] here, so no other module sees vaultrs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::config::{AuthConfig, AuthMethod, VaultConfig};
use crate::Error;

const KUBERNETES_JWT: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// A vaultrs client and the token it sends.
pub(super) struct Client {
    inner: VaultClient,
}

/// The token as Vault describes it.
pub(super) struct TokenInfo {
    /// Time left; zero for a token that never expires.
    pub(super) ttl: Duration,
    pub(super) renewable: bool,
}

/// Vault's answer to renewing the token.
pub(super) enum TokenRenewal {
    /// Renewed for `ttl`.
    Granted(TokenInfo),
    /// Refused (4xx): the token is no good any more; log in again.
    Refused(Error),
}

impl Client {
    /// A client without a token yet.
    pub(super) fn new(config: &VaultConfig) -> Result<Self, Error> {
        let mut settings = VaultClientSettingsBuilder::default();
        settings
            .address(&config.address)
            .token(String::new())
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
        let inner =
            VaultClient::new(settings).map_err(|e| Error::config(format!("`vault`: {e}")))?;
        Ok(Client { inner })
    }

    /// Obtains a token with the configured method: read from the config or
    /// its file (re-read every time, so a rotated file is picked up), or
    /// exchanged for AppRole or Kubernetes credentials.
    pub(super) async fn login(&self, auth: &AuthConfig) -> Result<String, Error> {
        match auth.method {
            AuthMethod::Token => match &auth.token_file {
                Some(path) => read_secret_file(path, "vault.auth.token_file"),
                None => Ok(auth.token.expose().to_string()),
            },
            AuthMethod::Approle => {
                let secret_id = match &auth.secret_id_file {
                    Some(path) => read_secret_file(path, "vault.auth.secret_id_file")?,
                    None => auth.secret_id.expose().to_string(),
                };
                let mount = auth.mount_or_default();
                vaultrs::auth::approle::login(&self.inner, mount, &auth.role_id, &secret_id)
                    .await
                    .map(|a| a.client_token)
                    .map_err(|e| vault_error("AppRole login", e))
            }
            AuthMethod::Kubernetes => {
                let path = auth
                    .jwt_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(KUBERNETES_JWT));
                let jwt = read_secret_file(&path, "vault.auth.jwt_file")?;
                let mount = auth.mount_or_default();
                vaultrs::auth::kubernetes::login(&self.inner, mount, &auth.role, &jwt)
                    .await
                    .map(|a| a.client_token)
                    .map_err(|e| vault_error("Kubernetes login", e))
            }
        }
    }

    /// Sends `token` from now on.
    pub(super) fn set_token(&mut self, token: &str) {
        self.inner.set_token(token);
    }

    /// The current token's TTL and renewability.
    pub(super) async fn lookup_self(&self) -> Result<TokenInfo, Error> {
        let info = vaultrs::token::lookup_self(&self.inner)
            .await
            .map_err(|e| vault_error("token lookup", e))?;
        Ok(TokenInfo {
            ttl: Duration::from_secs(info.ttl),
            renewable: info.renewable.unwrap_or(false),
        })
    }

    /// Asks Vault to extend the token by `asked`. `Err` means Vault could
    /// not be reached; a refusal is [`TokenRenewal::Refused`].
    pub(super) async fn renew_self(&self, asked: Duration) -> Result<TokenRenewal, Error> {
        let increment = format!("{}s", asked.as_secs());
        match vaultrs::token::renew_self(&self.inner, Some(&increment)).await {
            Ok(auth) => Ok(TokenRenewal::Granted(TokenInfo {
                ttl: Duration::from_secs(auth.lease_duration),
                renewable: auth.renewable,
            })),
            Err(e) if is_client_error(&e) => {
                Ok(TokenRenewal::Refused(vault_error("token renewal", e)))
            }
            Err(e) => Err(vault_error("token renewal", e)),
        }
    }

    /// The current version of a KV v2 secret.
    pub(super) async fn kv2_version(&self, mount: &str, path: &str) -> Result<u64, Error> {
        vaultrs::kv2::read_metadata(&self.inner, mount, path)
            .await
            .map(|meta| meta.current_version)
            .map_err(|e| vault_error("KV v2 metadata read", e))
    }

    /// The current version's fields of a KV v2 secret.
    pub(super) async fn kv2_read(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, Error> {
        vaultrs::kv2::read(&self.inner, mount, path)
            .await
            .map_err(|e| vault_error("KV v2 read", e))
    }
}

fn read_secret_file(path: &Path, key: &str) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| Error::Unavailable(format!("`{key}`: cannot read {}: {e}", path.display())))
}

/// Client-side (4xx) errors mean "this token/lease is no good": log in again
/// or fetch new credentials, rather than retry.
fn is_client_error(e: &ClientError) -> bool {
    matches!(e, ClientError::APIError { code, .. } if (400..500).contains(code))
}

fn vault_error(what: &str, e: ClientError) -> Error {
    match &e {
        ClientError::APIError { code, errors } => Error::Unavailable(format!(
            "Vault {what} failed: HTTP {code}: {}",
            errors.join("; ")
        )),
        _ => Error::Unavailable(format!("Vault {what} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::SecretString;

    fn client() -> Client {
        // As the worker does before building clients (reqwest has no
        // bundled crypto provider here).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(&VaultConfig::default()).unwrap()
    }

    #[test]
    fn refusals_are_told_from_outages() {
        let refused = ClientError::APIError {
            code: 403,
            errors: vec!["permission denied".into()],
        };
        assert!(is_client_error(&refused));
        let e = vault_error("token renewal", refused);
        assert_eq!(
            e.to_string(),
            "backend unavailable: Vault token renewal failed: HTTP 403: permission denied"
        );
        let sealed = ClientError::APIError {
            code: 503,
            errors: vec!["Vault is sealed".into()],
        };
        assert!(!is_client_error(&sealed));
    }

    #[tokio::test]
    async fn a_token_file_is_read_and_trimmed_at_every_login() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s.first\n").unwrap();
        let auth = AuthConfig {
            token_file: Some(file.clone()),
            ..AuthConfig::default()
        };
        let client = client();
        assert_eq!(client.login(&auth).await.unwrap(), "s.first");
        std::fs::write(&file, "s.second").unwrap();
        assert_eq!(client.login(&auth).await.unwrap(), "s.second");
        let direct = AuthConfig {
            token: SecretString::new("s.direct"),
            ..AuthConfig::default()
        };
        assert_eq!(client.login(&direct).await.unwrap(), "s.direct");
    }

    #[tokio::test]
    async fn a_missing_secret_file_names_its_key_and_not_its_content() {
        let auth = AuthConfig {
            method: AuthMethod::Kubernetes,
            role: "prism".into(),
            jwt_file: Some("/nonexistent/jwt".into()),
            ..AuthConfig::default()
        };
        let client = client();
        let err = client.login(&auth).await.unwrap_err().to_string();
        assert!(
            err.contains("`vault.auth.jwt_file`: cannot read /nonexistent/jwt"),
            "{err}"
        );
    }
}
