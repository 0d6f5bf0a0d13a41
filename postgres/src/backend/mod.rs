//! The PostgreSQL connection pool and every query: connect (and create the
//! table), the `SELECT 1` health probe with pool statistics, the key-value
//! operations and the expiry sweep. Knows nothing about gRPC.
//!
//! Failing fast during an outage: the pool would retry a refused connection
//! until `acquire_timeout` for every call. Instead the backend keeps a "link"
//! state — down from the moment a health probe fails or a statement loses its
//! connection, up again at the next successful probe (core probes every
//! 500 ms, and at once when told the health changed). While it is down, calls
//! fail with [`Error::Unreachable`] without touching the pool, and calls
//! already waiting for a connection give up as soon as it goes down. So data
//! calls fail fast exactly when readiness is NOT_SERVING.
//!
//! Deadlines: a call carrying the client's deadline is bounded by it; when it
//! passes, the statement's future is dropped and its connection is closed
//! (Terminate + FIN) instead of returned to the pool. On PostgreSQL 14+ the
//! sessions run with `client_connection_check_interval`, so the server notices
//! the closed socket within a second and aborts the statement (lock waits
//! included); older servers run it to completion or `statement_timeout`.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use prism_plugin_core::Context;
use prism_plugin_core::kv::Limits;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::watch;

use crate::coalesce::{self, Queue, Ticket, Waiting};
use crate::config::PostgresConfig;
use crate::error::{Error, Kind};
use crate::pool::{Conn, Pool};
use crate::schema::{self, Statements, scan_index};
use prism_plugin_core::rotation::{AuthHook, Drain};

/// Longest a health `SELECT 1` may take: core gives the whole health check 1.5 s.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// `application_name` of every session, so DBAs see who holds connections.
const APPLICATION_NAME: &str = "prism-postgres";
/// How often a server (14+) checks that the client of a running statement is
/// still there; this is what turns a closed connection into a cancelled query.
const CLIENT_CHECK_INTERVAL: &str = "1000";

/// When a call must be answered by (from the client's `grpc-timeout`).
pub(crate) type Deadline = Option<tokio::time::Instant>;

/// One item of a batch write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item<'a> {
    /// The key (already validated).
    pub(crate) key: &'a str,
    /// The value (may be empty).
    pub(crate) value: &'a [u8],
    /// Seconds until expiry; 0 = never.
    pub(crate) ttl_seconds: i64,
}

/// One page of a prefix scan.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Keys in byte order with their values (empty when keys only).
    pub(crate) items: Vec<(String, Bytes)>,
    /// More keys follow the last one.
    pub(crate) has_more: bool,
}

/// Per-backend request limits (from config; replaced with the backend).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Key and value size limits.
    pub(crate) limits: Limits,
    /// Largest scan page.
    pub(crate) scan_max_limit: u32,
}

/// One configured database and the pool connected to it.
pub(crate) struct Backend {
    pool: Pool,
    /// The health probe's own session, outside the pool: a probe queued
    /// behind busy data calls would time out and report a healthy but busy
    /// server as down.
    probe: tokio::sync::Mutex<Option<PgConnection>>,
    /// `host:port/database`, for messages (never with credentials).
    target: String,
    degraded_latency: Duration,
    sql: Statements,
    settings: Settings,
    link: Link,
    /// Reference point of `answered`.
    epoch: Instant,
    /// When the server last answered a data statement (ms since `epoch`):
    /// tells a slow server from a stalled one when a health probe times out.
    answered: AtomicU64,
    ctx: Context,
    /// Set for Vault credentials: reports a rejected login or session.
    auth: Option<AuthHook>,
    /// Point Gets and Sets waiting for a connection (see coalesce.rs).
    gets: Queue<GetJob, Option<Bytes>>,
    sets: Queue<SetJob, ()>,
}

/// A point Get: namespace and key.
pub(crate) struct GetJob {
    ns: String,
    key: String,
}

/// A point Set.
pub(crate) struct SetJob {
    ns: String,
    key: String,
    value: Bytes,
    ttl_seconds: i64,
}

/// A kind of point call that can share one statement with others of its
/// kind (see coalesce.rs).
trait Coalesce: Sized + Send {
    /// A call's result.
    type Out: Send;

    /// The backend's queue of these calls.
    fn queue(backend: &Backend) -> &Queue<Self, Self::Out>;

