//! Namespace access by client identity on prism-postgres
//! (`control_plane.authorization`, mTLS on the plugin port): the shared
//! suite [`prism_testkit::authz::kv`] against a real PostgreSQL.

mod common;

use prism_testkit::Postgres;
use prism_testkit::authz::{self, Clients};
use prism_testkit::lifecycle::expect_serving;

#[tokio::test]
async fn each_client_identity_reaches_its_namespaces_and_is_denied_the_others() {
    let pg = Postgres::start().await.expect("postgres starts");
    let clients = Clients::new().expect("certificates");
    let envs = clients.envs();
    let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let plugin = common::spawn_plugin(&pg, &envs).await;
    expect_serving(clients.probe_port(), "", common::STARTUP).await;
    authz::kv(&clients, plugin.port).await;
}
