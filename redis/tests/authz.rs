//! Namespace access by client identity on prism-redis
//! (`control_plane.authorization`, mTLS on the plugin port): the shared
//! suite [`prism_testkit::authz::kv`] against a real Redis.

mod common;

use prism_testkit::Redis;
use prism_testkit::authz::{self, Clients};
use prism_testkit::lifecycle::expect_serving;

#[tokio::test]
async fn each_client_identity_reaches_its_namespaces_and_is_denied_the_others() {
    let redis = Redis::start().await.expect("redis starts");
    let clients = Clients::new().expect("certificates");
    let addr = redis.addr();
    let mut envs = clients.envs();
    envs.push(("REDIS_ADDRESS".into(), addr));
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let plugin = common::Plugin::spawn(common::BIN, &envs).await;
    expect_serving(clients.probe_port(), "", common::STARTUP).await;
    authz::kv(&clients, plugin.port).await;
}
