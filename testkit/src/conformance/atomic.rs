//! `KeyValueAtomicInterface` (DESIGN.md §3.2): compare-and-swap and counters,
//! their semantics in one namespace and isolation from another (their
//! atomicity under many concurrent clients is `atomic_load.rs`). Every check
//! first asks `Initialize` whether the plugin declares the interface and
//! skips (returns `false`) when it does not, so a plugin without atomics (the
//! xtask skeleton) runs the same suite.

use std::time::Duration;

use bytes::Bytes;
use prism_plugin_core::proto::keyvalue::key_value_atomic_interface_client::KeyValueAtomicInterfaceClient;
use prism_plugin_core::proto::keyvalue::key_value_ttl_interface_client::KeyValueTtlInterfaceClient;
use prism_plugin_core::proto::keyvalue::{
    CompareAndSwapRequest, CompareAndSwapResponse, GetTtlRequest, IncrementRequest,
};
use tonic::Code;
use tonic::transport::Channel;

use super::discovery::interface_metadata;
use crate::kv::{basic, code, poll_until, read, req, set};

/// The interface's name in `InitializeResponse.metadata.interfaces`.
pub const ATOMIC_INTERFACE: &str = "KeyValueAtomicInterface";

type Atomic = KeyValueAtomicInterfaceClient<Channel>;

/// A CompareAndSwap request writing `value` (no TTL) when the key holds
/// `expected` (`None`: when it is absent).
pub fn cas(key: &str, expected: Option<&str>, value: &str) -> CompareAndSwapRequest {
    CompareAndSwapRequest {
        key: key.to_owned(),
        expected: Bytes::copy_from_slice(expected.unwrap_or_default().as_bytes()),
        expect_absent: expected.is_none(),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ttl_seconds: 0,
        delete: false,
    }
}

/// An Increment of `key` by `delta`, with `ttl_seconds` on create.
pub fn incr(key: &str, delta: i64, ttl_seconds: i64) -> IncrementRequest {
    IncrementRequest {
        key: key.to_owned(),
        delta,
        ttl_seconds,
    }
}

/// A KeyValueAtomic client on `channel`.
pub fn atomic(channel: &Channel) -> Atomic {
    KeyValueAtomicInterfaceClient::new(channel.clone())
}

pub(super) async fn swap(
    kv: &mut Atomic,
    ns: &str,
    request: CompareAndSwapRequest,
) -> CompareAndSwapResponse {
    let reply = kv.compare_and_swap(req(Some(ns), request)).await;
    let reply = reply.expect("compare and swap").into_inner();
    assert!(reply.error.is_empty(), "{reply:?}");
    reply
}

pub(super) async fn add(kv: &mut Atomic, ns: &str, key: &str, delta: i64, ttl_seconds: i64) -> i64 {
    let reply = kv
        .increment(req(Some(ns), incr(key, delta, ttl_seconds)))
        .await;
    reply.expect("increment").into_inner().value
}

/// The value Get returns for `key` in `ns`, as text (`None`: not found).
pub(super) async fn text(channel: &Channel, ns: &str, key: &str) -> Option<String> {
    let got = read(&mut basic(channel), Some(ns), key).await;
    got.found
        .then(|| String::from_utf8_lossy(&got.value).into_owned())
}

/// Every atomic semantic in namespace `ns` and isolation from `other`
/// (keys start with `atomic-`): CAS from absent, from a value, CAS-delete,
/// CAS on an expired key, Increment with a TTL on create, a non-integer or
/// overflowing counter refused and unchanged, validation. Returns `false`
/// (checking nothing) when the plugin does not declare the interface.
pub async fn atomic_semantics(channel: &Channel, ns: &str, other: &str) -> bool {
    if interface_metadata(channel, ATOMIC_INTERFACE)
        .await
        .is_none()
    {
        eprintln!("[conformance] {ATOMIC_INTERFACE} not declared: atomic checks skipped");
        return false;
    }
    compare_and_swap_semantics(channel, ns).await;
    increment_semantics(channel, ns).await;
    counters_refuse_non_integers(channel, ns).await;
    expired_keys_are_absent(channel, ns).await;
    namespaces_isolate_atomics(channel, ns, other).await;
    true
}

