//! The workspace as `cargo metadata` describes it: member crates, their
//! directories and workspace dependencies, which of them are plugins, what to
//! watch, and which plugins a changed path affects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// First port handed to a plugin without a declared (`plugin.toml`) or configured port.
const FIRST_EXTRA_PORT: u16 = 9093;
/// Extensions that make a file outside every crate a build input of all plugins
/// (`proto/*.proto` compiled by core's build script, the root manifest, shared sources).
const SHARED_INPUT_EXTENSIONS: &[&str] = &["proto", "rs", "toml"];

/// A workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// Package name, e.g. `prism-redis`.
    pub name: String,
    /// The directory holding its `Cargo.toml`.
    pub dir: PathBuf,
    /// Names of the workspace members it depends on (normal and build dependencies).
    pub deps: Vec<String>,
    /// Names of its binary targets.
    pub bins: Vec<String>,
}

/// A plugin: a workspace binary that depends on the core package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    /// Short name, e.g. `redis` (the binary name without `prism-`).
    pub name: String,
    /// Package name, e.g. `prism-redis`.
    pub package: String,
    /// Binary name, e.g. `prism-redis`.
    pub bin: String,
    /// Port it is started on (`--grpc-port`).
    pub port: u16,
    /// Every workspace package whose change requires rebuilding it (itself included).
    pub inputs: BTreeSet<String>,
}

/// What a burst of changes requires.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Affected {
    /// Plugin names to rebuild.
    pub plugins: BTreeSet<String>,
    /// How many changed paths counted (after filtering).
    pub paths: usize,
}

/// The workspace: root, target directory, members and plugins.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The workspace root.
    pub root: PathBuf,
    /// Cargo's target directory (never watched).
    pub target_dir: PathBuf,
    /// Members, sorted by name.
    pub packages: Vec<Package>,
    /// Plugins, sorted by name.
    pub plugins: Vec<Plugin>,
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    workspace_members: Vec<String>,
    workspace_root: PathBuf,
    target_directory: PathBuf,
}

#[derive(Deserialize)]
struct MetaPackage {
    id: String,
    name: String,
    manifest_path: PathBuf,
    targets: Vec<MetaTarget>,
    dependencies: Vec<MetaDependency>,
}

