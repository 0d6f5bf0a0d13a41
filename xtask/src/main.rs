//! `prism-xtask`: workspace chores derived from the plugins' `plugin.toml`.
//!
//! - `manifests` writes `compose.yaml` and `deploy/kubernetes/` (one file per
//!   plugin plus `common.yaml`) from every `*/plugin.toml`; `manifests --check`
//!   fails when the checked-in files differ (the unit test below runs it, so a
//!   stale file fails `make test`).
//!
//! - `new-plugin NAME [--port N]` writes a new plugin crate from the skeleton
//!   in `templates/plugin/` (see [`new_plugin`]), then regenerates the above.
//!
//! The output is plain text built here, not a YAML serializer's, so it keeps
//! comments and anchors and reads like a hand-written file.

mod compose;
mod kubernetes;
mod new_plugin;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use prism_plugin_core::manifest::workspace_manifests;

/// Every generated file: its path under the workspace root and its content.
fn generated(root: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let plugins = workspace_manifests(root)?;
    if plugins.is_empty() {
        bail!("no */plugin.toml under {}", root.display());
    }
    let mut files = vec![(PathBuf::from("compose.yaml"), compose::render(&plugins)?)];
    let k8s = Path::new("deploy/kubernetes");
    files.push((k8s.join("common.yaml"), kubernetes::common()));
    let overlay = k8s.join("static-secrets");
    files.push((
        overlay.join("common.yaml"),
        kubernetes::static_common(&plugins),
    ));
    for plugin in &plugins {
        let file = format!("{}.yaml", plugin.name);
        files.push((k8s.join(&file), kubernetes::plugin(plugin, true)));
        files.push((overlay.join(&file), kubernetes::plugin(plugin, false)));
    }
    Ok(files)
}

/// The generated files whose checked-in content differs (or is missing).
fn stale(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    Ok(generated(root)?
        .into_iter()
        .filter(|(path, text)| std::fs::read_to_string(root.join(path)).ok().as_ref() != Some(text))
        .map(|(path, _)| path)
        .collect())
}

/// Writes every generated file.
fn write_generated(root: &Path) -> anyhow::Result<()> {
    for (path, text) in generated(root)? {
        if let Some(dir) = root.join(&path).parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(root.join(&path), text)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["manifests"] => write_generated(&root),
        ["new-plugin", name, rest @ ..] => {
            let port = match rest {
                [] => None,
                ["--port", port] => Some(port.parse().context("--port takes a number")?),
                _ => bail!("usage: prism-xtask new-plugin NAME [--port N]"),
            };
            let port = new_plugin::create(&root, name, port)?;
            write_generated(&root)?;
            println!(
                "created {name}/ (prism-{name}, port {port}); next: docs/adding-a-plugin.md\n\
                 \x20 cargo test -p prism-{name}    make run-{name}    make {name} BASE_IMAGE=scratch"
            );
            Ok(())
        }
        ["manifests", "--check"] => {
            let stale = stale(&root)?;
            if stale.is_empty() {
                println!("compose.yaml and deploy/kubernetes/ match the plugins' plugin.toml");
                Ok(())
            } else {
                bail!("stale (run `make manifests`): {stale:?}")
            }
        }
        _ => bail!("usage: prism-xtask manifests [--check] | new-plugin NAME [--port N]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// compose.yaml and deploy/kubernetes/ are what the plugin.toml files say:
    /// editing a manifest without `make manifests` fails here.
    #[test]
    fn checked_in_manifests_match_the_plugins_declarations() {
        let stale = stale(&workspace_root()).unwrap();
        assert!(stale.is_empty(), "run `make manifests`: stale {stale:?}");
    }

    #[test]
    fn every_plugin_is_in_compose_and_kubernetes() {
        let root = workspace_root();
        let files = generated(&root).unwrap();
        let compose = &files[0].1;
        for plugin in workspace_manifests(&root).unwrap() {
            assert!(compose.contains(&format!("  {}-plugin:\n", plugin.name)));
            assert!(compose.contains(&format!("\"{0}:{0}\"", plugin.port)));
            let k8s = files
                .iter()
                .find(|(p, _)| p.ends_with(format!("{}.yaml", plugin.name)))
                .expect("a Kubernetes file per plugin");
            assert!(k8s.1.contains(&format!("containerPort: {}", plugin.port)));
        }
    }
}
