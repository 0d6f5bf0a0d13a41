//! The OTLP export pipeline: a batch span processor on its own thread with a
//! bounded queue (full = the span is dropped, never waited for), a
//! parent-based ratio sampler, and the gRPC or HTTP/protobuf exporter.
//! Must be built inside the tokio runtime: the gRPC exporter's channel
//! lives on it.

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Tracer,
};

use super::{OtlpProtocol, TelemetryConfig};
use crate::Error;

/// A running pipeline; [`shutdown`](Pipeline::shutdown) flushes what is queued.
pub(crate) struct Pipeline {
    provider: SdkTracerProvider,
    announce: String,
}

impl Pipeline {
    /// Builds the pipeline for `config` (None when no endpoint is set) and
    /// returns the tracer the tracing layer records into.
    pub(crate) fn start(
        config: &TelemetryConfig,
        plugin: &str,
    ) -> Result<Option<(Pipeline, Tracer)>, Error> {
        let Some(endpoint) = config.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let exporter = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(config.export_timeout)
                .build(),
            OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(http_traces_url(endpoint))
                .with_timeout(config.export_timeout)
                .build(),
        }
        .map_err(|e| Error::config(format!("`telemetry.otlp_endpoint`: {e}")))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_queue_size.min(512))
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let service = config
            .service_name
            .clone()
            .unwrap_or_else(|| format!("prism-{plugin}"));
        let resource = Resource::builder()
            .with_service_name(service)
            .with_attributes(
                config
                    .resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("prism-plugin-core");
        super::set_enabled(config.sample_ratio);
        let announce = format!(
            "exporting traces over OTLP/{:?} to {endpoint} (sample_ratio {})",
            config.protocol, config.sample_ratio
        );
        Ok(Some((Pipeline { provider, announce }, tracer)))
    }

    /// Logs where traces go (once logging is installed).
    pub(crate) fn announce(&self) {
        tracing::info!("{}", self.announce);
    }

    /// Exports what is queued (bounded by the export timeout) and stops.
    pub(crate) fn shutdown(self) {
        if let Err(err) = self
            .provider
            .shutdown_with_timeout(std::time::Duration::from_secs(3))
        {
            tracing::debug!(error = %err, "trace export did not finish at exit");
        }
    }
}

/// OTLP/HTTP posts traces to `/v1/traces`; accept the collector's base URL too.
fn http_traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/traces")
    }
}
