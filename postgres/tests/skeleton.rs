//! `prism-postgres` against a real PostgreSQL server: health follows the
//! backend (outage and recovery without restarting the plugin), liveness never
//! does, a plugin started before the database catches up, and a misspelt key is
//! fatal (the shared suite, `prism_testkit::skeleton`, plus the pool details).

use std::time::Duration;

use prism_testkit::lifecycle::{number, text};
use prism_testkit::skeleton::{self, Subject, Swap};
use prism_testkit::{POSTGRES_PASSWORD, Postgres, free_port};

const PLUGIN: Subject = Subject {
    bin: env!("CARGO_BIN_EXE_prism-postgres"),
    backend: "postgres",
    startup: Duration::from_secs(15),
};

async fn postgres() -> (Postgres, String) {
    let pg = Postgres::start().await.expect("postgres starts");
    let url = pg.url();
    (pg, url)
}

#[tokio::test]
async fn serves_all_health_statuses_and_pool_details_without_leaking_the_password() {
    let (_pg, url) = postgres().await;
    let envs = [("DATABASE_URL", url.as_str()), ("POSTGRES_POOL_SIZE", "4")];
    let report = skeleton::serves_all_health_statuses(&PLUGIN, &envs, POSTGRES_PASSWORD).await;
    for key in ["latency_ms", "pool_size", "pool_idle", "pool_max"] {
        assert!(
            report.details.contains_key(key),
            "{key} missing: {report:?}"
        );
    }
    assert_eq!(
        report.details.get("pool_max").map(String::as_str),
        Some("4"),
        "POSTGRES_POOL_SIZE applies"
    );
}

#[tokio::test]
async fn outage_turns_readiness_off_and_recovery_turns_it_back_on() {
    let (pg, url) = postgres().await;
    skeleton::outage_turns_readiness_off_and_recovery_turns_it_back_on(
        &PLUGIN,
        pg,
        &[("DATABASE_URL", &url)],
    )
    .await;
}

#[tokio::test]
async fn started_before_postgres_it_stays_up_and_catches_up() {
    let (pg, url) = postgres().await;
    skeleton::started_before_the_backend_it_stays_up_and_catches_up(
        &PLUGIN,
        pg,
        &[("DATABASE_URL", &url)],
    )
    .await;
}

#[tokio::test]
async fn misspelt_env_key_exits_64_naming_it() {
    skeleton::bad_config_exits_64_naming_the_key(
        &PLUGIN,
        &[],
        &[("PRISM_BACKEND__POOL_SISE", "3")],
        "backend.pool_sise",
    )
    .await;
}

#[tokio::test]
async fn reinitialize_swaps_the_pool_and_a_failed_one_keeps_the_old() {
    let (_pg, url) = postgres().await;
    let dead = format!(
        "postgres://prism:{POSTGRES_PASSWORD}@127.0.0.1:{}/prism",
        free_port()
    );
    let swap = Swap {
        detail: "pool_max",
        before: "10".into(), // the default pool_size
        to: vec![("pool_size", number(2.0))],
        after: "2".into(),
        unreachable: vec![("database_url", text(&dead))],
        secret: Some(POSTGRES_PASSWORD),
        invalid: vec![("database_url", text("mysql://u:pw@h/db"))],
        invalid_key: "backend.database_url",
    };
    skeleton::reinitialize_swaps_and_a_failed_one_keeps_the_old(
        &PLUGIN,
        &[("DATABASE_URL", &url)],
        swap,
    )
    .await;
}
