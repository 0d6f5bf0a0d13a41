//! A plugin's one declaration: the `plugin.toml` beside its `Cargo.toml`.
//!
//! The plugin crate owns its facts — name, port, image base, the backend server
//! its tests and demo start, its conventional environment names, how compose and
//! Kubernetes reach its backend — in that file, and nothing else in the
//! workspace lists them: core reads it at startup (through [`manifest!`]), and
//! the Makefile, the image build, `compose.yaml`, `deploy/kubernetes/`, the
//! watcher, testkit and the packaging tests find every plugin by looking for
//! `*/plugin.toml` ([`workspace_manifests`]). Adding a plugin edits no list.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{OnceLock, RwLock};

use serde::{Deserialize, Serialize};

use crate::Plugin;

/// The file name every plugin crate declares itself in.
pub const FILE_NAME: &str = "plugin.toml";

/// What a plugin crate compiles in: its `plugin.toml` text and its crate
/// version. Written by [`manifest!`], parsed once by [`of`].
#[derive(Debug, Clone, Copy)]
pub struct ManifestSource {
    /// The text of `plugin.toml`.
    pub toml: &'static str,
    /// `CARGO_PKG_VERSION` of the plugin crate.
    pub version: &'static str,
}

/// Compiles the calling crate's `plugin.toml` and version into a
/// [`ManifestSource`]: `const MANIFEST: ManifestSource = prism_plugin_core::manifest!();`
#[macro_export]
macro_rules! manifest {
    () => {
        $crate::manifest::ManifestSource {
            toml: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/plugin.toml")),
            version: env!("CARGO_PKG_VERSION"),
        }
    };
}

/// The parsed `plugin.toml`. See `docs/adding-a-plugin.md` for each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name (`postgres`): the crate directory, the binary `prism-<name>`,
    /// the image `<registry>/<name>-plugin`, a health service name.
    pub name: String,
    /// What it serves, for `--help`, image labels and generated manifests.
    pub description: String,
    /// Default gRPC port (`control_plane.port`).
    pub port: u16,
    /// The distroless base its image runs on.
    #[serde(default)]
    pub image_base: ImageBase,
    /// The backend server tests and the demo start beside it (a testkit
    /// server name: `postgres`, `redis`, `kafka`), or `none`.
    #[serde(default = "none")]
    pub backend: String,
    /// The original suite's environment names mapped to config keys, e.g.
    /// `DATABASE_URL = "backend.database_url"`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How `compose.yaml` runs it.
    #[serde(default)]
    pub compose: Compose,
    /// How `deploy/kubernetes/<name>.yaml` runs it.
    #[serde(default)]
    pub kubernetes: Kubernetes,
    /// The plugin crate's version (not in the file: from Cargo).
    #[serde(skip)]
    pub version: String,
}

/// The image base: distroless `static` (no C library needed) or `cc` (glibc's
/// NSS at run time, e.g. for librdkafka's name resolution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageBase {
    /// `gcr.io/distroless/static-debian12`.
    #[default]
    Static,
    /// `gcr.io/distroless/cc-debian12`.
    Cc,
}

impl ImageBase {
    /// The distroless image name for this base (`static-debian12` / `cc-debian12`).
    pub fn distroless(self) -> &'static str {
        match self {
            ImageBase::Static => "static-debian12",
            ImageBase::Cc => "cc-debian12",
        }
    }
}

/// The plugin's service in `compose.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compose {
    /// Environment of the plugin container (how it reaches its backend in the
    /// compose network).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Backend services it waits for (healthy), declared in `services`.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The backend services themselves, as compose service definitions
    /// (written to `compose.yaml` as they are).
    #[serde(default)]
    pub services: BTreeMap<String, toml::Value>,
    /// Named volumes those services use (`compose.yaml`'s top-level `volumes`).
    #[serde(default)]
    pub volumes: Vec<String>,
    /// What compose's one-shot `vault-init` (scripts/vault-dev-setup.sh) needs
    /// for this plugin's backend: the script's settings (`PG_HOST`, ...).
    #[serde(default)]
    pub vault_init_env: BTreeMap<String, String>,
}

/// The plugin's Deployment in `deploy/kubernetes/<name>.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// Non-secret environment, in the plugin's ConfigMap.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secret environment: name → placeholder value for the shared
    /// `prism-backends` Secret of the static-secret overlay
    /// (`deploy/kubernetes/static-secrets/`).
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Environment of the default (Vault) variant, in the plugin's ConfigMap:
    /// what to read from Vault and how to reach the backend without a password.
    #[serde(default)]
    pub vault: BTreeMap<String, String>,
}

fn none() -> String {
    "none".to_string()
}

