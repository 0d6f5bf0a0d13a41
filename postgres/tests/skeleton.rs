//! `prism-postgres` against a real PostgreSQL server: health follows the
//! backend (outage and recovery without restarting the plugin), liveness never
//! does, a plugin started before the database catches up, and a misspelt key is
//! fatal (the shared suite, `prism_testkit::skeleton`, plus the pool details).

use prism_testkit::lifecycle::{number, text};
use prism_testkit::skeleton::{self, Subject, Swap};
use prism_testkit::{POSTGRES_PASSWORD, Postgres, free_port};

const PLUGIN: Subject<Postgres> =
    Subject::new(env!("CARGO_BIN_EXE_prism-postgres"), "postgres", |pg| {
        vec![("DATABASE_URL", pg.url())]
    });

prism_testkit::skeleton_tests!(PLUGIN;
    outage_turns_readiness_off_and_recovery_turns_it_back_on => outage,
    started_before_postgres_it_stays_up_and_catches_up => late_start,
);

#[tokio::test]
async fn serves_all_health_statuses_and_pool_details_without_leaking_the_password() {
    let pg = Postgres::start().await.expect("postgres starts");
    let envs = [("DATABASE_URL", &*pg.url()), ("POSTGRES_POOL_SIZE", "4")];
    let report = skeleton::serves_all_health_statuses(&PLUGIN, &envs, POSTGRES_PASSWORD).await;
    for key in ["latency_ms", "pool_size", "pool_idle", "pool_max"] {
        assert!(
            report.details.contains_key(key),
            "{key} missing: {report:?}"
        );
    }
    let pool_max = report.details.get("pool_max").map(String::as_str);
    assert_eq!(pool_max, Some("4"), "POSTGRES_POOL_SIZE applies");
}

#[tokio::test]
async fn misspelt_env_key_exits_64_naming_it() {
    let envs = [("PRISM_BACKEND__POOL_SISE", "3")];
    skeleton::bad_config_exits_64_naming_the_key(&PLUGIN, &[], &envs, "backend.pool_sise").await;
}

#[tokio::test]
async fn reinitialize_swaps_the_pool_and_a_failed_one_keeps_the_old() {
    let pg = Postgres::start().await.expect("postgres starts");
    let port = free_port();
    let dead = format!("postgres://prism:{POSTGRES_PASSWORD}@127.0.0.1:{port}/prism");
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
    skeleton::reinitialize_swaps_and_a_failed_one_keeps_the_old(&PLUGIN, &pg, swap).await;
}
