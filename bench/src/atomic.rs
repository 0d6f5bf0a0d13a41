//! The atomic scenarios (`kv-increment`, `kv-cas`): one request of each on
//! `KeyValueAtomicInterface`, on the same keys the direct baselines use
//! (`counter-<12 digits>` for counters, the preloaded `bench-<12 digits>`
//! for swaps: expected and new value both the run's `x…` value, so a key
//! Set by an earlier scenario swaps and one still holding its preloaded
//! value reports it; either way one statement or script per call).

use bytes::Bytes;
use prism_plugin_core::proto::keyvalue::key_value_atomic_interface_client::KeyValueAtomicInterfaceClient;
use prism_plugin_core::proto::keyvalue::{CompareAndSwapRequest, IncrementRequest};
use tonic::transport::Channel;

use crate::{NamespaceValue, Scenario, with_namespace};

/// The key of counter `i`, as the baselines write it.
pub fn counter_key(i: u64) -> String {
    format!("counter-{i:012}")
}

/// One atomic call of `scenario` on key number `k`.
pub(crate) async fn call(
    client: &mut KeyValueAtomicInterfaceClient<Channel>,
    scenario: Scenario,
    k: u64,
    value: &Bytes,
    ns: &NamespaceValue,
) -> Result<(), tonic::Status> {
    if scenario == Scenario::KvIncrement {
        let request = IncrementRequest {
            key: counter_key(k),
            delta: 1,
            ttl_seconds: 0,
        };
        return client
            .increment(with_namespace(request, ns))
            .await
            .map(drop);
    }
    let request = CompareAndSwapRequest {
        key: crate::key(k),
        expected: value.clone(),
        value: value.clone(),
        ..Default::default()
    };
    client
        .compare_and_swap(with_namespace(request, ns))
        .await
        .map(drop)
}
