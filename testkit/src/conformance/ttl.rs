//! TTLs: Set with a TTL, GetTTL, Expire and Persist (DESIGN.md §3.2).

use std::time::{Duration, Instant};

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_client::KeyValueTtlInterfaceClient;
use prism_plugin_core::proto::keyvalue::{
    BatchGetRequest, ExpireRequest, ExpireResponse, GetTtlRequest, PersistRequest, PersistResponse,
};
use tonic::Code;
use tonic::transport::Channel;

use super::{exists, found};
use crate::kv::{basic, batch, code, get, poll_until, req, set};

type Ttl = KeyValueTtlInterfaceClient<Channel>;

/// An item set with a 2 s TTL is readable at once and invisible to every read
/// (Get, Exists, BatchGet, GetTTL = -2) from 2 s on, at the latest by 3 s;
/// setting it again makes a fresh key. GetTTL is -1 without expiry and -2 for
/// a missing key; Expire and Persist report whether the key existed and
/// whether an expiry was removed, Expire creates nothing, Expire 0 expires at
/// once, a negative TTL is INVALID_ARGUMENT, and a Set without TTL clears an
/// earlier one.
pub async fn ttl_semantics(channel: &Channel) {
    let mut kv = basic(channel);
    let mut ttl = KeyValueTtlInterfaceClient::new(channel.clone());
    a_short_ttl_hides_the_item_at_once(channel, &mut kv, &mut ttl).await;
    get_ttl_expire_and_persist(&mut kv, &mut ttl).await;
    a_set_without_ttl_clears_it(&mut kv, &mut ttl).await;
}

async fn ttl_of(ttl: &mut Ttl, key: &str) -> i64 {
    ttl.get_ttl(req(
        None,
        GetTtlRequest {
            key: key.to_owned(),
        },
    ))
    .await
    .expect("get ttl")
    .into_inner()
    .ttl_seconds
}

fn expire(key: &str, ttl_seconds: i64) -> ExpireRequest {
    ExpireRequest {
        key: key.to_owned(),
        ttl_seconds,
    }
}

/// Expire's reply for `key`, `ttl_seconds`.
async fn expired(ttl: &mut Ttl, key: &str, ttl_seconds: i64) -> ExpireResponse {
    let reply = ttl.expire(req(None, expire(key, ttl_seconds))).await;
    reply.expect("expire").into_inner()
}

/// Persist's reply for `key`.
async fn persisted(ttl: &mut Ttl, key: &str) -> PersistResponse {
    let request = PersistRequest {
        key: key.to_owned(),
    };
    ttl.persist(req(None, request))
        .await
        .expect("persist")
        .into_inner()
}

async fn a_short_ttl_hides_the_item_at_once(
    channel: &Channel,
    kv: &mut KeyValueBasicInterfaceClient<Channel>,
    ttl: &mut Ttl,
) {
    let set_at = Instant::now();
    kv.set(req(None, set("short", "x", 2)))
        .await
        .expect("set with ttl");
    let left = ttl
        .get_ttl(req(
            None,
            GetTtlRequest {
                key: "short".into(),
            },
        ))
        .await
        .expect("get ttl")
        .into_inner();
    assert!(
        (1..=2).contains(&left.ttl_seconds) && left.error.is_empty(),
        "{left:?}"
    );
    assert!(found(kv, None, "short").await);
    let gone = poll_until(Duration::from_secs(4), "expiry", || {
        let mut kv = kv.clone();
        async move { !found(&mut kv, None, "short").await }
    })
    .await;
    let elapsed = set_at.elapsed();
    eprintln!("[timing] 2 s TTL gone after {elapsed:?} (poll {gone:?})");
    assert!(
        elapsed >= Duration::from_millis(1900),
        "expired early: {elapsed:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(3),
        "still visible after 3 s: {elapsed:?}"
    );
    // Invisible to every read, whatever the backend does with it later.
    assert!(!exists(kv, None, "short").await);
    assert_eq!(ttl_of(ttl, "short").await, -2);
    let got = batch(channel)
        .batch_get(req(
            None,
            BatchGetRequest {
                keys: vec!["short".into()],
            },
        ))
        .await
        .expect("batch get")
        .into_inner();
    assert_eq!(got.found_count, 0);
    // Setting it again makes it a fresh key.
    kv.set(req(None, set("short", "y", 0))).await.expect("set");
    let got = kv.get(req(None, get("short"))).await.expect("get");
    assert_eq!(&got.into_inner().value[..], b"y");
}

async fn get_ttl_expire_and_persist(kv: &mut KeyValueBasicInterfaceClient<Channel>, ttl: &mut Ttl) {
    kv.set(req(None, set("forever", "x", 0)))
        .await
        .expect("set");
    assert_eq!(ttl_of(ttl, "forever").await, -1, "no expiry");
    assert_eq!(ttl_of(ttl, "missing").await, -2, "missing");

    let reply = expired(ttl, "forever", 100).await;
    let ok = reply.success && reply.error.is_empty();
    assert!(ok && reply.key_existed, "{reply:?}");
    let left = ttl_of(ttl, "forever").await;
    assert!((99..=100).contains(&left), "{left}");
    let reply = persisted(ttl, "forever").await;
    let ok = reply.success && reply.error.is_empty();
    assert!(ok && reply.expiration_removed, "{reply:?}");
    assert_eq!(ttl_of(ttl, "forever").await, -1);
    for key in ["forever", "missing"] {
        let reply = persisted(ttl, key).await;
        let removed = reply.expiration_removed;
        assert!(reply.success && !removed, "no expiry on {key}: {reply:?}");
    }
    let reply = expired(ttl, "missing", 10).await;
    let ok = reply.success && reply.error.is_empty();
    assert!(ok && !reply.key_existed, "{reply:?}");
    assert!(!found(kv, None, "missing").await, "Expire creates nothing");

    // Expire 0 = now.
    let reply = expired(ttl, "forever", 0).await;
    assert!(reply.success && reply.key_existed, "{reply:?}");
    assert!(!found(kv, None, "forever").await);
    assert_eq!(ttl_of(ttl, "forever").await, -2);
    assert_eq!(
        code(ttl.expire(req(None, expire("short", -5))).await),
        Code::InvalidArgument
    );
}

async fn a_set_without_ttl_clears_it(
    kv: &mut KeyValueBasicInterfaceClient<Channel>,
    ttl: &mut Ttl,
) {
    kv.set(req(None, set("k", "v1", 100))).await.expect("set");
    let left = ttl_of(ttl, "k").await;
    assert!((99..=100).contains(&left), "{left}");
    kv.set(req(None, set("k", "v2", 0))).await.expect("set");
    assert_eq!(ttl_of(ttl, "k").await, -1, "a Set without TTL clears it");
}
