//! Namespace access by client identity on prism-kafka
//! (`control_plane.authorization`, mTLS on the plugin port): the shared
//! suite [`prism_testkit::authz::pubsub`] against tansu — a topic's
//! namespace is its name up to the first `.`.

mod common;

use prism_testkit::Kafka;
use prism_testkit::authz::{self, Clients};
use prism_testkit::lifecycle::expect_serving;

#[tokio::test]
async fn each_client_identity_reaches_its_topics_and_is_denied_the_others() {
    let kafka = Kafka::start().await.expect("tansu starts");
    let clients = Clients::new().expect("certificates");
    let mut envs = clients.envs();
    envs.push(("KAFKA_BROKERS".into(), kafka.bootstrap()));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (_plugin, port) = common::spawn(&envs).await;
    expect_serving(clients.probe_port(), "", common::STARTUP).await;
    authz::pubsub(&clients, port).await;
}
