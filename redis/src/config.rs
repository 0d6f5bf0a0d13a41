//! The `backend:` section of `prism-redis`'s configuration, its defaults and its
//! pure validation (no I/O), plus the translation of `address` and credentials
//! into the Redis client's connection info.

use std::time::Duration;

use prism_plugin_core::BackendConfig;
use prism_plugin_core::secret::{SecretString, SecretUrl};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};
use serde::{Deserialize, Serialize};

/// Port used when `address` names only a host.
const DEFAULT_REDIS_PORT: u16 = 6379;
/// Redis refuses strings above 512 MiB (`proto-max-bulk-len`).
const REDIS_MAX_BULK: usize = 512 * 1024 * 1024;

/// `backend:` for Redis. Every key has a default, so a partial file works.
/// `Debug` shows neither password (its own key or inside the URL).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Server as `host:port`, `[v6addr]:port`, or a `redis://[user[:password]@]host[:port][/db]`
    /// URL (`REDIS_ADDRESS`); `rediss://` connects with TLS (rustls). Ignored
    /// when `cluster_nodes` is set.
    pub(crate) address: SecretUrl,
    /// ACL user name; empty means the default user or the one in the URL (`REDIS_USERNAME`).
    pub(crate) username: String,
    /// Password; empty means none or the one in the URL (`REDIS_PASSWORD`). Never logged.
    pub(crate) password: SecretString,
    /// Logical database number (`SELECT`); a database in the URL path is used when this is 0.
    pub(crate) database: u32,
    /// Prefix put in front of every key the plugin writes, isolating it from other
    /// users: keys are stored as `<key_prefix><namespace>:<key>`.
    pub(crate) key_prefix: String,
    /// Redis Cluster seed nodes (`host:port`, `redis://host:port` or
    /// `rediss://host:port`); when set the plugin runs in cluster mode and
    /// `address` is not used. Credentials come from `username`/`password`.
    pub(crate) cluster_nodes: Vec<String>,
    /// PEM file with the CA certificate(s) that sign the server's TLS
    /// certificate (for `rediss://`); empty = the system's trusted roots.
    pub(crate) tls_ca_file: String,
    /// Multiplexed connections to a standalone server, used in turn (each
    /// carries any number of concurrent commands; more than one spreads the
    /// reading and writing over the runtime's threads). Not used in cluster mode.
    pub(crate) connections: usize,
    /// Longest time one connection attempt may take.
    #[serde(with = "humantime_serde")]
    pub(crate) connection_timeout: Duration,
    /// Longest time to wait for the reply to one command.
    #[serde(with = "humantime_serde")]
    pub(crate) response_timeout: Duration,
    /// Largest value accepted, in bytes.
    pub(crate) max_value_bytes: usize,
    /// Largest key accepted (before the prefix), in bytes.
    pub(crate) max_key_bytes: usize,
    /// Health is DEGRADED when a `PING` round trip takes longer than this.
    #[serde(with = "humantime_serde")]
    pub(crate) degraded_latency: Duration,
}

/// See `connections`; chosen by measurement (BENCHMARKS.md).
const DEFAULT_CONNECTIONS: usize = 1;
/// More would only cost file descriptors: one connection already pipelines.
const MAX_CONNECTIONS: usize = 64;

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            address: SecretUrl::from("127.0.0.1:6379"),
            username: String::new(),
            password: SecretString::default(),
            database: 0,
            key_prefix: "prism:".to_string(),
            cluster_nodes: Vec::new(),
            tls_ca_file: String::new(),
            connections: DEFAULT_CONNECTIONS,
            connection_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(2),
            max_value_bytes: 16 * 1024 * 1024,
            max_key_bytes: 4096,
            degraded_latency: Duration::from_millis(100),
        }
    }
}

