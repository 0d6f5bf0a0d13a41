//! The `backend:` section of `prism-postgres`'s configuration, its defaults and
//! its pure validation (no I/O).

use std::time::Duration;

use prism_plugin_core::BackendConfig;
use prism_plugin_core::secret::SecretUrl;
use serde::{Deserialize, Serialize};

use crate::tls::PostgresTls;

/// PostgreSQL limits a `bytea` (and any field) to 1 GiB.
const POSTGRES_MAX_FIELD: usize = 1024 * 1024 * 1024;
/// PostgreSQL truncates identifiers to 63 bytes (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER: usize = 63;
/// Query parameters sqlx understands in a connection URL; anything else would be
/// ignored by the driver (and logged with its value), so it is rejected here.
const KNOWN_URL_PARAMS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// `backend:` for PostgreSQL. Every key has a default, so a partial file works.
/// `Debug` masks the password in `database_url` and drops its query.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Connection URL `postgres://user[:password]@host[:port]/database[?sslmode=...]`
    /// (`DATABASE_URL`). The password is never logged.
    pub(crate) database_url: SecretUrl,
    /// Most connections the pool opens (`POSTGRES_POOL_SIZE`).
    pub(crate) pool_size: u32,
    /// Connections the pool keeps open even when idle.
    pub(crate) min_connections: u32,
    /// Longest time one connection attempt may take.
    #[serde(with = "humantime_serde")]
    pub(crate) connect_timeout: Duration,
    /// Longest time a request waits for a free pooled connection. While the
    /// server is known to be down calls fail at once instead (see README).
    #[serde(with = "humantime_serde")]
    pub(crate) acquire_timeout: Duration,
    /// Server-side `statement_timeout` for every session; `0s` disables it.
    #[serde(with = "humantime_serde")]
    pub(crate) statement_timeout: Duration,
    /// Table holding the key-value items (created at initialize if missing;
    /// at most 56 bytes, as index names append a suffix).
    pub(crate) table: String,
    /// Schema the table lives in (created if missing).
    pub(crate) schema: String,
    /// Largest key accepted, in bytes.
    pub(crate) max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub(crate) max_value_bytes: usize,
    /// How often expired items are deleted (in batches of 1000). Expired
    /// items are invisible to reads at once, whatever this is.
    #[serde(with = "humantime_serde")]
    pub(crate) reaper_interval: Duration,
    /// Largest page a Scan may ask for; bigger limits are clamped to it.
    pub(crate) scan_max_limit: u32,
    /// Health is DEGRADED when a `SELECT 1` round trip takes longer than this.
    #[serde(with = "humantime_serde")]
    pub(crate) degraded_latency: Duration,
    /// TLS files: the CA verifying the server, and a client certificate and
    /// key for `cert` authentication (instead of the URL's `sslrootcert`,
    /// `sslcert`, `sslkey`).
    pub(crate) tls: PostgresTls,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            database_url: SecretUrl::from("postgres://prism@localhost:5432/prism"),
            pool_size: 10,
            min_connections: 0,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            table: "prism_kv".to_string(),
            schema: "public".to_string(),
            max_key_bytes: 4096,
            max_value_bytes: 16 * 1024 * 1024,
            reaper_interval: Duration::from_secs(30),
            scan_max_limit: 1000,
            degraded_latency: Duration::from_millis(100),
            tls: PostgresTls::default(),
        }
    }
}

impl BackendConfig for PostgresConfig {
    /// Every problem with this config, each starting with its key. Pure: no I/O.
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(problem) = check_url(&self.database_url) {
            problems.push(format!("`backend.database_url`: {problem}"));
        }
        if self.pool_size == 0 {
            problems.push("`backend.pool_size`: must be at least 1".to_string());
        }
        if self.min_connections > self.pool_size {
            problems.push(format!(
                "`backend.min_connections`: {} is more than `backend.pool_size` ({})",
                self.min_connections, self.pool_size
            ));
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("acquire_timeout", self.acquire_timeout),
            ("reaper_interval", self.reaper_interval),
            ("degraded_latency", self.degraded_latency),
        ] {
            if value.is_zero() {
                problems.push(format!("`backend.{key}`: must be greater than 0"));
            }
        }
        if !self.statement_timeout.is_zero() && self.statement_timeout < Duration::from_millis(1) {
            problems
                .push("`backend.statement_timeout`: must be 0 (off) or at least 1ms".to_string());
        }
        for (key, value) in [("table", &self.table), ("schema", &self.schema)] {
            if let Err(problem) = check_identifier(value) {
                problems.push(format!("`backend.{key}`: {problem}"));
            }
        }
        // Index names are the table name plus a suffix; PostgreSQL would
        // silently truncate a longer one, and two tables could then collide.
        let longest_table = MAX_IDENTIFIER - crate::schema::INDEX_SUFFIX_MAX;
        if check_identifier(&self.table).is_ok() && self.table.len() > longest_table {
            problems.push(format!(
                "`backend.table`: {:?} is longer than {longest_table} bytes \
                 (index names append up to {} characters)",
                self.table,
                crate::schema::INDEX_SUFFIX_MAX
            ));
        }
        for (key, value) in [
            ("max_key_bytes", self.max_key_bytes),
            ("max_value_bytes", self.max_value_bytes),
        ] {
            if value == 0 {
                problems.push(format!("`backend.{key}`: must be at least 1"));
            } else if value > POSTGRES_MAX_FIELD {
                problems.push(format!(
                    "`backend.{key}`: {value} exceeds PostgreSQL's 1 GiB field limit"
                ));
            }
        }
        if self.scan_max_limit == 0 {
            problems.push("`backend.scan_max_limit`: must be at least 1".to_string());
        }
        problems.extend(self.tls.validate(&self.database_url));
        problems
    }
}

