//! `prism-postgres` data services over real gRPC against a real PostgreSQL:
//! the Prism KV acceptance semantics (DESIGN.md §3.2), hostile and huge keys,
//! namespaces, TTLs and the reaper, batches, resumable scans, and discovery
//! (Initialize metadata, grpcurl through reflection).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Rng, code, get, pg_and_plugin, poll_until, read, req, scan, set, timed};
use prism_plugin_core::proto::keyvalue::{
    BatchDeleteRequest, BatchGetRequest, BatchSetRequest, DeleteRequest, GetTtlRequest, ScanRequest,
};
use prism_testkit::conformance;
use tonic::Code;

#[tokio::test]
async fn prism_acceptance_semantics_hold_over_grpc() {
    let (pg, plugin) = pg_and_plugin(&[]).await;
    conformance::basic_semantics(&plugin.channel, &[1024 * 1024, 8 * 1024 * 1024]).await;
    // What only PostgreSQL can show: an overwrite is an upsert, not a second row.
    plugin
        .basic()
        .set(req(None, set("greeting", "hello", 0)))
        .await
        .expect("set");
    plugin
        .basic()
        .set(req(None, set("greeting", "bye", 0)))
        .await
        .expect("overwrite");
    assert_eq!(
        pg.psql("SELECT count(*) FROM prism_kv WHERE key = 'greeting'")
            .await
            .unwrap(),
        "1"
    );
}

