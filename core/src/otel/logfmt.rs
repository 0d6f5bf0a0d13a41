//! Trace ids on log lines: wraps the JSON event formatter so every line
//! logged inside a traced span carries `trace_id` and `span_id` (hex, as the
//! exporter and W3C `traceparent` spell them), for jumping from a log line
//! to its trace. Installed only while tracing is on.

use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{Filtered, LevelFilter};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event formatter `F` plus `trace_id` and `span_id`. Reads them
/// through the subscriber that [`DispatchLayer`] recorded: while an event is
/// being formatted, `tracing`'s current dispatcher is not reachable (its
/// re-entrancy guard answers with a no-op one).
pub(crate) struct WithTraceIds<F> {
    format: F,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl<F> WithTraceIds<F> {
    /// Wraps `format`; install the returned layer in the same subscriber.
    pub(crate) fn new<S>(format: F) -> (Self, Filtered<DispatchLayer, LevelFilter, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let dispatch = Arc::new(OnceLock::new());
        // Filtered to nothing: the layer wants no span or event, only the
        // dispatcher. Unfiltered, it would count as a layer that wants every
        // callsite, which turns the other layers' "never" into "sometimes":
        // every `trace!` span and event of h2, hyper and tonic would then be
        // built and registered on each call only to be filtered out per
        // layer, which made a traced call cost twice the CPU of an untraced
        // one (BENCHMARKS.md, tracing section).
        let layer = DispatchLayer(dispatch.clone()).with_filter(LevelFilter::OFF);
        (WithTraceIds { format, dispatch }, layer)
    }
}

/// Records the subscriber it is registered with, for [`WithTraceIds`].
pub(crate) struct DispatchLayer(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> tracing_subscriber::Layer<S> for DispatchLayer {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        // The innermost enclosing span the OpenTelemetry layer tracks (a
        // dependency's own span has no context).
        let dispatch = self.dispatch.get().and_then(WeakDispatch::upgrade);
        let ids = ctx
            .lookup_current()
            .zip(dispatch)
            .and_then(|(current, dispatch)| {
                current.scope().find_map(|span| {
                    let cx = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch)?;
                    let otel_span = cx.span();
                    let sc = otel_span.span_context();
                    sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
                })
            });
        let Some((trace_id, span_id)) = ids else {
            return self.format.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.format
            .format_event(ctx, Writer::new(&mut line), event)?;
        let trimmed = line.trim_end();
        match trimmed.strip_suffix('}') {
            Some(object) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_logged_inside_a_traced_span_carries_its_trace_and_span_id() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let format = tracing_subscriber::fmt::format().json().flatten_event(true);
        let (format, dispatch) = WithTraceIds::new(format);
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(format)
                    .with_writer(move || writer.clone()),
            )
            .with(dispatch)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let span = tracing::info_span!(target: crate::otel::TARGET, "call");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
            let cx = span.context();
            let sc = cx.span().span_context().clone();
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let text = String::from_utf8(buffer.0.lock().expect("buffer").clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none());
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());
        assert_eq!(lines[1]["span_id"], span_id.as_str());
        assert_eq!(lines[1]["answer"], 42);
    }
    #[test]
    fn a_dependencys_trace_spans_stay_disabled_while_tracing_is_on() {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::filter::{EnvFilter, Targets};
        // Composed as `telemetry::init` does with tracing on: JSON lines at
        // `warn` plus the dispatch layer, and the exporter's layer fed only
        // core's own spans.
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let format = tracing_subscriber::fmt::format().json().flatten_event(true);
        let (format, dispatch) = WithTraceIds::new(format);
        let fmt = tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(format)
            .with_writer(std::io::sink)
            .with_filter(EnvFilter::new("warn"))
            .and_then(dispatch);
        let otel = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(Targets::new().with_target(crate::otel::TARGET, tracing::Level::TRACE));
        let subscriber = tracing_subscriber::registry().with(fmt).with(otel);
        tracing::subscriber::with_default(subscriber, || {
            // What h2 opens around every frame it writes: no layer wants it,
            // so it must not be built.
            let h2 = tracing::trace_span!(target: "h2::proto::streams::prioritize", "popped");
            assert!(h2.is_disabled(), "a dependency's trace span was enabled");
            let call = tracing::info_span!(target: crate::otel::TARGET, "call");
            assert!(
                !call.is_disabled(),
                "the server span must still be recorded"
            );
        });
    }
}