/// Shallow, pure URL check (scheme and known parameters); the driver parses it
/// fully in `initialize` (a missing host defaults to `$PGHOST` or localhost, as
/// libpq does). Messages never include the URL itself.
fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected `postgres://user[:password]@host[:port]/database`".to_string());
    };
    if scheme != "postgres" && scheme != "postgresql" {
        return Err(format!(
            "unsupported scheme {scheme:?}; use `postgres://` or `postgresql://`"
        ));
    }
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let known =
            KNOWN_URL_PARAMS.contains(&key) || (key.starts_with("options[") && key.ends_with(']'));
        if !known {
            return Err(format!(
                "unknown connection parameter {key:?} (expected one of: {})",
                KNOWN_URL_PARAMS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Table and schema names are put into SQL (quoted), so only plain identifiers.
fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !starts_well || !rest_ok {
        Err(format!(
            "{name:?} must be a lowercase identifier: a letter or `_`, then letters, digits or `_`"
        ))
    } else if name.len() > MAX_IDENTIFIER {
        Err(format!("{name:?} is longer than {MAX_IDENTIFIER} bytes"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL_EXAMPLE: &str = r#"
database_url: postgres://app:secret@db.internal:5433/kv?sslmode=verify-full
pool_size: 20
min_connections: 2
connect_timeout: 3s
acquire_timeout: 2s
statement_timeout: 10s
table: items
schema: prism
max_key_bytes: 1024
max_value_bytes: 1048576
reaper_interval: 1m
scan_max_limit: 500
degraded_latency: 50ms
tls:
  ca_file: /tls/ca.pem
  cert_file: /tls/client.pem
  key_file: /tls/client.key
"#;

    #[test]
    fn parses_a_full_example() {
        let config: PostgresConfig = serde_yaml::from_str(FULL_EXAMPLE).expect("parses");
        assert_eq!(config.pool_size, 20);
        assert_eq!(config.min_connections, 2);
        assert_eq!(config.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.statement_timeout, Duration::from_secs(10));
        assert_eq!(config.reaper_interval, Duration::from_secs(60));
        assert_eq!(config.degraded_latency, Duration::from_millis(50));
        assert_eq!(config.table, "items");
        assert_eq!(config.schema, "prism");
        assert_eq!(config.scan_max_limit, 500);
        assert_eq!(config.tls.key_file, Some("/tls/client.key".into()));
        assert!(config.validate().is_empty(), "{:?}", config.validate());
    }

    #[test]
    fn partial_yaml_gets_defaults() {
        let config: PostgresConfig = serde_yaml::from_str("pool_size: 3").expect("parses");
        assert_eq!(config.pool_size, 3);
        assert_eq!(config.database_url, "postgres://prism@localhost:5432/prism");
        assert_eq!(config.table, "prism_kv");
        assert_eq!(config.max_value_bytes, 16 * 1024 * 1024);
        assert!(config.validate().is_empty());
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_yaml::from_str::<PostgresConfig>("pool_sise: 3").expect_err("rejected");
        assert!(err.to_string().contains("pool_sise"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config = PostgresConfig {
            database_url: "mysql://x".into(),
            pool_size: 0,
            min_connections: 1,
            acquire_timeout: Duration::ZERO,
            table: "Robert'); DROP TABLE x;--".into(),
            max_value_bytes: 0,
            scan_max_limit: 0,
            ..PostgresConfig::default()
        };
        let problems = config.validate();
        let keys = [
            "`backend.database_url`",
            "`backend.pool_size`",
            "`backend.min_connections`",
            "`backend.acquire_timeout`",
            "`backend.table`",
            "`backend.max_value_bytes`",
            "`backend.scan_max_limit`",
        ];
        assert_eq!(problems.len(), keys.len(), "{problems:?}");
        for (problem, key) in problems.iter().zip(keys) {
            assert!(problem.starts_with(key), "{problem}");
        }
    }

    #[test]
    fn url_checks() {
        assert!(check_url("postgresql://u:p@h/db?sslmode=require&options[search_path]=x").is_ok());
        assert!(check_url("postgres:///db?host=/run/postgresql").is_ok());
        assert!(check_url("postgres:///db").is_ok(), "host from $PGHOST");
        assert!(check_url("localhost:5432").is_err());
        let err = check_url("postgres://h/db?passwd=hunter2").expect_err("unknown param");
        assert!(err.contains("passwd") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn secrets_never_reach_debug_output_or_errors() {
        let config = PostgresConfig {
            database_url: "postgres://app:url-secret@db/kv?password=query-secret".into(),
            ..PostgresConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("url-secret") && !debug.contains("query-secret"),
            "{debug}"
        );
    }
}
