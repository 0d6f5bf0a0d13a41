//! What a gateway discovers: the interfaces `Initialize` declares, and calls
//! through server reflection with `grpcurl`.

use std::collections::BTreeSet;

use prism_plugin_core::proto::lifecycle::InitializeRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use tonic::transport::Channel;

/// Calls `Initialize` with an empty config, as the gateway does; asserts it
/// succeeds and every declared interface carries a SHA-256 proto hash and its
/// `.proto` file. Returns the declared interface names.
pub async fn declared_interfaces(channel: &Channel) -> BTreeSet<String> {
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
    reply
        .metadata
        .expect("metadata")
        .interfaces
        .into_iter()
        .map(|interface| {
            assert_eq!(interface.proto_hash.len(), 64, "{interface:?}");
            assert!(interface.proto_file.ends_with(".proto"), "{interface:?}");
            interface.name
        })
        .collect()
}

/// Calls `prism.interfaces.keyvalue.<method>` (e.g. `KeyValueBasicInterface/Get`)
/// with JSON `body` through `grpcurl` and server reflection on the plaintext
/// plugin at `port`, in namespace `cli`; asserts it succeeds and returns the
/// JSON reply.
pub async fn grpcurl(port: u16, method: &str, body: &str) -> serde_json::Value {
    let grpcurl = crate::grpcurl().expect("grpcurl installed");
    let method = format!("prism.interfaces.keyvalue.{method}");
    let out = tokio::process::Command::new(grpcurl)
        .args(["-plaintext", "-H", "x-prism-namespace: cli", "-d", body])
        .arg(format!("127.0.0.1:{port}"))
        .arg(&method)
        .output()
        .await
        .expect("grpcurl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpcurl {method} failed: {stderr}");
    serde_json::from_slice(&out.stdout).expect("JSON reply")
}
