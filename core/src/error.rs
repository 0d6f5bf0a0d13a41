//! The core crate's one error type and its single mapping to `tonic::Status`,
//! and [`BadSetting`], how every plugin reports a `backend` setting that can
//! never work.

/// What went wrong in core or in a plugin's lifecycle hook. Plugins convert
/// their own error enums into this at the lifecycle boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; every problem is listed, each naming its key.
    #[error("invalid configuration:\n{}", format_problems(.0))]
    Config(Vec<String>),
    /// The backend cannot be reached now; the caller may retry.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The plugin has not been initialized (or is being re-initialized).
    #[error("plugin is not initialized yet")]
    NotInitialized,
    /// The plugin is draining or stopped and takes no new work.
    #[error("plugin is draining; retry against another instance")]
    Draining,
    /// Binding or serving the control-plane port failed.
    #[error("server error: {0}")]
    Server(String),
    /// Anything else a plugin reports.
    #[error("{0}")]
    Internal(String),
}

fn format_problems(problems: &[String]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// One configuration problem.
    pub fn config(problem: impl Into<String>) -> Self {
        Error::Config(vec![problem.into()])
    }

    /// True when retrying later may succeed (the backend may come back).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::NotInitialized | Error::Draining
        )
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match &err {
            Error::Config(_) => tonic::Status::failed_precondition(err.to_string()),
            Error::Unavailable(_) | Error::NotInitialized | Error::Draining => {
                tonic::Status::unavailable(err.to_string())
            }
            Error::Server(_) | Error::Internal(_) => tonic::Status::internal(err.to_string()),
        }
    }
}

/// A `backend` setting that can never work, as opposed to a backend that is
/// down (retriable): it names the key, so the operator knows what to fix.
/// A lifecycle call reports it as a configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{}", BadSetting::text(key, problem))]
pub struct BadSetting {
    /// The `backend` key at fault.
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl BadSetting {
    /// How a bad setting reads: `` `backend.<key>`: <problem> ``.
    pub fn text(key: &str, problem: &str) -> String {
        format!("`backend.{key}`: {problem}")
    }
}

impl From<BadSetting> for Error {
    fn from(setting: BadSetting) -> Self {
        Error::config(setting.to_string())
    }
}
