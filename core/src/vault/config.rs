//! The `vault:` config section (login method, what to read, TLS, timeouts),
//! its environment aliases and its pure validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::credentials::SecretString;

/// The `vault:` config section. Vault is used only when `secret` is set, so a
/// stray `VAULT_ADDR` in the environment does not switch it on.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultConfig {
    /// Vault address (`VAULT_ADDR`).
    pub address: String,
    /// Enterprise/OpenBao namespace (`VAULT_NAMESPACE`); empty = none.
    pub namespace: String,
    /// How to log in.
    pub auth: AuthConfig,
    /// What to read; unset = Vault is not used.
    pub secret: Option<SecretConfig>,
    /// TLS to Vault.
    pub tls: VaultTls,
    /// Timeout of one Vault HTTP request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            address: "http://127.0.0.1:8200".to_string(),
            namespace: String::new(),
            auth: AuthConfig::default(),
            secret: None,
            tls: VaultTls::default(),
            request_timeout: Duration::from_secs(5),
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
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `token`, `approle` or `kubernetes`.
    pub method: AuthMethod,
    /// Token (`VAULT_TOKEN`), for `token`.
    pub token: SecretString,
    /// File holding the token (re-read at every login), for `token`.
    pub token_file: Option<PathBuf>,
    /// AppRole role id.
    pub role_id: String,
    /// AppRole secret id.
    pub secret_id: SecretString,
    /// File holding the AppRole secret id.
    pub secret_id_file: Option<PathBuf>,
    /// Kubernetes auth role.
    pub role: String,
    /// Service-account token file (default: the in-pod path).
    pub jwt_file: Option<PathBuf>,
    /// Auth mount (default `approle` / `kubernetes`).
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
    /// Client certificates from the PKI engine (`<mount>/issue/<role>`),
    /// re-issued at 2/3 of their life.
    Pki,
}

/// `vault.secret`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretConfig {
    /// `database`, `kv2` or `pki`.
    pub engine: SecretEngine,
    /// Engine mount (default `database` / `secret` / `pki`).
    #[serde(default)]
    pub mount: String,
    /// Database role (database engine) or PKI role (pki engine).
    #[serde(default)]
    pub role: String,
    /// The certificate's common name (pki engine; for PostgreSQL the
    /// database user).
    #[serde(default)]
    pub common_name: String,
    /// The certificate's TTL (pki engine); unset = the role's.
    #[serde(default, with = "humantime_serde")]
    pub ttl: Option<Duration>,
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
#[serde(default, deny_unknown_fields)]
pub struct VaultTls {
    /// CA bundle (PEM) to verify Vault's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM), for Vault's TLS client auth.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM).
    pub client_key: Option<PathBuf>,
}

