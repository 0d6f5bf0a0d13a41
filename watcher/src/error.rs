//! The watcher's one error type. Every message says what failed and what to do.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can stop the watcher or fail one reload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `cargo metadata` could not be run or its output not understood.
    #[error("reading the workspace with `cargo metadata` in {dir}: {reason}")]
    Metadata {
        /// The directory cargo ran in.
        dir: PathBuf,
        /// What went wrong (cargo's stderr or the parse error).
        reason: String,
    },
    /// A plugin's `plugin.toml` is unreadable or invalid.
    #[error(transparent)]
    Manifest(#[from] prism_plugin_core::manifest::ManifestError),
    /// `--plugins` named something the workspace does not have.
    #[error("unknown plugin {name:?}; the workspace has: {available}")]
    UnknownPlugin {
        /// The name given.
        name: String,
        /// The plugins found, comma-separated.
        available: String,
    },
    /// The workspace has no plugin crates (binaries depending on the core package).
    #[error(
        "no plugin crates found in {root} (binaries depending on {core_package}); \
         check --dir and --core-package"
    )]
    NoPlugins {
        /// The workspace root.
        root: PathBuf,
        /// The package a plugin must depend on.
        core_package: String,
    },
    /// Setting up the file watches failed (e.g. inotify limits).
    #[error("watching {path}: {source} (raise fs.inotify.max_user_watches if the limit is hit)")]
    Watch {
        /// The directory being watched.
        path: PathBuf,
        /// The notify error.
        #[source]
        source: notify::Error,
    },
    /// A command (cargo, podman, a plugin binary) could not be started or waited on.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, e.g. `spawning /x/prism-redis`.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A command exited unsuccessfully (its output is printed separately).
    #[error("{what} failed ({status})")]
    Command {
        /// The command line, shortened.
        what: String,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// A started plugin did not report itself up in time.
    #[error("{plugin} did not become ready on port {port} within {timeout:?}: {last}")]
    NotReady {
        /// The plugin name.
        plugin: String,
        /// Its port.
        port: u16,
        /// The readiness timeout.
        timeout: Duration,
        /// The last status or error seen.
        last: String,
    },
    /// A started plugin exited before becoming ready.
    #[error("{plugin} exited during startup ({status}); see its output above")]
    ExitedEarly {
        /// The plugin name.
        plugin: String,
        /// How it exited.
        status: std::process::ExitStatus,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
