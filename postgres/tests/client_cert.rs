//! Logging in to PostgreSQL with a client certificate and no password
//! (`hostssl … cert` in `pg_hba.conf`), against a real server with
//! `ssl_ca_file` and `ssl_crl_file` from a CA generated here: the plugin logs
//! in with `backend.tls.cert_file`/`key_file` and with the URL's
//! `sslcert`/`sslkey`; a certificate from another CA, an expired one and a
//! revoked one are refused while the plugin stays alive, NOT_SERVING, with
//! the server's reason in its log and the private key nowhere.

mod common;

use std::path::PathBuf;

use common::{
    Plugin, assert_refused, cert_login_postgres, plugin_tls_sessions, read, req, set, spawn_plugin,
    start_plugin,
};
use prism_testkit::{ClientOptions, IssuedCert, Postgres, TestCa, borrowed_env};

/// The login role; the CN of every client certificate here.
const USER: &str = "prism_cert";
/// The serial number the server's CRL revokes.
const REVOKED: u64 = 0x5eed;

/// A server trusting `ca` for client certificates (revoking [`REVOKED`]),
/// role [`USER`] that logs in by certificate only, and a temp dir for files.
struct Setup {
    pg: Postgres,
    ca: TestCa,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let ca = TestCa::new("prism pg client CA").expect("CA");
    let crl = ca.crl(&[REVOKED]).expect("CRL");
    let pg = cert_login_postgres(&ca, &ca.ca_pem(), Some(&crl), USER).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("ca.pem"), ca.ca_pem()).expect("write CA");
    Setup { pg, ca, dir }
}

impl Setup {
    /// Writes `cert` as `<name>.pem` and `<name>.key`.
    fn write(&self, name: &str, cert: &IssuedCert) -> (PathBuf, PathBuf) {
        let (pem, key) = (
            self.dir.path().join(format!("{name}.pem")),
            self.dir.path().join(format!("{name}.key")),
        );
        std::fs::write(&pem, &cert.cert_pem).expect("write cert");
        std::fs::write(&key, &cert.key_pem).expect("write key");
        (pem, key)
    }

    /// A URL with user [`USER`] and no password.
    fn url(&self, query: &str) -> String {
        format!(
            "postgres://{USER}@localhost:{}/{}{query}",
            self.pg.port(),
            self.pg.database()
        )
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// Environment for a plugin logging in with `cert` through `backend.tls`.
    fn envs(&self, name: &str, cert: &IssuedCert) -> Vec<(&'static str, String)> {
        let (pem, key) = self.write(name, cert);
        vec![
            ("DATABASE_URL", self.url("")),
            ("PRISM_BACKEND__TLS__CA_FILE", self.ca_file()),
            ("PRISM_BACKEND__TLS__CERT_FILE", pem.display().to_string()),
            ("PRISM_BACKEND__TLS__KEY_FILE", key.display().to_string()),
        ]
    }

    /// (user, client DN) of each of the plugin's sessions, all over TLS.
    async fn plugin_sessions(&self) -> Vec<String> {
        plugin_tls_sessions(&self.pg, "a.usename || ' ' || s.client_dn").await
    }
}

#[tokio::test]
async fn logs_in_with_a_client_certificate_and_no_password() {
    let setup = setup().await;
    let cert = setup.ca.client(USER).expect("client cert");
    let envs = setup.envs("client", &cert);
    let plugin = start_plugin(&setup.pg, &borrowed_env(&envs)).await;
    let mut basic = plugin.basic();
    basic
        .set(req(None, set("cert-key", "by certificate", 0)))
        .await
        .expect("set");
    assert_eq!(
        &read(&mut basic, None, "cert-key").await.value[..],
        b"by certificate"
    );
    let sessions = setup.plugin_sessions().await;
    assert!(!sessions.is_empty(), "the plugin has TLS sessions");
    for session in &sessions {
        assert_eq!(session, &format!("{USER} /CN={USER}"), "{sessions:?}");
    }
    let logs = plugin.process.logs();
    assert!(
        !logs.contains(cert.key_pem.trim()),
        "the key is never logged"
    );

    // The same with the URL's own parameters instead of `backend.tls`.
    let (pem, key) = setup.write("url-client", &cert);
    let url = setup.url(&format!(
        "?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        setup.ca_file(),
        pem.display(),
        key.display()
    ));
    let second = start_plugin(&setup.pg, &[("DATABASE_URL", &url)]).await;
    assert_eq!(
        &second.read(None, "cert-key").await.value[..],
        b"by certificate"
    );
}

/// [`assert_refused`] with the lines of `cert`'s private key as the secrets.
async fn assert_refused_holding(plugin: &mut Plugin, reason: &str, cert: &IssuedCert) {
    let key_lines: Vec<&str> = cert.key_pem.lines().filter(|l| l.len() > 20).collect();
    assert_refused(plugin, reason, &key_lines).await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_an_expired_or_a_revoked_one_is_refused() {
    let setup = setup().await;
    let other = TestCa::new("some other CA").expect("CA");
    let foreign = other.client(USER).expect("foreign cert");
    let expired = setup
        .ca
        .client_with(
            USER,
            ClientOptions {
                expired: true,
                ..ClientOptions::default()
            },
        )
        .expect("expired cert");
    let revoked = setup
        .ca
        .client_with(
            USER,
            ClientOptions {
                serial: Some(REVOKED),
                ..ClientOptions::default()
            },
        )
        .expect("revoked cert");
    let cases = [
        ("foreign", &foreign, "UnknownCA"),
        ("expired", &expired, "CertificateExpired"),
        ("revoked", &revoked, "CertificateRevoked"),
    ];
    let envs: Vec<_> = cases
        .iter()
        .map(|(name, cert, _)| setup.envs(name, cert))
        .collect();
    // All three at once: each waits for its own refusal.
    let mut plugins = Vec::new();
    for envs in &envs {
        plugins.push(spawn_plugin(&setup.pg, &borrowed_env(envs)).await);
    }
    for (plugin, (_, cert, reason)) in plugins.iter_mut().zip(cases) {
        assert_refused_holding(plugin, reason, cert).await;
    }
    assert!(
        setup.plugin_sessions().await.is_empty(),
        "no session opened"
    );
}
