//! Namespace access by client identity (`control_plane.authorization`), as
//! one suite every plugin calls: two client certificates with different
//! grants — Alice identified by a URI SAN (which wins over her CN), Bob by
//! his CN — each reaching its own namespaces (or topics) and getting
//! `PERMISSION_DENIED` elsewhere, naming identity and namespace; health and
//! lifecycle stay open to both; a rewritten grants file takes effect without
//! a restart.

use std::path::PathBuf;
use std::time::Duration;

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::lifecycle::HealthCheckRequest;
use prism_plugin_core::proto::lifecycle::lifecycle_interface_client::LifecycleInterfaceClient;
use prism_plugin_core::proto::pubsub::PublishRequest;
use prism_plugin_core::proto::pubsub::pub_sub_basic_interface_client::PubSubBasicInterfaceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::kv::{get, poll_until, req, set};
use crate::{IssuedCert, ServingStatus, TestCa, free_port, health_status};

/// Alice's identity: the URI SAN of her certificate.
pub const ALICE: &str = "spiffe://prism.test/ns/team-a/sa/app";
/// Bob's identity: the CN of his certificate (it has no URI SAN).
pub const BOB: &str = "bob";

/// The grants the suite starts with. Alice's CN `alice` is granted
/// `team-b`, which she must not get: her URI SAN is her identity.
const GRANTS: &str = "\"spiffe://prism.test/ns/team-a/sa/app\": [team-a, \"shared-*\"]\n\
                      alice: [team-b]\n\
                      bob: [team-b]\n";

/// Which client calls.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// URI SAN [`ALICE`]: `team-a` and `shared-*`.
    Alice,
    /// CN [`BOB`]: `team-b`.
    Bob,
}

/// The CA, the plugin's server certificate and grants file, and the two
/// client certificates.
pub struct Clients {
    dir: tempfile::TempDir,
    ca: TestCa,
    alice: IssuedCert,
    bob: IssuedCert,
    probe_port: u16,
}