/// A `plugin.toml` that cannot be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file (or `compiled-in plugin.toml`).
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl Manifest {
    /// Parses and checks a `plugin.toml`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let invalid = |message: String| ManifestError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let manifest: Manifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let problems = manifest.problems();
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(invalid(problems.join("; ")))
        }
    }

    /// Reads `<dir>/plugin.toml`; the version is left empty.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(FILE_NAME);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// The binary and package name, `prism-<name>`.
    pub fn binary(&self) -> String {
        format!("prism-{}", self.name)
    }

    /// The image name without registry and tag, `<name>-plugin`.
    pub fn image(&self) -> String {
        format!("{}-plugin", self.name)
    }

    /// Every problem a loader would trip over later, each naming its key.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 32
            && self.name.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            problems.push(format!(
                "`name` {:?}: use 1-32 characters [a-z0-9-], starting with a letter",
                self.name
            ));
        }
        // It is substituted into the Containerfile and YAML as it is.
        if self.description.is_empty()
            || self.description.len() > 120
            || self.description.contains(['|', '&', '"', '\\', '\n', '#'])
        {
            problems.push(format!(
                "`description` {:?}: 1-120 characters without | & \" \\ # or line breaks",
                self.description
            ));
        }
        if self.port == 0 {
            problems.push("`port`: must not be 0".to_string());
        }
        for (var, key) in &self.env {
            if var.starts_with("PRISM_") {
                problems.push(format!(
                    "`env.{var}`: PRISM_* names are read already, declare only conventional names"
                ));
            }
            if !key.contains('.') {
                problems.push(format!(
                    "`env.{var}`: {key:?} is not a dotted config key such as backend.url"
                ));
            }
        }
        for dep in &self.compose.depends_on {
            if !self.compose.services.contains_key(dep) {
                problems.push(format!(
                    "`compose.depends_on`: {dep:?} is not declared in [compose.services]"
                ));
            }
        }
        problems
    }
}

/// The parsed manifest of plugin type `P`, parsed once per process.
///
/// # Panics
/// If the compiled-in `plugin.toml` is invalid: a build defect that every
/// plugin's tests catch (the binary cannot start at all).
pub fn of<P: Plugin>() -> &'static Manifest {
    static PARSED: OnceLock<RwLock<HashMap<TypeId, &'static Manifest>>> = OnceLock::new();
    let parsed = PARSED.get_or_init(Default::default);
    let id = TypeId::of::<P>();
    if let Some(m) = parsed.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return m;
    }
    let source = P::MANIFEST;
    let mut manifest = Manifest::parse(source.toml, "compiled-in plugin.toml")
        .unwrap_or_else(|err| panic!("invalid plugin manifest: {err}"));
    manifest.version = source.version.to_string();
    let leaked: &'static Manifest = Box::leak(Box::new(manifest));
    // A racing first call may parse twice; both results are equal.
    parsed
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id)
        .or_insert(leaked);
    leaked
}

/// Every plugin of the workspace at `root`: each direct subdirectory holding a
/// `plugin.toml`, sorted by name.
pub fn workspace_manifests(root: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let entries = std::fs::read_dir(root).map_err(|source| ManifestError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    let mut manifests = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if dir.join(FILE_NAME).is_file() {
            manifests.push(Manifest::read(&dir)?);
        }
    }
    manifests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(manifests)
}

/// Every conventional (non-`PRISM_*`) environment name a plugin of the
/// workspace at `root` understands: core's own (Vault) and each manifest's
/// `[env]`. The watcher passes these into containers; testkit removes them from
/// the environment plugin tests inherit.
pub fn conventional_env(root: &Path) -> Result<Vec<String>, ManifestError> {
    let mut names: Vec<String> = crate::vault::VAULT_ENV_ALIASES
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for manifest in workspace_manifests(root)? {
        names.extend(manifest.env.into_keys());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "demo-kv"
description = "an example"
port = 9099
image_base = "cc"
backend = "redis"

[env]
DEMO_URL = "backend.url"

[compose]
env = { DEMO_URL = "redis://redis:6379" }
depends_on = ["redis"]

[compose.services.redis]
image = "docker.io/library/redis:7-alpine"

[kubernetes]
config = { DEMO_POOL = "4" }
secrets = { DEMO_URL = "redis://CHANGE-ME@redis:6379" }
"#;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(FULL, "test").unwrap();
        assert_eq!(m.name, "demo-kv");
        assert_eq!(m.binary(), "prism-demo-kv");
        assert_eq!(m.image(), "demo-kv-plugin");
        assert_eq!(m.port, 9099);
        assert_eq!(m.image_base, ImageBase::Cc);
        assert_eq!(m.env["DEMO_URL"], "backend.url");
        assert_eq!(m.compose.depends_on, ["redis"]);
        assert_eq!(m.kubernetes.secrets.len(), 1);
    }

    #[test]
    fn defaults_and_minimal() {
        let m = Manifest::parse("name = \"x\"\ndescription = \"d\"\nport = 1\n", "t").unwrap();
        assert_eq!(m.image_base, ImageBase::Static);
        assert_eq!(m.backend, "none");
        assert!(m.env.is_empty());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values_naming_them() {
        let err = Manifest::parse(
            "name = \"x\"\ndescription = \"d\"\nport = 1\nprot = 2\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("prot"), "{err}");
        let err = Manifest::parse(
            "name = \"X y\"\ndescription = \"d\"\nport = 0\n[env]\nPRISM_A = \"a\"\nB = \"nodot\"\n[compose]\ndepends_on = [\"db\"]\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        for key in [
            "`name`",
            "`port`",
            "env.PRISM_A",
            "env.B",
            "compose.depends_on",
        ] {
            assert!(err.contains(key), "{key} missing from {err}");
        }
    }

    #[test]
    fn the_workspace_plugins_declare_themselves() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let manifests = workspace_manifests(root).unwrap();
        let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
        for expected in ["kafka", "postgres", "redis"] {
            assert!(names.contains(&expected), "{names:?}");
        }
        let env = conventional_env(root).unwrap();
        for name in [
            "DATABASE_URL",
            "KAFKA_BROKERS",
            "REDIS_ADDRESS",
            "VAULT_ADDR",
        ] {
            assert!(env.iter().any(|n| n == name), "{name} missing from {env:?}");
        }
        let ports: std::collections::BTreeSet<u16> = manifests.iter().map(|m| m.port).collect();
        assert_eq!(ports.len(), manifests.len(), "two plugins share a port");
    }
}
