//! What every KeyValue plugin declares and serves alike: the five KeyValue
//! interfaces (basic, batch, TTL, scan, atomic) with their protos, and core's
//! services for them ([`kv::KvService`](crate::kv::KvService), `ScanService`,
//! `AtomicService`) over the plugin's one backend slot, and their interface
//! metadata. A plugin's `interfaces()`, `register()` and
//! `interface_metadata()` are then one line each.

use std::sync::Arc;

use crate::kv::{AtomicService, AtomicStore, KvService, ScanService, ScanStore, Store};
use crate::proto::keyvalue::key_value_atomic_interface_server::KeyValueAtomicInterfaceServer;
use crate::proto::keyvalue::key_value_basic_interface_server::KeyValueBasicInterfaceServer;
use crate::proto::keyvalue::key_value_batch_interface_server::KeyValueBatchInterfaceServer;
use crate::proto::keyvalue::key_value_scan_interface_server::KeyValueScanInterfaceServer;
use crate::proto::keyvalue::key_value_ttl_interface_server::KeyValueTtlInterfaceServer;
use crate::{Interface, ServiceRegistry, Slot, proto};

/// Version of the declared KeyValue interfaces.
pub const INTERFACE_VERSION: &str = "1.0.0";

/// The five KeyValue interfaces, as the gateway's registry names them.
pub fn interfaces() -> Vec<Interface> {
    [
        ("KeyValueBasicInterface", proto::KEYVALUE_BASIC_PROTO),
        ("KeyValueBatchInterface", proto::KEYVALUE_BATCH_PROTO),
        ("KeyValueTTLInterface", proto::KEYVALUE_TTL_PROTO),
        ("KeyValueScanInterface", proto::KEYVALUE_SCAN_PROTO),
        ("KeyValueAtomicInterface", proto::KEYVALUE_ATOMIC_PROTO),
    ]
    .into_iter()
    .map(|(name, proto)| Interface {
        name,
        proto,
        version: INTERFACE_VERSION,
    })
    .collect()
}

/// `InterfaceDeclaration.metadata` of the interface `name` served over a
/// store `S`: the Scan's `ordered` ([`ScanStore::ORDERED`]) and the atomics'
/// `counter` kind (`decimal`: core's `AtomicService` keeps a counter as a
/// decimal integer in the value).
pub fn interface_metadata<S: ScanStore>(name: &str) -> Vec<(&'static str, &'static str)> {
    match name {
        "KeyValueScanInterface" => vec![("ordered", if S::ORDERED { "true" } else { "false" })],
        "KeyValueAtomicInterface" => vec![("counter", "decimal")],
        _ => Vec::new(),
    }
}

/// Adds the services of the five interfaces, each serving from `backend`
/// (whatever a rotation or re-initialize puts in it later).
pub fn register<S: Store + ScanStore + AtomicStore>(
    services: &mut ServiceRegistry,
    backend: &Arc<Slot<S>>,
) {
    let kv = KvService::new(backend.clone());
    services
        .add(KeyValueBasicInterfaceServer::new(kv.clone()))
        .add(KeyValueBatchInterfaceServer::new(kv.clone()))
        .add(KeyValueTtlInterfaceServer::new(kv))
        .add(KeyValueScanInterfaceServer::new(ScanService::new(
            backend.clone(),
        )))
        .add(KeyValueAtomicInterfaceServer::new(AtomicService::new(
            backend.clone(),
        )));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_the_five_keyvalue_interfaces_at_one_version() {
        let names: Vec<&str> = interfaces().iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "KeyValueBasicInterface",
                "KeyValueBatchInterface",
                "KeyValueTTLInterface",
                "KeyValueScanInterface",
                "KeyValueAtomicInterface",
            ]
        );
        assert!(interfaces().iter().all(|i| i.version == "1.0.0"));
    }
}
