//! `prism-postgres` logging in with client certificates from Vault's PKI
//! engine (`vault.secret.engine: pki`) against a real OpenBao whose root CA
//! a real PostgreSQL trusts (`ssl_ca_file`, `hostssl … cert`): with a 30 s
//! certificate TTL under load for 90 s, the certificate is re-issued at
//! about 2/3 of its life and swapped in at least 3 times with 0 failed
//! calls, every session is authenticated by a Vault certificate, and no
//! private key Vault handed out appears in the logs.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{cert_login_postgres, plugin_tls_sessions, start_plugin};
use prism_testkit::load::Load;
use prism_testkit::{Tee, TestCa, Vault, borrowed_env, json_strings};

/// The certificate's common name, the database user.
const USER: &str = "prism_pki";

#[tokio::test]
async fn pki_certificates_with_a_30s_ttl_are_reissued_under_load_with_no_failed_call() {
    let (vault, vault_ca) = Vault::start_with_pki("prism-postgres", USER, "30s")
        .await
        .expect("vault with a PKI engine");
    let server_ca = TestCa::new("prism pg server CA").expect("CA");
    let pg = cert_login_postgres(&server_ca, &vault_ca, None, USER).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("server-ca.pem");
    std::fs::write(&ca_file, server_ca.ca_pem()).expect("write CA");

    // Through a recording pass-through, so the test knows every key Vault
    // handed out.
    let tee = Tee::start(vault.port()).await;
    let mut envs = vault.pki_plugin_env(&tee.addr(), "prism-postgres", USER);
    envs.extend([
        (
            "DATABASE_URL",
            format!("postgres://localhost:{}/{}", pg.port(), pg.database()),
        ),
        ("PRISM_BACKEND__TLS__CA_FILE", ca_file.display().to_string()),
        ("PRISM_VAULT__SECRET__TTL", "30s".to_owned()),
    ]);
    let mut plugin = start_plugin(&pg, &borrowed_env(&envs)).await;

    let load = Load::start(&plugin, 8, Duration::from_millis(50));
    let started = Instant::now();
    let mut serials = BTreeSet::new();
    while started.elapsed() < Duration::from_secs(90) {
        // Serial numbers of the client certificates the sessions use now.
        let columns = "s.client_serial::text || ' ' || a.usename";
        for session in plugin_tls_sessions(&pg, columns).await {
            assert!(session.ends_with(&format!(" {USER}")), "{session}");
            serials.insert(session);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let counts = load.finish().await;
    let details = plugin.health_details().await;
    eprintln!(
        "[pki] {counts:?}; {} certificates seen; details {details:?}",
        serials.len()
    );
    assert!(counts.ok > 100, "load ran: {counts:?}");
    assert_eq!(counts.failed, 0, "no call fails: {counts:?}");
    let swaps: u64 = details["vault_pool_swaps"].parse().expect("a number");
    assert!(swaps >= 3, "at least 3 re-issues swapped in: {details:?}");
    assert!(
        serials.len() >= 4,
        "sessions used 4+ certificates: {serials:?}"
    );
    assert_eq!(details["vault_reachable"], "true", "{details:?}");

    plugin.process.terminate(Duration::from_secs(10)).await;
    let logs = plugin.process.logs();
    assert!(
        logs.contains("switched to the rotated credentials"),
        "{logs}"
    );
    let keys = json_strings(&tee.traffic(), "private_key");
    assert!(keys.len() >= 4, "Vault issued the keys: {}", keys.len());
    for key in &keys {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!logs.contains(line), "private key material in the logs");
        }
    }
}
