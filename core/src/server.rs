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

use crate::admission::{Admission, AdmissionLayer};
use crate::config::{self, Config, FlagOverrides};
use crate::connections;
use crate::gate::{Gate, GateLayer};
use crate::health::Health;
use crate::lifecycle::LifecycleService;
use crate::metrics::Metrics;
use crate::plugin::{Context, Plugin, ServiceRegistry};
use crate::proto::lifecycle::lifecycle_interface_server::LifecycleInterfaceServer;
use crate::runtime::{Runtime, Wiring, validate};
use crate::{Cli, Error, manifest, proto};

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
    let manifest = manifest::of::<P>();
    let command = Cli::command()
        .name(manifest.binary())
        .version(manifest.version.clone())
        .about(format!(
            "Prism backend plugin: {} (gRPC on port {} by default)",
            manifest.description, manifest.port
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
            eprintln!("{}: {err}", manifest.binary());
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    if cli.check_config {
        let value = serde_json::to_value(&config).unwrap_or_default();
        match serde_yaml::to_string(&config::redact(&value)) {
            Ok(yaml) => {
                println!(
                    "# effective configuration of {} (secrets redacted)",
                    manifest.binary()
                );
                print!("{yaml}");
                return ExitCode::SUCCESS;
            }
            Err(err) => {
                eprintln!("{}: cannot print config: {err}", manifest.binary());
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(manifest.binary())
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!(
                "{}: cannot start the async runtime: {err}",
                manifest.binary()
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // The trace exporter's gRPC channel lives on the runtime.
    let traces = match runtime.block_on(async {
        crate::otel::exporter::Pipeline::start(&config.telemetry, &manifest.name)
    }) {
        Ok(traces) => traces,
        Err(err) => {
            eprintln!("{}: {err}", manifest.binary());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (pipeline, tracer) = traces.unzip();
    if let Err(err) = crate::telemetry::init(&config.log, tracer) {
        eprintln!("{}: {err}", manifest.binary());
        return ExitCode::from(EXIT_CONFIG);
    }
    pipeline.iter().for_each(|p| p.announce());
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
    if let Some(pipeline) = pipeline {
        pipeline.shutdown();
    }
    // Background tasks have been awaited; don't wait for blocking threads.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// Defaults ← file ← env ← flags, extracted and validated.
fn load<P: Plugin>(cli: &Cli) -> Result<(figment::Figment, Config<P::Config>), Error> {
    let manifest = manifest::of::<P>();
    let defaults = Config {
        plugin: config::PluginSection {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
        },
        control_plane: config::ControlPlane {
            port: manifest.port,
            ..Default::default()
        },
        backend: P::Config::default(),
        log: Default::default(),
        metrics: Default::default(),
        telemetry: Default::default(),
        vault: Default::default(),
    };
    let file = config::config_path(cli.config.as_deref())?;
    let flags = FlagOverrides {
        grpc_port: cli.grpc_port,
        log_level: cli.log_level.clone(),
    };
    let aliases: Vec<(&str, &str)> = manifest
        .env
        .iter()
        .map(|(name, key)| (name.as_str(), key.as_str()))
        .collect();
    let figment = config::layered(&defaults, file.as_deref(), &aliases, &flags);
    let mut config = config::extract::<P::Config>(&figment)?;
    // An empty identity (as in the shipped <plugin>/config.yaml) means the binary's own.
    if config.plugin.name.is_empty() {
        config.plugin.name = manifest.name.clone();
    }
    if config.plugin.version.is_empty() {
        config.plugin.version = manifest.version.clone();
    }
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

/// The serve loop: load TLS → bind → build the services → serve (plus the
/// probe and metrics ports) → wait for shutdown → the shutdown sequence.
async fn serve<P: Plugin>(
    plugin: P,
    figment: figment::Figment,
    config: Config<P::Config>,
) -> Result<(), Error> {
    let cp = config.control_plane.clone();
    // Bad certificate files are a configuration error (exit 64), found before binding.
    let tls = match &cp.tls {
        Some(tls) => Some((tls.clone(), tls.load()?)),
        None => None,
    };
    // So is an unreadable grants file.
    let authz = match &cp.authorization {
        Some(authorization) => Some(crate::authz::Authz::load(authorization)?),
        None => None,
    };
    let listener = bind(&cp.bind_address, cp.port).await?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Server(format!("cannot read the bound address: {e}")))?;
    let built = Built::new(Arc::new(plugin), figment, &config, local.port()).await?;

    let tasks = TaskTracker::new();
    let server_stop = CancellationToken::new();
    if let (Some(authz), Some(authorization), Some(tls)) = (&authz, &cp.authorization, &cp.tls) {
        // Reloaded with the TLS files, on their interval.
        let reload = authz.clone().reload_loop(
            authorization.clone(),
            tls.reload_interval,
            server_stop.clone(),
        );
        tasks.spawn(reload);
    }
    let server = grpc_server(
        built.routes,
        &built.runtime.gate,
        (&cp, &built.runtime.metrics, authz),
        listener,
        tls,
        &tasks,
        &server_stop,
    );
    let server_task = tasks.spawn(server);
    let manifest = manifest::of::<P>();
    tracing::info!(
        plugin = %manifest.name,
        version = %manifest.version,
        address = %local,
        tls = cp.tls.is_some(),
        mtls = cp.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()),
        authorization = cp.authorization.is_some(),
        "serving gRPC (lifecycle, health, reflection, data services)"
    );
    if let Some(port) = cp.probe_port.filter(|p| *p != 0) {
        let listener = bind(&cp.bind_address, port).await?;
        serve_probe_port(built.probe_health, listener, &tasks, &server_stop);
    }
    let root = built.root;
    if let Some(port) = config.metrics.port.filter(|p| *p != 0) {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(local.ip(), port))
            .await
            .map_err(|e| Error::Server(format!("cannot bind metrics port {port}: {e}")))?;
        tracing::info!(port, "serving /metrics, /health/live, /health/ready");
        let runtime = &built.runtime;
        let (m, h, stop) = (
            runtime.metrics.clone(),
            runtime.health.clone(),
            root.child_token(),
        );
        tasks.spawn(async move {
            if let Err(err) = crate::metrics::serve_http(listener, m, h, stop).await {
                tracing::error!(error = %err, "metrics endpoint failed");
            }
        });
    }

    let outcome = run_until_shutdown(&built.runtime, &tasks, &root, cp.health_interval).await;

    // The shutdown sequence; Stop may already have done the first steps.
    if let Err(err) = built.runtime.stop(cp.drain_timeout).await {
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

/// Everything the port serves, built before it serves: the runtime (plugin,
/// config, gate, health, metrics), the routes, and the health service for the
/// probe port; `root` is the one cancellation tree of the process.
struct Built<P: Plugin> {
    runtime: Arc<Runtime<P>>,
    routes: tonic::service::RoutesBuilder,
    probe_health:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    root: CancellationToken,
}

impl<P: Plugin> Built<P> {
    async fn new(
        plugin: Arc<P>,
        figment: figment::Figment,
        config: &Config<P::Config>,
        port: u16,
    ) -> Result<Self, Error> {
        let name = manifest::of::<P>().name.as_str();
        let max_message_bytes = config.control_plane.max_message_bytes;
        let metrics = Metrics::new(name);
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut registry = ServiceRegistry::new(max_message_bytes);
        plugin.register(&mut registry);
        let probe_health = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
        );
        let health = Health::new(reporter, name, &registry.names).await;

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

        let root = CancellationToken::new();
        let ctx = Context {
            shutdown: root.child_token(),
            health_changed: Arc::new(tokio::sync::Notify::new()),
            vault: config.vault.clone(),
        };
        let wiring = Wiring {
            gate,
            health,
            metrics,
            ctx,
            endpoint: format!("localhost:{port}"),
        };
        let runtime = Arc::new(Runtime::new(plugin, figment, config.clone(), wiring));
        let lifecycle = LifecycleInterfaceServer::new(LifecycleService::new(runtime.clone()))
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let (reflection_v1, reflection_v1alpha) = reflection(&known)?;
        let mut routes = registry.routes;
        routes
            .add_service(lifecycle)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        Ok(Built {
            runtime,
            routes,
            probe_health,
            root,
        })
    }
}

/// Reflection lists exactly the services this port serves (not every service
/// in the compiled protos), under both protocol versions.
#[allow(clippy::type_complexity)]
fn reflection(
    known: &[String],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    Error,
> {
    let builder = |other_version: &'static [u8]| {
        known.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(other_version),
            |builder, name| builder.with_service_name(name.clone()),
        )
    };
    let v1 = builder(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Server(format!("reflection: {e}")))?;
    let v1alpha = builder(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Server(format!("reflection: {e}")))?;
    Ok((v1, v1alpha))
}

type ServeFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
>;

/// The main gRPC server (plaintext h2c or TLS) behind the drain gate and,
/// when configured, namespace authorization; ends when `stop` is cancelled.
fn grpc_server(
    routes: tonic::service::RoutesBuilder,
    gate: &Gate,
    (cp, metrics, authz): (&config::ControlPlane, &Metrics, Option<crate::authz::Authz>),
    listener: tokio::net::TcpListener,
    tls: Option<(crate::tls::TlsConfig, Arc<rustls::ServerConfig>)>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> ServeFuture {
    // The gate (drain, per-method metrics) sees refused calls too; admission
    // bounds what reaches the services.
    let admission = Admission::new(
        &cp.admission,
        &[proto::FILE_DESCRIPTOR_SET],
        &metrics.admission,
    );
    let builder = connections::configure(
        tonic::transport::Server::builder(),
        &cp.connections,
        &cp.admission,
    );
    let router = builder
        .layer(GateLayer::new(gate.clone()))
        .layer(AdmissionLayer::new(admission))
        .layer(crate::otel::layer::layer())
        .layer(tower::util::option_layer(
            authz.map(crate::authz::AuthzLayer::new),
        ))
        .add_routes(routes.routes());
    let stop_signal = stop.clone().cancelled_owned();
    let max_connections = cp.connections.max_connections;
    match tls {
        Some((tls, loaded)) => {
            let incoming = crate::tls::incoming(listener, tls, loaded, tasks, stop.clone());
            let incoming = connections::limit(incoming, max_connections, &metrics.admission);
            Box::pin(router.serve_with_incoming_shutdown(incoming, stop_signal))
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            let incoming = connections::limit(incoming, max_connections, &metrics.admission);
            Box::pin(router.serve_with_incoming_shutdown(incoming, stop_signal))
        }
    }
}

/// The plaintext port serving only `grpc.health.v1`, for probes when TLS is on.
fn serve_probe_port(
    health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    listener: tokio::net::TcpListener,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) {
    tracing::info!(
        port = listener.local_addr().map(|a| a.port()).unwrap_or_default(),
        "serving plaintext grpc.health.v1 for probes"
    );
    let probe = tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.clone().cancelled_owned(),
        );
    tasks.spawn(async move {
        if let Err(err) = probe.await {
            tracing::error!(error = %err, "probe port failed");
        }
    });
}

/// Starts the health loop, the initialization with retries and the signal
/// watcher, then waits until shutdown is requested (signal or Stop) or
/// initialization failed for good (returned as the process's outcome).
async fn run_until_shutdown<P: Plugin>(
    runtime: &Arc<Runtime<P>>,
    tasks: &TaskTracker,
    root: &CancellationToken,
    health_interval: Duration,
) -> Result<(), Error> {
    tasks.spawn(runtime.clone().health_loop(health_interval));
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
    tokio::select! {
        _ = runtime.shutdown_requested.cancelled() => Ok(()),
        Some(err) = fatal_rx.recv() => {
            runtime.request_shutdown();
            Err(err)
        }
    }
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