async fn compare_and_swap_semantics(channel: &Channel, ns: &str) {
    let mut kv = atomic(channel);
    let key = "atomic-cas";
    // From absent: the first swaps, the second sees the value.
    assert!(swap(&mut kv, ns, cas(key, None, "v1")).await.swapped);
    let lost = swap(&mut kv, ns, cas(key, None, "v2")).await;
    assert!(
        !lost.swapped && lost.current_found && lost.current == "v1",
        "{lost:?}"
    );
    // From a value: a wrong expectation reports the current value.
    let lost = swap(&mut kv, ns, cas(key, Some("v0"), "v2")).await;
    assert!(!lost.swapped && lost.current == "v1", "{lost:?}");
    assert!(swap(&mut kv, ns, cas(key, Some("v1"), "v2")).await.swapped);
    assert_eq!(text(channel, ns, key).await.as_deref(), Some("v2"));
    // An empty value is a value (found), distinct from absent.
    assert!(swap(&mut kv, ns, cas(key, Some("v2"), "")).await.swapped);
    let lost = swap(&mut kv, ns, cas(key, None, "x")).await;
    assert!(
        !lost.swapped && lost.current_found && lost.current.is_empty(),
        "{lost:?}"
    );
    assert!(swap(&mut kv, ns, cas(key, Some(""), "v3")).await.swapped);
    // CAS-delete: only from the expected value.
    let mut delete = cas(key, Some("v2"), "");
    delete.delete = true;
    let lost = swap(&mut kv, ns, delete.clone()).await;
    assert!(!lost.swapped && lost.current == "v3", "{lost:?}");
    delete.expected = Bytes::from_static(b"v3");
    assert!(swap(&mut kv, ns, delete.clone()).await.swapped);
    assert_eq!(text(channel, ns, key).await, None);
    // On a missing key: from a value never swaps; delete-if-absent does.
    let lost = swap(&mut kv, ns, delete.clone()).await;
    assert!(!lost.swapped && !lost.current_found, "{lost:?}");
    delete.expect_absent = true;
    assert!(swap(&mut kv, ns, delete).await.swapped);
    // A swap with a TTL expires like a Set with one.
    let mut with_ttl = cas(key, None, "ttl");
    with_ttl.ttl_seconds = 100;
    assert!(swap(&mut kv, ns, with_ttl).await.swapped);
    let left = ttl_of(channel, ns, key).await;
    assert!(
        (1..=100).contains(&left),
        "TTL after a swap with one: {left}"
    );
    // Binary values compare byte for byte.
    let binary = CompareAndSwapRequest {
        key: "atomic-binary".into(),
        expect_absent: true,
        value: Bytes::from_static(&[0, 255, 1, 254]),
        ..Default::default()
    };
    assert!(swap(&mut kv, ns, binary.clone()).await.swapped);
    let mut again = binary;
    again.expect_absent = false;
    again.expected = Bytes::from_static(&[0, 255, 1, 254]);
    again.value = Bytes::from_static(&[7]);
    assert!(swap(&mut kv, ns, again).await.swapped);
    // Validation.
    let err = kv.compare_and_swap(req(Some(ns), cas("", None, "v"))).await;
    assert_eq!(code(err), Code::InvalidArgument);
    let mut negative = cas(key, None, "v");
    negative.ttl_seconds = -1;
    assert_eq!(
        code(kv.compare_and_swap(req(Some(ns), negative)).await),
        Code::InvalidArgument
    );
}

async fn ttl_of(channel: &Channel, ns: &str, key: &str) -> i64 {
    let mut ttl = KeyValueTtlInterfaceClient::new(channel.clone());
    let reply = ttl.get_ttl(req(Some(ns), GetTtlRequest { key: key.into() }));
    reply.await.expect("get ttl").into_inner().ttl_seconds
}

async fn increment_semantics(channel: &Channel, ns: &str) {
    let mut kv = atomic(channel);
    let key = "atomic-counter";
    // A missing key counts as 0; the TTL applies on create only.
    assert_eq!(add(&mut kv, ns, key, 5, 100).await, 5);
    assert_eq!(add(&mut kv, ns, key, -7, 3).await, -2);
    let left = ttl_of(channel, ns, key).await;
    assert!(
        left > 3 && left <= 100,
        "TTL from the creating call: {left}"
    );
    assert_eq!(text(channel, ns, key).await.as_deref(), Some("-2"));
    assert_eq!(add(&mut kv, ns, key, 0, 0).await, -2);
    // Without a TTL on create the counter never expires, and a later TTL
    // does not add one.
    let plain = "atomic-counter-plain";
    assert_eq!(add(&mut kv, ns, plain, 1, 0).await, 1);
    assert_eq!(add(&mut kv, ns, plain, 1, 50).await, 2);
    assert_eq!(ttl_of(channel, ns, plain).await, -1);
    // A value set as decimal text is a counter (Redis INCRBY semantics).
    let mut store = basic(channel);
    let set_text = |k: &str, v: &str| req(Some(ns), set(k, v.as_bytes().to_vec(), 0));
    store.set(set_text("atomic-text", "41")).await.expect("set");
    assert_eq!(add(&mut kv, ns, "atomic-text", 1, 0).await, 42);
    let edge = i64::MAX.to_string();
    store
        .set(set_text("atomic-edge", &edge))
        .await
        .expect("set");
    assert_eq!(add(&mut kv, ns, "atomic-edge", -1, 0).await, i64::MAX - 1);
    assert_eq!(add(&mut kv, ns, "atomic-edge", 1, 0).await, i64::MAX);
    assert_eq!(add(&mut kv, ns, "atomic-min", i64::MIN, 0).await, i64::MIN);
    assert_eq!(
        text(channel, ns, "atomic-min").await,
        Some(i64::MIN.to_string())
    );
    let err = kv.increment(req(Some(ns), incr("", 1, 0))).await;
    assert_eq!(code(err), Code::InvalidArgument);
    let err = kv.increment(req(Some(ns), incr(key, 1, -1))).await;
    assert_eq!(code(err), Code::InvalidArgument);
}

