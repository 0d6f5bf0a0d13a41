//! gRPC health-checking helpers (`grpc.health.v1.Health`) for plugins under test,
//! built on tonic-health's generated client.

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::error::{Error, Result};

pub use tonic_health::pb::health_check_response::ServingStatus;

/// How often [`connect`] and [`wait_for_health`] retry.
const RETRY: Duration = Duration::from_millis(50);
/// Upper bound for a single connect attempt or health RPC.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Lower bound for a single health RPC (so [`wait_for_health`] may overrun its
/// timeout by at most this much).
const MIN_ATTEMPT: Duration = Duration::from_millis(250);

/// Connects a plaintext HTTP/2 channel to `http://127.0.0.1:PORT`, retrying until
/// the port accepts or `timeout` passes (the error carries the last transport
/// error).
pub async fn connect(port: u16, timeout: Duration) -> Result<Channel> {
    let url = format!("http://127.0.0.1:{port}");
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|source| Error::Connect {
            endpoint: url.clone(),
            waited: Duration::ZERO,
            source,
        })?
        .connect_timeout(ATTEMPT_TIMEOUT);
    let start = Instant::now();
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(source) if start.elapsed() >= timeout => {
                return Err(Error::Connect {
                    endpoint: url,
                    waited: start.elapsed(),
                    source,
                });
            }
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// Asks the health service for `service` (`""` = the whole server). A `NOT_FOUND`
/// status (service not registered) is returned as
/// [`ServingStatus::ServiceUnknown`]; other RPC failures are [`Error::Grpc`].
pub async fn health_status(channel: &Channel, service: &str) -> Result<ServingStatus> {
    let mut client = HealthClient::new(channel.clone());
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match client.check(request).await {
        Ok(response) => {
            Ok(ServingStatus::try_from(response.into_inner().status)
                .unwrap_or(ServingStatus::Unknown))
        }
        Err(status) if status.code() == tonic::Code::NotFound => Ok(ServingStatus::ServiceUnknown),
        Err(status) => Err(status.into()),
    }
}

/// Polls the health of `service` on 127.0.0.1:`port` every ~50 ms until it is
/// `want` (connecting first, with retries). The timeout error names the service, the
/// wanted status and the last status (or error) seen; each poll gets at least
/// 250 ms to answer, so the call may overrun `timeout` by up to that much.
pub async fn wait_for_health(
    port: u16,
    service: &str,
    want: ServingStatus,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    let channel = connect(port, timeout).await?;
    loop {
        let remaining = timeout.saturating_sub(start.elapsed());
        // Every poll gets a fair chance to answer even when connecting ate most of
        // the budget, so the timeout error reports a real status.
        let attempt = ATTEMPT_TIMEOUT.min(remaining.max(MIN_ATTEMPT));
        let last = match tokio::time::timeout(attempt, health_status(&channel, service)).await {
            Ok(Ok(status)) if status == want => return Ok(()),
            Ok(Ok(status)) => status.as_str_name().to_owned(),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer within {attempt:?}"),
        };
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!(
                    "gRPC health of service {service:?} on 127.0.0.1:{port} to be {} (last seen: {last})",
                    want.as_str_name()
                ),
                timeout,
            });
        }
        tokio::time::sleep(RETRY).await;
    }
}
