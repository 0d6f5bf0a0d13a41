//! The connection pool of the data path: up to `pool_size` `PgConnection`s
//! handed out one call at a time, so that a call costs exactly one round trip
//! to PostgreSQL (Bind/Execute/Sync of a statement prepared once per
//! connection).
//!
//! Why not `sqlx::Pool`: sqlx 0.8 pings every connection when it goes back to
//! the pool (an unconditional `Sync` round trip in `Floating::return_to_pool`)
//! and, with `test_before_acquire`, again when it is taken out: three round
//! trips per call, which measured at 0.28× pgbench's throughput. This pool
//! instead:
//!
//! - returns a connection only when its statement ran to completion (the
//!   caller says so through [`Pool::release`]); a connection dropped mid-call
//!   (deadline, cancelled request, I/O error) is closed, which is exactly the
//!   case sqlx's release ping guards against;
//! - pings only connections that sat idle for [`IDLE_CHECK`] or longer (the
//!   ones a server restart or `idle_session_timeout` may have closed);
//! - forgets every idle connection at once when one of them turns out dead
//!   ([`Pool::flush`]), since they usually die together (server restart);
//! - closes connections idle longer than [`IDLE_TIMEOUT`] (above
//!   `min_connections`) and older than [`MAX_LIFETIME`], like sqlx's defaults.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A connection idle this long is pinged before use.
pub(crate) const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Idle connections above `min_connections` are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Connections are replaced after this long (sqlx's default `max_lifetime`).
const MAX_LIFETIME: Duration = Duration::from_secs(1800);

/// See the module docs.
pub(crate) struct Pool {
    options: PgConnectOptions,
    max: u32,
    min: u32,
    acquire_timeout: Duration,
    /// One permit per connection that may be in use.
    permits: Semaphore,
    idle: Mutex<Vec<Idle>>,
    /// Connections open now, idle or in use.
    open: AtomicU32,
    /// Bumped by [`Pool::flush`]: connections of an older generation are closed
    /// instead of reused.
    generation: AtomicU64,
    closed: AtomicBool,
}

struct Idle {
    conn: PgConnection,
    since: Instant,
    created: Instant,
    generation: u64,
}

/// A connection taken from the pool. Give it back with [`Pool::release`]
/// once its statement completed; dropping it closes the connection.
pub(crate) struct Conn<'a> {
    pool: &'a Pool,
    conn: Option<PgConnection>,
    created: Instant,
    generation: u64,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Conn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("present until released or dropped")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn
            .as_mut()
            .expect("present until released or dropped")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            // Not released: the statement did not complete, so the session's
            // state is unknown. Dropping the socket closes it; PostgreSQL 14+
            // aborts the statement within `client_connection_check_interval`.
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// An idle connection being checked: closed and no longer counted if the
/// check fails or is abandoned.
struct Checked<'a> {
    pool: &'a Pool,
    conn: Option<PgConnection>,
}

impl Checked<'_> {
    async fn ping(&mut self) -> Result<(), sqlx::Error> {
        match self.conn.as_mut() {
            Some(conn) => conn.ping().await,
            None => Ok(()),
        }
    }
}

