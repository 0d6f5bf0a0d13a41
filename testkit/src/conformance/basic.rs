//! Get/Set/Exists/Delete in the default namespace, under concurrency too.

use prism_plugin_core::proto::keyvalue::BatchGetRequest;
use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use tonic::transport::Channel;

use super::{delete, exists};
use crate::kv::{basic, batch, get, req, set};

type Basic = KeyValueBasicInterfaceClient<Channel>;

/// Get/Set/Exists/Delete in the default namespace: a missing key is
/// `found=false` with gRPC OK, overwrite, empty and binary values, values of
/// each size in `big_values` byte for byte, deleting a missing key succeeds,
/// concurrent deletes of one key all succeed, and 50 concurrent writers × 20
/// keys all land. Leaves `greeting` = "bye" deleted, `empty`, `binary`, `big`
/// and the 1,000 `w../k..` keys in namespace `load`.
pub async fn basic_semantics(channel: &Channel, big_values: &[usize]) {
    let mut kv = basic(channel);
    missing_set_and_overwrite(&mut kv).await;
    empty_binary_and_big_values(&mut kv, big_values).await;
    exists_and_delete(&mut kv).await;
    concurrent_deletes_all_succeed(channel, &mut kv).await;
    concurrent_writers_all_land(channel).await;
}

/// Reads `key`'s reply in the default namespace.
async fn read(kv: &mut Basic, key: &str) -> prism_plugin_core::proto::keyvalue::GetResponse {
    kv.get(req(None, get(key))).await.expect("get").into_inner()
}

async fn missing_set_and_overwrite(kv: &mut Basic) {
    let missing = read(kv, "nope").await;
    assert!(!missing.found, "a missing key is not found");
    assert!(
        missing.error.is_empty(),
        "and not an error: {}",
        missing.error
    );
    assert!(missing.value.is_empty());

    let reply = kv
        .set(req(None, set("greeting", "hello", 0)))
        .await
        .expect("set")
        .into_inner();
    assert!(reply.success && reply.error.is_empty(), "{reply:?}");
    let got = read(kv, "greeting").await;
    assert!(got.found && got.error.is_empty());
    assert_eq!(&got.value[..], b"hello");
    kv.set(req(None, set("greeting", "bye", 0)))
        .await
        .expect("overwrite");
    let got = read(kv, "greeting").await;
    assert_eq!(&got.value[..], b"bye", "an overwrite replaces the value");
}

async fn empty_binary_and_big_values(kv: &mut Basic, big_values: &[usize]) {
    kv.set(req(None, set("empty", Vec::new(), 0)))
        .await
        .expect("set empty");
    let got = read(kv, "empty").await;
    assert!(
        got.found && got.value.is_empty(),
        "an empty value is stored and found"
    );

    let binary: Vec<u8> = (0..=255u8).collect();
    kv.set(req(None, set("binary", binary.clone(), 0)))
        .await
        .expect("set binary");
    let got = read(kv, "binary").await;
    assert_eq!(got.value.to_vec(), binary, "0x00..=0xFF byte for byte");

    for &size in big_values {
        let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        kv.set(req(None, set("big", big.clone(), 0)))
            .await
            .expect("set big");
        let got = read(kv, "big").await;
        assert!(got.found && got.value == big, "{size} bytes round-trip");
    }
}

async fn exists_and_delete(kv: &mut Basic) {
    assert!(exists(kv, None, "greeting").await);
    assert!(!exists(kv, None, "nope").await);
    let deleted = kv.delete(req(None, delete("greeting"))).await;
    let deleted = deleted.expect("delete").into_inner();
    assert!(deleted.success && deleted.error.is_empty(), "{deleted:?}");
    assert!(!exists(kv, None, "greeting").await);
    let deleted = kv.delete(req(None, delete("never-was"))).await;
    let deleted = deleted.expect("delete missing").into_inner();
    let ok = deleted.success && deleted.error.is_empty();
    assert!(ok, "deleting a missing key succeeds: {deleted:?}");
}

async fn concurrent_deletes_all_succeed(channel: &Channel, kv: &mut Basic) {
    kv.set(req(None, set("contested", "x", 0)))
        .await
        .expect("set");
    let deletes = (0..20).map(|_| {
        let mut kv = basic(channel);
        async move { kv.delete(req(None, delete("contested"))).await }
    });
    for result in futures::future::join_all(deletes).await {
        let reply = result.expect("concurrent delete").into_inner();
        assert!(reply.success && reply.error.is_empty(), "{reply:?}");
    }
    assert!(!exists(kv, None, "contested").await);
}

async fn concurrent_writers_all_land(channel: &Channel) {
    let writers = (0..50).map(|w| {
        let mut kv = basic(channel);
        async move {
            for k in 0..20 {
                let key = format!("w{w:02}/k{k:02}");
                kv.set(req(Some("load"), set(&key, key.clone(), 0))).await?;
            }
            Ok::<_, tonic::Status>(())
        }
    });
    for result in futures::future::join_all(writers).await {
        result.expect("writer");
    }
    let keys: Vec<String> = (0..50)
        .flat_map(|w| (0..20).map(move |k| format!("w{w:02}/k{k:02}")))
        .collect();
    let got = batch(channel)
        .batch_get(req(Some("load"), BatchGetRequest { keys: keys.clone() }))
        .await
        .expect("batch get")
        .into_inner();
    assert_eq!(got.found_count, 1000, "every concurrent write landed");
    for (key, result) in keys.iter().zip(&got.results) {
        assert_eq!(&result.value[..], key.as_bytes());
    }
}
