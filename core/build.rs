//! Compiles the Prism protos in `../proto` into tonic servers and clients, and
//! writes the file descriptor set that server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "prism/common/types.proto",
    "prism/interfaces/lifecycle.proto",
    "prism/interfaces/keyvalue/keyvalue_basic.proto",
    "prism/interfaces/keyvalue/keyvalue_batch.proto",
    "prism/interfaces/keyvalue/keyvalue_ttl.proto",
    "prism/interfaces/keyvalue/keyvalue_scan.proto",
    "prism/interfaces/keyvalue/keyvalue_atomic.proto",
    "prism/interfaces/pubsub/pubsub_basic.proto",
    "prism/interfaces/pubsub/stream.proto",
    "prism/interfaces/timeseries/timeseries_basic.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();

    let mut includes = vec![proto_root.clone()];
    // Debian's protoc does not bundle google/protobuf/*.proto; libprotobuf-dev
    // installs them here (scripts/install-deps.sh installs it).
    for dir in ["/usr/include", "/usr/local/include"] {
        if PathBuf::from(dir)
            .join("google/protobuf/struct.proto")
            .exists()
        {
            includes.push(PathBuf::from(dir));
        }
    }

    tonic_prost_build::configure()
        // Values are passed through untouched: Bytes avoids a copy per request.
        .bytes(".prism")
        .file_descriptor_set_path(out_dir.join("prism_descriptor.bin"))
        .compile_protos(&files, &includes)?;

    println!("cargo:rerun-if-changed={}", proto_root.display());
    Ok(())
}
