//! PostgreSQL: start, SELECT over TCP with a password, outage, parallel instances.

use prism_testkit::{Error, POSTGRES_PASSWORD, POSTGRES_USER, Postgres};

use crate::{start, start_again, stop, two_at_once};

#[tokio::test]
async fn starts_answers_and_survives_restart() {
    let mut pg = start(Postgres::start()).await;
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{port}/prism")
    );
    assert!(pg.superuser_url().ends_with(&format!(":{port}/postgres")));
    assert_eq!(pg.psql("SELECT 1").await.expect("select"), "1");
    assert_eq!(
        pg.psql(
            "SELECT current_user || '|' || current_database() || '|' || current_setting('fsync')"
        )
        .await
        .expect("settings"),
        "prism|prism|off"
    );
    assert_eq!(pg.psql("SHOW max_connections").await.expect("show"), "200");
    pg.psql("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
        .await
        .expect("write");

    stop(&mut pg).await;
    let err = pg.psql("SELECT 1").await.expect_err("server is down");
    assert!(matches!(err, Error::CommandFailed { .. }), "{err}");

    start_again(&mut pg).await;
    assert_eq!(pg.psql("SELECT v FROM t").await.expect("data kept"), "42");
    assert!(pg.logs().contains("ready to accept connections"));
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let pg = Postgres::start().await.expect("postgres starts");
    let url = format!(
        "postgres://{POSTGRES_USER}:nope@127.0.0.1:{}/prism",
        pg.port()
    );
    let out = tokio::process::Command::new(prism_testkit::tool("psql").expect("psql"))
        .args(["-X", "-At", "-d", &url, "-c", "SELECT 1"])
        .output()
        .await
        .expect("run psql");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn two_instances_run_at_once() {
    let (a, b) = two_at_once(Postgres::start).await;
    assert_ne!(a.data_dir(), b.data_dir());
    a.psql("CREATE TABLE only_in_a (v int)")
        .await
        .expect("create");
    assert_eq!(
        a.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'")
            .await
            .expect("a"),
        "1"
    );
    assert_eq!(
        b.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'")
            .await
            .expect("b"),
        "0"
    );
}

#[tokio::test]
async fn drop_removes_temp_dir() {
    let pg = Postgres::start().await.expect("postgres starts");
    let dir = pg.dir().to_path_buf();
    assert!(dir.exists());
    drop(pg);
    assert!(!dir.exists(), "{} should be removed", dir.display());
}
