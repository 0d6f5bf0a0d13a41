//! `grpc.health.v1` statuses (DESIGN.md §3.4). `liveness` is SERVING while the
//! process works and never follows the backend; `readiness`, `""`, the plugin
//! name and every data service follow the backend and go NOT_SERVING while
//! draining. All statuses exist before the port accepts connections, so there
//! is no NOT_FOUND window at startup.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Service name of the liveness status.
pub const LIVENESS: &str = "liveness";
/// Service name of the readiness status.
pub const READINESS: &str = "readiness";

/// Handle on the health statuses; cheap to clone.
#[derive(Clone)]
pub(crate) struct Health {
    reporter: HealthReporter,
    inner: Arc<Inner>,
}

struct Inner {
    /// `""`, readiness, the plugin name and each data service.
    ready_services: Vec<String>,
    backend_ok: AtomicBool,
    draining: AtomicBool,
    live: AtomicBool,
    /// Serialises updates so concurrent changes never publish a stale status.
    update: tokio::sync::Mutex<()>,
}

impl Health {
    /// Creates every status: liveness SERVING, the rest NOT_SERVING until the
    /// first successful backend check.
    pub(crate) async fn new(
        reporter: HealthReporter,
        plugin_name: &str,
        data_services: &[&str],
    ) -> Self {
        let mut ready_services = vec![
            String::new(),
            READINESS.to_string(),
            plugin_name.to_string(),
        ];
        ready_services.extend(data_services.iter().map(|s| s.to_string()));
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        for svc in &ready_services {
            reporter
                .set_service_status(svc, ServingStatus::NotServing)
                .await;
        }
        Health {
            reporter,
            inner: Arc::new(Inner {
                ready_services,
                backend_ok: AtomicBool::new(false),
                draining: AtomicBool::new(false),
                live: AtomicBool::new(true),
                update: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Records the backend's state; returns true when readiness changed.
    pub(crate) async fn set_backend_ok(&self, ok: bool) -> bool {
        let _update = self.inner.update.lock().await;
        let before = self.is_ready();
        self.inner.backend_ok.store(ok, Ordering::SeqCst);
        self.publish(before).await
    }

    /// Draining: readiness and `""` go NOT_SERVING (liveness stays SERVING).
    pub(crate) async fn set_draining(&self, draining: bool) {
        let _update = self.inner.update.lock().await;
        let before = self.is_ready();
        self.inner.draining.store(draining, Ordering::SeqCst);
        self.publish(before).await;
    }

    /// The process is about to exit: everything NOT_SERVING.
    pub(crate) async fn set_stopped(&self) {
        self.inner.live.store(false, Ordering::SeqCst);
        self.set_draining(true).await;
        let _update = self.inner.update.lock().await;
        self.reporter
            .set_service_status(LIVENESS, ServingStatus::NotServing)
            .await;
    }

    async fn publish(&self, before: bool) -> bool {
        let now = self.is_ready();
        if now != before {
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for svc in &self.inner.ready_services {
                self.reporter.set_service_status(svc, status).await;
            }
        }
        now != before
    }

    /// Readiness: backend reachable and not draining.
    pub(crate) fn is_ready(&self) -> bool {
        self.inner.backend_ok.load(Ordering::SeqCst) && !self.inner.draining.load(Ordering::SeqCst)
    }

    /// Liveness: the process works.
    pub(crate) fn is_live(&self) -> bool {
        self.inner.live.load(Ordering::SeqCst)
    }
}
