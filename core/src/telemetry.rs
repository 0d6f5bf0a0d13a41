//! Tracing setup: JSON lines by default, text on request, level from config;
//! plus, when `telemetry.otlp_endpoint` is set, the OpenTelemetry layer
//! (fed only core's own spans, see [`crate::otel::TARGET`]) and trace ids on
//! every JSON line logged inside a traced call.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Returns an error naming a bad level.
pub(crate) fn init(
    log: &LogConfig,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
) -> Result<(), crate::Error> {
    let filter = EnvFilter::try_new(&log.level).map_err(|e| {
        crate::Error::config(format!("`log.level`: invalid level {:?}: {e}", log.level))
    })?;
    let traced = tracer.is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let json = || {
        tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_target(true)
    };
    let (format, dispatch) = crate::otel::logfmt::WithTraceIds::new(json());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match (log.format, traced) {
        (LogFormat::Json, false) => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(filter)
            .boxed(),
        (LogFormat::Json, true) => fmt
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(format)
            .with_filter(filter)
            .and_then(dispatch)
            .boxed(),
        (LogFormat::Text, _) => fmt.with_filter(filter).boxed(),
    };
    let otel = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(Targets::new().with_target(crate::otel::TARGET, tracing::Level::TRACE))
    });
    // Already installed (tests run several plugins in one process): keep it.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(())
}