impl Drop for Checked<'_> {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Pool {
    /// A pool that connects lazily with `options`.
    pub(crate) fn new(
        options: PgConnectOptions,
        max: u32,
        min: u32,
        acquire_timeout: Duration,
    ) -> Self {
        let max = max.max(1);
        Pool {
            options,
            max,
            min: min.min(max),
            acquire_timeout,
            permits: Semaphore::new(max as usize),
            idle: Mutex::new(Vec::with_capacity(max as usize)),
            open: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// The connect options (for the health probe's own connection).
    pub(crate) fn connect_options(&self) -> &PgConnectOptions {
        &self.options
    }

    /// The configured maximum.
    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// Connections open now.
    pub(crate) fn size(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Open connections not in use.
    pub(crate) fn num_idle(&self) -> u32 {
        u32::try_from(self.lock().len()).unwrap_or(u32::MAX)
    }

    /// A connection: an idle one (pinged first if it idled [`IDLE_CHECK`]) or
    /// a new one. `PoolTimedOut` after `acquire_timeout`, `PoolClosed` once
    /// [`Pool::close`] began; a failed login is returned as is.
    pub(crate) async fn acquire(&self) -> Result<Conn<'_>, sqlx::Error> {
        self.timed(self.acquire_inner()).await
    }

    /// Publishes the pool gauges (open, in use).
    fn report(&self) {
        let open = i64::from(self.size());
        let in_use = open - i64::from(self.num_idle());
        prism_plugin_core::backend_metrics::get().pool_state("postgresql", open, in_use.max(0));
    }

    /// Like [`Pool::acquire`] when a connection may be taken now; `None`,
    /// without waiting, when every one is in use. Once a permit is taken the
    /// caller must not drop this future early: a connection being opened or
    /// pinged would be thrown away with it.
    pub(crate) async fn try_acquire(&self) -> Option<Result<Conn<'_>, sqlx::Error>> {
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => return None,
            Err(tokio::sync::TryAcquireError::Closed) => return Some(Err(sqlx::Error::PoolClosed)),
        };
        Some(self.timed(self.with_permit(permit)).await)
    }

    /// `acquiring`, or `PoolTimedOut` once `acquire_timeout` passes.
    async fn timed<'a>(
        &self,
        acquiring: impl Future<Output = Result<Conn<'a>, sqlx::Error>>,
    ) -> Result<Conn<'a>, sqlx::Error> {
        let started = Instant::now();
        let acquired = tokio::time::timeout(self.acquire_timeout, acquiring)
            .await
            .unwrap_or(Err(sqlx::Error::PoolTimedOut));
        let metrics = prism_plugin_core::backend_metrics::get();
        metrics.pool_acquired("postgresql", started.elapsed().as_secs_f64());
        self.report();
        acquired
    }

    async fn acquire_inner(&self) -> Result<Conn<'_>, sqlx::Error> {
        let waiting = prism_plugin_core::backend_metrics::get().pool_wait("postgresql");
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        drop(waiting);
        self.with_permit(permit).await
    }

    /// An idle or new connection for the holder of `permit`.
    async fn with_permit<'a>(
        &'a self,
        permit: SemaphorePermit<'a>,
    ) -> Result<Conn<'a>, sqlx::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        let current = self.generation.load(Ordering::Acquire);
        loop {
            // Most recently used first: keeps the busy set small and warm, and
            // lets the rest reach the idle timeout.
            let Some(idle) = self.lock().pop() else {
                break;
            };
            if idle.generation != current {
                self.discard(idle.conn);
                continue;
            }
            let (since, created, generation) = (idle.since, idle.created, idle.generation);
            // Counted as open until it turns out dead or its `Conn` goes, even
            // if this future is dropped during the ping (a caller that got its
            // answer elsewhere, or a deadline).
            let mut checked = Checked {
                pool: self,
                conn: Some(idle.conn),
            };
            if since.elapsed() >= IDLE_CHECK && checked.ping().await.is_err() {
                // It died while idle (restart, idle timeout): so may have the others.
                self.flush();
                drop(checked);
                continue;
            }
            return Ok(Conn {
                pool: self,
                conn: checked.conn.take(),
                created,
                generation,
                _permit: permit,
            });
        }
        let conn = PgConnection::connect_with(&self.options).await?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Conn {
            pool: self,
            conn: Some(conn),
            created: Instant::now(),
            generation: current,
            _permit: permit,
        })
    }

    /// Puts a connection whose statement completed back for the next call
    /// (closes it instead when it is too old, flushed, or the pool is closing).
    pub(crate) fn release(&self, mut conn: Conn<'_>) {
        let Some(raw) = conn.conn.take() else { return };
        let stale = conn.generation != self.generation.load(Ordering::Acquire)
            || conn.created.elapsed() >= MAX_LIFETIME
            || self.closed.load(Ordering::Acquire);
        if stale {
            self.discard(raw);
        } else {
            self.lock().push(Idle {
                conn: raw,
                since: Instant::now(),
                created: conn.created,
                generation: conn.generation,
            });
        }
        self.report();
        // `conn` (and its permit) drops here, after the connection is idle.
    }

    /// Forgets every idle connection (and makes the ones in use close when
    /// they come back): one of them was found dead.
    pub(crate) fn flush(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let idle = std::mem::take(&mut *self.lock());
        for idle in idle {
            self.discard(idle.conn);
        }
    }

    /// Closes idle connections over `min_connections` that idled longer than
    /// the idle timeout (called by the health probe, twice a second).
    pub(crate) fn maintain(&self) {
        let mut expired = Vec::new();
        {
            let mut idle = self.lock();
            let open = self.size();
            let mut over = open.saturating_sub(self.min) as usize;
            // Oldest-idle first: they sit at the bottom of the stack.
            let mut i = 0;
            while i < idle.len() && over > 0 {
                if idle[i].since.elapsed() >= IDLE_TIMEOUT {
                    expired.push(idle.remove(i));
                    over -= 1;
                } else {
                    i += 1;
                }
            }
        }
        for idle in expired {
            self.discard(idle.conn);
        }
    }

    /// Refuses new calls, waits for the connections in use to come back, and
    /// closes every connection.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Every permit back = nothing in use (calls that got one after this
        // point return it at once, seeing `closed`).
        if let Ok(all) = self.permits.acquire_many(self.max).await {
            all.forget();
        }
        self.permits.close();
        let idle = std::mem::take(&mut *self.lock());
        for idle in idle {
            // Best effort: Terminate, so the server ends the session at once.
            let _ = idle.conn.close().await;
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn discard(&self, conn: PgConnection) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        drop(conn);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