    /// Runs `jobs` as one statement (one job: the point statement), one
    /// result per job, in order.
    fn run(
        backend: &Backend,
        conn: &mut PgConnection,
        jobs: &[&Self],
    ) -> impl Future<Output = Result<Vec<Self::Out>, sqlx::Error>> + Send;
}

impl Coalesce for GetJob {
    type Out = Option<Bytes>;

    fn queue(backend: &Backend) -> &Queue<Self, Self::Out> {
        &backend.gets
    }

    async fn run(
        backend: &Backend,
        conn: &mut PgConnection,
        jobs: &[&Self],
    ) -> Result<Vec<Self::Out>, sqlx::Error> {
        if let [job] = jobs {
            let query = sqlx::query_scalar::<_, Vec<u8>>(&backend.sql.get)
                .bind(&job.ns)
                .bind(&job.key);
            return Ok(vec![query.fetch_optional(conn).await?.map(Bytes::from)]);
        }
        let namespaces: Vec<&str> = jobs.iter().map(|j| j.ns.as_str()).collect();
        let keys: Vec<&str> = jobs.iter().map(|j| j.key.as_str()).collect();
        let query = sqlx::query_as::<_, (i64, Vec<u8>)>(&backend.sql.coalesced_get)
            .bind(namespaces)
            .bind(keys);
        let mut found = vec![None; jobs.len()];
        for (ordinal, value) in query.fetch_all(conn).await? {
            if let Some(slot) = ordinal_slot(&mut found, ordinal) {
                *slot = Some(Bytes::from(value));
            }
        }
        Ok(found)
    }
}

impl Coalesce for SetJob {
    type Out = ();

    fn queue(backend: &Backend) -> &Queue<Self, Self::Out> {
        &backend.sets
    }

    async fn run(
        backend: &Backend,
        conn: &mut PgConnection,
        jobs: &[&Self],
    ) -> Result<Vec<Self::Out>, sqlx::Error> {
        if let [job] = jobs {
            let query = sqlx::query(&backend.sql.set)
                .bind(&job.ns)
                .bind(&job.key)
                .bind(job.value.as_ref())
                .bind(job.ttl_seconds);
            return query.execute(conn).await.map(|_| vec![()]);
        }
        // One statement may not update a row twice: the last Set of a key
        // wins, as if the calls had run in queue order. Sorted, so that two
        // batches lock rows in the same order and cannot deadlock.
        let mut last = std::collections::BTreeMap::new();
        for job in jobs {
            last.insert((job.ns.as_str(), job.key.as_str()), *job);
        }
        let mut namespaces = Vec::with_capacity(last.len());
        let mut keys = Vec::with_capacity(last.len());
        let mut values = Vec::with_capacity(last.len());
        let mut ttls = Vec::with_capacity(last.len());
        for ((ns, key), job) in last {
            namespaces.push(ns);
            keys.push(key);
            values.push(job.value.as_ref());
            ttls.push(job.ttl_seconds);
        }
        let query = sqlx::query(&backend.sql.coalesced_set)
            .bind(namespaces)
            .bind(keys)
            .bind(values)
            .bind(ttls);
        query.execute(conn).await.map(|_| vec![(); jobs.len()])
    }
}

/// Vault-minted credentials replacing the ones in `database_url`.
pub(crate) struct Login<'a> {
    /// User name.
    pub(crate) username: &'a str,
    /// Password (never logged).
    pub(crate) password: &'a str,
    /// Raised when the server rejects them.
    pub(crate) hook: AuthHook,
}

