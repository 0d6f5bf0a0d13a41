//! TLS to PostgreSQL: a real server with `ssl=on` and a certificate from a test
//! CA generated here; the plugin's `DATABASE_URL` carries `sslmode` and
//! `sslrootcert`. `pg_stat_ssl` shows which of the plugin's sessions use TLS.

mod common;

use common::{Plugin, assert_refused, read, req, set, spawn_plugin, start_plugin};
use prism_testkit::{IssuedCert, Postgres, TestCa};

/// A server certificate for `names`, the PostgreSQL server using it, and a
/// file holding `trusted`'s CA certificate (the plugin's `sslrootcert`).
struct Setup {
    pg: Postgres,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup(server_ca: &TestCa, names: &[&str], trusted: &TestCa) -> Setup {
    let server: IssuedCert = server_ca.server(names).expect("server certificate");
    let pg = Postgres::start_tls(&server)
        .await
        .expect("postgres with TLS");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, trusted.ca_pem()).expect("write CA");
    Setup {
        pg,
        ca_file,
        _dir: dir,
    }
}

impl Setup {
    fn url(&self, host: &str, sslmode: &str) -> String {
        format!(
            "postgres://{}:{}@{host}:{}/{}?sslmode={sslmode}&sslrootcert={}",
            self.pg.user(),
            self.pg.password(),
            self.pg.port(),
            self.pg.database(),
            self.ca_file.display()
        )
    }

    /// (sessions with TLS, sessions without) of the plugin (by application_name).
    async fn plugin_sessions(&self) -> (u64, u64) {
        let out = self
            .pg
            .psql(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name = 'prism-postgres'",
            )
            .await
            .expect("psql");
        let (tls, plain) = out.split_once('|').expect("two columns");
        (tls.parse().unwrap(), plain.parse().unwrap())
    }
}

/// [`assert_refused`] with the superuser's password as the secret, and no
/// session opened.
async fn assert_refused_by(plugin: &mut Plugin, setup: &Setup, reason: &str) {
    assert_refused(plugin, reason, &[setup.pg.password()]).await;
    assert_eq!(setup.plugin_sessions().await, (0, 0));
}

#[tokio::test]
async fn verify_full_with_the_configured_ca_talks_tls_on_every_session() {
    let ca = TestCa::new("prism pg test CA").unwrap();
    let setup = setup(&ca, &["localhost", "127.0.0.1"], &ca).await;
    let url = setup.url("localhost", "verify-full");
    let plugin = start_plugin(&setup.pg, &[("DATABASE_URL", &url)]).await;

    let mut basic = plugin.basic();
    basic
        .set(req(None, set("tls-key", "over tls", 0)))
        .await
        .expect("set");
    let reply = read(&mut basic, None, "tls-key").await;
    assert_eq!(&reply.value[..], b"over tls");

    let (tls, plain) = setup.plugin_sessions().await;
    assert!(tls >= 1, "the plugin has TLS sessions ({tls})");
    assert_eq!(plain, 0, "and no plaintext one");
}

#[tokio::test]
async fn verify_full_refuses_a_server_signed_by_another_ca() {
    let (ca, other) = (
        TestCa::new("prism pg test CA").unwrap(),
        TestCa::new("some other CA").unwrap(),
    );
    let setup = setup(&ca, &["localhost", "127.0.0.1"], &other).await;
    let url = setup.url("localhost", "verify-full");
    let mut plugin = spawn_plugin(&setup.pg, &[("DATABASE_URL", &url)]).await;
    assert_refused_by(&mut plugin, &setup, "UnknownIssuer").await;
}

// `verify-ca` (chain only, no host name) is not tested: sqlx 0.8.6 checks the
// host name there too with rustls >= 0.23.24 (transact-rs/sqlx#3793, fixed in
// sqlx 0.9), so it behaves like `verify-full` — stricter, never weaker.
#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_host_name() {
    let ca = TestCa::new("prism pg test CA").unwrap();
    // The certificate names another host than the one the plugin dials.
    let setup = setup(&ca, &["db.prism.internal"], &ca).await;
    let url = setup.url("localhost", "verify-full");
    let mut plugin = spawn_plugin(&setup.pg, &[("DATABASE_URL", &url)]).await;
    assert_refused_by(
        &mut plugin,
        &setup,
        "certificate not valid for name \"localhost\"",
    )
    .await;
}
