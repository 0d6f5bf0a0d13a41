//! Process entry: parse flags, load config, set up logging, bind the port, serve
//! every service on it, and run the shutdown sequence (health NOT_SERVING →
//! close intake → drain with timeout → server stops → plugin stops → exit 0).
//! A second SIGTERM/SIGINT exits at once.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;

use crate::config::{self, Config, FlagOverrides};
use crate::gate::{Gate, GateLayer};
use crate::health::Health;
use crate::lifecycle::LifecycleService;
use crate::metrics::Metrics;
use crate::plugin::{Context, Plugin, ServiceRegistry};
use crate::proto::lifecycle::lifecycle_interface_server::LifecycleInterfaceServer;
use crate::runtime::{Runtime, validate};
use crate::{Cli, Error, proto};

/// Exit code for invalid configuration (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// How long the server gets, after draining, to finish open connections.
const SERVER_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs a plugin binary with the process's arguments; returns its exit code.
pub fn run<P: Plugin>(plugin: P) -> ExitCode {
    run_with(plugin, std::env::args_os())
}

/// [`run`] with explicit arguments.
pub fn run_with<P: Plugin, I, T>(plugin: P, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = Cli::command()
        .name(format!("prism-{}", P::NAME))
        .version(P::VERSION)
        .about(format!(
            "Prism {} backend plugin (gRPC on port {} by default)",
            P::NAME,
            P::DEFAULT_PORT
        ));
    let cli = match command
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(EXIT_CONFIG),
            };
        }
    };

    let (figment, config) = match load::<P>(&cli) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("prism-{}: {err}", P::NAME);
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    if cli.check_config {
        let value = serde_json::to_value(&config).unwrap_or_default();
        match serde_yaml::to_string(&config::redact(&value)) {
            Ok(yaml) => {
                println!(
                    "# effective configuration of prism-{} (secrets redacted)",
                    P::NAME
                );
                print!("{yaml}");
                return ExitCode::SUCCESS;
            }
            Err(err) => {
                eprintln!("prism-{}: cannot print config: {err}", P::NAME);
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }

    if let Err(err) = crate::telemetry::init(&config.log) {
        eprintln!("prism-{}: {err}", P::NAME);
        return ExitCode::from(EXIT_CONFIG);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(format!("prism-{}", P::NAME))
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let code = match runtime.block_on(serve(plugin, figment, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ Error::Config(_)) => {
            tracing::error!(error = %err, "invalid configuration");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            tracing::error!(error = %err, "plugin failed");
            ExitCode::from(EXIT_FAILURE)
        }
    };
    // Background tasks have been awaited; don't wait for blocking threads.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Defaults ← file ← env ← flags, extracted and validated.
fn load<P: Plugin>(cli: &Cli) -> Result<(figment::Figment, Config<P::Config>), Error> {
    let defaults = Config {
        plugin: config::PluginSection {
            name: P::NAME.to_string(),
            version: P::VERSION.to_string(),
        },
        control_plane: config::ControlPlane {
            port: P::DEFAULT_PORT,
            ..Default::default()
        },
        backend: P::default_config(),
        log: Default::default(),
        metrics: Default::default(),
        vault: Default::default(),
    };
    let file = config::config_path(cli.config.as_deref())?;
    let flags = FlagOverrides {
        grpc_port: cli.grpc_port,
        log_level: cli.log_level.clone(),
    };
    let figment = config::layered(&defaults, file.as_deref(), P::ENV_ALIASES, &flags);
    let config = config::extract::<P::Config>(&figment)?;
    validate::<P>(&config)?;
    Ok((figment, config))
}

/// Binds `[::]:port` (dual stack), or `0.0.0.0:port` where IPv6 is off.
async fn bind(address: &str, port: u16) -> Result<tokio::net::TcpListener, Error> {
    let ip: IpAddr = address
        .parse()
        .map_err(|_| Error::config(format!("`control_plane.bind_address`: {address:?}")))?;
    match tokio::net::TcpListener::bind(SocketAddr::new(ip, port)).await {
        Ok(listener) => Ok(listener),
        Err(err) if ip.is_ipv6() && ip.is_unspecified() => {
            tracing::debug!(error = %err, "IPv6 unavailable; binding IPv4 only");
            tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
                .await
                .map_err(|e| Error::Server(format!("cannot bind port {port}: {e}")))
        }
        Err(err) => Err(Error::Server(format!(
            "cannot bind {ip} port {port}: {err}"
        ))),
    }
}

async fn serve<P: Plugin>(
    plugin: P,
    figment: figment::Figment,
    config: Config<P::Config>,
) -> Result<(), Error> {
    let plugin = Arc::new(plugin);
    let cp = config.control_plane.clone();
    // Bad certificate files are a configuration error (exit 64), found before binding.
    let tls = match &cp.tls {
        Some(tls) => Some((tls.clone(), tls.load()?)),
        None => None,
    };
    let listener = bind(&cp.bind_address, cp.port).await?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Server(format!("cannot read the bound address: {e}")))?;
    let endpoint = format!("localhost:{}", local.port());

    let metrics = Metrics::new(P::NAME);
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let mut registry = ServiceRegistry::new(cp.max_message_bytes);
    plugin.register(&mut registry);
    let probe_health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
    );
    let health = Health::new(reporter, P::NAME, &registry.names).await;

    let lifecycle_name =
        <LifecycleInterfaceServer<LifecycleService<P>> as tonic::server::NamedService>::NAME;
    let mut known: Vec<String> = registry.names.iter().map(|s| s.to_string()).collect();
    known.extend(
        [
            lifecycle_name,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
        .map(String::from),
    );
    let gate = Gate::new(metrics.clone(), known.clone());

    // One cancellation tree: `root` ends every background task.
    let root = CancellationToken::new();
    let ctx = Context {
        shutdown: root.child_token(),
        health_changed: Arc::new(tokio::sync::Notify::new()),
        vault: config.vault.clone(),
    };
    let runtime = Arc::new(Runtime::new(
        plugin.clone(),
        figment,
        config.clone(),
        gate.clone(),
        health.clone(),
        metrics.clone(),
        ctx,
        endpoint,
    ));

    // Reflection lists exactly the services this port serves (not every
    // service in the compiled protos), under both protocol versions.
    let reflection = |other_version: &'static [u8]| {
        known.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(other_version),
            |builder, name| builder.with_service_name(name.clone()),
        )
    };
    let reflection_v1 = reflection(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Server(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Server(format!("reflection: {e}")))?;
    let lifecycle = LifecycleInterfaceServer::new(LifecycleService::new(runtime.clone()))
        .max_decoding_message_size(cp.max_message_bytes)
        .max_encoding_message_size(cp.max_message_bytes);
    let mut routes = registry.routes;
    routes
        .add_service(lifecycle)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let tasks = TaskTracker::new();
    let server_stop = CancellationToken::new();
    let router = tonic::transport::Server::builder()
        .layer(GateLayer::new(gate.clone()))
        .add_routes(routes.routes());
    let stop_signal = server_stop.clone().cancelled_owned();
    type ServeFuture = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    >;
    let server: ServeFuture = match tls {
        Some((tls, loaded)) => {
            let incoming = crate::tls::incoming(listener, tls, loaded, &tasks, server_stop.clone());
            Box::pin(router.serve_with_incoming_shutdown(incoming, stop_signal))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            Box::pin(router.serve_with_incoming_shutdown(incoming, stop_signal))
        }
    };
    let server_task = tasks.spawn(server);
    tracing::info!(
        plugin = P::NAME,
        version = P::VERSION,
        address = %local,
        tls = cp.tls.is_some(),
        mtls = cp.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        "serving gRPC (lifecycle, health, reflection, data services)"
    );

    if let Some(port) = cp.probe_port.filter(|p| *p != 0) {
        let listener = bind(&cp.bind_address, port).await?;
        tracing::info!(port, "serving plaintext grpc.health.v1 for probes");
        let probe = tonic::transport::Server::builder()
            .add_service(probe_health)
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                server_stop.clone().cancelled_owned(),
            );
        tasks.spawn(async move {
            if let Err(err) = probe.await {
                tracing::error!(error = %err, "probe port failed");
            }
        });
    }

    if let Some(port) = config.metrics.port.filter(|p| *p != 0) {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(local.ip(), port))
            .await
            .map_err(|e| Error::Server(format!("cannot bind metrics port {port}: {e}")))?;
        tracing::info!(port, "serving /metrics, /health/live, /health/ready");
        let (m, h, stop) = (metrics.clone(), health.clone(), root.child_token());
        tasks.spawn(async move {
            if let Err(err) = crate::metrics::serve_http(listener, m, h, stop).await {
                tracing::error!(error = %err, "metrics endpoint failed");
            }
        });
    }

    tasks.spawn(runtime.clone().health_loop(cp.health_interval));
    let (fatal_tx, mut fatal_rx) = tokio::sync::mpsc::channel::<Error>(1);
    {
        let runtime = runtime.clone();
        tasks.spawn(async move {
            if let Err(err) = runtime.auto_initialize().await {
                let _ = fatal_tx.send(err).await;
            }
        });
    }
    tasks.spawn(watch_signals(
        runtime.shutdown_requested.clone(),
        root.clone(),
    ));

    let mut outcome = Ok(());
    tokio::select! {
        _ = runtime.shutdown_requested.cancelled() => {}
        Some(err) = fatal_rx.recv() => {
            outcome = Err(err);
            runtime.request_shutdown();
        }
    }

    // The shutdown sequence; Stop may already have done the first steps.
    if let Err(err) = runtime.stop(cp.drain_timeout).await {
        tracing::warn!(error = %err, "plugin stop reported an error");
    }
    server_stop.cancel();
    match tokio::time::timeout(SERVER_SHUTDOWN_GRACE, server_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "gRPC server ended with an error"),
        Ok(Err(err)) => tracing::warn!(error = %err, "gRPC server task failed"),
        Err(_) => tracing::warn!("connections still open after the shutdown grace period; closing"),
    }
    root.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(2), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not finish in time");
    }
    tracing::info!("exiting");
    outcome
}

/// First SIGTERM/SIGINT starts the graceful sequence; a second exits at once.
async fn watch_signals(shutdown: CancellationToken, root: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for round in 0..2 {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = root.cancelled() => return,
        };
        if round == 0 {
            tracing::info!(
                signal = name,
                "shutting down gracefully (send again to exit at once)"
            );
            shutdown.cancel();
        } else {
            tracing::warn!(signal = name, "second signal: exiting immediately");
            std::process::exit(130);
        }
    }
}
