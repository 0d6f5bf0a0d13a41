//! `KeyValueScanInterface` on `prism-redis` (Redis `SCAN`), standalone and
//! as a three-node Redis Cluster: 10,000 keys in a namespace and 10,000 in
//! another, paged with limits 1, 7 and 1,000 while other keys are added and
//! removed: every key present throughout comes back, none twice within a
//! page, none of the other namespace ever; glob characters in a prefix are
//! literal; cursors belong to their scan; `ordered=false` is declared.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::{Plugin, cluster_and_plugin, code, redis_and_plugin, req, set};
use prism_plugin_core::proto::keyvalue::{BatchDeleteRequest, BatchSetRequest, ScanRequest};
use prism_testkit::conformance;
use tonic::Code;

const STABLE: usize = 10_000;

fn stable_key(i: usize) -> String {
    format!("k/{i:05}")
}

/// Writes the 10,000 stable keys in `ns` with value `value`, 1,000 per
/// BatchSet (in a cluster one batch spans ~1,000 slots).
async fn fill(plugin: &Plugin, ns: &str, value: &str) {
    for chunk in (0..STABLE).collect::<Vec<_>>().chunks(1000) {
        let requests = chunk
            .iter()
            .map(|&i| set(&stable_key(i), value.as_bytes().to_vec(), 0))
            .collect();
        let reply = plugin
            .batch()
            .batch_set(req(Some(ns), BatchSetRequest { requests }))
            .await
            .expect("batch set");
        assert!(reply.into_inner().all_success);
    }
}

/// Adds and removes `k/churn-*` keys in `ns` until `stop`.
async fn churn(plugin: &Plugin, ns: &str, stop: Arc<AtomicBool>) -> usize {
    let mut rounds = 0;
    while !stop.load(Ordering::Relaxed) {
        let keys: Vec<String> = (0..50).map(|i| format!("k/churn-{rounds}-{i}")).collect();
        let requests = keys.iter().map(|k| set(k, b"a".to_vec(), 0)).collect();
        let mut batch = plugin.batch();
        batch
            .batch_set(req(Some(ns), BatchSetRequest { requests }))
            .await
            .expect("churn set");
        if rounds > 0 {
            let old = (0..50)
                .map(|i| format!("k/churn-{}-{i}", rounds - 1))
                .collect();
            batch
                .batch_delete(req(Some(ns), BatchDeleteRequest { keys: old }))
                .await
                .expect("churn delete");
        }
        rounds += 1;
    }
    rounds
}

/// Pages through prefix `k/` of `ns` with `limit`; checks every page and
/// returns the distinct keys seen and the number of pages.
async fn scan_all(
    plugin: &Plugin,
    ns: &str,
    limit: i32,
    keys_only: bool,
) -> (HashSet<String>, usize) {
    let mut scan = plugin.scan();
    let (mut seen, mut pages, mut cursor) = (HashSet::new(), 0, String::new());
    loop {
        let request = ScanRequest {
            prefix: "k/".into(),
            limit,
            cursor: cursor.clone(),
            keys_only,
        };
        let page = scan
            .scan(req(Some(ns), request))
            .await
            .expect("scan")
            .into_inner();
        pages += 1;
        assert!(page.items.len() <= limit as usize, "page over the limit");
        let mut in_page = HashSet::new();
        for item in &page.items {
            assert!(
                in_page.insert(item.key.clone()),
                "{} twice in one page",
                item.key
            );
            assert!(item.key.starts_with("k/"), "{}", item.key);
            if !keys_only {
                assert_eq!(item.value, "a", "{} is namespace {ns}'s", item.key);
            }
            seen.insert(item.key.clone());
        }
        assert_eq!(page.has_more, !page.next_cursor.is_empty());
        if !page.has_more {
            return (seen, pages);
        }
        cursor = page.next_cursor;
    }
}