/// Whether the server is reachable, as last seen (see the module docs).
struct Link {
    up: watch::Sender<bool>,
    /// Why it is down (free of secrets), for error messages.
    reason: Mutex<String>,
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
    /// `connect_timeout`, creates the table if needed, and builds the pool.
    /// `Error::Config` for a URL the driver rejects or a foreign table;
    /// anything else is retriable. With a `login` (Vault), its user and
    /// password replace the URL's; host, port, database and options stay.
    pub(crate) async fn connect(
        config: &PostgresConfig,
        ctx: &Context,
        login: Option<Login<'_>>,
    ) -> Result<Self, Error> {
        let mut options =
            PgConnectOptions::from_str(&config.database_url).map_err(|e| Error::Config {
                key: "database_url",
                problem: format!("not a usable PostgreSQL URL: {e}"),
            })?;
        let auth = match login {
            Some(login) => {
                options = options.username(login.username).password(login.password);
                Some(login.hook)
            }
            None => None,
        };
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
        let mut conn = match probe.await {
            Ok(Ok(conn)) => conn,
            Ok(Err(source)) => return Err(Error::Postgres { target, source }),
            Err(_) => {
                return Err(Error::Timeout {
                    target,
                    what: "connect",
                    timeout: config.connect_timeout,
                });
            }
        };
        if conn.server_version_num().unwrap_or(0) >= 140_000 {
            // Unknown before 14, where it would make every connection fail.
            options =
                options.options([("client_connection_check_interval", CLIENT_CHECK_INTERVAL)]);
        }
        let encoding: Result<String, _> =
            sqlx::query_scalar("SELECT current_setting('server_encoding')")
                .fetch_one(&mut conn)
                .await;
        match encoding {
            Ok(encoding) if encoding != "UTF8" => tracing::warn!(
                target = %target,
                encoding = %encoding,
                "database encoding is not UTF8; keys outside it will be rejected"
            ),
            Ok(_) => {}
            Err(source) => return Err(Error::Postgres { target, source }),
        }
        let created = tokio::time::timeout(
            config.connect_timeout.max(config.statement_timeout),
            schema::ensure(&mut conn, &config.schema, &config.table, &target),
        )
        .await;
        // Best effort: the session ends when the socket closes anyway.
        let _ = conn.close().await;
        match created {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::Timeout {
                    target,
                    what: "creating the table",
                    timeout: config.connect_timeout.max(config.statement_timeout),
                });
            }
        }

        // Our own pool, not sqlx's: one round trip per call (see pool.rs).
        let pool = Pool::new(
            options,
            config.pool_size,
            config.min_connections,
            config.acquire_timeout,
        );
        tracing::info!(
            target = %target,
            table = %format!("{}.{}", config.schema, config.table),
            pool_size = config.pool_size,
            "connected to postgres"
        );
        Ok(Backend {
            pool,
            probe: tokio::sync::Mutex::new(None),
            target,
            degraded_latency: config.degraded_latency,
            sql: Statements::new(&config.schema, &config.table),
            settings: Settings {
                limits: Limits {
                    max_key_bytes: config.max_key_bytes,
                    max_value_bytes: config.max_value_bytes,
                },
                scan_max_limit: config.scan_max_limit,
            },
            link: Link {
                up: watch::Sender::new(true),
                reason: Mutex::new(String::new()),
            },
            epoch: Instant::now(),
            answered: AtomicU64::new(0),
            ctx: ctx.clone(),
            auth,
            gets: Queue::default(),
            sets: Queue::default(),
        })
    }

    /// Opens up to `n` pooled connections at once (so a pool swapped in by a
    /// rotation does not make the first requests wait for logins) and runs
    /// `SELECT 1` on each: the check that the credentials really work.
    pub(crate) async fn warm(&self, n: u32) -> Result<(), Error> {
        let n = n.clamp(1, self.pool.max());
        let mut conns = Vec::with_capacity(n as usize);
        for _ in 0..n {
            conns.push(async {
                let mut conn = self.pool.acquire().await.map_err(|e| self.fail(e))?;
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok::<_, Error>(conn)
            });
        }
        let mut held = Vec::with_capacity(conns.len());
        let mut failed = None;
        for conn in join_all(conns).await {
            match conn {
                Ok(conn) => held.push(conn),
                Err(err) => failed = Some(err),
            }
        }
        for conn in held {
            self.pool.release(conn);
        }
        failed.map_or(Ok(()), Err)
    }

    /// `host:port/database` of the server.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Request limits of this backend's configuration.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Round trips slower than this make health DEGRADED.
    pub(crate) fn degraded_latency(&self) -> Duration {
        self.degraded_latency
    }

    /// The pool's connections right now.
    pub(crate) fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max: self.pool.max(),
        }
    }

    /// True while the server is believed reachable.
    pub(crate) fn is_up(&self) -> bool {
        *self.link.up.borrow()
    }

    /// Health probe: `SELECT 1` on the probe's own session (reconnected
    /// when lost, so it also proves a login works), bounded well inside
    /// core's limit. Its verdict sets the link state data calls fail fast on.
    ///
    /// A probe that gets no answer in time is not proof of an outage: under
    /// load the server (or this process) may just be slow. If data
    /// statements were answered while the probe waited, the server is up but
    /// slow (the probe reports the wait as latency, i.e. DEGRADED); if
    /// nothing was, it is stalled or gone: down. (A TCP connect is no such
    /// proof: the kernel of a frozen server still completes handshakes.)
    pub(crate) async fn ping(&self) -> Result<Duration, Error> {
        self.pool.maintain();
        let started = Instant::now();
        let mut probe = self.probe.lock().await;
        let outcome = tokio::time::timeout(HEALTH_TIMEOUT, async {
            if probe.is_none() {
                *probe = Some(PgConnection::connect_with(self.pool.connect_options()).await?);
            }
            match probe.as_mut() {
                Some(conn) => sqlx::query("SELECT 1").execute(conn).await.map(drop),
                None => Ok(()),
            }
        })
        .await;
        let result = match outcome {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(source)) => {
                // The session's state is unknown after an error: start afresh.
                *probe = None;
                let err = Error::Postgres {
                    target: self.target.clone(),
                    source,
                };
                if err.kind() == Kind::Connection {
                    // The pool's idle sessions likely died the same way.
                    self.pool.flush();
                }
                Err(err)
            }
            Err(_) => {
                // The statement was cut off mid-way: this session is unusable.
                *probe = None;
                let timeout = Error::Timeout {
                    target: self.target.clone(),
                    what: "the health probe",
                    timeout: HEALTH_TIMEOUT,
                };
                if self.answered_since(started) {
                    tracing::debug!(target = %self.target, "health probe slow, data statements still answered");
                    Ok(started.elapsed())
                } else {
                    Err(timeout)
                }
            }
        };
        drop(probe);
        match &result {
            Ok(_) => self.mark_up(),
            Err(err) => {
                self.mark_down(err);
                if err.kind() == Kind::Auth
                    && let Some(auth) = &self.auth
                {
                    auth.raise();
                }
            }
        }
        result
    }

    /// Records that the server answered a statement (any answer, errors
    /// included: the server is there).
    fn note_answer(&self) {
        let at = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.answered.fetch_max(at, Ordering::Relaxed);
    }

    /// Whether the server answered a data statement at or after `since`.
    fn answered_since(&self, since: Instant) -> bool {
        let since = u64::try_from(since.duration_since(self.epoch).as_millis()).unwrap_or(0);
        self.answered.load(Ordering::Relaxed) >= since
    }

    /// Closes the pool: waits for borrowed connections to come back, closes idle ones.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
        if let Some(probe) = self.probe.lock().await.take() {
            let _ = probe.close().await;
        }
    }

    /// Stores `value` under `key` (insert or overwrite) in one upsert,
    /// shared with concurrent Sets when all connections are busy.
    pub(crate) async fn set(
        &self,
        ns: String,
        key: String,
        value: Bytes,
        ttl_seconds: i64,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let job = SetJob {
            ns,
            key,
            value,
            ttl_seconds,
        };
        self.coalesced(job, deadline).await
    }

    /// The live value of `key`, if any; read together with concurrent Gets
    /// when all connections are busy.
    pub(crate) async fn get(
        &self,
        ns: String,
        key: String,
        deadline: Deadline,
    ) -> Result<Option<Bytes>, Error> {
        self.coalesced(GetJob { ns, key }, deadline).await
    }

    /// Runs `job` through `queue` (see coalesce.rs): joins the queue, then
    /// either is answered by another call's statement, or gets a connection
    /// and runs every queued job (its own among them, usually) with `run`,
    /// which must return one result per job, in order.
    async fn coalesced<J: Coalesce>(&self, job: J, deadline: Deadline) -> Result<J::Out, Error> {
        // A free connection: run alone, awaited to the end. Only calls that
        // find every connection busy queue and race their reply against a
        // connection; if they raced while one was still being opened, an
        // answered call would drop it half-open (measured: thousands of
        // abandoned PostgreSQL logins per second, the pool stuck below size).
        if let Some(conn) = self.acquire_free(deadline).await {
            return self.alone_on(conn?, job, deadline).await;
        }
        let queue = J::queue(self);
        let Ticket { id, mut reply } = queue.push(job, deadline);
        loop {
            if !queue.contains(id) {
                // Another call took it into its statement.
                break;
            }
            tokio::select! {
                biased;
                answer = &mut reply => return self.answered(answer, deadline).await,
                conn = self.acquire(deadline) => match conn {
                    Err(err) => {
                        queue.remove(id);
                        return Err(err);
                    }
                    Ok(conn) => {
                        if let Some(mine) = self.run_queue(queue, id, deadline, conn).await {
                            return mine;
                        }
                    }
                },
            }
        }
        match prism_plugin_core::within(deadline, reply).await {
            Some(answer) => self.answered(answer, deadline).await,
            None => Err(Error::Deadline {
                target: self.target.clone(),
                what: "the statement",
            }),
        }
    }

    /// A queued call's outcome: its result, or its job handed back, to run alone.
    async fn answered<J: Coalesce>(
        &self,
        answer: Result<coalesce::Reply<J, J::Out>, tokio::sync::oneshot::error::RecvError>,
        deadline: Deadline,
    ) -> Result<J::Out, Error> {
        match answer {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(job)) => self.alone(job, deadline).await,
            // Only if the queue itself went away, which the caller's Arc prevents.
            Err(_) => Err(self.unreachable()),
        }
    }

    /// Runs one job on a connection of its own.
    async fn alone<J: Coalesce>(&self, job: J, deadline: Deadline) -> Result<J::Out, Error> {
        let conn = self.acquire(deadline).await?;
        self.alone_on(conn, job, deadline).await
    }

    /// Runs one job on `conn`.
    async fn alone_on<J: Coalesce>(
        &self,
        mut conn: Conn<'_>,
        job: J,
        deadline: Deadline,
    ) -> Result<J::Out, Error> {
        let done = prism_plugin_core::within(deadline, J::run(self, &mut conn, &[&job])).await;
        let mut results = self.settle(conn, done)?;
        results
            .pop()
            .ok_or_else(|| self.fail(sqlx::Error::RowNotFound))
    }

    /// Runs the queue's jobs in batches on `conn` until call `id` is answered
    /// (`Some`), or `None`: another call's statement has it, or a failed batch
    /// cost the connection while it was still queued.
    async fn run_queue<J: Coalesce>(
        &self,
        queue: &Queue<J, J::Out>,
        id: u64,
        deadline: Deadline,
        mut conn: Conn<'_>,
    ) -> Option<Result<J::Out, Error>> {
        loop {
            let batch = queue.take();
            if batch.is_empty() {
                self.pool.release(conn);
                return None;
            }
            let jobs: Vec<&J> = batch.iter().map(Waiting::job).collect();
            let bound = coalesce::latest(&batch);
            let done = prism_plugin_core::within(bound, J::run(self, &mut conn, &jobs)).await;
            drop(jobs);
            match done {
                Some(Ok(results)) if results.len() == batch.len() => {
                    self.note_answer();
                    let mut mine = None;
                    for (call, result) in batch.into_iter().zip(results) {
                        if call.id() == id {
                            call.into_job();
                            mine = Some(result);
                        } else {
                            call.answer(result);
                        }
                    }
                    if let Some(result) = mine {
                        self.pool.release(conn);
                        return Some(Ok(result));
                    }
                    if !queue.contains(id) {
                        // Another call's statement has ours: stop serving the
                        // queue, or a busy plugin would keep this call waiting.
                        self.pool.release(conn);
                        return None;
                    }
                }
                done => {
                    let alone = batch.len() == 1;
                    // (A result count that does not match the batch is a bug in
                    // `run`; treated as a failed statement.)
                    let done = done.map(|d| d.and_then(|_| Err(sqlx::Error::RowNotFound)));
                    let Err(err) = self.settle::<()>(conn, done) else {
                        return None;
                    };
                    // Everyone in a failed batch runs alone (dropping `batch`
                    // hands the others their jobs back): one bad item must not
                    // fail the rest.
                    let mut mine = None;
                    for call in batch {
                        if call.id() == id {
                            mine = Some(call.into_job());
                        }
                    }
                    return match mine {
                        Some(_) if alone => Some(Err(err)),
                        Some(job) => Some(self.alone(job, deadline).await),
                        // Still queued: back to waiting for an answer or a connection.
                        None => None,
                    };
                }
            }
        }
    }

    /// Whether `key` holds a live value.
    pub(crate) async fn exists(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<bool, Error> {
        let mut conn = self.acquire(deadline).await?;
        let query = sqlx::query(&self.sql.exists).bind(ns).bind(key);
        let done = prism_plugin_core::within(deadline, query.fetch_optional(&mut *conn)).await;
        Ok(self.settle(conn, done)?.is_some())
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub(crate) async fn delete(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let mut conn = self.acquire(deadline).await?;
        let query = sqlx::query(&self.sql.delete).bind(ns).bind(key);
        let done = prism_plugin_core::within(deadline, query.execute(&mut *conn)).await;
        self.settle(conn, done).map(drop)
    }

    /// Upserts every item in one statement. A key given twice keeps its last
    /// value (one statement may not update a row twice, so earlier
    /// duplicates are dropped here).
    pub(crate) async fn batch_set(
        &self,
        ns: &str,
        items: &[Item<'_>],
        deadline: Deadline,
    ) -> Result<(), Error> {
        if items.is_empty() {
            return Ok(());
        }
        let mut seen = HashSet::with_capacity(items.len());
        let mut keys = Vec::with_capacity(items.len());
        let mut values = Vec::with_capacity(items.len());
        let mut ttls = Vec::with_capacity(items.len());
        for item in items.iter().rev() {
            if seen.insert(item.key) {
                keys.push(item.key);
                values.push(item.value);
                ttls.push(item.ttl_seconds);
            }
        }
        let mut conn = self.acquire(deadline).await?;
        let query = sqlx::query(&self.sql.batch_set)
            .bind(ns)
            .bind(keys)
            .bind(values)
            .bind(ttls);
        let done = prism_plugin_core::within(deadline, query.execute(&mut *conn)).await;
        self.settle(conn, done).map(drop)
    }

    /// The live values of `keys`, in the order asked (duplicates included),
    /// in one statement.
    pub(crate) async fn batch_get(
        &self,
        ns: &str,
        keys: &[String],
        deadline: Deadline,
    ) -> Result<Vec<Option<Bytes>>, Error> {
        let mut found = vec![None; keys.len()];
        if keys.is_empty() {
            return Ok(found);
        }
        let mut conn = self.acquire(deadline).await?;
        let query = sqlx::query_as::<_, (i64, Vec<u8>)>(&self.sql.batch_get)
            .bind(ns)
            .bind(keys);
        let done = prism_plugin_core::within(deadline, query.fetch_all(&mut *conn)).await;
        for (ordinal, value) in self.settle(conn, done)? {
            if let Some(slot) = ordinal_slot(&mut found, ordinal) {
                *slot = Some(Bytes::from(value));
            }
        }
        Ok(found)
    }

    /// Deletes every key in one statement; missing keys are fine.
    pub(crate) async fn batch_delete(
        &self,
        ns: &str,
        keys: &[String],
        deadline: Deadline,
    ) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.acquire(deadline).await?;
        let query = sqlx::query(&self.sql.batch_delete).bind(ns).bind(keys);
        let done = prism_plugin_core::within(deadline, query.execute(&mut *conn)).await;
        self.settle(conn, done).map(drop)
    }

    /// Sets a live key to expire `ttl_seconds` from now (0 = remove it now);
    /// returns whether a live key existed.
    pub(crate) async fn expire(
        &self,
        ns: &str,
        key: &str,
        ttl_seconds: i64,
        deadline: Deadline,
    ) -> Result<bool, Error> {
        let mut conn = self.acquire(deadline).await?;
        if ttl_seconds == 0 {
            // Expiring now is deleting: the row would be invisible anyway, and
            // this spares the reaper. An already-expired row is removed but
            // did not "exist".
            let query = sqlx::query_scalar::<_, bool>(&self.sql.expire_now)
                .bind(ns)
                .bind(key);
            let done = prism_plugin_core::within(deadline, query.fetch_optional(&mut *conn)).await;
            return Ok(self.settle(conn, done)?.unwrap_or(false));
        }
        let query = sqlx::query(&self.sql.expire)
            .bind(ns)
            .bind(key)
            .bind(ttl_seconds);
        let done = prism_plugin_core::within(deadline, query.execute(&mut *conn)).await;
        Ok(self.settle(conn, done)?.rows_affected() > 0)
    }

    /// Remaining seconds to live (rounded up): -1 = no expiry, -2 = no such key.
    pub(crate) async fn ttl(&self, ns: &str, key: &str, deadline: Deadline) -> Result<i64, Error> {
        let mut conn = self.acquire(deadline).await?;
        let query = sqlx::query_scalar::<_, i64>(&self.sql.get_ttl)
            .bind(ns)
            .bind(key);
        let done = prism_plugin_core::within(deadline, query.fetch_optional(&mut *conn)).await;
        Ok(self.settle(conn, done)?.unwrap_or(-2))
    }

    /// Removes the expiry of a live key; returns whether it had one.
    pub(crate) async fn persist(
        &self,
        ns: &str,
        key: &str,
        deadline: Deadline,
    ) -> Result<bool, Error> {
        let mut conn = self.acquire(deadline).await?;
        let query = sqlx::query(&self.sql.persist).bind(ns).bind(key);
        let done = prism_plugin_core::within(deadline, query.execute(&mut *conn)).await;
        Ok(self.settle(conn, done)?.rows_affected() > 0)
    }

    /// One page of live keys starting with `prefix`, in byte order, strictly
    /// after `after` when given (the cursor's key, which starts with `prefix`).
    pub(crate) async fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        keys_only: bool,
        deadline: Deadline,
    ) -> Result<Page, Error> {
        let upper = prefix_successor(prefix);
        let sql = &self.sql.scan[scan_index(keys_only, after.is_some(), upper.is_some())];
        let mut conn = self.acquire(deadline).await?;
        // Unnamed statement: planned with the actual bounds each time. A cached
        // generic plan cannot see how narrow the range is and may sort every
        // key under the prefix instead of walking the index.
        let query = sqlx::query(sql)
            .persistent(false)
            .bind(ns)
            .bind(after.unwrap_or(prefix))
            .bind(upper.as_deref().unwrap_or(""))
            // One more than asked, to learn whether more follow.
            .bind(i64::from(limit) + 1);
        let done = prism_plugin_core::within(deadline, query.fetch_all(&mut *conn)).await;
        let rows = self.settle(conn, done)?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let has_more = rows.len() > limit;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        for row in rows.into_iter().take(limit) {
            let key: String = row.try_get(0).map_err(|e| self.fail(e))?;
            let value = if keys_only {
                Bytes::new()
            } else {
                Bytes::from(row.try_get::<Vec<u8>, _>(1).map_err(|e| self.fail(e))?)
            };
            items.push((key, value));
        }
        Ok(Page { items, has_more })
    }

    /// Deletes up to `batch` expired rows (oldest first); returns how many.
    pub(crate) async fn reap(&self, batch: i64) -> Result<u64, Error> {
        let mut conn = self.pool.acquire().await.map_err(|e| self.fail(e))?;
        let done = sqlx::query(&self.sql.reap)
            .bind(batch)
            .execute(&mut *conn)
            .await;
        Ok(self.settle(conn, Some(done))?.rows_affected())
    }

    /// A connection if one is free now (see [`Pool::try_acquire`]); `None`
    /// when every one is in use.
    async fn acquire_free(&self, deadline: Deadline) -> Option<Result<Conn<'_>, Error>> {
        if !*self.link.up.borrow() {
            return Some(Err(self.unreachable()));
        }
        match prism_plugin_core::within(deadline, self.pool.try_acquire()).await {
            None => Some(Err(Error::Deadline {
                target: self.target.clone(),
                what: "waiting for a connection",
            })),
            Some(found) => found.map(|conn| conn.map_err(|e| self.fail(e))),
        }
    }

    /// A pooled connection, unless the server is known to be down, goes down
    /// while waiting, or the deadline passes first.
    async fn acquire(&self, deadline: Deadline) -> Result<Conn<'_>, Error> {
        let mut link = self.link.up.subscribe();
        if !*link.borrow_and_update() {
            return Err(self.unreachable());
        }
        let went_down = async {
            // The sender lives in `self`, so this only ends when the link drops.
            let _ = link.wait_for(|up| !*up).await;
        };
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            conn = self.pool.acquire() => conn.map_err(|e| self.fail(e)),
            () = went_down => Err(self.unreachable()),
            () = expired => Err(Error::Deadline {
                target: self.target.clone(),
                what: "waiting for a connection",
            }),
        }
    }

    /// Turns a bounded statement's outcome into the result and gives the
    /// connection back when the statement completed (an SQL error leaves the
    /// session usable). One cut off by the deadline or a lost connection is
    /// closed instead (closing it is what cancels the statement on the server).
    fn settle<T>(&self, conn: Conn<'_>, done: Option<Result<T, sqlx::Error>>) -> Result<T, Error> {
        match done {
            Some(Ok(value)) => {
                self.note_answer();
                self.pool.release(conn);
                Ok(value)
            }
            Some(Err(err)) => {
                let err = self.fail(err);
                if err.kind() == Kind::Connection {
                    drop(conn);
                } else {
                    self.note_answer();
                    self.pool.release(conn);
                }
                Err(err)
            }
            None => {
                drop(conn);
                Err(Error::Deadline {
                    target: self.target.clone(),
                    what: "the statement",
                })
            }
        }
    }

    /// Wraps a driver error; a lost connection marks the link down and asks
    /// core for an immediate health check.
    fn fail(&self, source: sqlx::Error) -> Error {
        let err = Error::Postgres {
            target: self.target.clone(),
            source,
        };
        match err.kind() {
            Kind::Connection => {
                // Idle sessions likely died the same way (server restart).
                self.pool.flush();
                self.mark_down(&err);
                self.ctx.health_changed();
            }
            Kind::Auth => {
                if let Some(auth) = &self.auth {
                    auth.raise();
                }
            }
            _ => {}
        }
        err
    }

    /// Connections open now (for sizing the warm-up of a successor pool).
    pub(crate) fn open_connections(&self) -> u32 {
        self.pool.size()
    }

    fn unreachable(&self) -> Error {
        let reason = self
            .link
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Error::Unreachable {
            target: self.target.clone(),
            reason,
        }
    }

    fn mark_down(&self, err: &Error) {
        let reason = match err {
            // The message already names the target; keep only the cause.
            Error::Postgres { source, .. } => source.to_string(),
            Error::Timeout { what, timeout, .. } => {
                format!("no answer to {what} within {} ms", timeout.as_millis())
            }
            other => other.to_string(),
        };
        *self.link.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        if self.set_link(false) {
            tracing::warn!(target = %self.target, error = %err, "lost postgres; failing calls fast until it answers");
        }
    }

    /// Sets the link state; true when it changed (only then are waiters woken).
    fn set_link(&self, up: bool) -> bool {
        self.link.up.send_if_modified(|state| {
            let changed = *state != up;
            *state = up;
            changed
        })
    }

    fn mark_up(&self) {
        if self.set_link(true) {
            tracing::info!(target = %self.target, "postgres answers again");
        }
    }
}

