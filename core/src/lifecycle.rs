//! `prism.interfaces.LifecycleInterface`, as the gateway drives it: Initialize
//! (empty Struct = file/env config; fields override `backend` keys), Start,
//! HealthCheck, Drain, Stop. Errors are in-band with gRPC status OK.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::config::struct_to_json;
use crate::plugin::{HealthStatus, Plugin};
use crate::proto::lifecycle::{self as pb, lifecycle_interface_server::LifecycleInterface};
use crate::runtime::Runtime;

/// The lifecycle service over a running plugin.
pub(crate) struct LifecycleService<P: Plugin> {
    runtime: Arc<Runtime<P>>,
}

impl<P: Plugin> LifecycleService<P> {
    pub(crate) fn new(runtime: Arc<Runtime<P>>) -> Self {
        LifecycleService { runtime }
    }

    /// The gateway's timeout field of Drain and Stop: seconds, with 0 or
    /// negative meaning the configured drain timeout.
    fn timeout(&self, seconds: i32) -> Duration {
        match u64::try_from(seconds) {
            Ok(seconds) if seconds > 0 => Duration::from_secs(seconds),
            _ => self.runtime.drain_timeout(),
        }
    }
}

#[tonic::async_trait]
impl<P: Plugin> LifecycleInterface for LifecycleService<P> {
    async fn initialize(
        &self,
        request: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        let req = request.into_inner();
        let overrides = req.config.as_ref().map(struct_to_json);
        tracing::info!(
            gateway_name = %req.name,
            gateway_version = %req.version,
            overrides = overrides.as_ref().map_or(0, |o| o.as_object().map_or(0, |m| m.len())),
            "Initialize requested"
        );
        let reply = match self.runtime.initialize(overrides).await {
            Ok(()) => pb::InitializeResponse {
                success: true,
                error: String::new(),
                metadata: Some(self.runtime.metadata()),
            },
            Err(err) => {
                tracing::warn!(error = %err, "Initialize failed");
                pb::InitializeResponse {
                    success: false,
                    error: err.to_string(),
                    metadata: Some(self.runtime.metadata()),
                }
            }
        };
        Ok(Response::new(reply))
    }

    async fn start(
        &self,
        _request: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let reply = match self.runtime.start().await {
            Ok(()) => pb::StartResponse {
                success: true,
                error: String::new(),
                data_endpoint: self.runtime.endpoint.clone(),
            },
            Err(err) => pb::StartResponse {
                success: false,
                error: err.to_string(),
                data_endpoint: self.runtime.endpoint.clone(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn drain(
        &self,
        request: Request<pb::DrainRequest>,
    ) -> Result<Response<pb::DrainResponse>, Status> {
        let req = request.into_inner();
        let timeout = self.timeout(req.timeout_seconds);
        tracing::info!(reason = %req.reason, timeout_ms = timeout.as_millis() as u64, "Drain requested");
        let outcome = self.runtime.drain(timeout).await;
        Ok(Response::new(pb::DrainResponse {
            success: outcome.aborted == 0,
            error: if outcome.aborted == 0 {
                String::new()
            } else {
                format!(
                    "{} operations still in flight after {}s",
                    outcome.aborted,
                    timeout.as_secs()
                )
            },
            drained_operations: outcome.drained,
            aborted_operations: outcome.aborted,
        }))
    }

    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<pb::StopResponse>, Status> {
        let timeout = self.timeout(request.into_inner().timeout_seconds);
        tracing::info!(timeout_ms = timeout.as_millis() as u64, "Stop requested");
        let result = self.runtime.stop(timeout).await;
        // The process exits once this reply is on its way.
        self.runtime.request_shutdown();
        Ok(Response::new(match result {
            Ok(()) => pb::StopResponse {
                success: true,
                error: String::new(),
            },
            Err(err) => pb::StopResponse {
                success: false,
                error: err.to_string(),
            },
        }))
    }

    async fn health_check(
        &self,
        _request: Request<pb::HealthCheckRequest>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        let report = self.runtime.health_report().await;
        let status = match report.status {
            HealthStatus::Healthy => pb::HealthStatus::Healthy,
            HealthStatus::Degraded => pb::HealthStatus::Degraded,
            HealthStatus::Unhealthy => pb::HealthStatus::Unhealthy,
        };
        let mut details: std::collections::HashMap<String, String> =
            report.details.into_iter().collect();
        details.insert(
            "in_flight".into(),
            self.runtime.gate.in_flight().to_string(),
        );
        details.insert(
            "draining".into(),
            (!self.runtime.gate.is_open()).to_string(),
        );
        Ok(Response::new(pb::HealthCheckResponse {
            status: status as i32,
            message: report.message,
            details,
        }))
    }
}
