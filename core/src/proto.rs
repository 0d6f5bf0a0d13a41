//! Generated Prism protobuf types, gRPC servers and clients, the descriptor set
//! served by reflection, and the proto sources whose hashes plugins declare.

#![allow(missing_docs, unreachable_pub, clippy::all)]

/// Generated code, nested as the proto packages are (the generated code refers
/// across packages with `super::`).
pub mod prism {
    /// `package prism.common`.
    pub mod common {
        tonic::include_proto!("prism.common");
    }
    /// `package prism.interfaces` (lifecycle) and its sub-packages.
    pub mod interfaces {
        tonic::include_proto!("prism.interfaces");
        /// `package prism.interfaces.keyvalue`.
        pub mod keyvalue {
            tonic::include_proto!("prism.interfaces.keyvalue");
        }
        /// `package prism.interfaces.pubsub`.
        pub mod pubsub {
            tonic::include_proto!("prism.interfaces.pubsub");
        }
        /// `package prism.interfaces.timeseries`.
        pub mod timeseries {
            tonic::include_proto!("prism.interfaces.timeseries");
        }
    }
}

pub use prism::common;
pub use prism::interfaces as lifecycle;
pub use prism::interfaces::{keyvalue, pubsub, timeseries};

/// Encoded `FileDescriptorSet` of every Prism proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("prism_descriptor");

/// A proto file shipped with the plugin: its path (as the gateway's registry
/// names it) and its exact bytes, so `proto_hash` is the hash of what we compiled.
#[derive(Debug, Clone, Copy)]
pub struct ProtoFile {
    pub path: &'static str,
    pub contents: &'static str,
}

macro_rules! proto_file {
    ($path:literal) => {
        ProtoFile {
            path: $path,
            contents: include_str!(concat!("../../proto/", $path)),
        }
    };
}

pub const LIFECYCLE_PROTO: ProtoFile = proto_file!("prism/interfaces/lifecycle.proto");
pub const KEYVALUE_BASIC_PROTO: ProtoFile =
    proto_file!("prism/interfaces/keyvalue/keyvalue_basic.proto");
pub const KEYVALUE_BATCH_PROTO: ProtoFile =
    proto_file!("prism/interfaces/keyvalue/keyvalue_batch.proto");
pub const KEYVALUE_TTL_PROTO: ProtoFile =
    proto_file!("prism/interfaces/keyvalue/keyvalue_ttl.proto");
pub const KEYVALUE_SCAN_PROTO: ProtoFile =
    proto_file!("prism/interfaces/keyvalue/keyvalue_scan.proto");
pub const KEYVALUE_ATOMIC_PROTO: ProtoFile =
    proto_file!("prism/interfaces/keyvalue/keyvalue_atomic.proto");
pub const PUBSUB_BASIC_PROTO: ProtoFile = proto_file!("prism/interfaces/pubsub/pubsub_basic.proto");
pub const PUBSUB_STREAM_PROTO: ProtoFile = proto_file!("prism/interfaces/pubsub/stream.proto");
pub const TIMESERIES_BASIC_PROTO: ProtoFile =
    proto_file!("prism/interfaces/timeseries/timeseries_basic.proto");

impl ProtoFile {
    /// Hex sha-256 of the file's bytes (`InterfaceDeclaration.proto_hash`).
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.contents.as_bytes()))
    }
}
