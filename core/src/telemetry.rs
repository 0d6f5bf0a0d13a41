//! Tracing setup: JSON lines by default, text on request, level from config.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Returns an error naming a bad level.
pub(crate) fn init(log: &LogConfig) -> Result<(), crate::Error> {
    let filter = EnvFilter::try_new(&log.level).map_err(|e| {
        crate::Error::config(format!("`log.level`: invalid level {:?}: {e}", log.level))
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true);
    let result = match log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // Already installed (tests run several plugins in one process): keep it.
    let _ = result;
    Ok(())
}
