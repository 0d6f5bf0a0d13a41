//! `prism-redis` data services over real gRPC against a real `redis-server`:
//! the Prism KV acceptance semantics, TTLs, batches, namespaces, ACL users,
//! outages, limits, error mapping and a grpcurl smoke check.

mod common;

use std::time::{Duration, Instant};

use common::{
    cli, code, get, poll_until, read, redis_and_plugin, req, set, spawn_plugin, start_plugin, timed,
};
use prism_plugin_core::proto::keyvalue::{
    BatchDeleteRequest, BatchGetRequest, BatchSetRequest, DeleteRequest,
};
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_testkit::lifecycle::{expect_not_serving, expect_serving};
use prism_testkit::{Redis, ServingStatus, conformance, wait_for_health};
use tonic::Code;

#[tokio::test]
async fn prism_acceptance_semantics_hold_over_grpc() {
    let (redis, plugin) = redis_and_plugin(&[]).await;
    conformance::basic_semantics(&plugin.channel, &[1024 * 1024]).await;
    let mut kv = plugin.basic();

    // What only Redis can show: items are stored as <prefix><namespace>:<key>.
    kv.set(req(None, set("greeting", "hello", 0)))
        .await
        .expect("set");
    assert_eq!(
        cli(&redis, &["GET", "prism:default:greeting"]).await,
        "hello"
    );
    assert_eq!(cli(&redis, &["GET", "prism:load:w07/k03"]).await, "w07/k03");

    // Validation.
    assert_eq!(
        code(kv.set(req(None, set("", "v", 0))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(kv.get(req(None, get(""))).await),
        Code::InvalidArgument
    );
    let long = "k".repeat(4097);
    assert_eq!(
        code(kv.get(req(None, get(&long))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(kv.set(req(None, set("k", "v", -1))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        cli(&redis, &["EXISTS", "prism:default:k"]).await,
        "0",
        "a rejected write never reaches Redis"
    );
}

#[tokio::test]
async fn initialize_declares_the_five_keyvalue_interfaces() {
    let (_redis, plugin) = redis_and_plugin(&[]).await;
    conformance::declares_the_keyvalue_interfaces(&plugin.channel).await;
    // Health statuses exist for every data service.
    for interface in conformance::KEYVALUE_INTERFACES {
        wait_for_health(
            plugin.port,
            &format!("prism.interfaces.keyvalue.{interface}"),
            ServingStatus::Serving,
            Duration::from_secs(2),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[tokio::test]
async fn concurrent_writers_readers_and_deletes_of_one_key_all_succeed() {
    const EACH: usize = 50;
    let (_redis, plugin) = redis_and_plugin(&[]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..EACH {
        let mut kv = plugin.basic();
        tasks.spawn(async move {
            kv.set(req(None, set("hot", format!("v{i}"), 0)))
                .await
                .map(|r| r.into_inner().success)
        });
        let mut kv = plugin.basic();
        tasks.spawn(async move {
            kv.get(req(None, get("hot"))).await.map(|r| {
                let r = r.into_inner();
                // Either absent or one of the written values, never an error.
                r.error.is_empty() && (!r.found || r.value.starts_with(b"v"))
            })
        });
        let mut kv = plugin.basic();
        tasks.spawn(async move {
            kv.delete(req(None, DeleteRequest { key: "hot".into() }))
                .await
                .map(|r| r.into_inner().success)
        });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        assert!(result.expect("task").expect("call succeeds"));
        ok += 1;
    }
    assert_eq!(ok, 3 * EACH);
}

#[tokio::test]
async fn ttls_expire_items_and_expire_getttl_persist_report_redis_values() {
    let (_redis, plugin) = redis_and_plugin(&[]).await;
    conformance::ttl_semantics(&plugin.channel).await;
}

#[tokio::test]
async fn batch_of_1000_keys_with_missing_ones_keeps_request_order() {
    const N: usize = 1000;
    let (redis, plugin) = redis_and_plugin(&[]).await;
    let mut batch = plugin.batch();
    // Every third key is never written; every fifth written one has a TTL.
    let requests: Vec<_> = (0..N)
        .filter(|i| !i.is_multiple_of(3))
        .map(|i| {
            set(
                &format!("item-{i}"),
                format!("value-{i}"),
                if i.is_multiple_of(5) { 300 } else { 0 },
            )
        })
        .collect();
    let written = requests.len();
    let what = format!("BatchSet of {written}");
    let reply = timed(
        &what,
        batch.batch_set(req(None, BatchSetRequest { requests })),
    )
    .await;
    assert!(reply.all_success);
    assert_eq!(reply.results.len(), written);
    assert!(reply.results.iter().all(|r| r.success));
    assert_eq!(cli(&redis, &["DBSIZE"]).await, written.to_string());
    assert_eq!(cli(&redis, &["TTL", "prism:default:item-5"]).await, "300");
    assert_eq!(cli(&redis, &["TTL", "prism:default:item-7"]).await, "-1");

    // Ask in reverse order to prove order follows the request, not storage.
    let keys: Vec<String> = (0..N).rev().map(|i| format!("item-{i}")).collect();
    let reply = prism_testkit::kv::batch_get(&mut batch, None, &keys).await;
    assert_eq!(reply.results.len(), N);
    assert_eq!(reply.found_count as usize, written);
    for (key, result) in keys.iter().zip(&reply.results) {
        let i: usize = key["item-".len()..].parse().unwrap();
        assert!(result.error.is_empty());
        if i.is_multiple_of(3) {
            assert!(!result.found && result.value.is_empty(), "{key}");
        } else {
            assert!(result.found, "{key}");
            assert_eq!(result.value, format!("value-{i}").as_bytes(), "{key}");
        }
    }

    // Delete the even half (including missing keys), then read everything again.
    let evens: Vec<String> = (0..N).step_by(2).map(|i| format!("item-{i}")).collect();
    let reply = batch
        .batch_delete(req(
            None,
            BatchDeleteRequest {
                keys: evens.clone(),
            },
        ))
        .await
        .expect("batch delete")
        .into_inner();
    assert!(reply.all_success);
    assert_eq!(reply.results.len(), evens.len());
    let reply = batch
        .batch_get(req(None, BatchGetRequest { keys: keys.clone() }))
        .await
        .unwrap()
        .into_inner();
    let expected = (0..N)
        .filter(|i| !i.is_multiple_of(3) && i % 2 == 1)
        .count();
    assert_eq!(reply.found_count as usize, expected);

    // Empty batches are fine; a bad key anywhere rejects the whole batch.
    conformance::a_bad_key_rejects_the_whole_batch(&plugin.channel).await;
}

#[tokio::test]
async fn namespaces_isolate_key_spaces() {
    let (redis, plugin) = redis_and_plugin(&[]).await;
    conformance::namespaces_isolate(&plugin.channel).await;
    // Each namespace is a key prefix: tenant-a's item is gone, the others remain.
    let mut keys: Vec<String> = cli(&redis, &["--scan", "--pattern", "prism:*"])
        .await
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    assert_eq!(keys, ["prism:default:shared", "prism:tenant-b:shared"]);
    assert_eq!(cli(&redis, &["GET", "prism:tenant-b:shared"]).await, "b");
}

#[tokio::test]
async fn every_config_key_takes_effect() {
    let redis = Redis::start().await.expect("redis starts");
    let plugin = start_plugin(&[
        ("REDIS_ADDRESS", &redis.url()),
        ("PRISM_BACKEND__DATABASE", "3"),
        ("PRISM_BACKEND__KEY_PREFIX", "app1|"),
        ("PRISM_BACKEND__MAX_VALUE_BYTES", "1024"),
        ("PRISM_BACKEND__MAX_KEY_BYTES", "8"),
        ("PRISM_BACKEND__DEGRADED_LATENCY", "1us"),
        ("PRISM_BACKEND__RESPONSE_TIMEOUT", "1s"),
        ("PRISM_BACKEND__CONNECTION_TIMEOUT", "1s"),
        ("PRISM_BACKEND__CONNECTIONS", "3"),
    ])
    .await;
    // Three multiplexed connections: readiness needed a health PING on each.
    let clients = cli(&redis, &["CLIENT", "LIST"]).await;
    let plugin_clients = clients
        .lines()
        .filter(|line| !line.contains("cmd=client"))
        .count();
    assert_eq!(plugin_clients, 3, "{clients}");
    let mut kv = plugin.basic();
    kv.set(req(Some("ns"), set("k", vec![7u8; 1024], 0)))
        .await
        .expect("value at the limit");
    assert_eq!(
        cli(&redis, &["-n", "3", "STRLEN", "app1|ns:k"]).await,
        "1024"
    );
    assert_eq!(
        cli(&redis, &["-n", "0", "DBSIZE"]).await,
        "0",
        "database 3 only"
    );

    let err = kv
        .set(req(Some("ns"), set("k", vec![7u8; 1025], 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let message = err.message();
    assert!(message.contains("max_value_bytes"), "{message}");
    assert!(
        kv.set(req(Some("ns"), set("12345678", "v", 0)))
            .await
            .is_ok()
    );
    let err = kv
        .set(req(Some("ns"), set("123456789", "v", 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Degraded (PING slower than 1 µs) still serves, and health says why.
    let mut lifecycle = LifecycleInterfaceClient::new(plugin.channel.clone());
    let report = lifecycle
        .health_check(prism_plugin_core::proto::lifecycle::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        report.status,
        prism_plugin_core::proto::lifecycle::HealthStatus::Degraded as i32,
        "{report:?}"
    );
    assert!(report.details.contains_key("latency_ms"), "{report:?}");
    assert_eq!(
        report.details.get("mode").map(String::as_str),
        Some("standalone")
    );
    expect_serving(plugin.port, "readiness", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn read_only_acl_user_gets_permission_denied_on_writes_and_reads_fine() {
    const PASSWORD: &str = "ro-user-secret-99";
    let redis = Redis::start().await.expect("redis starts");
    assert_eq!(
        cli(&redis, &["SET", "prism:default:seeded", "yes"]).await,
        "OK"
    );
    let acl = cli(
        &redis,
        &[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            &format!(">{PASSWORD}"),
            "~prism:*",
            "+@read",
        ],
    )
    .await;
    assert_eq!(acl, "OK");
    let plugin = start_plugin(&[
        ("REDIS_ADDRESS", &redis.addr()),
        ("REDIS_USERNAME", "reader"),
        ("REDIS_PASSWORD", PASSWORD),
    ])
    .await;
    let mut kv = plugin.basic();

    let got = read(&mut kv, None, "seeded").await;
    assert!(got.found && &got.value[..] == b"yes");
    let reply = plugin
        .batch()
        .batch_get(req(
            None,
            BatchGetRequest {
                keys: vec!["seeded".into(), "other".into()],
            },
        ))
        .await
        .expect("MGET allowed")
        .into_inner();
    assert_eq!(reply.found_count, 1);

    let err = kv.set(req(None, set("seeded", "no", 0))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("no permissions"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains(PASSWORD));
    let err = kv
        .delete(req(
            None,
            DeleteRequest {
                key: "seeded".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = plugin
        .batch()
        .batch_set(req(
            None,
            BatchSetRequest {
                requests: vec![set("a", "1", 0), set("b", "2", 5)],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(cli(&redis, &["GET", "prism:default:seeded"]).await, "yes");
    assert!(!plugin.process.logs().contains(PASSWORD));
}

#[tokio::test]
async fn redis_outage_is_unavailable_and_recovers_without_a_plugin_restart() {
    let (mut redis, mut plugin) = redis_and_plugin(&[]).await;
    let mut kv = plugin.basic();
    kv.set(req(None, set("k", "v", 0)))
        .await
        .expect("set before outage");

    redis.stop().await.expect("redis stops");
    let down = Instant::now();
    // The first call after the drop may see the broken connection, later
    // ones the refused re-dial: both are UNAVAILABLE.
    for _ in 0..3 {
        let err = kv.get(req(None, get("k"))).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains(&redis.addr()), "{}", err.message());
    }
    let err = plugin
        .batch()
        .batch_get(req(
            None,
            BatchGetRequest {
                keys: vec!["k".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    eprintln!(
        "[timing] 4 failing calls during the outage took {:?}",
        down.elapsed()
    );
    expect_not_serving(plugin.port, "readiness", Duration::from_secs(3)).await;
    expect_serving(plugin.port, "liveness", Duration::from_secs(1)).await;

    redis.start_again().await.expect("redis restarts");
    let back = poll_until(Duration::from_secs(10), "data calls succeed again", || {
        let mut kv = kv.clone();
        async move { kv.set(req(None, set("k", "again", 0))).await.is_ok() }
    })
    .await;
    eprintln!("[timing] data calls work {back:?} after redis is back");
    let got = read(&mut kv, None, "k").await;
    assert_eq!(&got.value[..], b"again");
    plugin.wait("readiness", Duration::from_secs(5)).await;
    plugin.assert_running();
}

#[tokio::test]
async fn oversized_value_is_resource_exhausted_and_the_server_keeps_serving() {
    let (redis, plugin) = redis_and_plugin(&[]).await;
    let mut kv = plugin.basic();
    let limit = 16 * 1024 * 1024;
    let err = kv
        .set(req(None, set("huge", vec![1u8; limit + 1], 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("16777217"), "{}", err.message());
    let err = plugin
        .batch()
        .batch_set(req(
            None,
            BatchSetRequest {
                requests: vec![set("a", "1", 0), set("huge", vec![1u8; limit + 1], 0)],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(cli(&redis, &["DBSIZE"]).await, "0");

    // Exactly the limit works, and small calls keep working.
    kv.set(req(None, set("max", vec![2u8; limit], 0)))
        .await
        .expect("16 MiB value");
    assert_eq!(
        cli(&redis, &["STRLEN", "prism:default:max"]).await,
        limit.to_string()
    );
    kv.set(req(None, set("small", "ok", 0)))
        .await
        .expect("still serving");
    assert!(read(&mut kv, None, "small").await.found);
}

#[tokio::test]
async fn redis_oom_is_resource_exhausted_and_slow_redis_is_deadline_exceeded() {
    let redis = Redis::start_with_args(&[
        "--maxmemory",
        "4mb",
        "--maxmemory-policy",
        "noeviction",
        "--enable-debug-command",
        "yes",
    ])
    .await
    .expect("redis starts");
    let plugin = start_plugin(&[
        ("REDIS_ADDRESS", &redis.addr()),
        ("PRISM_BACKEND__RESPONSE_TIMEOUT", "300ms"),
    ])
    .await;
    let mut kv = plugin.basic();
    let value = vec![3u8; 512 * 1024];
    let mut oom = None;
    for i in 0..64 {
        match kv
            .set(req(None, set(&format!("fill-{i}"), value.clone(), 0)))
            .await
        {
            Ok(_) => continue,
            Err(status) => {
                oom = Some((i, status));
                break;
            }
        }
    }
    let (writes, status) = oom.expect("maxmemory reached");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("OOM"), "{}", status.message());
    eprintln!("[info] OOM after {writes} writes of 512 KiB");
    // Reads still work under OOM.
    assert!(read(&mut kv, None, "fill-0").await.found);

    // A server stuck longer than response_timeout → DEADLINE_EXCEEDED.
    let sleeper = tokio::spawn({
        let cli = prism_testkit::tool("redis-cli").unwrap();
        let port = redis.port().to_string();
        async move {
            tokio::process::Command::new(cli)
                .args(["-p", &port, "DEBUG", "SLEEP", "1"])
                .output()
                .await
        }
    });
    let err = poll_until_err(&mut kv, Code::DeadlineExceeded).await;
    assert!(
        err.message().contains("did not answer") || err.message().contains("timed out"),
        "{}",
        err.message()
    );
    sleeper.await.unwrap().unwrap();
    poll_until(Duration::from_secs(5), "calls work after the stall", || {
        let mut kv = kv.clone();
        async move { kv.get(req(None, get("fill-0"))).await.is_ok() }
    })
    .await;
}

/// Calls Get until it fails with `code` (the stall starts asynchronously).
async fn poll_until_err(
    kv: &mut prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient<tonic::transport::Channel>,
    code: Code,
) -> tonic::Status {
    let start = Instant::now();
    loop {
        if let Err(status) = kv.get(req(None, get("fill-0"))).await {
            assert_eq!(status.code(), code, "{status:?}");
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "no {code:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn grpcurl_sets_with_a_ttl_and_gets_via_reflection() {
    let (_redis, plugin) = redis_and_plugin(&[]).await;
    conformance::grpcurl_set_and_get(&plugin, "from-cli", Some(60)).await;
    let reply = conformance::grpcurl(
        plugin.port,
        "KeyValueTTLInterface/GetTTL",
        r#"{"key":"from-cli"}"#,
    )
    .await;
    let left: i64 = reply["ttlSeconds"].as_str().unwrap_or("0").parse().unwrap();
    assert!((59..=60).contains(&left), "{reply}");
}

/// Runs `openssl` with `args` in `dir`, failing the test with its stderr.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn rediss_address_talks_tls_verified_against_the_configured_ca() {
    // A throwaway CA and a server certificate for 127.0.0.1 (ECDSA P-256: fast).
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=prism-test-ca"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
    openssl(dir, &csr);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let tls_port = prism_testkit::free_port().to_string();
    let redis = Redis::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
    ])
    .await
    .expect("redis with TLS starts");
    let address = format!("rediss://127.0.0.1:{tls_port}");
    let plugin = start_plugin(&[
        ("REDIS_ADDRESS", &address),
        ("PRISM_BACKEND__TLS_CA_FILE", &path("ca.crt")),
    ])
    .await;
    let mut kv = plugin.basic();
    kv.set(req(None, set("secure", "yes", 30)))
        .await
        .expect("set over TLS");
    let got = read(&mut kv, None, "secure").await;
    assert_eq!(&got.value[..], b"yes");
    assert_eq!(cli(&redis, &["GET", "prism:default:secure"]).await, "yes");
    assert!(
        cli(&redis, &["INFO", "stats"])
            .await
            .contains("total_connections_received")
    );

    // Without the CA the server's certificate is not trusted: never ready.
    let untrusted = spawn_plugin(&[("REDIS_ADDRESS", &address)]).await;
    expect_not_serving(untrusted.port, "readiness", Duration::from_secs(2)).await;
    let err = untrusted
        .basic()
        .get(req(None, get("secure")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}