impl BackendConfig for RedisConfig {
    /// Every problem with this config, each starting with its key. Pure: no I/O.
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cluster_nodes.is_empty() {
            if let Err((key, problem)) = self.connection_info() {
                problems.push(format!("`backend.{key}`: {problem}"));
            }
        } else {
            if let Err(problem) = self.cluster_node_infos() {
                problems.push(problem);
            }
            if self.database != 0 {
                problems.push(
                    "`backend.database`: Redis Cluster has only database 0; \
                     leave it unset with `backend.cluster_nodes`"
                        .to_string(),
                );
            }
        }
        if !self.tls_ca_file.is_empty() && !self.uses_tls() {
            problems
                .push("`backend.tls_ca_file`: set, but no `rediss://` address uses it".to_string());
        }
        for (key, value) in [
            ("connection_timeout", self.connection_timeout),
            ("response_timeout", self.response_timeout),
            ("degraded_latency", self.degraded_latency),
        ] {
            if value.is_zero() {
                problems.push(format!("`backend.{key}`: must be greater than 0"));
            }
        }
        for (key, value) in [
            ("max_value_bytes", self.max_value_bytes),
            ("max_key_bytes", self.max_key_bytes),
        ] {
            if value == 0 {
                problems.push(format!("`backend.{key}`: must be at least 1"));
            } else if value > REDIS_MAX_BULK {
                problems.push(format!(
                    "`backend.{key}`: {value} exceeds Redis's 512 MiB string limit"
                ));
            }
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            problems.push(format!(
                "`backend.connections`: must be from 1 to {MAX_CONNECTIONS}"
            ));
        }
        if self.key_prefix.len() > 1024 {
            problems.push("`backend.key_prefix`: must be at most 1024 bytes".to_string());
        }
        problems
    }
}

impl RedisConfig {
    /// The Redis client's connection info: address, credentials and database.
    /// Pure parsing; the error is the key at fault and the problem, and never
    /// contains the password.
    pub(crate) fn connection_info(&self) -> Result<ConnectionInfo, (&'static str, String)> {
        let (info, url_db) = parse_address(&self.address).map_err(|p| ("address", p))?;
        let db = match (url_db, i64::from(self.database)) {
            (url, 0) => url,
            (0, configured) => configured,
            (url, configured) if url == configured => url,
            (url, configured) => {
                return Err((
                    "database",
                    format!(
                        "{configured} conflicts with database {url} in `backend.address`; set only one"
                    ),
                ));
            }
        };
        Ok(self.with_credentials(info, db))
    }

    /// Connection info for every cluster seed node, with the configured
    /// credentials. Pure parsing; the error is one problem line naming
    /// `backend.cluster_nodes` (with the index of the node at fault).
    pub(crate) fn cluster_node_infos(&self) -> Result<Vec<ConnectionInfo>, String> {
        let mut infos = Vec::with_capacity(self.cluster_nodes.len());
        for (i, node) in self.cluster_nodes.iter().enumerate() {
            let (info, url_db) =
                parse_address(node).map_err(|p| format!("`backend.cluster_nodes[{i}]`: {p}"))?;
            if url_db != 0 {
                return Err(format!(
                    "`backend.cluster_nodes[{i}]`: Redis Cluster has only database 0"
                ));
            }
            infos.push(self.with_credentials(info, 0));
        }
        let tls: Vec<bool> = infos.iter().map(|i| is_tls(i.addr())).collect();
        if tls.iter().any(|t| *t) && !tls.iter().all(|t| *t) {
            return Err(
                "`backend.cluster_nodes`: mixes `rediss://` and plain nodes; use TLS for all or none"
                    .to_string(),
            );
        }
        Ok(infos)
    }

    /// True when the plugin will talk TLS (`rediss://` address or cluster nodes).
    pub(crate) fn uses_tls(&self) -> bool {
        if self.cluster_nodes.is_empty() {
            self.connection_info()
                .map(|i| is_tls(i.addr()))
                .unwrap_or(false)
        } else {
            self.cluster_node_infos()
                .map(|infos| infos.iter().any(|i| is_tls(i.addr())))
                .unwrap_or(false)
        }
    }

