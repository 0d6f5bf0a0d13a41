//! Request handling never panics on input: arbitrary bytes decoded as the
//! KeyValue, lifecycle and pub/sub messages go through core's validation
//! (keys, values, TTLs, batches, namespace header, grpc-timeout, Initialize
//! Struct conversion).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prism_plugin_core::kv::{self, Limits};
use prism_plugin_core::proto::keyvalue::{BatchSetRequest, GetRequest, SetRequest};
use prism_plugin_core::proto::lifecycle::InitializeRequest;
use prism_plugin_core::proto::pubsub::PublishRequest;
use prost::Message;

const LIMITS: Limits = Limits {
    max_key_bytes: 4096,
    max_value_bytes: 16 * 1024 * 1024,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = SetRequest::decode(data) {
        let _ = kv::check_set(&set, &LIMITS);
    }
    if let Ok(batch) = BatchSetRequest::decode(data) {
        let _ = kv::check_batch_set(&batch.requests, &LIMITS);
    }
    if let Ok(get) = GetRequest::decode(data) {
        let _ = kv::check_key(&get.key, &LIMITS);
        let mut request = tonic::Request::new(());
        if let Ok(value) = get.key.parse() {
            request
                .metadata_mut()
                .insert(prism_plugin_core::NAMESPACE_HEADER, value);
            let _ = prism_plugin_core::namespace(&request);
        }
        let _ = prism_plugin_core::parse_grpc_timeout(&get.key);
    }
    if let Ok(init) = InitializeRequest::decode(data)
        && let Some(s) = init.config.as_ref()
    {
        let _ = prism_plugin_core::config::struct_to_json(s);
    }
    let _ = PublishRequest::decode(data);
});
