//! `new-plugin NAME [--port N]`: writes a compiling plugin crate from
//! `templates/plugin/` (core's KeyValue services over an in-memory store, its
//! config, its tests) and its `config.yaml`, adds it to the workspace members and
//! regenerates compose.yaml and deploy/kubernetes/. The places it touches are the ones
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

/// The `backend:` section of the new plugin's `config.yaml`; core's sections
/// come from an existing plugin's file ([`config_yaml`]).
const CONFIG_BACKEND: &str = include_str!("../templates/plugin/config.backend.yaml.tmpl");

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
    let config = config_yaml(root, &existing)?;
    let config = [("config.yaml", config.as_str())];
    for (path, template) in FILES.iter().chain(&config) {
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

/// The template of the new plugin's `config.yaml`: core's sections as the
/// first existing plugin's file documents them (every plugin has the same, and
/// `xtask/tests/config_files.rs` keeps each file complete, so core's keys
/// need no copy here), with that plugin's names and port turned into
/// placeholders and its `backend:` section replaced by [`CONFIG_BACKEND`].
fn config_yaml(root: &Path, existing: &[Manifest]) -> anyhow::Result<String> {
    let Some((source, text)) = existing.iter().find_map(|m| {
        let text = std::fs::read_to_string(root.join(&m.name).join("config.yaml"));
        text.ok().map(|text| (m, text))
    }) else {
        bail!("no plugin with a config.yaml to take core's sections from");
    };
    let (name, port) = (&source.name, source.port);
    let template = text
        .replace(&format!("prism-{name}"), "prism-__NAME__")
        .replace(&format!("{name}/config.yaml"), "__NAME__/config.yaml")
        .replace(&format!("`{name}`"), "`__NAME__`")
        .replace(&format!("  port: {port}  #"), "  port: __PORT__  #");
    replace_section(&template, "backend", CONFIG_BACKEND)
        .with_context(|| format!("{name}/config.yaml has no top-level `backend:` section"))
}

/// `yaml` with its top-level section `key` (with the comment lines right above
/// it) replaced by `with`.
fn replace_section(yaml: &str, key: &str, with: &str) -> Option<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let top_level = |line: &&str| line.starts_with(|c: char| c.is_ascii_lowercase());
    // A section starts at the comment lines right above its key.
    let comments_above = |mut at: usize| {
        while at > 0 && lines[at - 1].starts_with('#') {
            at -= 1;
        }
        at
    };
    let at = lines
        .iter()
        .position(|l| l.strip_prefix(key) == Some(":"))?;
    let next = lines[at + 1..].iter().position(top_level);
    let end = next.map_or(lines.len(), |n| comments_above(at + 1 + n));
    let mut out: Vec<&str> = lines[..comments_above(at)].to_vec();
    out.extend(with.lines());
    out.extend(&lines[end..]);
    Some(out.join("\n") + "\n")
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
    fn the_config_template_has_cores_sections_of_an_existing_plugin_and_its_own_backend() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let existing = workspace_manifests(&root).unwrap();
        let names = Names {
            name: "demo-kv".into(),
            port: 9200,
        };
        let yaml = names.fill(&config_yaml(&root, &existing).unwrap());
        for section in ["plugin:", "control_plane:", "backend:", "log:", "vault:"] {
            assert!(yaml.lines().any(|l| l == section), "{section}\n{yaml}");
        }
        assert!(yaml.contains("\n  port: 9200  # gRPC port"), "{yaml}");
        assert!(yaml.contains("  max_keys: 100000  #"), "{yaml}");
        assert!(
            yaml.contains("prism-demo-kv --config demo-kv/config.yaml"),
            "{yaml}"
        );
        // No key of the source's backend is left.
        let source = std::fs::read_to_string(root.join(&existing[0].name).join("config.yaml"));
        let source = source.unwrap();
        let backend = source.split("\nbackend:\n").nth(1).unwrap();
        let first = backend
            .lines()
            .next()
            .unwrap()
            .trim()
            .split(':')
            .next()
            .unwrap();
        assert!(
            !yaml.contains(&format!("\n  {first}:")),
            "{first} left: {yaml}"
        );
    }

    #[test]
    fn replacing_a_section_keeps_the_others_and_their_comments() {
        let yaml = "# head\n\n# a's\na:\n  x: 1  # x\n# b's\nb:\n  y: 2  # y\n# c's\nc: 3  # c\n";
        let got = replace_section(yaml, "b", "# new b\nb:\n  z: 4  # z").unwrap();
        assert_eq!(
            got,
            "# head\n\n# a's\na:\n  x: 1  # x\n# new b\nb:\n  z: 4  # z\n# c's\nc: 3  # c\n"
        );
        assert_eq!(replace_section(yaml, "missing", "x: 1"), None);
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
