//! Namespaces (`x-prism-namespace`) as separate key spaces.

use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_client::KeyValueTtlInterfaceClient;
use prism_plugin_core::proto::keyvalue::{BatchGetRequest, GetTtlRequest};
use tonic::Code;
use tonic::transport::Channel;

use super::{delete, found};
use crate::kv::{basic, batch, get, req, set};

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
        kv.set(req(ns, set("shared", value, 0))).await.expect("set");
    }
    for (ns, want) in [
        (Some("tenant-a"), "a"),
        (Some("tenant-b"), "b"),
        (None, "default"),
        (Some("default"), "default"),
    ] {
        let got = kv
            .get(req(ns, get("shared")))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(&got.value[..], want.as_bytes(), "namespace {ns:?}");
    }
    assert!(!found(&mut kv, Some("tenant-c"), "shared").await);

    kv.delete(req(Some("tenant-a"), delete("shared")))
        .await
        .expect("delete");
    assert!(!found(&mut kv, Some("tenant-a"), "shared").await);
    assert!(found(&mut kv, Some("tenant-b"), "shared").await);
    let keys = vec!["shared".to_owned()];
    for (ns, want) in [("tenant-a", 0), ("tenant-b", 1)] {
        let got = batch(channel)
            .batch_get(req(Some(ns), BatchGetRequest { keys: keys.clone() }))
            .await
            .expect("batch get")
            .into_inner();
        assert_eq!(got.found_count, want, "BatchGet in {ns}");
    }

    for bad in ["has space", "colon:inside", "x/y"] {
        let err = kv.get(req(Some(bad), get("shared"))).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "namespace {bad:?}");
    }
    let err = KeyValueTtlInterfaceClient::new(channel.clone())
        .get_ttl(req(Some("bad ns"), GetTtlRequest { key: "k".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}
