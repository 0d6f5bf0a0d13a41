//! A TLS client identity (certificate + private key) handed over at runtime
//! by a credential rotation, used instead of `backend.tls.cert_file` /
//! `key_file`: the same swap as rotated SASL credentials (a new producer and
//! admin client checked with a metadata round trip, then every group
//! stream's consumer rebuilt) also carries a new certificate.
//!
//! The rotated secret names it with the fields of Vault PKI's `issue`
//! response — `certificate` and `private_key` (PEM), plus an optional
//! `ca_chain` (PEM intermediates, sent after the leaf) — or with `cert_file`
//! and `key_file` (paths, for certificates a sidecar writes to disk). The
//! key never appears in `Debug`, logs or errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use prism_plugin_core::secret::SecretString;
use prism_plugin_core::vault::Credentials;
use rdkafka::config::ClientConfig;

/// A client certificate and its key: PEM text, or files librdkafka reads.
#[derive(Clone)]
pub(crate) enum ClientIdentity {
    /// PEM certificate (chain) and PEM private key (librdkafka
    /// `ssl.certificate.pem` / `ssl.key.pem`).
    Pem {
        certificate: String,
        private_key: SecretString,
    },
    /// PEM files (librdkafka `ssl.certificate.location` / `ssl.key.location`).
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientIdentity::Pem { .. } => f.write_str("ClientIdentity::Pem(<redacted>)"),
            ClientIdentity::Files {
                cert_file,
                key_file,
            } => f
                .debug_struct("ClientIdentity::Files")
                .field("cert_file", cert_file)
                .field("key_file", key_file)
                .finish(),
        }
    }
}

impl ClientIdentity {
    /// The identity a credential set carries: a certificate issued by
    /// Vault's PKI engine, else one named by the secret's fields, if any.
    pub(crate) fn of(creds: &Credentials) -> Result<Option<Self>, String> {
        match &creds.certificate {
            Some(issued) => Ok(Some(ClientIdentity::Pem {
                certificate: issued.cert_chain_pem(),
                private_key: issued.key_pem.clone(),
            })),
            None => Self::from_fields(&creds.extra),
        }
    }

    /// The identity carried by a credential set's extra fields, if any.
    /// `Err` names the field that is missing or malformed (never its value).
    pub(crate) fn from_fields(fields: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        let get = |k: &str| fields.get(k).filter(|v| !v.trim().is_empty());
        match (get("certificate"), get("private_key")) {
            (Some(certificate), Some(private_key)) => {
                if !certificate.contains("-----BEGIN CERTIFICATE-----") {
                    return Err("`certificate` is not a PEM certificate".to_string());
                }
                if !private_key.contains("PRIVATE KEY-----") {
                    return Err("`private_key` is not a PEM private key".to_string());
                }
                // The broker may trust only the root: send the chain too.
                let mut certificate = certificate.trim_end().to_string();
                if let Some(chain) = get("ca_chain") {
                    certificate.push('\n');
                    certificate.push_str(chain.trim_end());
                }
                certificate.push('\n');
                return Ok(Some(ClientIdentity::Pem {
                    certificate,
                    private_key: SecretString::new(private_key.clone()),
                }));
            }
            (Some(_), None) => return Err("`certificate` without `private_key`".to_string()),
            (None, Some(_)) => return Err("`private_key` without `certificate`".to_string()),
            (None, None) => {}
        }
        match (get("cert_file"), get("key_file")) {
            (Some(cert), Some(key)) => Ok(Some(ClientIdentity::Files {
                cert_file: cert.into(),
                key_file: key.into(),
            })),
            (None, None) => Ok(None),
            _ => Err("`cert_file` and `key_file` must be set together".to_string()),
        }
    }

    /// Sets the librdkafka properties of this identity on `client`.
    pub(crate) fn apply(&self, client: &mut ClientConfig) {
        match self {
            ClientIdentity::Pem {
                certificate,
                private_key,
            } => {
                client
                    .set("ssl.certificate.pem", certificate)
                    .set("ssl.key.pem", private_key);
            }
            ClientIdentity::Files {
                cert_file,
                key_file,
            } => {
                client
                    .set("ssl.certificate.location", cert_file.to_string_lossy())
                    .set("ssl.key.location", key_file.to_string_lossy());
            }
        }
    }

    /// Where the identity came from, for health details.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ClientIdentity::Pem { .. } => "pem",
            ClientIdentity::Files { .. } => "files",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str =
        "-----BEGIN PRIVATE KEY-----\nsecret-key-body-1234\n-----END PRIVATE KEY-----\n";

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pem_fields_make_an_identity_whose_key_is_never_printed() {
        let identity = ClientIdentity::from_fields(&fields(&[
            ("certificate", CERT),
            ("private_key", KEY),
            ("mechanism", "SCRAM-SHA-512"),
        ]))
        .expect("valid")
        .expect("present");
        assert_eq!(identity.kind(), "pem");
        assert!(!format!("{identity:?}").contains("secret-key-body"));
        let mut client = ClientConfig::new();
        identity.apply(&mut client);
        assert_eq!(client.get("ssl.certificate.pem"), Some(CERT));
        let chained = ClientIdentity::from_fields(&fields(&[
            ("certificate", CERT),
            ("private_key", KEY),
            (
                "ca_chain",
                "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----",
            ),
        ]))
        .unwrap()
        .unwrap();
        let mut client = ClientConfig::new();
        chained.apply(&mut client);
        let pem = client.get("ssl.certificate.pem").unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
        assert!(pem.starts_with(CERT), "leaf first: {pem}");
        assert_eq!(client.get("ssl.key.pem"), Some(KEY));
    }

    #[test]
    fn files_make_an_identity_and_no_fields_make_none() {
        let identity = ClientIdentity::from_fields(&fields(&[
            ("cert_file", "/run/c.pem"),
            ("key_file", "/run/k.pem"),
        ]))
        .unwrap()
        .unwrap();
        let mut client = ClientConfig::new();
        identity.apply(&mut client);
        assert_eq!(client.get("ssl.key.location"), Some("/run/k.pem"));
        assert!(
            ClientIdentity::from_fields(&fields(&[("mechanism", "PLAIN")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn half_an_identity_or_non_pem_is_an_error_naming_the_field_not_the_value() {
        for pairs in [
            &[("certificate", CERT)][..],
            &[("private_key", KEY)],
            &[("certificate", "junk"), ("private_key", KEY)],
            &[("certificate", CERT), ("private_key", "not-a-key-5e1f")],
            &[("cert_file", "/c.pem")],
        ] {
            let err = ClientIdentity::from_fields(&fields(pairs)).expect_err("refused");
            assert!(err.starts_with('`'), "{err}");
            assert!(!err.contains("secret-key-body") && !err.contains("not-a-key-5e1f"));
        }
    }
}
