//! The `Plugin` trait every backend plugin implements, and the small types it
//! exchanges with core: health reports, interface declarations, the service
//! registry and the context handed to `initialize`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;

use crate::Error;
use crate::proto::ProtoFile;

/// A backend plugin. Core owns the process (CLI, config, server, health loop,
/// drain, signals); the plugin owns its backend and its data services.
///
/// Services are registered once, before the server starts, so they must reach
/// the backend through shared state that `initialize` can replace (see [`Slot`]):
/// Initialize may be called again to re-apply config without a restart.
#[tonic::async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The `backend:` config section.
    type Config: BackendConfig;

    /// The crate's `plugin.toml` and version: `prism_plugin_core::manifest!()`.
    /// Name, default port and environment aliases come from it.
    const MANIFEST: crate::manifest::ManifestSource;

    /// Interfaces declared in `InitializeResponse.metadata.interfaces`.
    fn interfaces(&self) -> Vec<Interface>;

    /// `InterfaceDeclaration.metadata` of the declared interface `name`:
    /// how this plugin's flavour of it behaves where plugins differ (e.g.
    /// `ordered` = `true`/`false` for `KeyValueScanInterface`). None by default.
    fn interface_metadata(&self, name: &str) -> Vec<(&'static str, &'static str)> {
        let _ = name;
        Vec::new()
    }

    /// Adds the plugin's tonic data services.
    fn register(&self, services: &mut ServiceRegistry);

    /// Connects to the backend with `config` (already validated), replacing any
    /// previous connection. `Error::Unavailable` means "retry later".
    async fn initialize(&self, config: Self::Config, ctx: &Context) -> Result<(), Error>;

    /// Starts background work after initialize; must return promptly.
    async fn start(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Current backend health; called by core's health loop and HealthCheck.
    async fn health(&self) -> HealthReport;

    /// Called right after intake has closed, while in-flight calls are still
    /// finishing: end long-lived streams and hand back backend-side work
    /// (e.g. commit acknowledged offsets), so the drain can complete.
    async fn drain(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Releases the backend (close pools). Called once at shutdown.
    async fn stop(&self) -> Result<(), Error>;
}

/// A plugin's `backend:` config section: a serde struct (with
/// `#[serde(deny_unknown_fields)]`) whose `Default` is the built-in defaults.
pub trait BackendConfig:
    Serialize + DeserializeOwned + Clone + Default + Send + Sync + 'static
{
    /// Pure validation (no I/O): every problem, each naming its key
    /// (`` `backend.pool_size`: must be at least 1 ``). None by default.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Backend health as the lifecycle `HealthCheck` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Backend reachable and responsive.
    Healthy,
    /// Working but slow or near a limit; still SERVING for probes.
    Degraded,
    /// Not usable; readiness is NOT_SERVING.
    Unhealthy,
}

/// A health verdict with a human message and details (never secrets).
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// Overall status.
    pub status: HealthStatus,
    /// Short explanation.
    pub message: String,
    /// Details such as latency and pool stats.
    pub details: BTreeMap<String, String>,
}

impl HealthReport {
    /// A report with no details.
    pub fn new(status: HealthStatus, message: impl Into<String>) -> Self {
        HealthReport {
            status,
            message: message.into(),
            details: BTreeMap::new(),
        }
    }

    /// Adds one detail.
    pub fn detail(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.details.insert(key.into(), value.to_string());
        self
    }

    /// True when probes should see SERVING.
    pub fn is_serving(&self) -> bool {
        self.status != HealthStatus::Unhealthy
    }
}

/// One declared interface (`InterfaceDeclaration`).
#[derive(Debug, Clone)]
pub struct Interface {
    /// Interface name as the gateway's registry knows it, e.g. `KeyValueBasicInterface`.
    pub name: &'static str,
    /// The proto file defining it (its path and sha-256 are declared).
    pub proto: ProtoFile,
    /// Interface version.
    pub version: &'static str,
}

/// Collects the plugin's tonic services and their full names (each gets a
/// health status), and bounds each one's messages to the configured
/// `control_plane.max_message_bytes` as it is added.
pub struct ServiceRegistry {
    pub(crate) routes: tonic::service::RoutesBuilder,
    pub(crate) names: Vec<&'static str>,
    max_message_bytes: usize,
}

impl ServiceRegistry {
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        ServiceRegistry {
            routes: tonic::service::RoutesBuilder::default(),
            names: Vec::new(),
            max_message_bytes,
        }
    }

    /// Adds a generated tonic server, its messages (both ways) bounded by
    /// `control_plane.max_message_bytes`.
    pub fn add<S>(&mut self, svc: S) -> &mut Self
    where
        S: DataService
            + tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes
            .add_service(svc.limit_messages(self.max_message_bytes));
        self
    }
}

