//! Command-line flags of `prism-watcher`.

use std::path::PathBuf;
use std::time::Duration;

/// How the watcher runs what it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Supervise local plugin processes (`<binary> --grpc-port N`).
    Process,
    /// Rebuild each plugin's image (`--image-cmd`) and replace its container.
    Podman,
}

/// How a started plugin is judged up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ready {
    /// gRPC health service `liveness` is SERVING (the process works; readiness,
    /// which follows the backend, is logged but not waited for).
    Grpc,
    /// The port accepts a TCP connection (for binaries without gRPC health).
    Tcp,
}

/// `prism-watcher`: watch the workspace, rebuild the plugins a change affects
/// (once per burst of edits) and restart them; on a failed build the running
/// plugin keeps serving and the compiler errors are printed.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "prism-watcher", version, about, long_about = None)]
pub struct Cli {
    /// Workspace directory (or any directory inside it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Quiet period that ends a burst of edits, e.g. `500ms`, `2s`.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// What to reload after a good build.
    #[arg(long, value_enum, default_value_t = Mode::Process)]
    pub mode: Mode,
    /// Plugins to build and run, comma-separated (`postgres,redis`); default: every
    /// plugin crate of the workspace.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub plugins: Vec<String>,
    /// Build (binaries, or images with `--mode podman`) once and exit: 0 if the
    /// build succeeded, 1 if not.
    #[arg(long)]
    pub once: bool,
    /// Log level or tracing filter for the watcher's own messages.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// A plugin's port as NAME=PORT (repeatable). Defaults: postgres 9090,
    /// kafka 9091, redis 9092, any other plugin 9093 upwards.
    #[arg(long = "port", value_name = "NAME=PORT", value_parser = parse_port)]
    pub ports: Vec<(String, u16)>,
    /// Build with `--release` instead of the dev profile.
    #[arg(long)]
    pub release: bool,
    /// How a started plugin is judged up.
    #[arg(long, value_enum, default_value_t = Ready::Grpc)]
    pub ready: Ready,
    /// How long a started plugin may take to come up.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// How long a plugin may drain after SIGTERM before it is killed (the plugins'
    /// own drain bound is 30 s).
    #[arg(long, value_name = "DURATION", default_value = "35s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// Plugins are the workspace binaries that depend on this package.
    #[arg(long, value_name = "PACKAGE", default_value = "prism-plugin-core")]
    pub core_package: String,
    /// `--mode podman`: command that builds a plugin's image (run with `sh -c` in
    /// the workspace root; `{plugin}` is replaced by the plugin name).
    #[arg(
        long,
        value_name = "CMD",
        default_value = "make -s {plugin} VERSION=dev REGISTRY=prism-dev"
    )]
    pub image_cmd: String,
    /// `--mode podman`: the image that command produces (`{plugin}` replaced).
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "prism-dev/{plugin}-plugin:dev"
    )]
    pub image: String,
    /// `--mode podman`: the podman command with any global flags, split on spaces
    /// (e.g. `podman --runtime runc`).
    #[arg(long, value_name = "CMD", default_value = "podman")]
    pub podman: String,
    /// `--mode podman`: extra `podman run` flags, split on spaces (e.g.
    /// `--ulimit nofile=1024:1024`). Containers always run with `--network host`,
    /// `--read-only` and the conventional backend variables passed through.
    #[arg(
        long,
        value_name = "FLAGS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub run_args: String,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 500ms, 2s)"))
}

fn parse_port(text: &str) -> Result<(String, u16), String> {
    let (name, port) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PORT, got {text:?}"))?;
    let port = port
        .parse::<u16>()
        .map_err(|e| format!("port of {name:?}: {e}"))?;
    Ok((name.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documented_ones() {
        let cli = Cli::parse_from(["prism-watcher"]);
        assert_eq!(cli.debounce, Duration::from_millis(500));
        assert_eq!(cli.mode, Mode::Process);
        assert!(cli.plugins.is_empty());
        assert!(!cli.once);
        assert_eq!(cli.ready, Ready::Grpc);
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::parse_from([
            "prism-watcher",
            "--dir",
            "/w",
            "--debounce",
            "250ms",
            "--mode",
            "podman",
            "--plugins",
            "redis,kafka",
            "--once",
            "--port",
            "redis=7000",
            "--run-args",
            "--ulimit nofile=1024:1024",
        ]);
        assert_eq!(cli.dir, PathBuf::from("/w"));
        assert_eq!(cli.debounce, Duration::from_millis(250));
        assert_eq!(cli.mode, Mode::Podman);
        assert_eq!(cli.plugins, ["redis", "kafka"]);
        assert!(cli.once);
        assert_eq!(cli.ports, [("redis".to_owned(), 7000)]);
        assert_eq!(cli.run_args, "--ulimit nofile=1024:1024");
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("750"), Ok(Duration::from_millis(750)));
        assert!(parse_port("redis").is_err());
    }
}