#[derive(Deserialize)]
struct MetaTarget {
    name: String,
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct MetaDependency {
    name: String,
    kind: Option<String>,
    path: Option<PathBuf>,
}

impl Workspace {
    /// Runs `cargo metadata --no-deps` in `dir` and builds the workspace model.
    pub async fn load(
        cargo: &str,
        dir: &Path,
        core_package: &str,
        ports: &[(String, u16)],
    ) -> Result<Self> {
        let output = tokio::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(dir)
            .output()
            .await
            .map_err(|e| Error::Metadata {
                dir: dir.to_owned(),
                reason: format!("running {cargo}: {e}"),
            })?;
        if !output.status.success() {
            return Err(Error::Metadata {
                dir: dir.to_owned(),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Self::from_metadata_json(&output.stdout, core_package, ports).map_err(|reason| {
            Error::Metadata {
                dir: dir.to_owned(),
                reason,
            }
        })
    }

    /// Builds the model from `cargo metadata --format-version 1` JSON.
    fn from_metadata_json(
        json: &[u8],
        core_package: &str,
        ports: &[(String, u16)],
    ) -> Result<Self, String> {
        let meta: Metadata = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let members: BTreeSet<&str> = meta.workspace_members.iter().map(String::as_str).collect();
        let member_packages: Vec<&MetaPackage> = meta
            .packages
            .iter()
            .filter(|p| members.contains(p.id.as_str()))
            .collect();
        let member_names: BTreeSet<&str> =
            member_packages.iter().map(|p| p.name.as_str()).collect();
        let mut packages: Vec<Package> = member_packages
            .iter()
            .map(|p| Package {
                name: p.name.clone(),
                dir: p
                    .manifest_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                deps: p
                    .dependencies
                    .iter()
                    // Dev-dependencies (test harnesses) are not in the binary.
                    .filter(|d| d.kind.as_deref() != Some("dev"))
                    .filter(|d| d.path.is_some() && member_names.contains(d.name.as_str()))
                    .map(|d| d.name.clone())
                    .collect(),
                bins: p
                    .targets
                    .iter()
                    .filter(|t| t.kind.iter().any(|k| k == "bin"))
                    .map(|t| t.name.clone())
                    .collect(),
            })
            .collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        let plugins = find_plugins(&packages, core_package, ports);
        Ok(Workspace {
            root: meta.workspace_root,
            target_dir: meta.target_directory,
            packages,
            plugins,
        })
    }

    /// The plugins named in `names` (all when empty), or an error naming the
    /// unknown one.
    pub fn select(&self, names: &[String], core_package: &str) -> Result<Vec<Plugin>> {
        if self.plugins.is_empty() {
            return Err(Error::NoPlugins {
                root: self.root.clone(),
                core_package: core_package.to_owned(),
            });
        }
        if names.is_empty() {
            return Ok(self.plugins.clone());
        }
        names
            .iter()
            .map(|name| {
                let wanted = name.trim();
                self.plugins
                    .iter()
                    .find(|p| p.name == wanted || p.package == wanted || p.bin == wanted)
                    .cloned()
                    .ok_or_else(|| Error::UnknownPlugin {
                        name: wanted.to_owned(),
                        available: self
                            .plugins
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect()
    }

    /// Directories to watch recursively: every member's directory and every other
    /// top-level directory (e.g. `proto/`) except hidden ones and the target dir.
    /// The root itself is watched non-recursively (for the root manifest).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: BTreeSet<PathBuf> = self
            .packages
            .iter()
            .filter(|p| p.dir != self.root)
            .map(|p| p.dir.clone())
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() && !self.is_ignored(&path) {
                    dirs.insert(path);
                }
            }
        }
        // A member dir nested in another watched dir is already covered.
        let all: Vec<PathBuf> = dirs.iter().cloned().collect();
        dirs.retain(|d| !all.iter().any(|other| other != d && d.starts_with(other)));
        dirs.into_iter().collect()
    }

    /// Whether `path` is never a build input: inside the target dir, under a
    /// hidden directory (`.git`, `.venv`), an editor's temporary file, or
    /// `Cargo.lock` (cargo rewrites it during our own builds; a real dependency
    /// change always comes with a `Cargo.toml` edit).
    pub fn is_ignored(&self, path: &Path) -> bool {
        if path.starts_with(&self.target_dir) {
            return true;
        }
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        let hidden = relative.components().any(|c| match c {
            Component::Normal(part) => {
                let part = part.to_string_lossy();
                part.starts_with('.') || part == "target"
            }
            _ => false,
        });
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        hidden
            || name.ends_with('~')
            || name.ends_with(".swp")
            || name.ends_with(".swx")
            || name == "4913" // vim's write-permission probe
            || name == "Cargo.lock"
    }

    /// The member package owning `path` (the deepest member dir containing it).
    pub fn package_of(&self, path: &Path) -> Option<&Package> {
        self.packages
            .iter()
            .filter(|p| path.starts_with(&p.dir) && p.dir != self.root)
            .max_by_key(|p| p.dir.components().count())
    }

    /// The plugins among `selected` that a change to `path` requires rebuilding:
    /// a file in a member crate affects the plugins built from that crate (so a
    /// `core/` change affects all); a build-input file outside every crate
    /// (`proto/*.proto`, the root `Cargo.toml`) affects all of them.
    pub fn affected_by<'a>(&self, path: &Path, selected: &'a [Plugin]) -> Vec<&'a Plugin> {
        if self.is_ignored(path) {
            return Vec::new();
        }
        match self.package_of(path) {
            Some(package) => selected
                .iter()
                .filter(|p| p.inputs.contains(&package.name))
                .collect(),
            None => {
                let shared = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| SHARED_INPUT_EXTENSIONS.contains(&e));
                if shared {
                    selected.iter().collect()
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// Folds a burst of changed paths into the set of plugins to rebuild.
    pub fn affected(&self, paths: &[PathBuf], selected: &[Plugin]) -> Affected {
        let mut affected = Affected::default();
        for path in paths {
            let plugins = self.affected_by(path, selected);
            if !plugins.is_empty() {
                affected.paths += 1;
                affected
                    .plugins
                    .extend(plugins.into_iter().map(|p| p.name.clone()));
            }
        }
        affected
    }
}

/// Plugins: binaries of members that depend (directly or through other
/// members) on `core_package`, with their transitive workspace inputs.
fn find_plugins(packages: &[Package], core_package: &str, ports: &[(String, u16)]) -> Vec<Plugin> {
    let by_name: BTreeMap<&str, &Package> = packages.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut plugins = Vec::new();
    for package in packages {
        let inputs = closure(&package.name, &by_name);
        if package.name == core_package || !inputs.contains(core_package) {
            continue;
        }
        for bin in &package.bins {
            let name = bin.strip_prefix("prism-").unwrap_or(bin).to_owned();
            // A crate that declares itself (plugin.toml) brings its port.
            let declared = prism_plugin_core::Manifest::read(&package.dir).map_or(0, |m| m.port);
            plugins.push(Plugin {
                name,
                package: package.name.clone(),
                bin: bin.clone(),
                port: declared,
                inputs: inputs.clone(),
            });
        }
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    let mut next = FIRST_EXTRA_PORT;
    for plugin in &mut plugins {
        let configured = ports.iter().rev().find(|(n, _)| *n == plugin.name);
        plugin.port = match (configured, plugin.port) {
            (Some((_, port)), _) => *port,
            (None, declared) if declared != 0 => declared,
            (None, _) => {
                next += 1;
                next - 1
            }
        };
    }
    plugins
}

/// `name` and every workspace package it depends on, transitively.
fn closure(name: &str, by_name: &BTreeMap<&str, &Package>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![name.to_owned()];
    while let Some(next) = stack.pop() {
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(package) = by_name.get(next.as_str()) {
            stack.extend(package.deps.iter().cloned());
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metadata document shaped like this repository's: core, three plugins,
    /// the test harness (a dev-dependency of the plugins) and the watcher.
    fn metadata() -> Vec<u8> {
        let package = |name: &str, dir: &str, bins: &[&str], deps: &[(&str, Option<&str>)]| {
            serde_json::json!({
                "id": format!("path+file:///w/{dir}#{name}@0.1.0"),
                "name": name,
                "manifest_path": format!("/w/{dir}/Cargo.toml"),
                "targets": bins.iter().map(|b| serde_json::json!({"name": b, "kind": ["bin"]}))
                    .chain(std::iter::once(serde_json::json!({"name": name, "kind": ["lib"]})))
                    .collect::<Vec<_>>(),
                "dependencies": deps.iter().map(|(d, kind)| serde_json::json!({
                    "name": d, "kind": kind, "path": format!("/w/{d}")
                })).chain(std::iter::once(serde_json::json!({
                    "name": "tokio", "kind": null, "path": null
                }))).collect::<Vec<_>>(),
            })
        };
        let core = ("prism-plugin-core", None);
        let testkit = ("prism-testkit", Some("dev"));
        let packages = vec![
            package("prism-plugin-core", "core", &[], &[]),
            package(
                "prism-postgres",
                "postgres",
                &["prism-postgres"],
                &[core, testkit],
            ),
            package("prism-kafka", "kafka", &["prism-kafka"], &[core, testkit]),
            package("prism-redis", "redis", &["prism-redis"], &[core, testkit]),
            package("prism-testkit", "testkit", &["prism-demo"], &[]),
            package("prism-watcher", "watcher", &["prism-watcher"], &[]),
        ];
        let members: Vec<_> = packages.iter().map(|p| p["id"].clone()).collect();
        serde_json::to_vec(&serde_json::json!({
            "packages": packages,
            "workspace_members": members,
            "workspace_root": "/w",
            "target_directory": "/w/target",
        }))
        .unwrap()
    }

    fn workspace() -> Workspace {
        Workspace::from_metadata_json(&metadata(), "prism-plugin-core", &[]).unwrap()
    }

    fn names(plugins: Vec<&Plugin>) -> Vec<&str> {
        plugins.into_iter().map(|p| p.name.as_str()).collect()
    }

    fn found(ws: &Workspace) -> Vec<(&str, &str, u16)> {
        ws.plugins
            .iter()
            .map(|p| (p.name.as_str(), p.bin.as_str(), p.port))
            .collect()
    }

    #[test]
    fn plugins_are_the_binaries_depending_on_core_with_their_ports() {
        // No plugin.toml under /w: ports are handed out from 9093.
        assert_eq!(
            found(&workspace()),
            [
                ("kafka", "prism-kafka", 9093),
                ("postgres", "prism-postgres", 9094),
                ("redis", "prism-redis", 9095)
            ]
        );
        // This repository's crates declare their ports in plugin.toml.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let real = String::from_utf8(metadata())
            .unwrap()
            .replace("/w", &root.display().to_string());
        let ws = Workspace::from_metadata_json(real.as_bytes(), "prism-plugin-core", &[]).unwrap();
        assert_eq!(
            found(&ws),
            [
                ("kafka", "prism-kafka", 9091),
                ("postgres", "prism-postgres", 9090),
                ("redis", "prism-redis", 9092)
            ]
        );
        let ws = Workspace::from_metadata_json(
            &metadata(),
            "prism-plugin-core",
            &[("redis".to_owned(), 7000)],
        )
        .unwrap();
        assert_eq!(ws.plugins[2].port, 7000);
    }

    #[test]
    fn a_core_or_proto_change_affects_every_plugin() {
        let ws = workspace();
        let all = ws.plugins.clone();
        let every = ["kafka", "postgres", "redis"];
        for path in [
            "/w/core/src/lib.rs",
            "/w/core/build.rs",
            "/w/proto/prism/interfaces/kv.proto",
            "/w/Cargo.toml",
        ] {
            let affected = names(ws.affected_by(Path::new(path), &all));
            assert_eq!(affected, every, "{path}");
        }
    }

    #[test]
    fn a_plugin_change_affects_only_that_plugin_and_new_files_count() {
        let ws = workspace();
        let all = ws.plugins.clone();
        assert_eq!(
            names(ws.affected_by(Path::new("/w/redis/src/backend.rs"), &all)),
            ["redis"]
        );
        assert_eq!(
            names(ws.affected_by(Path::new("/w/kafka/src/new_dir/new_file.rs"), &all)),
            ["kafka"]
        );
        // Any file of a crate may be a build input (include_str!, build.rs).
        assert_eq!(
            names(ws.affected_by(Path::new("/w/postgres/migrations/1.sql"), &all)),
            ["postgres"]
        );
    }

    #[test]
    fn unrelated_hidden_and_generated_paths_are_ignored() {
        let ws = workspace();
        let all = ws.plugins.clone();
        for path in [
            "/w/testkit/src/lib.rs",
            "/w/watcher/src/main.rs",
            "/w/target/debug/prism-redis",
            "/w/redis/target/x.rs",
            "/w/.git/index",
            "/w/redis/src/.backend.rs.swp",
            "/w/redis/src/backend.rs~",
            "/w/Cargo.lock",
            "/w/scripts/test.sh",
            "/w/README.md",
        ] {
            assert!(
                ws.affected_by(Path::new(path), &all).is_empty(),
                "{path} should not trigger a build"
            );
        }
    }

    #[test]
    fn a_burst_folds_into_one_set() {
        let ws = workspace();
        let all = ws.plugins.clone();
        let burst: Vec<PathBuf> = [
            "/w/redis/src/a.rs",
            "/w/redis/src/b.rs",
            "/w/kafka/src/c.rs",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let affected = ws.affected(&burst, &all);
        assert_eq!(affected.paths, 3);
        assert_eq!(
            affected
                .plugins
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["kafka", "redis"]
        );
    }

    #[test]
    fn selecting_by_name_package_or_binary() {
        let ws = workspace();
        let picked = ws
            .select(&["redis".to_owned(), "prism-kafka".to_owned()], "x")
            .unwrap();
        assert_eq!(
            picked.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["redis", "kafka"]
        );
        let err = ws.select(&["mysql".to_owned()], "x").unwrap_err();
        assert!(err.to_string().contains("kafka, postgres, redis"), "{err}");
    }
}
