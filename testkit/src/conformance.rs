//! The Prism KeyValue acceptance semantics (DESIGN.md §3.2) as reusable checks,
//! run by every KeyValue plugin's tests against its own real backend: each
//! plugin's test calls these over gRPC, then adds what only its backend can show
//! (how PostgreSQL rows or Redis keys look afterwards).

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_batch_interface_client::KeyValueBatchInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_client::KeyValueTtlInterfaceClient;
use prism_plugin_core::proto::keyvalue::{
    BatchGetRequest, DeleteRequest, ExistsRequest, GetRequest, GetTtlRequest, SetRequest,
};
use tonic::Code;
use tonic::transport::Channel;

/// Large enough for the 8 MiB values the checks send.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// `msg` with the `x-prism-namespace` header when `ns` is given.
pub fn request<T>(ns: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    if let Some(ns) = ns {
        request
            .metadata_mut()
            .insert("x-prism-namespace", ns.parse().expect("ascii namespace"));
    }
    request
}

fn set(key: &str, value: impl Into<Vec<u8>>) -> SetRequest {
    SetRequest {
        key: key.to_owned(),
        value: value.into().into(),
        tags: None,
        ttl_seconds: 0,
    }
}

fn get(key: &str) -> GetRequest {
    GetRequest {
        key: key.to_owned(),
    }
}

