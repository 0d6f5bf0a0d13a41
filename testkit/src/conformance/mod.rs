//! The Prism KeyValue acceptance semantics (DESIGN.md §3.2) as reusable checks,
//! run by every KeyValue plugin's tests against its own real backend: each
//! plugin's test calls these over gRPC, then adds what only its backend can show
//! (how PostgreSQL rows or Redis keys look afterwards).

mod atomic;
mod atomic_load;
mod basic;
mod batch;
mod discovery;
mod namespaces;
mod ttl;

pub use atomic::{ATOMIC_INTERFACE, atomic, atomic_semantics, cas, incr};
pub use atomic_load::{
    LOAD_BOUND, LOAD_CLIENTS, LOAD_INCREMENTS, concurrent_increments_lose_nothing,
    concurrent_swaps_have_one_winner, sixty_four_clients_count_and_swap,
};
pub use basic::basic_semantics;
pub use batch::a_bad_key_rejects_the_whole_batch;
pub use discovery::{
    KEYVALUE_INTERFACES, atomic_readme_examples, declared_interfaces,
    declares_the_keyvalue_interfaces, grpcurl, grpcurl_set_and_get, interface_metadata,
};
pub use namespaces::namespaces_isolate;
pub use ttl::ttl_semantics;

use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
use prism_plugin_core::proto::keyvalue::{DeleteRequest, ExistsRequest};
use tonic::transport::Channel;

use crate::kv::{get, req};

/// Whether `key` exists in namespace `ns`.
async fn exists(
    kv: &mut KeyValueBasicInterfaceClient<Channel>,
    ns: Option<&str>,
    key: &str,
) -> bool {
    kv.exists(req(
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
    kv.get(req(ns, get(key)))
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