impl Clients {
    /// A CA, a server certificate for `localhost`, and the two clients.
    pub fn new() -> crate::Result<Clients> {
        let dir = tempfile::tempdir().map_err(|e| crate::Error::io("temp dir", e))?;
        let ca = TestCa::new("prism authz test CA")?;
        let server = ca.server(&["localhost", "127.0.0.1"])?;
        let alice = ca.client_with(
            "alice",
            crate::ClientOptions {
                uri: Some(ALICE),
                ..crate::ClientOptions::default()
            },
        )?;
        let bob = ca.client(BOB)?;
        let clients = Clients {
            dir,
            ca,
            alice,
            bob,
            probe_port: free_port(),
        };
        clients.write("server.pem", &server.cert_pem)?;
        clients.write("server.key", &server.key_pem)?;
        clients.write("ca.pem", &clients.ca.ca_pem())?;
        clients.write_grants(GRANTS)?;
        Ok(clients)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> crate::Result<()> {
        // Written aside and renamed, as Kubernetes updates a mounted file.
        let (tmp, path) = (self.path(&format!("{name}.tmp")), self.path(name));
        std::fs::write(&tmp, text).map_err(|e| crate::Error::io(format!("writing {name}"), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| crate::Error::io(format!("renaming {name}"), e))
    }

    /// Replaces the grants file (YAML: identity → namespace patterns).
    pub fn write_grants(&self, yaml: &str) -> crate::Result<()> {
        self.write("grants.yaml", yaml)
    }

    /// The plaintext probe port the plugin serves health on.
    pub fn probe_port(&self) -> u16 {
        self.probe_port
    }

    /// The plugin's environment: mTLS on its port with this CA, the probe
    /// port, and the grants file (checked every 200 ms).
    pub fn envs(&self) -> Vec<(String, String)> {
        let file = |name: &str| self.path(name).display().to_string();
        [
            ("PRISM_CONTROL_PLANE__TLS__CERT_FILE", file("server.pem")),
            ("PRISM_CONTROL_PLANE__TLS__KEY_FILE", file("server.key")),
            ("PRISM_CONTROL_PLANE__TLS__CLIENT_CA_FILE", file("ca.pem")),
            ("PRISM_CONTROL_PLANE__TLS__RELOAD_INTERVAL", "200ms".into()),
            (
                "PRISM_CONTROL_PLANE__PROBE_PORT",
                self.probe_port.to_string(),
            ),
            (
                "PRISM_CONTROL_PLANE__AUTHORIZATION__GRANTS_FILE",
                file("grants.yaml"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A TLS channel to the plugin on `port` as `who`.
    pub async fn channel(&self, port: u16, who: Who) -> Channel {
        let cert = match who {
            Who::Alice => &self.alice,
            Who::Bob => &self.bob,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.ca_pem()))
            .identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("TLS config")
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("TLS connection")
    }
}

/// Asserts `result` is `PERMISSION_DENIED` naming `identity` and `namespace`.
fn assert_denied<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    identity: &str,
    namespace: &str,
) {
    let status = result.expect_err("denied");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let message = status.message();
    assert!(
        message.contains(identity) && message.contains(&format!("{namespace:?}")),
        "names identity and namespace: {message}"
    );
}

/// Alice's and Bob's channels to the plugin on `port`, after checking that
/// health and lifecycle answer both (they are not namespace-scoped).
async fn control_plane_open(clients: &Clients, port: u16) -> (Channel, Channel) {
    let (alice, bob) = (
        clients.channel(port, Who::Alice).await,
        clients.channel(port, Who::Bob).await,
    );
    for channel in [&alice, &bob] {
        assert_eq!(
            health_status(channel, "").await.expect("health"),
            ServingStatus::Serving
        );
        LifecycleInterfaceClient::new(channel.clone())
            .health_check(HealthCheckRequest {})
            .await
            .expect("lifecycle HealthCheck");
    }
    (alice, bob)
}

/// The KeyValue plugin on `port` (started with [`Clients::envs`]) lets each
/// client use exactly its namespaces, then follows a rewritten grants file.
pub async fn kv(clients: &Clients, port: u16) {
    let (alice, bob) = control_plane_open(clients, port).await;
    let mut a = KeyValueBasicInterfaceClient::new(alice);
    let mut b = KeyValueBasicInterfaceClient::new(bob);
    for ns in ["team-a", "shared-cache"] {
        a.set(req(Some(ns), set("k", "alice's value", 0)))
            .await
            .unwrap_or_else(|e| panic!("alice sets in {ns}: {e:?}"));
    }
    let got = a.get(req(Some("team-a"), get("k"))).await.expect("get");
    assert_eq!(&got.into_inner().value[..], b"alice's value");
    b.set(req(Some("team-b"), set("k", "bob's value", 0)))
        .await
        .expect("bob sets in team-b");

    assert_denied(
        a.set(req(Some("team-b"), set("k", "x", 0))).await,
        ALICE,
        "team-b",
    );
    assert_denied(a.get(req(None, get("k"))).await, ALICE, "default");
    for ns in ["team-a", "shared-cache"] {
        let denied = b.get(req(Some(ns), get("k"))).await;
        let text = format!("{denied:?}");
        assert!(!text.contains("alice's value"), "no data in the error");
        assert_denied(denied, BOB, ns);
    }

    // Grants follow the file: Bob gets team-a without a restart.
    clients
        .write_grants(&GRANTS.replace("bob: [team-b]", "bob: [team-b, team-a]"))
        .expect("grants");
    poll_until(Duration::from_secs(10), "bob reaches team-a", || {
        let mut b = b.clone();
        async move { b.get(req(Some("team-a"), get("k"))).await.is_ok() }
    })
    .await;
    assert_denied(
        a.set(req(Some("team-b"), set("k", "x", 0))).await,
        ALICE,
        "team-b",
    );
}

/// The pub/sub plugin on `port` (started with [`Clients::envs`]) lets each
/// client publish to exactly the topics of its namespaces (a topic's
/// namespace is its name up to the first `.`).
pub async fn pubsub(clients: &Clients, port: u16) {
    let (alice, bob) = control_plane_open(clients, port).await;
    let mut a = PubSubBasicInterfaceClient::new(alice);
    let mut b = PubSubBasicInterfaceClient::new(bob);
    let publish = |topic: &str| PublishRequest {
        topic: topic.into(),
        payload: b"payload".to_vec().into(),
        ..PublishRequest::default()
    };
    for topic in ["team-a.orders", "shared-events.v1"] {
        a.publish(publish(topic))
            .await
            .unwrap_or_else(|e| panic!("alice publishes to {topic}: {e:?}"));
    }
    b.publish(publish("team-b")).await.expect("bob publishes");
    assert_denied(a.publish(publish("team-b.orders")).await, ALICE, "team-b");
    assert_denied(a.publish(publish("team-ab.x")).await, ALICE, "team-ab");
    assert_denied(b.publish(publish("team-a.orders")).await, BOB, "team-a");
    let subscribe = prism_plugin_core::proto::pubsub::SubscribeRequest {
        topic: "team-a.orders".into(),
        subscriber_id: "bob".into(),
        ..Default::default()
    };
    assert_denied(b.subscribe(subscribe).await.map(drop), BOB, "team-a");
}
