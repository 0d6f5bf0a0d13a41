//! What a gateway discovers: the interfaces `Initialize` declares, and calls
//! through server reflection with `grpcurl`.

use std::collections::{BTreeSet, HashMap};

use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::lifecycle::{InitializeRequest, InterfaceDeclaration};
use tonic::transport::Channel;

use crate::kv::KvPlugin;

/// The five KeyValue interfaces a full KeyValue plugin declares (the names
/// in `InitializeResponse.metadata.interfaces`, each a service of package
/// `prism.interfaces.keyvalue`).
pub const KEYVALUE_INTERFACES: [&str; 5] = [
    "KeyValueBasicInterface",
    "KeyValueBatchInterface",
    "KeyValueTTLInterface",
    "KeyValueScanInterface",
    "KeyValueAtomicInterface",
];

/// Calls `Initialize` with an empty config, as the gateway does; asserts it
/// succeeds. Returns the declared interfaces.
async fn initialize(channel: &Channel) -> Vec<InterfaceDeclaration> {
    let reply = LifecycleInterfaceClient::new(channel.clone())
        .initialize(InitializeRequest {
            name: "gateway".into(),
            version: String::new(),
            config: Some(prost_types::Struct::default()),
        })
        .await
        .expect("Initialize")
        .into_inner();
    assert!(reply.success, "{reply:?}");
    reply.metadata.expect("metadata").interfaces
}

/// The interface names `Initialize` declares; asserts every one carries a
/// SHA-256 proto hash and its `.proto` file.
pub async fn declared_interfaces(channel: &Channel) -> BTreeSet<String> {
    initialize(channel)
        .await
        .into_iter()
        .map(|interface| {
            assert_eq!(interface.proto_hash.len(), 64, "{interface:?}");
            assert!(interface.proto_file.ends_with(".proto"), "{interface:?}");
            interface.name
        })
        .collect()
}

/// Asserts `Initialize` declares exactly the [`KEYVALUE_INTERFACES`].
pub async fn declares_the_keyvalue_interfaces(channel: &Channel) {
    let want: BTreeSet<String> = KEYVALUE_INTERFACES.map(String::from).into();
    assert_eq!(declared_interfaces(channel).await, want);
}

/// The metadata the plugin declares for interface `name` (asking
/// `Initialize` as the gateway does); `None` when it does not declare the
/// interface.
pub async fn interface_metadata(channel: &Channel, name: &str) -> Option<HashMap<String, String>> {
    initialize(channel)
        .await
        .into_iter()
        .find(|interface| interface.name == name)
        .map(|interface| interface.metadata)
}

/// Calls `prism.interfaces.keyvalue.<method>` (e.g. `KeyValueBasicInterface/Get`)
/// with JSON `body` through `grpcurl` and server reflection on the plaintext
/// plugin at `port`, in namespace `cli`; asserts it succeeds and returns the
/// JSON reply.
pub async fn grpcurl(port: u16, method: &str, body: &str) -> serde_json::Value {
    let method = format!("prism.interfaces.keyvalue.{method}");
    let args = ["-H", "x-prism-namespace: cli", "-d", body, &method];
    let reply = crate::grpcurl_cmd::call(port, &args).await;
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{method}: {e}: {reply}"))
}

/// Sets `key` to "hello" through `grpcurl` (in its namespace `cli`, with
/// `ttl_seconds` when given) and gets it back the same way; then checks
/// through gRPC that it landed in namespace `cli` (the header reached the
/// plugin). "aGVsbG8=" is base64 for "hello".
pub async fn grpcurl_set_and_get(plugin: &KvPlugin, key: &str, ttl_seconds: Option<u32>) {
    let ttl = ttl_seconds.map_or(String::new(), |t| format!(r#","ttl_seconds":"{t}""#));
    let body = format!(r#"{{"key":"{key}","value":"aGVsbG8="{ttl}}}"#);
    let reply = grpcurl(plugin.port, "KeyValueBasicInterface/Set", &body).await;
    assert_eq!(reply["success"], true, "{reply}");
    let body = format!(r#"{{"key":"{key}"}}"#);
    let reply = grpcurl(plugin.port, "KeyValueBasicInterface/Get", &body).await;
    assert_eq!(reply["found"], true, "{reply}");
    assert_eq!(reply["value"], "aGVsbG8=", "{reply}");
    assert!(
        plugin.read(Some("cli"), key).await.found,
        "{key} in namespace cli"
    );
}

/// The README's atomic examples, as written, through `grpcurl` on the
/// plaintext plugin at `port` ("MQ==" is base64 for "1"): an Increment
/// creating a counter with a TTL, a lock taken by CompareAndSwap from absent,
/// refused to a second taker (who sees the holder's value), and released by
/// a CompareAndSwap delete.
pub async fn atomic_readme_examples(port: u16) {
    let reply = grpcurl(
        port,
        "KeyValueAtomicInterface/Increment",
        r#"{"key":"visits","delta":"5","ttl_seconds":"3600"}"#,
    )
    .await;
    assert_eq!(reply["value"], "5", "{reply}");
    let reply = grpcurl(
        port,
        "KeyValueAtomicInterface/CompareAndSwap",
        r#"{"key":"lock","expect_absent":true,"value":"MQ==","ttl_seconds":"30"}"#,
    )
    .await;
    assert_eq!(reply["swapped"], true, "{reply}");
    let reply = grpcurl(
        port,
        "KeyValueAtomicInterface/CompareAndSwap",
        r#"{"key":"lock","expect_absent":true,"value":"Mg=="}"#,
    )
    .await;
    assert_eq!(reply["swapped"], serde_json::Value::Null, "{reply}");
    assert_eq!(reply["current"], "MQ==", "{reply}");
    assert_eq!(reply["currentFound"], true, "{reply}");
    let reply = grpcurl(
        port,
        "KeyValueAtomicInterface/CompareAndSwap",
        r#"{"key":"lock","expected":"MQ==","delete":true}"#,
    )
    .await;
    assert_eq!(reply["swapped"], true, "{reply}");
}
