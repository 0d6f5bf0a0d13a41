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

    pub(super) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("{}/v1/{path}", self.address))
            .header("X-Vault-Token", self.token.expose());
        if !self.namespace.is_empty() {
            req = req.header("X-Vault-Namespace", &self.namespace);
        }
        req
    }

    pub(super) async fn send<T: serde::de::DeserializeOwned>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::mpsc;

    /// A stand-in for Vault that answers every request with `status` and
    /// `body`, and hands over each request's text.
    async fn canned(
        status: &'static str,
        body: &'static str,
    ) -> (VaultConfig, mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let request = read_request(&mut conn).await;
                let _ = tx.send(request);
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        let config = VaultConfig {
            address: format!("http://{addr}/"),
            namespace: "team-a".into(),
            ..VaultConfig::default()
        };
        (config, rx)
    }

    /// Reads one request: the head, then `content-length` bytes of body.
    async fn read_request(conn: &mut tokio::net::TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).await.unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_lowercase();
            let Some(end) = text.find("\r\n\r\n") else {
                if n == 0 {
                    return text;
                }
                continue;
            };
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if n == 0 || buf.len() >= end + 4 + length {
                return String::from_utf8_lossy(&buf).into_owned();
            }
        }
    }

    fn http(config: &VaultConfig) -> Http {
        // As the worker does before building clients.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut http = Http::new(config).unwrap();
        http.set_token("s.tok3n");
        http
    }

    #[tokio::test]
    async fn a_renewal_sends_token_namespace_and_increment_and_reads_the_grant() {
        let (config, mut requests) = canned("200 OK", r#"{"lease_duration":45}"#).await;
        let granted = http(&config)
            .renew_lease("database/creds/prism/abc", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(granted, 45);
        let request = requests.recv().await.unwrap();
        let lower = request.to_lowercase();
        assert!(lower.starts_with("put /v1/sys/leases/renew "), "{request}");
        assert!(lower.contains("x-vault-token: s.tok3n"), "{request}");
        assert!(lower.contains("x-vault-namespace: team-a"), "{request}");
        assert!(request.contains(r#""lease_id":"database/creds/prism/abc""#));
        assert!(request.contains(r#""increment":60"#), "{request}");
    }

    /// The error of a lease renewal Vault answers with `status` and `body`.
    async fn renewal_error(status: &'static str, body: &'static str) -> Error {
        let (config, _requests) = canned(status, body).await;
        let renewed = http(&config)
            .renew_lease("l", Duration::from_secs(60))
            .await;
        renewed.expect_err("Vault refused the renewal")
    }

    #[tokio::test]
    async fn a_4xx_is_a_refusal_and_a_5xx_an_outage() {
        let err = renewal_error("400 Bad Request", r#"{"errors":["lease not found"]}"#).await;
        let Error::Config(problems) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            problems,
            ["Vault lease renewal refused: HTTP 400 Bad Request"]
        );
        let err = renewal_error("503 Service Unavailable", "{}").await;
        let Error::Unavailable(text) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            text,
            "Vault lease renewal failed: HTTP 503 Service Unavailable"
        );
    }

    #[tokio::test]
    async fn a_revocation_answered_with_no_content_succeeds() {
        let (config, mut requests) = canned("204 No Content", "").await;
        http(&config).revoke_lease("l").await.unwrap();
        let request = requests.recv().await.unwrap().to_lowercase();
        assert!(
            request.starts_with("put /v1/sys/leases/revoke "),
            "{request}"
        );
    }

    #[tokio::test]
    async fn database_credentials_keep_their_lease_and_a_refusal_is_an_outage() {
        let body = r#"{"lease_id":"db/creds/prism/x","lease_duration":300,"renewable":true,
            "data":{"username":"v-prism-x","password":"pw"}}"#;
        let (config, mut requests) = canned("200 OK", body).await;
        let got = http(&config).database_creds("db", "prism").await.unwrap();
        assert_eq!(
            (got.lease_id.as_str(), got.lease_duration, got.renewable),
            ("db/creds/prism/x", 300, true)
        );
        assert_eq!(
            (got.data.username.as_str(), got.data.password.as_str()),
            ("v-prism-x", "pw")
        );
        let request = requests.recv().await.unwrap().to_lowercase();
        assert!(request.starts_with("get /v1/db/creds/prism "), "{request}");
        // No credentials is not a config problem: the worker retries.
        let (config, _requests) = canned("403 Forbidden", "{}").await;
        // (`.err()`: the response holds a password and has no `Debug`.)
        let err = http(&config).database_creds("db", "prism").await.err();
        assert!(matches!(err, Some(Error::Unavailable(_))), "{err:?}");
    }

    #[tokio::test]
    async fn an_unreachable_vault_is_an_outage_whose_text_holds_no_token() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let config = VaultConfig {
            address: format!("http://{addr}"),
            ..VaultConfig::default()
        };
        let err = http(&config).revoke_lease("l").await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Unavailable(_)), "{text}");
        assert!(
            text.starts_with("backend unavailable: Vault lease revocation failed"),
            "{text}"
        );
        assert!(!text.contains("s.tok3n"), "{text}");
    }
}
