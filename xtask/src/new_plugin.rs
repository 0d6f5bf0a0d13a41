//! `new-plugin NAME [--port N]`: writes a compiling plugin crate from
//! `templates/plugin/` (core's KeyValue services over an in-memory store, its
//! config, its tests), adds it to the workspace members and regenerates compose.yaml
//! and deploy/kubernetes/. The places it touches are the ones
//! docs/adding-a-plugin.md names; the generator test in .ci/run checks that.

use std::path::Path;

use anyhow::{Context, bail};
use prism_plugin_core::Manifest;
use prism_plugin_core::manifest::workspace_manifests;

/// Template path (relative to `templates/plugin/`, without `.tmpl`) and text.
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../templates/plugin/Cargo.toml.tmpl"),
    ),
    (
        "plugin.toml",
        include_str!("../templates/plugin/plugin.toml.tmpl"),
    ),
    (
        "README.md",
        include_str!("../templates/plugin/README.md.tmpl"),
    ),
    (
        "src/main.rs",
        include_str!("../templates/plugin/src/main.rs.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../templates/plugin/src/lib.rs.tmpl"),
    ),
    (
        "src/config.rs",
        include_str!("../templates/plugin/src/config.rs.tmpl"),
    ),
    (
        "src/store.rs",
        include_str!("../templates/plugin/src/store.rs.tmpl"),
    ),
    (
        "src/plugin.rs",
        include_str!("../templates/plugin/src/plugin.rs.tmpl"),
    ),
    (
        "tests/plugin.rs",
        include_str!("../templates/plugin/tests/plugin.rs.tmpl"),
    ),
];

/// The names a template's placeholders stand for.
struct Names {
    name: String,
    port: u16,
}

impl Names {
    fn fill(&self, template: &str) -> String {
        let crate_name = self.name.replace('-', "_");
        let type_name: String = self
            .name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        let env_prefix = format!("{}_", crate_name.to_ascii_uppercase());
        template
            .replace("__CRATE__", &crate_name)
            .replace("__TYPE__", &type_name)
            .replace("__ENV__", &env_prefix)
            .replace("__PORT__", &self.port.to_string())
            .replace("__NAME__", &self.name)
    }
}

/// Creates `<root>/<name>/` and registers it; returns the chosen port.
pub(crate) fn create(root: &Path, name: &str, port: Option<u16>) -> anyhow::Result<u16> {
    let existing = workspace_manifests(root)?;
    let port = match port {
        Some(port) => port,
        // Next to the highest declared port, so every plugin keeps its own.
        None => existing.iter().map(|m| m.port).max().unwrap_or(9089) + 1,
    };
    if let Some(other) = existing.iter().find(|m| m.port == port) {
        bail!("port {port} is declared by {} already", other.name);
    }
    let dir = root.join(name);
    if dir.exists() {
        bail!("{} exists already", dir.display());
    }
    let names = Names {
        name: name.to_string(),
        port,
    };
    // The manifest is checked before anything is written (name rules).
    let manifest_text = names.fill(FILES[1].1);
    Manifest::parse(&manifest_text, "the new plugin.toml")?;
    for (path, template) in FILES {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, names.fill(template))
            .with_context(|| format!("writing {}", target.display()))?;
    }
    add_member(root, name)?;
    // Placeholders change line lengths: leave the crate as rustfmt would.
    let fmt = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["fmt", "-p", &format!("prism-{name}")])
        .current_dir(root)
        .status();
    if !fmt.is_ok_and(|s| s.success()) {
        eprintln!("warning: `cargo fmt -p prism-{name}` failed; run it before committing");
    }
    Ok(port)
}

/// Appends `name` to `[workspace] members` in the root Cargo.toml, keeping the
/// file's formatting (a text edit of the one `members = [...]` line).
fn add_member(root: &Path, name: &str) -> anyhow::Result<()> {
    let path = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&path)?;
    let Some(line) = text
        .lines()
        .find(|l| l.trim_start().starts_with("members = ["))
    else {
        bail!("no one-line `members = [...]` in {}", path.display());
    };
    let Some(open) = line.strip_suffix(']') else {
        bail!("`members` in {} is not on one line", path.display());
    };
    let updated = format!("{open}, \"{name}\"]");
    std::fs::write(&path, text.replacen(line, &updated, 1))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_the_plugins_names() {
        let names = Names {
            name: "demo-kv".into(),
            port: 9093,
        };
        let text = names.fill("__NAME__ __CRATE__ __TYPE__Plugin __ENV__URL __PORT__");
        assert_eq!(text, "demo-kv demo_kv DemoKvPlugin DEMO_KV_URL 9093");
        let placeholder = |text: &str| {
            ["__NAME__", "__CRATE__", "__TYPE__", "__ENV__", "__PORT__"]
                .iter()
                .any(|p| text.contains(p))
        };
        for (path, template) in FILES {
            assert!(placeholder(template), "{path} has no placeholder to fill");
            assert!(
                !placeholder(&names.fill(template)),
                "{path} keeps a placeholder"
            );
        }
    }

    #[test]
    fn a_generated_manifest_is_valid() {
        let names = Names {
            name: "x1".into(),
            port: 9200,
        };
        let manifest = Manifest::parse(&names.fill(FILES[1].1), "t").unwrap();
        assert_eq!((manifest.name.as_str(), manifest.port), ("x1", 9200));
    }
}