    fn with_credentials(&self, info: ConnectionInfo, db: i64) -> ConnectionInfo {
        let mut redis: RedisConnectionInfo = info.redis_settings().clone().set_db(db);
        if !self.username.is_empty() {
            redis = redis.set_username(&self.username);
        }
        if !self.password.is_empty() {
            redis = redis.set_password(self.password.expose());
        }
        info.set_redis_settings(redis)
    }
}

/// True for a TLS address.
fn is_tls(addr: &ConnectionAddr) -> bool {
    matches!(addr, ConnectionAddr::TcpTls { .. })
}

/// Parses `host:port`, `[v6]:port` or a `redis://` / `rediss://` URL into the
/// client's connection info and the database named in the URL path (0 if none).
/// The error never contains the password.
fn parse_address(address: &str) -> Result<(ConnectionInfo, i64), String> {
    let address = address.trim();
    if address.contains("://") {
        let scheme = address.split("://").next().unwrap_or_default();
        if !matches!(scheme, "redis" | "rediss") {
            return Err(format!(
                "unsupported scheme {scheme:?}; use `redis://host:port`, `rediss://host:port` or `host:port`"
            ));
        }
        // The client's own parser (pure); its messages never echo the URL.
        let info = address.into_connection_info().map_err(|e| {
            format!(
                "{:?} is not a valid Redis URL: {e}",
                prism_plugin_core::config::redact_url(address)
            )
        })?;
        let db = info.redis_settings().db();
        Ok((info, db))
    } else {
        let (host, port) = split_host_port(address)?;
        let info = ConnectionAddr::Tcp(host, port)
            .into_connection_info()
            .map_err(|e| e.to_string())?;
        Ok((info, 0))
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]` (default port 6379).
fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("{s:?}: missing `]` after the IPv6 address"));
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{s:?}: expected `:port` after `]`")),
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "{s:?}: write IPv6 addresses in brackets, e.g. `[::1]:6379`"
                ));
            }
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || "/@?#".contains(c)) {
        return Err(format!("{s:?} is not `host:port`"));
    }
    let port = match port {
        None => DEFAULT_REDIS_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(format!("{s:?}: port must be a number from 1 to 65535")),
        },
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL_EXAMPLE: &str = r#"
address: redis.internal:6380
username: prism
password: s3cret
database: 2
key_prefix: "app:"
cluster_nodes: []
tls_ca_file: ""
connection_timeout: 3s
response_timeout: 500ms
max_value_bytes: 1048576
max_key_bytes: 1024
degraded_latency: 50ms
"#;

    /// The connection info of `config` names `addr`, database `db` and the
    /// `(user, password)` login.
    fn assert_connects_to(config: &RedisConfig, addr: &str, db: i64, login: (&str, &str)) {
        let info = config.connection_info().expect("valid");
        assert_eq!(info.addr().to_string(), addr);
        assert_eq!(info.redis_settings().db(), db);
        assert_eq!(info.redis_settings().username(), Some(login.0));
        assert_eq!(info.redis_settings().password(), Some(login.1));
    }

    #[test]
    fn parses_a_full_example() {
        let config: RedisConfig = serde_yaml::from_str(FULL_EXAMPLE).expect("parses");
        assert_eq!(config.address, "redis.internal:6380");
        assert_eq!(config.database, 2);
        assert!(config.cluster_nodes.is_empty());
        assert_eq!(config.connection_timeout, Duration::from_secs(3));
        assert_eq!(config.response_timeout, Duration::from_millis(500));
        assert_eq!(config.degraded_latency, Duration::from_millis(50));
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert_connects_to(&config, "redis.internal:6380", 2, ("prism", "s3cret"));
    }

    #[test]
    fn partial_yaml_gets_defaults() {
        let config: RedisConfig = serde_yaml::from_str("database: 1").expect("parses");
        assert_eq!(config.address, "127.0.0.1:6379");
        assert_eq!(config.key_prefix, "prism:");
        assert_eq!(config.max_value_bytes, 16 * 1024 * 1024);
        assert!(config.validate().is_empty());
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_yaml::from_str::<RedisConfig>("adress: x").expect_err("rejected");
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn url_address_with_credentials_and_database() {
        let config = RedisConfig {
            address: "redis://bob:pw@cache:6390/3".into(),
            ..RedisConfig::default()
        };
        assert_connects_to(&config, "cache:6390", 3, ("bob", "pw"));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(split_host_port("[::1]:7000").unwrap(), ("::1".into(), 7000));
        assert_eq!(split_host_port("cache").unwrap(), ("cache".into(), 6379));
        assert!(split_host_port("::1:7000").is_err());
        assert!(split_host_port("cache:0").is_err());
        assert!(split_host_port("cache:http").is_err());
        assert!(split_host_port(":6379").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let config = RedisConfig {
            address: "http://cache:6380".into(),
            tls_ca_file: "/ca.pem".into(),
            response_timeout: Duration::ZERO,
            max_value_bytes: 0,
            connections: 0,
            ..RedisConfig::default()
        };
        let problems = config.validate();
        assert_eq!(problems.len(), 5, "{problems:?}");
        for (problem, key) in problems.iter().zip([
            "`backend.address`",
            "`backend.tls_ca_file`",
            "`backend.response_timeout`",
            "`backend.max_value_bytes`",
            "`backend.connections`",
        ]) {
            assert!(problem.starts_with(key), "{problem}");
        }
    }

    #[test]
    fn cluster_nodes_take_urls_or_host_port_with_the_configured_credentials() {
        let config: RedisConfig = serde_yaml::from_str(
            "cluster_nodes: ['10.0.0.1:7000', 'redis://10.0.0.2:7001']\nusername: u\npassword: p",
        )
        .expect("parses");
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let infos = config.cluster_node_infos().expect("valid");
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1].addr().to_string(), "10.0.0.2:7001");
        assert_eq!(infos[0].redis_settings().username(), Some("u"));
        assert_eq!(infos[1].redis_settings().password(), Some("p"));
        assert!(!config.uses_tls());

        let bad = RedisConfig {
            cluster_nodes: vec!["ok:1".into(), "nope:x".into()],
            database: 1,
            ..RedisConfig::default()
        };
        let problems = bad.validate();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("`backend.cluster_nodes[1]`"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("`backend.database`"),
            "{problems:?}"
        );

        let mixed = RedisConfig {
            cluster_nodes: vec!["rediss://a:1".into(), "b:2".into()],
            ..RedisConfig::default()
        };
        assert!(
            mixed.validate()[0].contains("mixes"),
            "{:?}",
            mixed.validate()
        );
    }

    #[test]
    fn rediss_selects_tls_and_enables_the_ca_file() {
        let config = RedisConfig {
            address: "rediss://cache:6380".into(),
            tls_ca_file: "/etc/prism/ca.pem".into(),
            ..RedisConfig::default()
        };
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        assert!(config.uses_tls());
        assert!(!RedisConfig::default().uses_tls());
    }

    #[test]
    fn conflicting_databases_are_rejected() {
        let config = RedisConfig {
            address: "redis://cache/3".into(),
            database: 4,
            ..RedisConfig::default()
        };
        let problems = config.validate();
        assert!(
            problems[0].starts_with("`backend.database`"),
            "{problems:?}"
        );
    }

    #[test]
    fn secrets_never_reach_debug_output_or_errors() {
        let config = RedisConfig {
            address: "redis://bob:url-secret@cache:notaport".into(),
            password: "key-secret".into(),
            ..RedisConfig::default()
        };
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("url-secret") && !debug.contains("key-secret"),
            "{debug}"
        );
        let problems = config.validate().join("\n");
        assert!(!problems.contains("url-secret"), "{problems}");
    }
}
