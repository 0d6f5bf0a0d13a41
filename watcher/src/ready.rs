//! Is a started plugin up? gRPC health `liveness` SERVING (DESIGN.md §3.4: the
//! process works, whatever its backend does), or a TCP connect for binaries
//! without gRPC health. Readiness (`""`, which follows the backend) is reported
//! but not waited for: a dev loop must restart a plugin whose backend is down.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::cli::Ready;
use crate::error::{Error, Result};

/// Pause between probes.
const POLL: Duration = Duration::from_millis(100);
/// Bound on one connect or health call.
const ATTEMPT: Duration = Duration::from_secs(1);

/// What the probe saw once the plugin was up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    /// Up; the backend is reachable (gRPC readiness SERVING).
    BackendReady,
    /// Up, but the backend is not (yet) reachable.
    BackendNotReady,
    /// Up (TCP probe: backend state unknown).
    Listening,
}

/// One probe: `Some(up)` when up, `None` when not yet (the reason in `last`).
async fn probe(port: u16, how: Ready, last: &mut String) -> Option<Up> {
    match how {
        Ready::Tcp => {
            match tokio::time::timeout(ATTEMPT, tokio::net::TcpStream::connect(("127.0.0.1", port)))
                .await
            {
                Ok(Ok(_)) => Some(Up::Listening),
                Ok(Err(e)) => {
                    *last = e.to_string();
                    None
                }
                Err(_) => {
                    *last = "connect timed out".to_owned();
                    None
                }
            }
        }
        Ready::Grpc => {
            let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .ok()?
                .connect_timeout(ATTEMPT)
                .timeout(ATTEMPT);
            let channel = match endpoint.connect().await {
                Ok(channel) => channel,
                Err(e) => {
                    *last = format!("connect: {e}");
                    return None;
                }
            };
            match health(&channel, "liveness").await {
                Ok(s) if s == ServingStatus::Serving as i32 => {
                    let ready = health(&channel, "").await == Ok(ServingStatus::Serving as i32);
                    Some(if ready {
                        Up::BackendReady
                    } else {
                        Up::BackendNotReady
                    })
                }
                Ok(s) => {
                    *last = format!(
                        "liveness is {}",
                        ServingStatus::try_from(s).map_or("UNKNOWN", |s| s.as_str_name())
                    );
                    None
                }
                Err(message) => {
                    *last = format!("health check: {message}");
                    None
                }
            }
        }
    }
}

/// The raw status of `service`, or the RPC error's message.
async fn health(channel: &tonic::transport::Channel, service: &str) -> Result<i32, String> {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    HealthClient::new(channel.clone())
        .check(request)
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.message().to_owned())
}

/// Polls `port` until the plugin is up, `exited()` reports an exit status, the
/// timeout passes, or `cancel` fires (`Ok(None)`).
pub async fn wait_up(
    plugin: &str,
    port: u16,
    how: Ready,
    timeout: Duration,
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
    cancel: &CancellationToken,
) -> Result<Option<Up>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("not probed yet");
    loop {
        if let Some(status) = exited() {
            return Err(Error::ExitedEarly {
                plugin: plugin.to_owned(),
                status,
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            up = probe(port, how, &mut last) => {
                if let Some(up) = up {
                    return Ok(Some(up));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NotReady {
                plugin: plugin.to_owned(),
                port,
                timeout,
                last,
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(None),
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}
