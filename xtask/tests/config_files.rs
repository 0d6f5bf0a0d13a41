//! Each plugin's shipped `<plugin>/config.yaml` (the file an operator copies and
//! edits) lists every configuration key the plugin has, with its built-in
//! default and a one-line comment, and the plugin accepts it as shipped.
//!
//! The key list comes from the plugin itself: `prism-<plugin> --check-config`
//! with no file and a bare environment prints the serde config types'
//! defaults, so a key added to any config struct (core's sections or a
//! backend's) fails here until the file has it. Needs the plugin binaries
//! (`cargo build --bins`; `make test` builds them).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The variable naming (comma-separated) the only plugins to check:
/// `scripts/test-new-plugin.sh` checks the plugin it generated, the only one
/// built in its scratch copy.
const ONLY: &str = "PRISM_CONFIG_FILES_ONLY";

/// Every directory with a plugin.toml, by plugin name (those [`ONLY`] names
/// when it is set).
fn plugins() -> Vec<String> {
    let only = std::env::var(ONLY).ok();
    let wanted = |name: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|n| n == name))
    };
    let mut names: Vec<String> = std::fs::read_dir(root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("plugin.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| wanted(name))
        .collect();
    names.sort();
    assert!(
        only.is_some() || names.len() >= 3,
        "plugins found: {names:?}"
    );
    assert!(!names.is_empty(), "no plugin named by {ONLY}={only:?}");
    names
}

fn binary(plugin: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let path = target.join("debug").join(format!("prism-{plugin}"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --bins` first",
        path.display()
    );
    path
}

/// `prism-<plugin> --check-config [--config file]` in a bare environment: the
/// effective configuration as YAML.
fn check_config(plugin: &str, file: Option<&Path>) -> String {
    let mut cmd = Command::new(binary(plugin));
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .arg("--check-config");
    if let Some(marker) = std::env::var_os("PRISM_TEST_RUN") {
        cmd.env("PRISM_TEST_RUN", marker);
    }
    if let Some(file) = file {
        cmd.arg("--config").arg(file);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "prism-{plugin} --check-config {file:?} failed: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Dotted paths of every key (sections and leaves), with the leaves' values.
fn key_paths(value: &Value, prefix: &str, out: &mut Vec<(String, Option<String>)>) {
    if let Value::Mapping(map) = value {
        for (key, child) in map {
            let key = key.as_str().expect("string keys");
            let path = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            match child {
                Value::Mapping(m) if !m.is_empty() => {
                    out.push((path.clone(), None));
                    key_paths(child, &path, out);
                }
                leaf => {
                    let shown = serde_yaml::to_string(leaf).unwrap().trim().to_owned();
                    out.push((path, Some(shown)));
                }
            }
        }
    }
}

fn paths_of(yaml: &str) -> Vec<(String, Option<String>)> {
    let value: Value = serde_yaml::from_str(yaml).unwrap();
    let mut out = Vec::new();
    key_paths(&value, "", &mut out);
    out
}

#[test]
fn every_config_key_is_in_the_plugins_config_yaml() {
    let plugins = plugins();
    let mut problems = Vec::new();
    for plugin in &plugins {
        let file = root().join(plugin).join("config.yaml");
        let shown = format!("{plugin}/config.yaml");
        let Ok(text) = std::fs::read_to_string(&file) else {
            problems.push(format!("{shown} is missing"));
            continue;
        };
        let in_file: BTreeSet<String> = paths_of(&text).into_iter().map(|(p, _)| p).collect();
        for (path, default) in paths_of(&check_config(plugin, None)) {
            if !in_file.contains(&path) {
                let default = default.map_or_else(String::new, |d| format!(" (default: {d})"));
                problems.push(format!(
                    "{shown} lacks the key `{path}`{default}: add it with its default and a one-line comment"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_key_in_a_config_yaml_has_a_comment() {
    let mut problems = Vec::new();
    for plugin in plugins() {
        let text = std::fs::read_to_string(root().join(&plugin).join("config.yaml")).unwrap();
        let mut previous = "";
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                previous = trimmed;
                continue;
            }
            // A section's comment is the line above it; a key's is on its line.
            let commented = if trimmed.ends_with(':') {
                previous.starts_with('#')
            } else {
                trimmed.contains(" # ")
            };
            if !commented {
                problems.push(format!(
                    "{plugin}/config.yaml:{}: `{trimmed}` has no comment",
                    n + 1
                ));
            }
            previous = trimmed;
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// `--check-config` accepts each file as shipped, and the file changes nothing:
/// every value in it is the built-in default.
#[test]
fn each_config_yaml_is_accepted_and_holds_the_defaults() {
    for plugin in plugins() {
        let file = root().join(&plugin).join("config.yaml");
        let with_file = check_config(&plugin, Some(&file));
        let defaults = check_config(&plugin, None);
        assert_eq!(
            with_file, defaults,
            "{plugin}/config.yaml changes the effective configuration (left: with the file)"
        );
    }
}