fn basic(channel: &Channel) -> KeyValueBasicInterfaceClient<Channel> {
    KeyValueBasicInterfaceClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

fn batch(channel: &Channel) -> KeyValueBatchInterfaceClient<Channel> {
    KeyValueBatchInterfaceClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Whether `key` exists in namespace `ns`.
async fn exists(
    kv: &mut KeyValueBasicInterfaceClient<Channel>,
    ns: Option<&str>,
    key: &str,
) -> bool {
    kv.exists(request(
        ns,
        ExistsRequest {
            key: key.to_owned(),
        },
    ))
    .await
    .expect("exists")
    .into_inner()
    .exists
}

/// Whether `key` is found by Get in namespace `ns`.
async fn found(
    kv: &mut KeyValueBasicInterfaceClient<Channel>,
    ns: Option<&str>,
    key: &str,
) -> bool {
    kv.get(request(ns, get(key)))
        .await
        .expect("get")
        .into_inner()
        .found
}

fn delete(key: &str) -> DeleteRequest {
    DeleteRequest {
        key: key.to_owned(),
    }
}

/// Get/Set/Exists/Delete in the default namespace: a missing key is
/// `found=false` with gRPC OK, overwrite, empty and binary values, values of
/// each size in `big_values` byte for byte, deleting a missing key succeeds,
/// concurrent deletes of one key all succeed, and 50 concurrent writers × 20
/// keys all land. Leaves `greeting` = "bye" deleted, `empty`, `binary`, `big`
/// and the 1,000 `w../k..` keys in namespace `load`.
pub async fn basic_semantics(channel: &Channel, big_values: &[usize]) {
    let mut kv = basic(channel);

    let missing = kv
        .get(request(None, get("nope")))
        .await
        .expect("get")
        .into_inner();
    assert!(!missing.found, "a missing key is not found");
    assert!(
        missing.error.is_empty(),
        "and not an error: {}",
        missing.error
    );
    assert!(missing.value.is_empty());

    let reply = kv
        .set(request(None, set("greeting", "hello")))
        .await
        .expect("set")
        .into_inner();
    assert!(reply.success && reply.error.is_empty(), "{reply:?}");
    let got = kv
        .get(request(None, get("greeting")))
        .await
        .expect("get")
        .into_inner();
    assert!(got.found && got.error.is_empty());
    assert_eq!(&got.value[..], b"hello");
    kv.set(request(None, set("greeting", "bye")))
        .await
        .expect("overwrite");
    let got = kv
        .get(request(None, get("greeting")))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got.value[..], b"bye", "an overwrite replaces the value");

    kv.set(request(None, set("empty", Vec::new())))
        .await
        .expect("set empty");
    let got = kv
        .get(request(None, get("empty")))
        .await
        .expect("get")
        .into_inner();
    assert!(
        got.found && got.value.is_empty(),
        "an empty value is stored and found"
    );

    let binary: Vec<u8> = (0..=255u8).collect();
    kv.set(request(None, set("binary", binary.clone())))
        .await
        .expect("set binary");
    let got = kv
        .get(request(None, get("binary")))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.value.to_vec(), binary, "0x00..=0xFF byte for byte");

    for &size in big_values {
        let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        kv.set(request(None, set("big", big.clone())))
            .await
            .expect("set big");
        let got = kv
            .get(request(None, get("big")))
            .await
            .expect("get big")
            .into_inner();
        assert!(got.found && got.value == big, "{size} bytes round-trip");
    }

    assert!(exists(&mut kv, None, "greeting").await);
    assert!(!exists(&mut kv, None, "nope").await);
    let deleted = kv
        .delete(request(None, delete("greeting")))
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.success && deleted.error.is_empty(), "{deleted:?}");
    assert!(!exists(&mut kv, None, "greeting").await);
    let deleted = kv
        .delete(request(None, delete("never-was")))
        .await
        .expect("delete missing")
        .into_inner();
    assert!(
        deleted.success && deleted.error.is_empty(),
        "deleting a missing key succeeds"
    );

    kv.set(request(None, set("contested", "x")))
        .await
        .expect("set");
    let deletes = (0..20).map(|_| {
        let mut kv = basic(channel);
        async move { kv.delete(request(None, delete("contested"))).await }
    });
    for result in futures::future::join_all(deletes).await {
        let reply = result.expect("concurrent delete").into_inner();
        assert!(reply.success && reply.error.is_empty(), "{reply:?}");
    }
    assert!(!exists(&mut kv, None, "contested").await);

    let writers = (0..50).map(|w| {
        let mut kv = basic(channel);
        async move {
            for k in 0..20 {
                let key = format!("w{w:02}/k{k:02}");
                kv.set(request(Some("load"), set(&key, key.clone())))
                    .await?;
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
        .batch_get(request(
            Some("load"),
            BatchGetRequest { keys: keys.clone() },
        ))
        .await
        .expect("batch get")
        .into_inner();
    assert_eq!(got.found_count, 1000, "every concurrent write landed");
    for (key, result) in keys.iter().zip(&got.results) {
        assert_eq!(&result.value[..], key.as_bytes());
    }
}

/// Namespaces (`x-prism-namespace`) are separate key spaces for Get, Delete and
/// BatchGet; no header is namespace `default`; an invalid namespace is
/// INVALID_ARGUMENT on every service. Leaves `shared` in `tenant-b` ("b") and
/// `default` ("default").
pub async fn namespaces_isolate(channel: &Channel) {
    let mut kv = basic(channel);
    for (ns, value) in [
        (Some("tenant-a"), "a"),
        (Some("tenant-b"), "b"),
        (None, "default"),
    ] {
        kv.set(request(ns, set("shared", value)))
            .await
            .expect("set");
    }
    for (ns, want) in [
        (Some("tenant-a"), "a"),
        (Some("tenant-b"), "b"),
        (None, "default"),
        (Some("default"), "default"),
    ] {
        let got = kv
            .get(request(ns, get("shared")))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(&got.value[..], want.as_bytes(), "namespace {ns:?}");
    }
    assert!(!found(&mut kv, Some("tenant-c"), "shared").await);

    kv.delete(request(Some("tenant-a"), delete("shared")))
        .await
        .expect("delete");
    assert!(!found(&mut kv, Some("tenant-a"), "shared").await);
    assert!(found(&mut kv, Some("tenant-b"), "shared").await);
    let keys = vec!["shared".to_owned()];
    for (ns, want) in [("tenant-a", 0), ("tenant-b", 1)] {
        let got = batch(channel)
            .batch_get(request(Some(ns), BatchGetRequest { keys: keys.clone() }))
            .await
            .expect("batch get")
            .into_inner();
        assert_eq!(got.found_count, want, "BatchGet in {ns}");
    }

    for bad in ["has space", "colon:inside", "x/y"] {
        let err = kv.get(request(Some(bad), get("shared"))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "namespace {bad:?}");
    }
    let err = KeyValueTtlInterfaceClient::new(channel.clone())
        .get_ttl(request(Some("bad ns"), GetTtlRequest { key: "k".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
