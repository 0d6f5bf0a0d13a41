//! Connecting: the session options from the URL (and Vault's login), a
//! direct first session that reports the real reason a server refuses us,
//! creates the table and learns the server version, then the pool; and the
//! warm-up of a pool swapped in by a rotation.

use std::str::FromStr;

use futures::future::join_all;
use prism_plugin_core::kv::Limits;
use prism_plugin_core::{BadSetting, Context};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use super::{Backend, Login, Settings};
use crate::coalesce::Queues;
use crate::config::PostgresConfig;
use crate::error::Error;
use crate::pool::Pool;
use crate::schema::{self, Statements};

use super::link::Link;

/// `application_name` of every session, so DBAs see who holds connections.
const APPLICATION_NAME: &str = "prism-postgres";
/// How often a server (14+) checks that the client of a running statement is
/// still there; this is what turns a closed connection into a cancelled query.
const CLIENT_CHECK_INTERVAL: &str = "1000";

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
            PgConnectOptions::from_str(&config.database_url).map_err(|e| BadSetting {
                key: "database_url",
                problem: format!("not a usable PostgreSQL URL: {e}"),
            })?;
        let auth = match login {
            Some(Login::Password {
                username,
                password,
                hook,
            }) => {
                options = options.username(username).password(password);
                options = config.tls.apply(&config.database_url, options, None);
                Some(hook)
            }
            Some(Login::Certificate {
                username,
                pem,
                hook,
            }) => {
                // `cert` authentication: the user is the certificate's CN
                // unless the URL names one (a pg_ident.conf map).
                if !url_names_user(&config.database_url) {
                    options = options.username(username);
                }
                options = config.tls.apply(&config.database_url, options, Some(pem));
                Some(hook)
            }
            None => {
                options = config.tls.apply(&config.database_url, options, None);
                None
            }
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
        let options = first_session(config, options, &target).await?;

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
            link: Link::new(target.clone()),
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
            ctx: ctx.clone(),
            auth,
            queues: Queues::default(),
            key_locks: super::atomic::KeyLocks::default(),
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
}

/// A direct connection first: the pool retries refused connections until
/// `acquire_timeout` and then reports only "timed out", while this gives the
/// operator the real reason (refused, bad password, no database). It warns
/// about a non-UTF8 database, creates the table, and returns `options` with
/// what the server's version allows.
async fn first_session(
    config: &PostgresConfig,
    mut options: PgConnectOptions,
    target: &str,
) -> Result<PgConnectOptions, Error> {
    let target = target.to_string();
    let probe = tokio::time::timeout(config.connect_timeout, PgConnection::connect_with(&options));
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
        options = options.options([("client_connection_check_interval", CLIENT_CHECK_INTERVAL)]);
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
    Ok(options)
}

/// True when the URL has a user name (`postgres://user@host/…`).
fn url_names_user(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .split_once('@')
        .is_some_and(|(user, _)| !user.is_empty())
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
