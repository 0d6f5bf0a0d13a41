//! `prism-redis` in cluster mode against a real three-node Redis Cluster:
//! keys spread over slots, batch operations spanning slots, and a node restart.

mod common;

use std::time::{Duration, Instant};

use common::{Plugin, get, poll_until, req, set, start_cluster, start_plugin, wait_cluster_ok};
use prism_plugin_core::proto::keyvalue::{
    BatchDeleteRequest, BatchGetRequest, BatchSetRequest, GetTtlRequest,
};
use prism_testkit::Redis;
use prism_testkit::lifecycle::expect_not_serving;
use tonic::Code;

const N: usize = 1000;

/// How many keys each node holds.
async fn dbsizes(nodes: &[Redis]) -> Vec<usize> {
    let mut sizes = Vec::new();
    for node in nodes {
        let size = node.cli(&["DBSIZE"]).await.expect("redis-cli DBSIZE");
        sizes.push(size.parse().expect("a number"));
    }
    sizes
}

fn key(i: usize) -> String {
    format!("user:{i}")
}

fn all_keys() -> Vec<String> {
    (0..N).map(key).collect()
}

async fn batch_set_all(plugin: &Plugin) -> Result<(), tonic::Status> {
    let requests = (0..N)
        .filter(|i| !i.is_multiple_of(4))
        .map(|i| {
            set(
                &key(i),
                format!("v{i}"),
                if i.is_multiple_of(2) { 600 } else { 0 },
            )
        })
        .collect();
    let reply = plugin
        .batch()
        .batch_set(req(None, BatchSetRequest { requests }))
        .await?
        .into_inner();
    assert!(reply.all_success);
    Ok(())
}

/// Reads all keys in one BatchGet and checks order and presence.
async fn batch_get_all(plugin: &Plugin) -> Result<usize, tonic::Status> {
    let keys = all_keys();
    let reply = plugin
        .batch()
        .batch_get(req(None, BatchGetRequest { keys: keys.clone() }))
        .await?
        .into_inner();
    assert_eq!(reply.results.len(), N);
    for (i, result) in reply.results.iter().enumerate() {
        if i.is_multiple_of(4) {
            assert!(!result.found, "{}", key(i));
        } else {
            assert!(result.found, "{}", key(i));
            assert_eq!(result.value, format!("v{i}").as_bytes());
        }
    }
    Ok(reply.found_count as usize)
}

#[tokio::test]
async fn cluster_spreads_keys_splits_batches_per_slot_and_survives_a_node_restart() {
    let (mut nodes, seeds) = start_cluster().await;
    let plugin = start_plugin(&[
        ("PRISM_BACKEND__CLUSTER_NODES", &seeds),
        ("PRISM_BACKEND__RESPONSE_TIMEOUT", "1s"),
        ("PRISM_BACKEND__CONNECTION_TIMEOUT", "1s"),
    ])
    .await;

    // 1,000 keys (750 written) over all three nodes in one BatchSet.
    let started = Instant::now();
    batch_set_all(&plugin)
        .await
        .expect("batch set across slots");
    eprintln!("[timing] cluster BatchSet of 750: {:?}", started.elapsed());
    let per_node = dbsizes(&nodes).await;
    assert_eq!(per_node.iter().sum::<usize>(), 750, "{per_node:?}");
    assert!(
        per_node.iter().all(|&n| n > 100),
        "keys spread over nodes: {per_node:?}"
    );

    let started = Instant::now();
    assert_eq!(
        batch_get_all(&plugin)
            .await
            .expect("batch get across slots"),
        750
    );
    eprintln!("[timing] cluster BatchGet of {N}: {:?}", started.elapsed());

    // Single-key calls and TTLs route to the owning node.
    let mut kv = plugin.basic();
    let got = kv.get(req(None, get(&key(1)))).await.unwrap().into_inner();
    assert_eq!(&got.value[..], b"v1");
    let left = plugin
        .ttl()
        .get_ttl(req(None, GetTtlRequest { key: key(2) }))
        .await
        .unwrap()
        .into_inner()
        .ttl_seconds;
    assert!((599..=600).contains(&left), "{left}");

    // BatchDelete across slots.
    let evens: Vec<String> = (0..N).step_by(2).map(key).collect();
    let reply = plugin
        .batch()
        .batch_delete(req(None, BatchDeleteRequest { keys: evens }))
        .await
        .expect("batch delete across slots")
        .into_inner();
    assert!(reply.all_success);
    let per_node = dbsizes(&nodes).await;
    assert_eq!(
        per_node.iter().sum::<usize>(),
        500,
        "odd keys left: {per_node:?}"
    );

    // Restart one node: calls touching its slots fail while it is down
    // (retryable codes only), and everything works again once it is back.
    nodes[1].stop().await.expect("node stops");
    let down = Instant::now();
    let err = loop {
        match batch_get_all(&plugin).await {
            Err(status) => break status,
            Ok(_) => {
                assert!(
                    down.elapsed() < Duration::from_secs(5),
                    "no failure with a node down"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err:?}"
    );
    eprintln!(
        "[info] with a node down: {:?} after {:?}",
        err.code(),
        down.elapsed()
    );
    expect_not_serving(plugin.port, "readiness", Duration::from_secs(3)).await;
    let err = kv.set(req(None, set(&key(1), "x", 0))).await;
    eprintln!(
        "[info] single Set while a node is down: {:?}",
        err.as_ref().map(drop).map_err(|s| s.code())
    );

    nodes[1].start_again().await.expect("node restarts");
    let back = wait_cluster_ok(&nodes, Duration::from_secs(20)).await;
    eprintln!("[timing] cluster_state:ok {back:?} after the node restarted");
    // The restarted node lost its data (no persistence): write again, read all.
    let recovered = poll_until(
        Duration::from_secs(20),
        "batch calls succeed after the restart",
        || async {
            match batch_set_all(&plugin).await {
                Ok(()) => batch_get_all(&plugin).await.is_ok(),
                Err(status) => {
                    eprintln!("[info] not yet: {:?} {}", status.code(), status.message());
                    false
                }
            }
        },
    )
    .await;
    eprintln!("[timing] plugin served the whole key space {recovered:?} after cluster_state:ok");
    assert_eq!(batch_get_all(&plugin).await.unwrap(), 750);
    plugin.wait("readiness", Duration::from_secs(5)).await;
}