/// A generated tonic server whose message size the [`ServiceRegistry`]
/// bounds. tonic generates `max_decoding_message_size` and
/// `max_encoding_message_size` as inherent methods of each server type, so
/// each type gets this impl: core's data services below, a plugin's own with
/// [`data_service!`](crate::data_service).
pub trait DataService: Sized {
    /// The server with requests and replies bounded to `max_bytes`.
    fn limit_messages(self, max_bytes: usize) -> Self;
}

/// Implements [`DataService`] for generated tonic servers, given as
/// `ServerType: ServiceTrait` (both in scope), e.g.
/// `data_service!(KeyValueBasicInterfaceServer: KeyValueBasicInterface);`.
#[macro_export]
macro_rules! data_service {
    ($($server:ident: $service:ident),+ $(,)?) => {$(
        impl<T: $service> $crate::DataService for $server<T> {
            fn limit_messages(self, max_bytes: usize) -> Self {
                self.max_decoding_message_size(max_bytes)
                    .max_encoding_message_size(max_bytes)
            }
        }
    )+};
}

/// The data services of core's protos.
mod data_services {
    use crate::proto::keyvalue::key_value_atomic_interface_server::{
        KeyValueAtomicInterface, KeyValueAtomicInterfaceServer,
    };
    use crate::proto::keyvalue::key_value_basic_interface_server::{
        KeyValueBasicInterface, KeyValueBasicInterfaceServer,
    };
    use crate::proto::keyvalue::key_value_batch_interface_server::{
        KeyValueBatchInterface, KeyValueBatchInterfaceServer,
    };
    use crate::proto::keyvalue::key_value_scan_interface_server::{
        KeyValueScanInterface, KeyValueScanInterfaceServer,
    };
    use crate::proto::keyvalue::key_value_ttl_interface_server::{
        KeyValueTtlInterface, KeyValueTtlInterfaceServer,
    };
    use crate::proto::pubsub::pub_sub_basic_interface_server::{
        PubSubBasicInterface, PubSubBasicInterfaceServer,
    };
    use crate::proto::pubsub::stream_interface_server::{StreamInterface, StreamInterfaceServer};
    use crate::proto::timeseries::time_series_basic_interface_server::{
        TimeSeriesBasicInterface, TimeSeriesBasicInterfaceServer,
    };

    crate::data_service!(
        KeyValueBasicInterfaceServer: KeyValueBasicInterface,
        KeyValueBatchInterfaceServer: KeyValueBatchInterface,
        KeyValueTtlInterfaceServer: KeyValueTtlInterface,
        KeyValueScanInterfaceServer: KeyValueScanInterface,
        KeyValueAtomicInterfaceServer: KeyValueAtomicInterface,
        PubSubBasicInterfaceServer: PubSubBasicInterface,
        StreamInterfaceServer: StreamInterface,
        TimeSeriesBasicInterfaceServer: TimeSeriesBasicInterface,
    );
}

/// Handed to `initialize`: the plugin's share of the process's cancellation
/// tree and a way to ask for an immediate health re-check.
#[derive(Clone)]
pub struct Context {
    /// Cancelled at shutdown; background tasks of the plugin select on it.
    pub shutdown: CancellationToken,
    pub(crate) health_changed: Arc<tokio::sync::Notify>,
    /// The `vault:` section in force for this initialize; credentials come
    /// from Vault when `vault.enabled()`.
    pub vault: crate::vault::VaultConfig,
}

impl Context {
    /// Tells core's health loop to re-check now (e.g. a connection dropped).
    pub fn health_changed(&self) {
        self.health_changed.notify_one();
    }
}

/// Shared, replaceable state: services hold a `Slot` and load the current
/// backend per request; `initialize` stores a new one (re-initialize swaps it
/// while requests in flight finish on the old one).
#[derive(Debug)]
pub struct Slot<T>(RwLock<Option<Arc<T>>>);

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot(RwLock::new(None))
    }
}

impl<T> Slot<T> {
    /// The current value, or `Error::NotInitialized`.
    pub fn get(&self) -> Result<Arc<T>, Error> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::NotInitialized)
    }

    /// Replaces the value, returning the previous one.
    pub fn replace(&self, value: Arc<T>) -> Option<Arc<T>> {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(value)
    }

    /// Removes the value.
    pub fn take(&self) -> Option<Arc<T>> {
        self.0.write().unwrap_or_else(|e| e.into_inner()).take()
    }
}
