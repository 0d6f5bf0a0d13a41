//! Trace ids on log lines: wraps the JSON event formatter so every line
//! logged inside a traced span carries `trace_id` and `span_id` (hex, as the
//! exporter and W3C `traceparent` spell them), for jumping from a log line
//! to its trace. Installed only while tracing is on.

use opentelemetry::trace::TraceContextExt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// A JSON event formatter `F` plus `trace_id` and `span_id`.
pub(crate) struct WithTraceIds<F>(pub(crate) F);

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
        let ids = ctx.lookup_current().and_then(|current| {
            current.scope().find_map(|span| {
                let cx = tracing::dispatcher::get_default(|dispatch| {
                    tracing_opentelemetry::get_otel_context(&span.id(), dispatch)
                })?;
                let otel_span = cx.span();
                let sc = otel_span.span_context();
                sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
            })
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
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
