//! The crate's single error type, [`Error`], and its [`Result`] alias.
//!
//! Every failure a test can hit while starting or driving a server carries enough
//! context to be debugged from the test output alone: which binary, which port, and
//! (for server start failures) the last lines of the server's log.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Result alias used throughout the testkit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while starting, driving or stopping a test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required binary is not installed where the testkit looks for it.
    #[error("`{binary}` not found ({looked}); run scripts/install-deps.sh")]
    ToolMissing {
        /// Name of the missing binary.
        binary: String,
        /// Where the testkit looked for it.
        looked: String,
    },

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A tool's output was not the JSON it should be.
    #[error("invalid JSON ({context}): {source}")]
    Json {
        /// Which command printed it, and the output.
        context: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// A server process exited while it was being started.
    #[error("{server} exited during startup ({status}); last log lines of {log}:\n{log_tail}")]
    ExitedEarly {
        /// Which server (`postgres`, `redis-server`, ...).
        server: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// Path of the server log.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// A server did not become ready in time.
    #[error(
        "{server} on 127.0.0.1:{port} not ready after {timeout:?}; last log lines of {log}:\n{log_tail}"
    )]
    NotReady {
        /// Which server.
        server: &'static str,
        /// The port it should listen on.
        port: u16,
        /// How long the testkit waited.
        timeout: Duration,
        /// Path of the server log.
        log: PathBuf,
        /// The last lines of the server log.
        log_tail: String,
    },

    /// A helper command (initdb, psql, redis-cli, bao, ...) failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line that was run.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its stderr, then stdout (or the server log tail, for server tools).
        output: String,
    },

    /// Waiting for something took longer than allowed.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited, including the last state seen.
        what: String,
        /// The allowed time.
        timeout: Duration,
    },

    /// The operation needs a running process but it is stopped or has exited.
    #[error("{0} is not running")]
    NotRunning(String),

    /// The operation needs a stopped server but it is running.
    #[error("{0} is already running")]
    AlreadyRunning(String),

    /// Sending a signal to a process failed.
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        /// The signal that was sent.
        signal: nix::sys::signal::Signal,
        /// The target process.
        pid: u32,
        /// The OS error.
        #[source]
        source: nix::errno::Errno,
    },

    /// Generating a test certificate failed.
    #[error("test certificate: {0}")]
    Pki(#[from] rcgen::Error),

    /// No free loopback port could be found.
    #[error("no free port on 127.0.0.1 after {0} attempts")]
    NoFreePort(u32),

    /// The system user the server must run as (when tests run as root) is missing.
    #[error(
        "system user `{0}` not found (needed to run PostgreSQL as root); run scripts/install-deps.sh"
    )]
    MissingUser(String),

    /// A gRPC channel could not be established.
    #[error("gRPC connect to {endpoint} (gave up after {waited:?}): {source}")]
    Connect {
        /// The endpoint URL.
        endpoint: String,
        /// How long connecting was retried.
        waited: Duration,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },

    /// A gRPC call returned an error status.
    #[error("gRPC call failed: {0}")]
    Grpc(Box<tonic::Status>),
}

impl Error {
    /// Builds an [`Error::Io`] with a context message.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Grpc(Box::new(status))
    }
}
