//! A minimal plugin used by core's own tests (and a readable example of the
//! `Plugin` trait): `KeyValueBasicInterface` over an in-memory map. Its
//! "backend" is a TCP address that must accept connections, so tests point it
//! at a harness server and stop that server to simulate an outage. A Get of
//! `sleep:<ms>` takes that long, to hold a call in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_plugin_core::kv as replies;
use prism_plugin_core::proto::keyvalue::{
    self as kv,
    key_value_basic_interface_server::{KeyValueBasicInterface, KeyValueBasicInterfaceServer},
};
use prism_plugin_core::{
    BackendConfig, Call, Context, Error, HealthReport, HealthStatus, Interface, ManifestSource,
    Plugin, ServiceRegistry, Slot, proto,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

/// `backend:` section of the test plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestConfig {
    /// TCP address that must accept connections; empty = always healthy.
    #[serde(default)]
    probe_address: String,
    /// A secret, to prove redaction.
    #[serde(default)]
    password: String,
    /// A URL with credentials, to prove URL redaction.
    #[serde(default)]
    url: String,
}

impl BackendConfig for TestConfig {
    fn validate(&self) -> Vec<String> {
        if self.probe_address.contains(' ') {
            vec!["`backend.probe_address`: must not contain spaces".into()]
        } else {
            vec![]
        }
    }
}

struct Backend {
    probe_address: String,
}

impl Backend {
    async fn probe(&self) -> Result<Duration, Error> {
        if self.probe_address.is_empty() {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        match tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(&self.probe_address),
        )
        .await
        {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(Error::Unavailable(format!("{}: {e}", self.probe_address))),
            Err(_) => Err(Error::Unavailable(format!(
                "{}: timed out",
                self.probe_address
            ))),
        }
    }
}

#[derive(Default)]
struct TestPlugin {
    backend: Arc<Slot<Backend>>,
    data: Arc<Mutex<HashMap<(String, String), bytes::Bytes>>>,
}

#[prism_plugin_core::async_trait]
impl Plugin for TestPlugin {
    type Config = TestConfig;

    const MANIFEST: ManifestSource = ManifestSource {
        toml: include_str!("test_plugin.toml"),
        version: "0.0.1",
    };

    fn interfaces(&self) -> Vec<Interface> {
        vec![Interface {
            name: "KeyValueBasicInterface",
            proto: proto::KEYVALUE_BASIC_PROTO,
            version: "1.0.0",
        }]
    }

    fn register(&self, services: &mut ServiceRegistry) {
        let svc = KvService {
            backend: self.backend.clone(),
            data: self.data.clone(),
        };
        services.add(KeyValueBasicInterfaceServer::new(svc));
    }

    async fn initialize(&self, config: TestConfig, _ctx: &Context) -> Result<(), Error> {
        let backend = Backend {
            probe_address: config.probe_address,
        };
        backend.probe().await?;
        self.backend.replace(Arc::new(backend));
        Ok(())
    }

    async fn health(&self) -> HealthReport {
        let backend = match self.backend.get() {
            Ok(b) => b,
            Err(e) => return HealthReport::new(HealthStatus::Unhealthy, e.to_string()),
        };
        match backend.probe().await {
            Ok(latency) => HealthReport::new(HealthStatus::Healthy, "probe ok")
                .detail("latency_ms", latency.as_millis()),
            Err(e) => HealthReport::new(HealthStatus::Unhealthy, e.to_string()),
        }
    }

    async fn stop(&self) -> Result<(), Error> {
        self.backend.take();
        Ok(())
    }
}

struct KvService {
    backend: Arc<Slot<Backend>>,
    data: Arc<Mutex<HashMap<(String, String), bytes::Bytes>>>,
}

impl KvService {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), bytes::Bytes>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[tonic::async_trait]
impl KeyValueBasicInterface for KvService {
    async fn set(&self, req: Request<kv::SetRequest>) -> Result<Response<kv::SetResponse>, Status> {
        let (Call { scope, .. }, req) = Call::begin(&self.backend, req)?;
        if req.key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        self.map().insert((scope.namespace, req.key), req.value);
        Ok(Response::new(replies::set_ok()))
    }

    async fn get(&self, req: Request<kv::GetRequest>) -> Result<Response<kv::GetResponse>, Status> {
        let (Call { scope, .. }, req) = Call::begin(&self.backend, req)?;
        if let Some(ms) = req
            .key
            .strip_prefix("sleep:")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let value = self.map().get(&(scope.namespace, req.key)).cloned();
        Ok(Response::new(replies::get_response(value)))
    }

    async fn delete(
        &self,
        req: Request<kv::DeleteRequest>,
    ) -> Result<Response<kv::DeleteResponse>, Status> {
        let (Call { scope, .. }, req) = Call::begin(&self.backend, req)?;
        self.map().remove(&(scope.namespace, req.key));
        Ok(Response::new(replies::delete_ok()))
    }

    async fn exists(
        &self,
        req: Request<kv::ExistsRequest>,
    ) -> Result<Response<kv::ExistsResponse>, Status> {
        let (Call { scope, .. }, req) = Call::begin(&self.backend, req)?;
        let exists = self.map().contains_key(&(scope.namespace, req.key));
        Ok(Response::new(replies::exists_response(exists)))
    }
}

fn main() -> std::process::ExitCode {
    prism_plugin_core::run(TestPlugin::default())
}
