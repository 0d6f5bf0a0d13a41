//! `KeyValueAtomicInterface` on `prism-postgres` against a real PostgreSQL:
//! the conformance kit's atomic checks (semantics, namespaces, 64 clients
//! counting and swapping at once), what only the table can show (a counter
//! is a decimal `bytea`, a refused one is untouched), the Scan metadata, and
//! grpcurl through reflection as the README shows it.

mod common;

use common::pg_and_plugin;
use prism_testkit::conformance;

#[tokio::test]
async fn atomic_semantics_hold_in_a_namespace_and_apart_from_another() {
    let (pg, plugin) = pg_and_plugin(&[]).await;
    assert!(conformance::atomic_semantics(&plugin.channel, "atomic-a", "atomic-b").await);
    // What only PostgreSQL shows: the counter's row holds its decimal text.
    let stored = pg
        .psql(
            "SELECT encode(value, 'escape') FROM public.prism_kv \
             WHERE namespace = 'atomic-a' AND key = 'atomic-text'",
        )
        .await
        .expect("psql");
    assert_eq!(stored.trim(), "42");
}

#[tokio::test]
async fn sixty_four_clients_increment_and_swap_without_losing_an_update() {
    let (_pg, plugin) = pg_and_plugin(&[("PRISM_BACKEND__POOL_SIZE", "16")]).await;
    conformance::sixty_four_clients_count_and_swap(plugin.port, "atomic-load").await;
}

#[tokio::test]
async fn scan_and_atomics_declare_their_flavour_and_work_through_grpcurl() {
    let (_pg, plugin) = pg_and_plugin(&[]).await;
    let scan = conformance::interface_metadata(&plugin.channel, "KeyValueScanInterface").await;
    assert_eq!(
        scan.and_then(|m| m.get("ordered").cloned()).as_deref(),
        Some("true")
    );
    conformance::atomic_readme_examples(plugin.port).await;
}
