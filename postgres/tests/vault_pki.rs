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

use common::start_plugin;
use prism_testkit::load::Load;
use prism_testkit::{PgTls, Postgres, Tee, TestCa, Vault, json_strings};

/// The certificate's common name, the database user.
const USER: &str = "prism_pki";

/// Serial numbers of the client certificates the plugin's sessions use now.
async fn session_serials(pg: &Postgres) -> Vec<String> {
    let out = pg
        .psql(
            "SELECT string_agg(s.client_serial::text || ' ' || a.usename, ',') \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'prism-postgres'",
        )
        .await
        .expect("psql");
    out.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn pki_certificates_with_a_30s_ttl_are_reissued_under_load_with_no_failed_call() {
    let vault = Vault::start().await.expect("vault starts");
    let vault_ca = vault
        .setup_pki("pki", "prism-postgres", USER, "30s")
        .await
        .expect("PKI engine");
    let server_ca = TestCa::new("prism pg server CA").expect("CA");
    let server = server_ca
        .server(&["localhost", "127.0.0.1"])
        .expect("server cert");
    let pg = Postgres::start_with_tls(PgTls {
        server: &server,
        client_ca: Some(&vault_ca),
        crl: None,
    })
    .await
    .expect("postgres trusting Vault's CA");
    pg.add_cert_user(USER).await.expect("certificate user");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("server-ca.pem");
    std::fs::write(&ca_file, server_ca.ca_pem()).expect("write CA");

    // Through a recording pass-through, so the test knows every key Vault
    // handed out.
    let tee = Tee::start(vault.port()).await;
    let (url, vault_addr, ca_path) = (
        format!("postgres://localhost:{}/{}", pg.port(), pg.database()),
        tee.addr(),
        ca_file.display().to_string(),
    );
    let envs = [
        ("DATABASE_URL", url.as_str()),
        ("PRISM_BACKEND__TLS__CA_FILE", ca_path.as_str()),
        ("VAULT_ADDR", vault_addr.as_str()),
        ("VAULT_TOKEN", vault.root_token()),
        ("PRISM_VAULT__SECRET__ENGINE", "pki"),
        ("PRISM_VAULT__SECRET__ROLE", "prism-postgres"),
        ("PRISM_VAULT__SECRET__COMMON_NAME", USER),
        ("PRISM_VAULT__SECRET__TTL", "30s"),
    ];
    let mut plugin = start_plugin(&pg, &envs).await;

    let load = Load::start(&plugin, 8, Duration::from_millis(50));
    let started = Instant::now();
    let mut serials = BTreeSet::new();
    while started.elapsed() < Duration::from_secs(90) {
        for session in session_serials(&pg).await {
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

    plugin.process.sigterm().expect("sigterm");
    plugin
        .process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
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