impl Drain for Backend {
    async fn close(&self) {
        Backend::close(self).await;
    }
}

/// The slot of a `WITH ORDINALITY` row (counted from 1); `None` for anything
/// else, which cannot come back.
fn ordinal_slot<T>(found: &mut [T], ordinal: i64) -> Option<&mut T> {
    usize::try_from(ordinal - 1)
        .ok()
        .and_then(|i| found.get_mut(i))
}

/// The smallest string greater than every string starting with `prefix`, in
/// byte (= code point) order: the last character that can be incremented is,
/// and everything after it dropped. `None` when there is none (empty prefix,
/// or only U+10FFFF characters): then the range has no upper bound.
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) {
            // Skip the surrogate gap, which no `char` can hold.
            0xD7FF => Some('\u{E000}'),
            code => char::from_u32(code + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_bounds_exactly_the_keys_with_the_prefix() {
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("abc").as_deref(), Some("abd"));
        assert_eq!(prefix_successor("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_successor("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        assert_eq!(prefix_successor("é").as_deref(), Some("ê"));
        // Byte order of UTF-8 is code point order, so the bound holds bytewise.
        let upper = prefix_successor("ab\u{7F}").unwrap_or_default();
        for key in ["ab\u{7F}", "ab\u{7F}\u{10FFFF}", "ab\u{7F}zzz"] {
            assert!(key.as_bytes() < upper.as_bytes(), "{key:?}");
        }
        assert!("ab\u{80}".as_bytes() >= upper.as_bytes());
    }
}
