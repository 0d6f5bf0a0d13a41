//! `telemetry:` — where and how the plugin exports OpenTelemetry traces.
//! Off by default: with no `otlp_endpoint` no exporter, span or propagation
//! code runs on a data call.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `telemetry:` — OpenTelemetry tracing over OTLP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP collector endpoint (`http://collector:4317` for `grpc`,
    /// `http://collector:4318` for `http`; `/v1/traces` is appended for
    /// `http` when missing). Unset = tracing off.
    pub otlp_endpoint: Option<String>,
    /// `grpc` (OTLP/gRPC, default) or `http` (OTLP/HTTP protobuf).
    pub protocol: OtlpProtocol,
    /// Fraction of new traces (calls without a sampled `traceparent`) that are
    /// recorded, 0.0..=1.0; a caller's sampling decision is always followed.
    pub sample_ratio: f64,
    /// `service.name` of the exported spans (default `prism-<plugin>`).
    pub service_name: Option<String>,
    /// Extra resource attributes (`deployment.environment.name: prod`, ...).
    pub resource_attributes: BTreeMap<String, String>,
    /// Spans buffered for export; when the collector is slow or down, spans
    /// beyond this are dropped (a data call never waits for the exporter).
    pub max_queue_size: usize,
    /// Longest one export may take before it is abandoned.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention).
    Http,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            protocol: OtlpProtocol::default(),
            sample_ratio: 1.0,
            service_name: None,
            resource_attributes: BTreeMap::new(),
            max_queue_size: 2048,
            export_timeout: Duration::from_secs(5),
        }
    }
}

impl TelemetryConfig {
    /// Problems with these settings, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            problems.push(format!(
                "`telemetry.sample_ratio`: {} is not within 0.0..=1.0",
                self.sample_ratio
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            problems.push(format!(
                "`telemetry.otlp_endpoint`: {endpoint:?} must start with http:// or https://"
            ));
        }
        if self.max_queue_size == 0 {
            problems.push("`telemetry.max_queue_size`: must be at least 1".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_section_and_reports_bad_values() {
        let yaml = "otlp_endpoint: http://collector:4318\nprotocol: http\nsample_ratio: 0.25\n\
                    service_name: kv\nresource_attributes: {deployment.environment.name: prod}\n\
                    max_queue_size: 100\nexport_timeout: 2s\n";
        let config: TelemetryConfig = serde_yaml::from_str(yaml).expect("parses");
        assert_eq!(config.protocol, OtlpProtocol::Http);
        assert_eq!(config.export_timeout, Duration::from_secs(2));
        assert!(config.validate().is_empty());
        let bad = TelemetryConfig {
            sample_ratio: 1.5,
            otlp_endpoint: Some("collector:4317".into()),
            ..Default::default()
        };
        assert_eq!(bad.validate().len(), 2);
    }
}