/// The whole check, on a plugin whose backend is standalone or a cluster.
async fn scans_return_every_stable_key_while_others_change(plugin: &Plugin) {
    let meta = conformance::interface_metadata(&plugin.channel, "KeyValueScanInterface").await;
    let meta = meta.expect("Scan declared");
    assert_eq!(meta.get("ordered").map(String::as_str), Some("false"));
    tokio::join!(fill(plugin, "scan-a", "a"), fill(plugin, "scan-b", "b"));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let scans = async {
        let (one, seven, thousand) = tokio::join!(
            scan_all(plugin, "scan-a", 1, true),
            scan_all(plugin, "scan-a", 7, false),
            scan_all(plugin, "scan-a", 1000, false),
        );
        stop.store(true, Ordering::Relaxed);
        [(1, one), (7, seven), (1000, thousand)]
    };
    let (results, rounds) = tokio::join!(scans, churn(plugin, "scan-a", stop.clone()));
    eprintln!(
        "[timing] three scans of 10,000 keys with {rounds} churn rounds: {:?}",
        started.elapsed()
    );
    for (limit, (seen, pages)) in results {
        let missing: Vec<String> = (0..STABLE)
            .map(stable_key)
            .filter(|k| !seen.contains(k))
            .collect();
        assert!(
            missing.is_empty(),
            "limit {limit}: {} stable keys missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        assert!(
            seen.iter()
                .all(|k| k.starts_with("k/0") || k.starts_with("k/churn-"))
        );
        eprintln!("[scan] limit {limit}: {} keys in {pages} pages", seen.len());
    }
}

/// Every key under `prefix` in `ns`, paging to the end (a page may be empty
/// when `SCAN` met only other keys).
async fn every_key(plugin: &Plugin, ns: &str, prefix: &str) -> Vec<String> {
    let mut scan = plugin.scan();
    let (mut keys, mut cursor) = (Vec::new(), String::new());
    loop {
        let request = ScanRequest {
            prefix: prefix.into(),
            limit: 100,
            cursor,
            keys_only: true,
        };
        let page = scan
            .scan(req(Some(ns), request))
            .await
            .expect("scan")
            .into_inner();
        keys.extend(page.items.into_iter().map(|i| i.key));
        if !page.has_more {
            return keys;
        }
        cursor = page.next_cursor;
    }
}

/// Glob characters in a prefix are literal; cursors belong to their scan.
async fn prefixes_are_literal_and_cursors_bound(plugin: &Plugin) {
    let mut kv = plugin.basic();
    for key in ["glob*/x", "glob?/y", "glob[1]/z", "glob\\/w", "globby/v"] {
        kv.set(req(Some("scan-g"), set(key, b"g".to_vec(), 0)))
            .await
            .expect("set");
    }
    for (prefix, want) in [
        ("glob*", vec!["glob*/x"]),
        ("glob?", vec!["glob?/y"]),
        ("glob[1]", vec!["glob[1]/z"]),
        ("glob\\", vec!["glob\\/w"]),
        (
            "glob",
            vec!["glob*/x", "glob?/y", "glob[1]/z", "glob\\/w", "globby/v"],
        ),
        ("nothing", vec![]),
    ] {
        let mut got = every_key(plugin, "scan-g", prefix).await;
        got.sort_unstable();
        let mut want = want;
        want.sort_unstable();
        assert_eq!(got, want, "prefix {prefix:?}");
    }
    let mut scan = plugin.scan();
    let first = ScanRequest {
        prefix: "glob".into(),
        limit: 1,
        ..Default::default()
    };
    let page = scan
        .scan(req(Some("scan-g"), first))
        .await
        .expect("scan")
        .into_inner();
    assert!(page.has_more && page.items.len() <= 1);
    for (ns, prefix, cursor) in [
        ("scan-g", "glo", page.next_cursor.as_str()),
        ("scan-a", "glob", page.next_cursor.as_str()),
        ("scan-g", "glob", "not-a-cursor"),
    ] {
        let request = ScanRequest {
            prefix: prefix.into(),
            cursor: cursor.into(),
            limit: 1,
            keys_only: false,
        };
        assert_eq!(
            code(scan.scan(req(Some(ns), request)).await),
            Code::InvalidArgument
        );
    }
    let negative = ScanRequest {
        limit: -1,
        ..Default::default()
    };
    assert_eq!(
        code(scan.scan(req(Some("scan-g"), negative)).await),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn scan_standalone_returns_every_stable_key_and_takes_prefixes_literally() {
    let (_redis, plugin) = redis_and_plugin(&[]).await;
    scans_return_every_stable_key_while_others_change(&plugin).await;
    prefixes_are_literal_and_cursors_bound(&plugin).await;
}

#[tokio::test]
async fn scan_in_a_cluster_visits_every_node() {
    let (_nodes, plugin) = cluster_and_plugin().await;
    scans_return_every_stable_key_while_others_change(&plugin).await;
    prefixes_are_literal_and_cursors_bound(&plugin).await;
}
