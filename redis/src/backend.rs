//! The Redis connection: a `ConnectionManager` (one multiplexed connection that
//! re-dials by itself after I/O errors), the initial connect and the `PING`
//! health probe. Knows nothing about gRPC.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;
use crate::error::Error;

/// Reconnect attempts per (re)connect round. Kept small so an initial connect to
/// a server that is down fails fast (core retries `initialize` with its own
/// backoff) and a dead server is noticed by the next health check.
const CONNECT_RETRIES: usize = 2;
/// First delay between reconnect attempts.
const RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
/// Cap on the delay between reconnect attempts, so a returning server is used
/// within about a second.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);
/// Longest a health `PING` may take: core gives the whole health check 1.5 s.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// One configured Redis server and the connection to it.
pub(crate) struct Backend {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    /// Replaced (see [`Backend::ping`]) when the manager is stuck on an error it
    /// does not recover from by itself.
    manager: RwLock<ConnectionManager>,
    /// `host:port`, for messages (never with credentials).
    address: String,
    response_timeout: Duration,
    degraded_latency: Duration,
}

impl Backend {
    /// Connects and checks the server answers `PING` within `connection_timeout`.
    /// `Error::Config` for settings that can never work, anything else is retriable.
    pub(crate) async fn connect(config: &RedisConfig) -> Result<Self, Error> {
        let info = config
            .connection_info()
            .map_err(|(key, problem)| Error::Config { key, problem })?;
        let address = info.addr().to_string();
        let client = redis::Client::open(info).map_err(|e| Error::Config {
            key: "address",
            problem: e.to_string(),
        })?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connection_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(CONNECT_RETRIES)
            .set_min_delay(RETRY_MIN_DELAY)
            .set_max_delay(RETRY_MAX_DELAY);
        let manager = new_manager(&client, &manager_config, &address)?;
        let backend = Backend {
            client,
            manager_config,
            manager: RwLock::new(manager),
            address,
            response_timeout: config.response_timeout,
            degraded_latency: config.degraded_latency,
        };
        // The whole first connect (including the manager's retries) is bounded
        // so `initialize` answers promptly when the server is unreachable.
        backend
            .ping(config.connection_timeout + config.response_timeout)
            .await?;
        tracing::info!(address = %backend.address, "connected to redis");
        Ok(backend)
    }

    /// `host:port` of the server.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// A handle on the shared connection (cheap clone).
    pub(crate) fn connection(&self) -> ConnectionManager {
        self.manager
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Health probe: one `PING` round trip, bounded well inside core's limit.
    pub(crate) async fn health_ping(&self) -> Result<Duration, Error> {
        self.ping(HEALTH_TIMEOUT.min(self.response_timeout)).await
    }

    /// `PING` with a deadline; returns the round-trip time.
    async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let mut conn = self.connection();
        let started = Instant::now();
        let reply =
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn))
                .await;
        match reply {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(source)) => {
                // The manager re-dials only after I/O errors; after anything else
                // (e.g. an auth failure while reconnecting, once credentials were
                // rotated) it would keep returning that error forever. A fresh
                // manager (no I/O until used) makes the next check dial again.
                if !source.is_io_error() {
                    self.renew_manager();
                }
                Err(Error::Redis {
                    address: self.address.clone(),
                    source,
                })
            }
            Err(_) => Err(Error::Timeout {
                address: self.address.clone(),
                timeout,
            }),
        }
    }

    fn renew_manager(&self) {
        match new_manager(&self.client, &self.manager_config, &self.address) {
            Ok(manager) => {
                *self.manager.write().unwrap_or_else(|e| e.into_inner()) = manager;
            }
            Err(err) => tracing::warn!(error = %err, "cannot renew the redis connection manager"),
        }
    }
}

/// A manager that connects on first use (so building one never blocks).
fn new_manager(
    client: &redis::Client,
    config: &ConnectionManagerConfig,
    address: &str,
) -> Result<ConnectionManager, Error> {
    ConnectionManager::new_lazy_with_config(client.clone(), config.clone()).map_err(|source| {
        Error::Redis {
            address: address.to_string(),
            source,
        }
    })
}
