//! What the credential source hands out: one set of backend credentials, the
//! lease on dynamic ones, and [`SecretString`], which never prints its value.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

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
    /// The lease, for dynamic credentials (for a PKI certificate: not
    /// renewable, running out when the certificate expires).
    pub lease: Option<Lease>,
    /// The client certificate, for the PKI engine (`username` is its CN).
    pub certificate: Option<ClientCertificate>,
}

/// A client certificate and its key from Vault's PKI engine: what a backend
/// needs for `cert` authentication (PostgreSQL) or mTLS (Kafka).
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The issuing chain (PEM each; `ca_chain`, else `issuing_ca`).
    pub chain_pem: Vec<String>,
    /// The private key (PEM); never printed.
    pub key_pem: SecretString,
    /// The serial number (hex with colons), for logs.
    pub serial: String,
}

impl ClientCertificate {
    /// The certificate followed by its chain, one PEM text (what a TLS
    /// client sends).
    pub fn cert_chain_pem(&self) -> String {
        let mut all = self.cert_pem.trim_end().to_string();
        for ca in &self.chain_pem {
            all.push('\n');
            all.push_str(ca.trim_end());
        }
        all.push('\n');
        all
    }
}

/// A Vault lease on dynamic credentials.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Lease id (not a secret: it cannot be used without a token).
    pub id: String,
    /// Whether Vault will renew it.
    pub renewable: bool,
    /// When it runs out unless renewed (on tokio's clock, so a paused test
    /// clock drives renewal).
    pub expires_at: Instant,
    /// The duration granted when first issued.
    pub initial: Duration,
}

impl Credentials {
    /// A set read from a KV v2 secret at `version`: its `username` and
    /// `password` fields, and every other string field in `extra`. A missing
    /// or non-string field reads as empty.
    pub(super) fn from_kv2(data: &BTreeMap<String, serde_json::Value>, version: u64) -> Self {
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
        Credentials {
            username: text("username"),
            password: SecretString::new(text("password")),
            extra,
            generation: version,
            lease: None,
            certificate: None,
        }
    }
}

impl Lease {
    /// A lease Vault just issued for `duration`.
    pub(super) fn issued(id: String, renewable: bool, duration: Duration, now: Instant) -> Self {
        Lease {
            id,
            renewable,
            expires_at: now + duration,
            initial: duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_debug_output() {
        let creds = Credentials {
            username: "v-prism-abc".into(),
            password: SecretString::new("hunter2"),
            extra: BTreeMap::new(),
            generation: 1,
            lease: None,
            certificate: None,
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("v-prism-abc"));
        assert_eq!(creds.password.expose(), "hunter2");
        assert!(SecretString::default().is_empty());
    }

    #[test]
    fn secret_strings_serialize_as_plain_strings() {
        let s: SecretString = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(s.expose(), "tok");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"tok\"");
    }

    #[test]
    fn a_kv2_secret_splits_into_user_password_and_extra_strings() {
        let data: BTreeMap<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "username": "alice", "password": "pw", "mechanism": "SCRAM-SHA-512", "port": 9092
        }))
        .unwrap();
        let creds = Credentials::from_kv2(&data, 7);
        assert_eq!(creds.username, "alice");
        assert_eq!(creds.password.expose(), "pw");
        assert_eq!(creds.generation, 7);
        assert!(creds.lease.is_none());
        // Non-string fields are not credentials material.
        assert_eq!(
            creds.extra.into_iter().collect::<Vec<_>>(),
            [("mechanism".to_string(), "SCRAM-SHA-512".to_string())]
        );
        let empty = Credentials::from_kv2(&BTreeMap::new(), 1);
        assert_eq!((empty.username.as_str(), empty.password.expose()), ("", ""));
    }

    #[test]
    fn an_issued_lease_expires_after_its_duration() {
        let now = Instant::now();
        let lease = Lease::issued(
            "db/creds/prism/x".into(),
            true,
            Duration::from_secs(60),
            now,
        );
        assert_eq!(lease.expires_at, now + Duration::from_secs(60));
        assert_eq!(lease.initial, Duration::from_secs(60));
    }
}
