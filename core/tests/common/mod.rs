//! What the core integration tests share: the example plugin they drive.

use std::path::PathBuf;

/// The example plugin binary (`core/examples/test_plugin.rs`), built by
/// `cargo test` beside the test binaries.
pub(crate) fn test_plugin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join("test_plugin");
    assert!(
        path.exists(),
        "{} missing: run `cargo test -p prism-plugin-core` (it builds examples)",
        path.display()
    );
    path
}