/// Environment aliases for the `vault` section.
pub const VAULT_ENV_ALIASES: &[(&str, &str)] = &[
    ("VAULT_ADDR", "vault.address"),
    ("VAULT_NAMESPACE", "vault.namespace"),
    ("VAULT_TOKEN", "vault.auth.token"),
];

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
        problems.extend(self.auth.problem());
        match secret.engine {
            SecretEngine::Database if secret.role.is_empty() => {
                problems.push("`vault.secret.role`: required for engine database".into())
            }
            SecretEngine::Kv2 if secret.path.is_empty() => {
                problems.push("`vault.secret.path`: required for engine kv2".into())
            }
            SecretEngine::Pki => {
                if secret.role.is_empty() {
                    problems.push("`vault.secret.role`: required for engine pki".into());
                }
                if secret.common_name.is_empty() {
                    problems.push("`vault.secret.common_name`: required for engine pki".into());
                }
                if secret.ttl.is_some_and(|ttl| ttl < Duration::from_secs(3)) {
                    problems.push(
                        "`vault.secret.ttl`: at least 3s (a certificate is re-issued at 2/3 of its life)"
                            .into(),
                    );
                }
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

impl AuthConfig {
    /// The first missing setting of the chosen login method, if any.
    fn problem(&self) -> Option<String> {
        match self.method {
            AuthMethod::Token if self.token.is_empty() && self.token_file.is_none() => Some(
                "`vault.auth.token`: required for method token (or set `vault.auth.token_file`)"
                    .into(),
            ),
            AuthMethod::Approle if self.role_id.is_empty() => {
                Some("`vault.auth.role_id`: required for method approle".into())
            }
            AuthMethod::Approle if self.secret_id.is_empty() && self.secret_id_file.is_none() => {
                Some(
                    "`vault.auth.secret_id`: required for method approle (or `secret_id_file`)"
                        .into(),
                )
            }
            AuthMethod::Kubernetes if self.role.is_empty() => {
                Some("`vault.auth.role`: required for method kubernetes".into())
            }
            _ => None,
        }
    }

    /// The auth mount, or the method's conventional one.
    pub(super) fn mount_or_default(&self) -> &str {
        match (self.mount.as_str(), self.method) {
            (m, _) if !m.is_empty() => m,
            (_, AuthMethod::Kubernetes) => "kubernetes",
            _ => "approle",
        }
    }
}

impl SecretConfig {
    /// The engine mount, or the engine's conventional one.
    pub(super) fn mount_or_default(&self) -> &str {
        match (self.mount.as_str(), self.engine) {
            (m, _) if !m.is_empty() => m,
            (_, SecretEngine::Database) => "database",
            (_, SecretEngine::Kv2) => "secret",
            (_, SecretEngine::Pki) => "pki",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
address: https://vault.example:8200
namespace: team-a
auth:
  method: approle
  role_id: prism
  secret_id: s3cr3t-id
  mount: approle-prism
secret:
  engine: database
  mount: db
  role: prism
  poll_interval: 10s
tls:
  ca_cert: /etc/vault/ca.pem
  client_cert: /etc/vault/client.pem
  client_key: /etc/vault/client.key
request_timeout: 2s
"#;

    fn with_secret(engine: SecretEngine) -> VaultConfig {
        VaultConfig {
            auth: AuthConfig {
                token: SecretString::new("t"),
                ..AuthConfig::default()
            },
            secret: Some(SecretConfig {
                engine,
                mount: String::new(),
                role: "prism".into(),
                path: "prism/kafka".into(),
                common_name: String::new(),
                ttl: None,
                poll_interval: default_poll_interval(),
            }),
            ..VaultConfig::default()
        }
    }

    #[test]
    fn a_full_example_parses_and_validates() {
        let c: VaultConfig = serde_yaml::from_str(FULL).unwrap();
        assert_eq!(c.address, "https://vault.example:8200");
        assert_eq!(c.namespace, "team-a");
        assert_eq!(c.auth.method, AuthMethod::Approle);
        assert_eq!(c.auth.secret_id.expose(), "s3cr3t-id");
        assert_eq!(c.auth.mount_or_default(), "approle-prism");
        let secret = c.secret.as_ref().unwrap();
        assert_eq!(secret.engine, SecretEngine::Database);
        assert_eq!(secret.mount_or_default(), "db");
        assert_eq!(secret.poll_interval, Duration::from_secs(10));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert!(c.enabled());
        assert_eq!(c.validate(), Vec::<String>::new());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_yaml::from_str::<VaultConfig>("adress: http://x\n").unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn defaults_leave_vault_off_and_valid() {
        let c: VaultConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(c.address, "http://127.0.0.1:8200");
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert!(!c.enabled());
        // Without `secret` nothing else is checked: Vault is not used.
        let c = VaultConfig {
            address: "vault:8200".into(),
            ..c
        };
        assert!(c.validate().is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let mut c = with_secret(SecretEngine::Kv2);
        c.address = "vault:8200".into();
        c.auth.token = SecretString::default();
        c.secret.as_mut().unwrap().path.clear();
        c.tls.client_cert = Some("/c.pem".into());
        let problems = c.validate();
        let keys: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "`vault.address`",
                "`vault.auth.token`",
                "`vault.secret.path`",
                "`vault.tls.client_cert`"
            ]
        );
    }

    #[test]
    fn each_login_method_names_what_it_lacks() {
        let mut c = with_secret(SecretEngine::Database);
        assert!(c.validate().is_empty());
        c.auth.method = AuthMethod::Approle;
        assert!(c.validate()[0].starts_with("`vault.auth.role_id`"));
        c.auth.role_id = "r".into();
        assert!(c.validate()[0].starts_with("`vault.auth.secret_id`"));
        c.auth.secret_id_file = Some("/run/secret_id".into());
        assert!(c.validate().is_empty());
        c.auth.method = AuthMethod::Kubernetes;
        assert!(c.validate()[0].starts_with("`vault.auth.role`"));
        c.auth.role = "prism".into();
        assert!(c.validate().is_empty());
        c.secret.as_mut().unwrap().role.clear();
        assert!(c.validate()[0].starts_with("`vault.secret.role`"));
    }

    #[test]
    fn the_pki_engine_needs_a_role_and_a_common_name() {
        let mut c = with_secret(SecretEngine::Pki);
        assert_eq!(c.secret.as_ref().unwrap().mount_or_default(), "pki");
        assert!(c.validate()[0].starts_with("`vault.secret.common_name`"));
        let secret = c.secret.as_mut().unwrap();
        secret.common_name = "prism_app".into();
        secret.ttl = Some(Duration::from_secs(30));
        assert!(c.validate().is_empty());
        let parsed: SecretConfig = serde_yaml::from_str(
            "{engine: pki, role: prism-postgres, common_name: prism_app, ttl: 30s}",
        )
        .unwrap();
        assert_eq!(parsed.ttl, Some(Duration::from_secs(30)));
        assert_eq!(parsed.engine, SecretEngine::Pki);
    }

    #[test]
    fn mounts_default_per_engine_and_method() {
        let c = with_secret(SecretEngine::Database);
        assert_eq!(c.secret.unwrap().mount_or_default(), "database");
        let c = with_secret(SecretEngine::Kv2);
        assert_eq!(c.secret.unwrap().mount_or_default(), "secret");
        let mut auth = AuthConfig {
            method: AuthMethod::Approle,
            ..AuthConfig::default()
        };
        assert_eq!(auth.mount_or_default(), "approle");
        auth.method = AuthMethod::Kubernetes;
        assert_eq!(auth.mount_or_default(), "kubernetes");
    }

    #[test]
    fn env_aliases_point_into_the_vault_section() {
        for (env, key) in VAULT_ENV_ALIASES {
            assert!(env.starts_with("VAULT_"), "{env}");
            assert!(key.starts_with("vault."), "{key}");
        }
        assert!(
            VAULT_ENV_ALIASES
                .iter()
                .any(|(e, k)| *e == "VAULT_TOKEN" && *k == "vault.auth.token")
        );
    }
}
