//! The PostgreSQL connection pool: the initial connect, the `SELECT 1` health
//! probe and pool statistics. Knows nothing about gRPC.

use std::str::FromStr;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::PostgresConfig;
use crate::error::Error;

/// Longest a health `SELECT 1` may take: core gives the whole health check 1.5 s.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// `application_name` of every session, so DBAs see who holds connections.
const APPLICATION_NAME: &str = "prism-postgres";

/// One configured database and the pool connected to it.
pub(crate) struct Backend {
    pool: PgPool,
    /// `host:port/database`, for messages (never with credentials).
    target: String,
    degraded_latency: Duration,
}

/// A snapshot of the pool's connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolStats {
    /// Connections open now (idle or in use).
    pub(crate) size: u32,
    /// Open connections not in use.
    pub(crate) idle: u32,
    /// The configured maximum.
    pub(crate) max: u32,
}

impl PoolStats {
    /// Connections in use.
    pub(crate) fn busy(&self) -> u32 {
        self.size.saturating_sub(self.idle)
    }

    /// True when at least 90 % of the maximum is in use (requests start to queue).
    pub(crate) fn nearly_exhausted(&self) -> bool {
        self.max > 0 && u64::from(self.busy()) * 10 >= u64::from(self.max) * 9
    }
}

impl Backend {
    /// Parses the URL, checks the database accepts a login within
    /// `connect_timeout`, and builds the pool. `Error::Config` for a URL the
    /// driver rejects; anything else is retriable.
    pub(crate) async fn connect(config: &PostgresConfig) -> Result<Self, Error> {
        let mut options =
            PgConnectOptions::from_str(&config.database_url).map_err(|e| Error::Config {
                key: "database_url",
                problem: format!("not a usable PostgreSQL URL: {e}"),
            })?;
        options = options.application_name(APPLICATION_NAME);
        if !config.statement_timeout.is_zero() {
            let millis = config.statement_timeout.as_millis().to_string();
            options = options.options([("statement_timeout", millis.as_str())]);
        }
        // Per-statement logging would log every request (and every health
        // probe); latency is reported through health and metrics instead.
        options = options.disable_statement_logging();
        let target = describe(&options);

        // A direct connection first: the pool retries refused connections until
        // `acquire_timeout` and then reports only "timed out", while this gives
        // the operator the real reason (refused, bad password, no database).
        let probe =
            tokio::time::timeout(config.connect_timeout, PgConnection::connect_with(&options));
        match probe.await {
            Ok(Ok(conn)) => {
                // Best effort: the session ends when the socket closes anyway.
                let _ = conn.close().await;
            }
            Ok(Err(source)) => return Err(Error::Postgres { target, source }),
            Err(_) => {
                return Err(Error::Timeout {
                    target,
                    what: "connect",
                    timeout: config.connect_timeout,
                });
            }
        }

        let pool = PgPoolOptions::new()
            .max_connections(config.pool_size)
            .min_connections(config.min_connections)
            .acquire_timeout(config.acquire_timeout)
            // Check idle connections before use so ones the server closed
            // (restart, idle timeout) are replaced instead of failing a request.
            .test_before_acquire(true)
            .connect_lazy_with(options);
        tracing::info!(target = %target, pool_size = config.pool_size, "connected to postgres");
        Ok(Backend {
            pool,
            target,
            degraded_latency: config.degraded_latency,
        })
    }

    /// `host:port/database` of the server.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// The pool's connections right now.
    pub(crate) fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
    }

    /// Health probe: one `SELECT 1` through the pool (so it also proves a
    /// connection can be had), bounded well inside core's limit.
    pub(crate) async fn ping(&self) -> Result<Duration, Error> {
        let started = Instant::now();
        let query = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(HEALTH_TIMEOUT, query).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(source)) => Err(Error::Postgres {
                target: self.target.clone(),
                source,
            }),
            Err(_) => Err(Error::Timeout {
                target: self.target.clone(),
                what: "SELECT 1",
                timeout: HEALTH_TIMEOUT,
            }),
        }
    }

    /// Closes the pool: waits for borrowed connections to come back, closes idle ones.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

/// `host:port/database` (or the socket path) for messages.
fn describe(options: &PgConnectOptions) -> String {
    let database = options
        .get_database()
        .unwrap_or_else(|| options.get_username());
    match options.get_socket() {
        Some(socket) => format!("{}/{database}", socket.display()),
        None => format!("{}:{}/{database}", options.get_host(), options.get_port()),
    }
}
