//! Command-line flags shared by every plugin binary.

use std::path::PathBuf;

/// Flags every plugin accepts (the gateway passes `--grpc-port N`).
#[derive(Debug, clap::Parser)]
pub struct Cli {
    /// Config file (YAML); default: $PRISM_PLUGIN_CONFIG, else /etc/prism/plugin.yaml if present.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// gRPC port; overrides control_plane.port from file and environment.
    #[arg(long, value_name = "N")]
    pub grpc_port: Option<u16>,
    /// Log level or tracing filter (e.g. `debug`, `info,prism=trace`); overrides log.level.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Validate the configuration, print it with secrets redacted, and exit.
    #[arg(long)]
    pub check_config: bool,
}
