//! `backend.tls`: the files for TLS to PostgreSQL — the CA that verifies the
//! server and the client certificate and key for `cert` authentication —
//! their pure validation against the URL's own `sslrootcert`/`sslcert`/
//! `sslkey`, and how they (or a client certificate from Vault's PKI engine)
//! go into the driver's connect options.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// `backend.tls`. Each file is read at every new connection, so a
/// certificate rotated on disk (cert-manager) is used from the next one on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PostgresTls {
    /// CA bundle (PEM) that verifies the server's certificate (the URL's
    /// `sslrootcert`). Without `sslmode` in the URL it means `verify-full`.
    #[serde(default)]
    pub(crate) ca_file: Option<PathBuf>,
    /// Client certificate (PEM, chain allowed) for `cert` authentication
    /// (the URL's `sslcert`); its CN must be the database user.
    #[serde(default)]
    pub(crate) cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1;
    /// the URL's `sslkey`). Never logged.
    #[serde(default)]
    pub(crate) key_file: Option<PathBuf>,
}

/// A client certificate held in memory (from Vault's PKI engine).
pub(crate) struct ClientPem<'a> {
    /// Certificate followed by the issuing chain (PEM).
    pub(crate) cert_chain: &'a str,
    /// Private key (PEM); never logged.
    pub(crate) key: &'a str,
}

/// The values of the TLS parameters of a connection URL.
#[derive(Default)]
struct UrlTls {
    sslmode: Option<String>,
    root_cert: bool,
    cert: bool,
    key: bool,
}

fn url_tls(url: &str) -> UrlTls {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mut found = UrlTls::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" | "ssl-mode" => found.sslmode = Some(value.to_ascii_lowercase()),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => found.root_cert = true,
            "sslcert" | "ssl-cert" => found.cert = true,
            "sslkey" | "ssl-key" => found.key = true,
            _ => {}
        }
    }
    found
}

impl PostgresTls {
    /// Every problem of `backend.tls` together with the URL's TLS
    /// parameters, each naming its key. Pure: the files are read at connect.
    pub(crate) fn validate(&self, url: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let from_url = url_tls(url);
        for (key, file, in_url, param) in [
            ("ca_file", &self.ca_file, from_url.root_cert, "sslrootcert"),
            ("cert_file", &self.cert_file, from_url.cert, "sslcert"),
            ("key_file", &self.key_file, from_url.key, "sslkey"),
        ] {
            if file.is_some() && in_url {
                problems.push(format!(
                    "`backend.tls.{key}`: the database URL sets `{param}` too; set one of them"
                ));
            }
            if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                problems.push(format!("`backend.tls.{key}`: must not be empty"));
            }
        }
        if (self.cert_file.is_some() || from_url.cert) != (self.key_file.is_some() || from_url.key)
        {
            problems.push(
                "`backend.tls.cert_file`: a client certificate and its key go together \
                 (`cert_file` + `key_file`, or `sslcert` + `sslkey` in the URL)"
                    .to_string(),
            );
        }
        let client_cert = self.cert_file.is_some() || from_url.cert;
        if client_cert && from_url.sslmode.as_deref() == Some("disable") {
            problems.push(
                "`backend.tls.cert_file`: the URL's `sslmode=disable` would never send the \
                 client certificate; use `sslmode=verify-full`"
                    .to_string(),
            );
        }
        problems
    }

    /// Applies the files to `options` (parsed from `url`): the CA, the client
    /// certificate and key, and `verify-full` when a CA is given and the URL
    /// names no `sslmode`. With `pem` (Vault PKI) that certificate is used
    /// instead of any file.
    pub(crate) fn apply(
        &self,
        url: &str,
        mut options: PgConnectOptions,
        pem: Option<ClientPem<'_>>,
    ) -> PgConnectOptions {
        if let Some(ca) = &self.ca_file {
            options = options.ssl_root_cert(ca);
            if url_tls(url).sslmode.is_none() {
                options = options.ssl_mode(PgSslMode::VerifyFull);
            }
        }
        match pem {
            Some(pem) => {
                options = options
                    .ssl_client_cert_from_pem(pem.cert_chain)
                    .ssl_client_key_from_pem(pem.key);
            }
            None => {
                if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
                    options = options.ssl_client_cert(cert).ssl_client_key(key);
                }
            }
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(ca: bool, cert: bool, key: bool) -> PostgresTls {
        PostgresTls {
            ca_file: ca.then(|| "/tls/ca.pem".into()),
            cert_file: cert.then(|| "/tls/client.pem".into()),
            key_file: key.then(|| "/tls/client.key".into()),
        }
    }

    #[test]
    fn files_or_url_parameters_but_not_both() {
        let url = "postgres://app@db/kv?sslmode=verify-full";
        assert!(tls(true, true, true).validate(url).is_empty());
        let both = "postgres://app@db/kv?sslcert=/a.pem&sslkey=/a.key";
        let problems = tls(false, true, true).validate(both);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("`backend.tls.cert_file`"));
        assert!(problems[1].starts_with("`backend.tls.key_file`"));
        assert!(PostgresTls::default().validate(both).is_empty());
    }

    #[test]
    fn a_certificate_needs_its_key_and_a_tls_mode() {
        let problems = tls(false, true, false).validate("postgres://db/kv");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("go together"), "{problems:?}");
        let problems = PostgresTls::default().validate("postgres://db/kv?sslkey=/k");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let problems = tls(false, true, true).validate("postgres://db/kv?sslmode=disable");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("sslmode=disable"), "{problems:?}");
    }

    #[test]
    fn a_ca_file_means_verify_full_unless_the_url_says_otherwise() {
        use std::str::FromStr;
        let url = "postgres://app@db/kv";
        let options = PgConnectOptions::from_str(url).unwrap();
        let applied = tls(true, false, false).apply(url, options, None);
        assert!(matches!(applied.get_ssl_mode(), PgSslMode::VerifyFull));
        let url = "postgres://app@db/kv?sslmode=require";
        let options = PgConnectOptions::from_str(url).unwrap();
        let applied = tls(true, false, false).apply(url, options, None);
        assert!(matches!(applied.get_ssl_mode(), PgSslMode::Require));
    }
}
