//! `prism-probe`: a gRPC health check for container healthchecks, shipped in the
//! plugin images (distroless has no shell and no grpcurl). Exits 0 when the
//! service is SERVING, 1 otherwise — like `grpc_health_probe`.
//!
//! `prism-probe --port 9090 [--service readiness] [--timeout 2s]`

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Checks `grpc.health.v1.Health` on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "prism-probe", version, about)]
struct Args {
    /// The plugin's gRPC port.
    #[arg(long)]
    port: u16,
    /// Health service: `liveness`, `readiness` or `` (the server).
    #[arg(long, default_value = "")]
    service: String,
    /// Bound on connecting plus the call, e.g. `2s`.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let check = async {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", args.port))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("connect: {e}"))?;
        let request = HealthCheckRequest {
            service: args.service.clone(),
        };
        let status = HealthClient::new(channel)
            .check(request)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner()
            .status;
        Ok::<_, String>(ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown))
    };
    match tokio::time::timeout(args.timeout, check).await {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("{:?}: SERVING", args.service);
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            println!("{:?}: {}", args.service, status.as_str_name());
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            println!("health check failed: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            println!("health check timed out after {:?}", args.timeout);
            ExitCode::FAILURE
        }
    }
}
