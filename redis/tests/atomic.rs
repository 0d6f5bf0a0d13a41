//! `KeyValueAtomicInterface` on `prism-redis` against a real Redis, standalone
//! and as a three-node Redis Cluster: the conformance kit's atomic checks
//! (semantics, namespaces, 64 clients counting and swapping at once), what
//! only Redis shows (a counter is an `INCRBY` string under the namespaced
//! key, the script is cached by SHA and reloaded after `SCRIPT FLUSH`), and
//! grpcurl through reflection as the README shows it.

mod common;

use common::{cli, cluster_and_plugin, redis_and_plugin};
use prism_testkit::conformance;

#[tokio::test]
async fn atomic_semantics_hold_standalone_and_scripts_survive_a_flush() {
    let (redis, plugin) = redis_and_plugin(&[]).await;
    assert!(conformance::atomic_semantics(&plugin.channel, "atomic-a", "atomic-b").await);
    assert_eq!(
        cli(&redis, &["GET", "prism:atomic-a:atomic-text"]).await,
        "42"
    );
    assert_eq!(
        cli(&redis, &["INCRBY", "prism:atomic-a:atomic-text", "1"]).await,
        "43"
    );
    // The scripts are cached by SHA; after a flush they are loaded again.
    assert_eq!(cli(&redis, &["SCRIPT", "FLUSH"]).await, "OK");
    let mut kv = conformance::atomic(&plugin.channel);
    let reply = kv
        .increment(prism_testkit::kv::req(
            Some("atomic-a"),
            conformance::incr("atomic-text", 1, 0),
        ))
        .await
        .expect("increment after SCRIPT FLUSH");
    assert_eq!(reply.into_inner().value, 44);
}

#[tokio::test]
async fn sixty_four_clients_increment_and_swap_without_losing_an_update() {
    let (_redis, plugin) = redis_and_plugin(&[]).await;
    conformance::sixty_four_clients_count_and_swap(plugin.port, "atomic-load").await;
}

#[tokio::test]
async fn atomic_semantics_hold_in_a_cluster() {
    let (_nodes, plugin) = cluster_and_plugin().await;
    assert!(conformance::atomic_semantics(&plugin.channel, "atomic-a", "atomic-b").await);
}

#[tokio::test]
async fn sixty_four_clients_increment_and_swap_in_a_cluster() {
    let (_nodes, plugin) = cluster_and_plugin().await;
    conformance::sixty_four_clients_count_and_swap(plugin.port, "atomic-load").await;
}

#[tokio::test]
async fn atomics_work_through_grpcurl_as_documented() {
    let (_redis, plugin) = redis_and_plugin(&[]).await;
    conformance::atomic_readme_examples(plugin.port).await;
    let reply = conformance::grpcurl(
        plugin.port,
        "KeyValueScanInterface/Scan",
        r#"{"prefix":"vis","limit":10}"#,
    )
    .await;
    assert_eq!(reply["items"][0]["key"], "visits", "{reply}");
}