/// Values that are not 64-bit decimals, and increments past the range, are
/// FAILED_PRECONDITION and leave the value as it was.
async fn counters_refuse_non_integers(channel: &Channel, ns: &str) {
    let mut kv = atomic(channel);
    let mut store = basic(channel);
    let cases: [(&str, i64); 9] = [
        ("abc", 1),
        ("", 1),
        (" 42", 1),
        ("4.2", 1),
        ("1e3", 1),
        ("99999999999999999999", 1),
        ("9223372036854775807", 1),
        ("-9223372036854775808", -1),
        ("12", i64::MAX),
    ];
    for (value, delta) in cases {
        let key = "atomic-refused";
        let request = req(Some(ns), set(key, value.as_bytes().to_vec(), 0));
        store.set(request).await.expect("set");
        let status = kv.increment(req(Some(ns), incr(key, delta, 0))).await;
        let status = status.expect_err("refused");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{value:?} + {delta}"
        );
        assert!(status.message().contains(key), "{}", status.message());
        assert_eq!(
            text(channel, ns, key).await.as_deref(),
            Some(value),
            "{value:?} unchanged"
        );
    }
}

/// An expired key is absent for both operations, as for Get.
async fn expired_keys_are_absent(channel: &Channel, ns: &str) {
    let mut store = basic(channel);
    for key in ["atomic-expired-cas", "atomic-expired-counter"] {
        let request = req(Some(ns), set(key, b"7".to_vec(), 1));
        store.set(request).await.expect("set");
    }
    poll_until(Duration::from_secs(5), "the 1 s keys expire", || async {
        text(channel, ns, "atomic-expired-cas").await.is_none()
            && text(channel, ns, "atomic-expired-counter").await.is_none()
    })
    .await;
    let mut kv = atomic(channel);
    let lost = swap(&mut kv, ns, cas("atomic-expired-cas", Some("7"), "8")).await;
    assert!(!lost.swapped && !lost.current_found, "{lost:?}");
    assert!(
        swap(&mut kv, ns, cas("atomic-expired-cas", None, "new"))
            .await
            .swapped
    );
    assert_eq!(ttl_of(channel, ns, "atomic-expired-cas").await, -1);
    assert_eq!(add(&mut kv, ns, "atomic-expired-counter", 3, 0).await, 3);
    assert_eq!(ttl_of(channel, ns, "atomic-expired-counter").await, -1);
}

/// The same key in two namespaces is two counters and two CAS targets.
async fn namespaces_isolate_atomics(channel: &Channel, ns: &str, other: &str) {
    let mut kv = atomic(channel);
    let key = "atomic-shared";
    assert_eq!(add(&mut kv, ns, key, 5, 0).await, 5);
    assert_eq!(add(&mut kv, other, key, 7, 0).await, 7);
    assert_eq!(add(&mut kv, ns, key, 1, 0).await, 6);
    let lost = swap(&mut kv, other, cas(key, Some("6"), "x")).await;
    assert!(!lost.swapped && lost.current == "7", "{lost:?}");
    assert!(swap(&mut kv, ns, cas(key, Some("6"), "mine")).await.swapped);
    assert_eq!(text(channel, other, key).await.as_deref(), Some("7"));
    let fresh = "atomic-only-here";
    assert!(swap(&mut kv, ns, cas(fresh, None, "a")).await.swapped);
    assert!(swap(&mut kv, other, cas(fresh, None, "b")).await.swapped);
    assert_eq!(text(channel, ns, fresh).await.as_deref(), Some("a"));
    assert_eq!(text(channel, other, fresh).await.as_deref(), Some("b"));
}