#[tokio::test]
async fn hostile_unicode_and_maximal_keys_round_trip_and_limits_map_to_codes() {
    let (pg, plugin) = pg_and_plugin(&[("PRISM_BACKEND__MAX_VALUE_BYTES", "1024")]).await;
    let mut kv = plugin.basic();
    let mut rng = Rng::new(0x5eed);
    let max_key = rng.utf8(4096);
    assert_eq!(max_key.len(), 4096);
    let hostile = [
        "'; DROP TABLE prism_kv; --".to_string(),
        "dapr' OR '1'='1".to_string(),
        "\\x00 \\\\ \"quoted\" $1 %s".to_string(),
        "ключ/キー/🔑/ü".to_string(),
        "100%_done".to_string(),
        "100%".to_string(),
        "1000".to_string(),
        "a_b".to_string(),
        "axb".to_string(),
        "back\\slash".to_string(),
        "backslash".to_string(),
        max_key.clone(),
    ];
    for (i, key) in hostile.iter().enumerate() {
        kv.set(req(None, set(key, format!("v{i}"), 0)))
            .await
            .unwrap_or_else(|e| panic!("set {key:?}: {e}"));
    }
    for (i, key) in hostile.iter().enumerate() {
        let got = kv.get(req(None, get(key))).await.expect("get").into_inner();
        assert!(got.found, "{key:?}");
        assert_eq!(got.value, format!("v{i}").into_bytes(), "{key:?}");
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM prism_kv")
            .await
            .expect("table still there"),
        hostile.len().to_string()
    );

    // `%`, `_` and `\` in a prefix are literal.
    let mut sc = plugin.scan();
    let keys_under = async |sc: &mut prism_plugin_core::proto::keyvalue::key_value_scan_interface_client::KeyValueScanInterfaceClient<tonic::transport::Channel>, prefix: &str| {
        let page = sc.scan(req(None, scan(prefix, 0, ""))).await.expect("scan").into_inner();
        page.items.into_iter().map(|i| i.key).collect::<Vec<_>>()
    };
    assert_eq!(keys_under(&mut sc, "100%").await, vec!["100%", "100%_done"]);
    assert_eq!(keys_under(&mut sc, "100%_").await, vec!["100%_done"]);
    assert_eq!(keys_under(&mut sc, "a_").await, vec!["a_b"]);
    assert_eq!(keys_under(&mut sc, "back\\").await, vec!["back\\slash"]);
    assert_eq!(
        keys_under(&mut sc, "dapr' OR").await,
        vec!["dapr' OR '1'='1"]
    );
    assert_eq!(keys_under(&mut sc, "ключ/").await, vec!["ключ/キー/🔑/ü"]);
    assert_eq!(keys_under(&mut sc, &max_key).await, vec![max_key.clone()]);
    assert_eq!(
        keys_under(&mut sc, prefix_of(&max_key, 3000)).await,
        vec![max_key.clone()]
    );

    // Keys that agree on far more than the indexed 512 leading characters
    // still come back in byte order.
    let stem = rng.utf8(3000);
    let mut long: Vec<String> = (0..5)
        .map(|i| format!("{stem}{}", (b'e' - i) as char))
        .collect();
    for key in &long {
        kv.set(req(Some("long"), set(key, "x", 0)))
            .await
            .expect("set long");
    }
    long.sort();
    let page = sc
        .scan(req(Some("long"), scan(&stem, 2, "")))
        .await
        .expect("scan")
        .into_inner();
    let second = sc
        .scan(req(Some("long"), scan(&stem, 10, &page.next_cursor)))
        .await
        .expect("scan")
        .into_inner();
    let seen: Vec<String> = page
        .items
        .into_iter()
        .chain(second.items)
        .map(|i| i.key)
        .collect();
    assert_eq!(seen, long);

    // Validation maps to the documented codes.
    assert_eq!(
        code(kv.set(req(None, set("", "x", 0))).await),
        Code::InvalidArgument
    );
    let too_long = format!("{max_key}x");
    assert_eq!(
        code(kv.set(req(None, set(&too_long, "x", 0))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(kv.get(req(None, get(&too_long))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(kv.get(req(None, get("nul\0key"))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(kv.set(req(None, set("k", vec![0u8; 1025], 0))).await),
        Code::ResourceExhausted
    );
    kv.set(req(None, set("k", vec![0u8; 1024], 0)))
        .await
        .expect("value at the limit");
    assert_eq!(
        code(kv.set(req(None, set("k", "x", -1))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(kv.get(req(Some("bad namespace!"), get("k"))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(sc.scan(req(None, scan("", -1, ""))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(sc.scan(req(None, scan("", 10, "not-a-cursor"))).await),
        Code::InvalidArgument
    );
    conformance::a_bad_key_rejects_the_whole_batch(&plugin.channel).await;
}

/// The longest prefix of `s` of at most `bytes` bytes.
fn prefix_of(s: &str, bytes: usize) -> &str {
    let end = (0..=bytes.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

#[tokio::test]
async fn namespaces_isolate_keys_in_every_operation() {
    let (_pg, plugin) = pg_and_plugin(&[]).await;
    conformance::namespaces_isolate(&plugin.channel).await;
    // Scan, which prism-redis does not serve, stays inside its namespace too.
    let page = plugin
        .scan()
        .scan(req(Some("tenant-b"), scan("", 0, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.items.len(), 1);
    assert_eq!(&page.items[0].value[..], b"b");
    assert_eq!(
        code(
            plugin
                .ttl()
                .get_ttl(req(
                    Some("ns/with/slash"),
                    GetTtlRequest { key: "k".into() }
                ))
                .await
        ),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn ttl_hides_expired_items_at_once_and_ttl_rpcs_follow_design() {
    let (_pg, plugin) = pg_and_plugin(&[]).await;
    conformance::ttl_semantics(&plugin.channel).await;
    // Scan, which prism-redis does not serve, hides an expired item at once
    // too, although the reaper (30 s) has not run.
    let mut kv = plugin.basic();
    kv.set(req(None, set("brief", "x", 1))).await.unwrap();
    poll_until(Duration::from_secs(3), "expiry", || {
        let mut kv = kv.clone();
        async move { !read(&mut kv, None, "brief").await.found }
    })
    .await;
    let page = plugin
        .scan()
        .scan(req(None, scan("bri", 0, "")))
        .await
        .unwrap()
        .into_inner();
    assert!(page.items.is_empty() && !page.has_more);
}

#[tokio::test]
async fn reaper_deletes_expired_rows_in_the_background() {
    let (pg, plugin) = pg_and_plugin(&[("PRISM_BACKEND__REAPER_INTERVAL", "200ms")]).await;
    let items: Vec<_> = (0..2500)
        .map(|i| set(&format!("ttl/{i:04}"), "x", 1))
        .chain((0..5).map(|i| set(&format!("keep/{i}"), "x", 0)))
        .collect();
    plugin
        .batch()
        .batch_set(req(None, BatchSetRequest { requests: items }))
        .await
        .expect("batch set");
    assert_eq!(
        pg.psql("SELECT count(*) FROM prism_kv").await.unwrap(),
        "2505"
    );
    let took = poll_until(Duration::from_secs(5), "reaper", || async {
        pg.psql("SELECT count(*) FROM prism_kv").await.unwrap() == "5"
    })
    .await;
    eprintln!("[timing] reaper removed 2,500 expired rows (batches of 1000) {took:?} after set");
    assert_eq!(
        pg.psql("SELECT count(*) FROM prism_kv WHERE key LIKE 'keep/%'")
            .await
            .unwrap(),
        "5"
    );
}

#[tokio::test]
async fn scan_pages_return_every_stable_key_once_in_order_while_keys_change() {
    let (_pg, plugin) = pg_and_plugin(&[]).await;
    let key = |i: usize| format!("item/{i:05}");
    let items: Vec<_> = (0..2500).map(|i| set(&key(i * 2), "v", 0)).collect();
    let mut batch = plugin.batch();
    batch
        .batch_set(req(Some("scan"), BatchSetRequest { requests: items }))
        .await
        .expect("seed");
    // Noise outside the prefix on both sides.
    let noise = vec![
        set("item.", "x", 0),
        set("item0", "x", 0),
        set("iteM/1", "x", 0),
    ];
    let requests = BatchSetRequest { requests: noise };
    batch.batch_set(req(Some("scan"), requests)).await.unwrap();

    let mut sc = plugin.scan();
    let mut kv = plugin.basic();
    let mut cursor = String::new();
    let mut seen: Vec<String> = Vec::new();
    let mut deleted = BTreeSet::new();
    let mut pages = 0;
    let started = Instant::now();
    loop {
        let page = sc
            .scan(req(Some("scan"), scan("item/", 100, &cursor)))
            .await
            .expect("scan")
            .into_inner();
        assert!(page.error.is_empty());
        assert!(page.items.len() <= 100);
        seen.extend(page.items.into_iter().map(|i| i.key));
        pages += 1;
        if !page.has_more {
            assert!(page.next_cursor.is_empty());
            break;
        }
        assert!(!page.next_cursor.is_empty());
        cursor = page.next_cursor;
        // Between pages: delete a key far ahead and one behind, insert new
        // keys ahead (odd numbers) and behind.
        let ahead = (pages * 200 + 1000) % 5000;
        if ahead % 2 == 0 && ahead > pages * 200 {
            kv.delete(req(Some("scan"), DeleteRequest { key: key(ahead) }))
                .await
                .unwrap();
            deleted.insert(key(ahead));
        }
        kv.delete(req(
            Some("scan"),
            DeleteRequest {
                key: key(pages * 200 - 100),
            },
        ))
        .await
        .unwrap();
        deleted.insert(key(pages * 200 - 100));
        kv.set(req(Some("scan"), set(&key(pages * 200 + 301), "new", 0)))
            .await
            .unwrap();
        kv.set(req(Some("scan"), set(&key(1), "new-behind", 0)))
            .await
            .unwrap();
    }
    eprintln!(
        "[timing] scanned {} keys in {pages} pages: {:?}",
        seen.len(),
        started.elapsed()
    );
    // Strictly increasing = in byte order and nothing returned twice.
    for pair in seen.windows(2) {
        assert!(pair[0].as_bytes() < pair[1].as_bytes(), "{pair:?}");
    }
    let seen_set: BTreeSet<&String> = seen.iter().collect();
    let stable: Vec<String> = (0..2500)
        .map(|i| key(i * 2))
        .filter(|k| !deleted.contains(k))
        .collect();
    for k in &stable {
        assert!(
            seen_set.contains(k),
            "{k} present throughout but not returned"
        );
    }
    assert!(seen.iter().all(|k| k.starts_with("item/")));
    assert!(
        !seen_set.contains(&key(1)),
        "inserted behind the cursor: not returned"
    );
    assert!(
        seen_set.contains(&key(501)),
        "inserted ahead of the cursor: returned"
    );

    // keys_only, limit clamping and the default page size.
    let page = sc
        .scan(req(
            Some("scan"),
            ScanRequest {
                prefix: "item/".into(),
                limit: 5000,
                cursor: String::new(),
                keys_only: true,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.items.len(), 1000, "clamped to scan_max_limit");
    assert!(page.items.iter().all(|i| i.value.is_empty()) && page.has_more);
    let page = sc
        .scan(req(Some("scan"), scan("", 0, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.items.len(), 100, "default page");
    assert_eq!(page.items[0].key, "iteM/1", "byte order: 'M' < 'm'");
}

#[tokio::test]
async fn batches_answer_in_request_order_and_scale_to_10000_items() {
    let (pg, plugin) = pg_and_plugin(&[]).await;
    let mut batch = plugin.batch();
    let n = 10_000;
    let items: Vec<_> = (0..n)
        .map(|i| set(&format!("b/{i:05}"), format!("value-{i}"), 0))
        .collect();
    let reply = timed(
        "BatchSet 10,000",
        batch.batch_set(req(None, BatchSetRequest { requests: items })),
    )
    .await;
    assert!(reply.all_success);
    assert_eq!(reply.results.len(), n);
    assert!(
        reply
            .results
            .iter()
            .all(|r| r.success && r.error.is_empty())
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM prism_kv").await.unwrap(),
        n.to_string()
    );

    // Missing keys mixed in (and a duplicate): answers in request order.
    let keys: Vec<String> = (0..n)
        .rev()
        .flat_map(|i| [format!("b/{i:05}"), format!("missing/{i}")])
        .chain(["b/00007".to_string()])
        .collect();
    let got = prism_testkit::kv::batch_get(&mut batch, None, &keys).await;
    assert_eq!(got.results.len(), keys.len());
    assert_eq!(got.found_count, (n + 1) as i32);
    for (key, result) in keys.iter().zip(&got.results) {
        assert!(result.error.is_empty());
        match key.strip_prefix("b/") {
            Some(num) => {
                let i: usize = num.parse().unwrap();
                assert!(result.found, "{key}");
                assert_eq!(result.value, format!("value-{i}").into_bytes());
            }
            None => assert!(!result.found && result.value.is_empty(), "{key}"),
        }
    }

    // A key twice in one BatchSet: the last one wins.
    let twice = vec![
        set("dup", "first", 0),
        set("other", "o", 0),
        set("dup", "last", 0),
    ];
    batch
        .batch_set(req(None, BatchSetRequest { requests: twice }))
        .await
        .expect("duplicates");
    assert_eq!(&plugin.read(None, "dup").await.value[..], b"last");

    // BatchDelete with missing keys mixed in.
    let reply = timed(
        "BatchDelete 20,001 keys",
        batch.batch_delete(req(None, BatchDeleteRequest { keys })),
    )
    .await;
    assert!(reply.all_success && reply.results.len() == 2 * n + 1);
    assert_eq!(pg.psql("SELECT count(*) FROM prism_kv").await.unwrap(), "2");
    let empty = batch
        .batch_get(req(None, BatchGetRequest { keys: vec![] }))
        .await
        .unwrap()
        .into_inner();
    assert!(empty.results.is_empty() && empty.found_count == 0);
}

#[tokio::test]
async fn initialize_declares_five_interfaces_and_grpcurl_works_through_reflection() {
    let (_pg, plugin) = pg_and_plugin(&[]).await;
    conformance::declares_the_keyvalue_interfaces(&plugin.channel).await;

    conformance::grpcurl_set_and_get(&plugin, "cli/one", None).await;
    conformance::grpcurl(
        plugin.port,
        "KeyValueBasicInterface/Set",
        r#"{"key":"cli/two","value":"aGVsbG8="}"#,
    )
    .await;
    let reply = conformance::grpcurl(
        plugin.port,
        "KeyValueScanInterface/Scan",
        r#"{"prefix":"cli/","limit":1}"#,
    )
    .await;
    assert_eq!(reply["items"][0]["key"], "cli/one", "{reply}");
    assert_eq!(reply["hasMore"], true, "{reply}");
    let cursor = reply["nextCursor"].as_str().expect("cursor").to_string();
    let reply = conformance::grpcurl(
        plugin.port,
        "KeyValueScanInterface/Scan",
        &format!(r#"{{"prefix":"cli/","cursor":"{cursor}"}}"#),
    )
    .await;
    assert_eq!(reply["items"][0]["key"], "cli/two", "{reply}");
    assert_eq!(reply["items"].as_array().map(Vec::len), Some(1), "{reply}");
}

/// With every connection busy, point Gets and Sets that queue share one
/// statement (coalesce.rs), and each caller still gets exactly its own answer:
/// the right namespace, the right key, last-Set-wins for a key set twice.
#[tokio::test]
async fn queued_point_calls_share_statements_and_each_gets_its_own_answer() {
    use sqlx::Connection;

    // All 194 calls must reach the plugin's queue at once (not wait in the
    // client for a free HTTP/2 stream, nor be shed): admission's bounds are
    // raised above them.
    let (pg, plugin) = pg_and_plugin(&[
        ("PRISM_BACKEND__POOL_SIZE", "1"),
        (
            "PRISM_CONTROL_PLANE__ADMISSION__MAX_CONCURRENT_STREAMS_PER_CONNECTION",
            "256",
        ),
        ("PRISM_CONTROL_PLANE__ADMISSION__MAX_IN_FLIGHT", "256"),
        ("PRISM_CONTROL_PLANE__ADMISSION__MAX_QUEUE", "256"),
    ])
    .await;
    let mut kv = plugin.basic();
    for ns in ["ns-a", "ns-b"] {
        for i in 0..32 {
            kv.set(req(
                Some(ns),
                set(&format!("old/{i}"), format!("{ns}:old{i}"), 0),
            ))
            .await
            .expect("preload");
        }
    }

    // Hold the table so the pool's one connection stalls on the first call
    // and every other call queues behind it.
    let mut holder = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE prism_kv IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .expect("lock");

    let mut calls = tokio::task::JoinSet::new();
    for ns in ["ns-a", "ns-b"] {
        for i in 0..32 {
            let mut kv = plugin.basic();
            calls.spawn(async move {
                kv.set(req(
                    Some(ns),
                    set(&format!("new/{i}"), format!("{ns}:new{i}"), 0),
                ))
                .await
                .map(drop)
                .map_err(|e| format!("set {ns} new/{i}: {e}"))
            });
            let want = format!("{ns}:old{i}");
            calls.spawn(get_expecting(&plugin, ns, format!("old/{i}"), Some(want)));
            calls.spawn(get_expecting(&plugin, ns, format!("missing/{i}"), None));
        }
    }
    for value in ["first", "second"] {
        let mut kv = plugin.basic();
        calls.spawn(async move {
            kv.set(req(Some("ns-a"), set("twice", value, 0)))
                .await
                .map(drop)
                .map_err(|e| format!("set twice={value}: {e}"))
        });
    }
    // The first call reached the server and waits for the lock: the others
    // are on their way or queued.
    poll_until(Duration::from_secs(10), "a plugin statement waits for the lock", || async {
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'prism-postgres' AND wait_event_type = 'Lock'")
            .await
            .is_ok_and(|n| n == "1")
    })
    .await;
    sqlx::query("COMMIT")
        .execute(&mut holder)
        .await
        .expect("unlock");

    let mut failures = Vec::new();
    while let Some(done) = calls.join_next().await {
        if let Err(e) = done.expect("task") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    for ns in ["ns-a", "ns-b"] {
        for i in 0..32 {
            let got = kv
                .get(req(Some(ns), get(&format!("new/{i}"))))
                .await
                .expect("get")
                .into_inner();
            assert_eq!(got.value, format!("{ns}:new{i}").into_bytes());
        }
    }
    let twice = read(&mut kv, Some("ns-a"), "twice").await;
    assert!(
        twice.value[..] == b"first"[..] || twice.value[..] == b"second"[..],
        "{twice:?}"
    );
    // One transaction per statement, and now() is the transaction's start:
    // 66 Sets written by few statements share few updated_at values.
    let statements: u32 = pg
        .psql("SELECT count(DISTINCT updated_at) FROM prism_kv WHERE key LIKE 'new/%' OR key = 'twice'")
        .await
        .expect("count")
        .parse()
        .expect("number");
    assert!(
        statements <= 16,
        "66 queued Sets took {statements} statements: they were not batched"
    );
}

/// A Get of `key` in `ns` (in a task) that fails unless it answers `want`
/// (`None`: not found).
fn get_expecting(
    plugin: &common::Plugin,
    ns: &'static str,
    key: String,
    want: Option<String>,
) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
    let mut kv = plugin.basic();
    async move {
        let got = kv.get(req(Some(ns), get(&key))).await;
        let got = got
            .map_err(|e| format!("get {ns} {key}: {e}"))?
            .into_inner();
        let value = got.found.then(|| got.value.to_vec());
        if value == want.map(String::into_bytes) {
            Ok(())
        } else {
            Err(format!("get {ns} {key}: wrong answer {got:?}"))
        }
    }
}

/// Calls that queue for a connection (coalesce.rs) never start opening one
/// they may then abandon when another call's statement answers them first.
/// (A first version raced every queued call's connect against its answer:
/// under load PostgreSQL saw thousands of logins per second cut off half-way,
/// and the pool never grew to its size.)
#[tokio::test]
async fn queued_calls_under_load_abandon_no_login() {
    let (pg, plugin) = pg_and_plugin(&[("PRISM_BACKEND__POOL_SIZE", "4")]).await;
    pg.psql("ALTER SYSTEM SET log_connections = on")
        .await
        .expect("log_connections");
    pg.psql("SELECT pg_reload_conf()").await.expect("reload");
    let mut kv = plugin.basic();
    for i in 0..64 {
        kv.set(req(None, set(&format!("k{i}"), format!("v{i}"), 0)))
            .await
            .expect("preload");
    }
    // The reload reaches the postmaster asynchronously: wait until a new
    // session is logged, so every plugin login after this point is too.
    poll_until(Duration::from_secs(10), "logins are logged", || async {
        pg.psql("SELECT 1").await.is_ok() && pg.logs().contains("connection authorized")
    })
    .await;

    let mut calls = tokio::task::JoinSet::new();
    for t in 0..64 {
        let mut kv = plugin.basic();
        calls.spawn(async move {
            for n in 0..40 {
                let i = (t + n) % 64;
                if n % 4 == 0 {
                    kv.set(req(None, set(&format!("k{i}"), format!("v{i}"), 0)))
                        .await
                        .map_err(|e| format!("set k{i}: {e}"))?;
                } else {
                    let got = kv
                        .get(req(None, get(&format!("k{i}"))))
                        .await
                        .map_err(|e| format!("get k{i}: {e}"))?
                        .into_inner();
                    if got.value != format!("v{i}").into_bytes() {
                        return Err(format!("get k{i}: wrong answer {got:?}"));
                    }
                }
            }
            Ok::<(), String>(())
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = calls.join_next().await {
        if let Err(e) = done.expect("task") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    let logs = pg.logs();
    let received = logs.matches("connection received").count();
    let authorized = logs.matches("connection authorized").count();
    assert_eq!(
        received,
        authorized,
        "{} logins were abandoned half-way",
        received - authorized
    );
    assert!(
        authorized <= 40,
        "{authorized} sessions for a pool of 4 (plus the probe and psql)"
    );
}
