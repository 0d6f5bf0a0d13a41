//! Test harness for the Prism plugins: starts REAL servers (PostgreSQL, Redis, a
//! Kafka-protocol broker, an OpenBao/Vault API server) on free 127.0.0.1 ports in
//! private temp dirs, spawns plugin binaries with captured output, and polls gRPC
//! health. Nothing is mocked; every handle tears its server down on `Drop`.
//!
//! Binaries come from `scripts/install-deps.sh` (Debian packages plus a Python
//! venv); a missing one is reported by name with a hint to run that script.
//!
//! ```no_run
//! # async fn demo() -> prism_testkit::Result<()> {
//! let pg = prism_testkit::Postgres::start().await?;
//! assert_eq!(pg.psql("SELECT 1").await?, "1");
//! # Ok(()) }
//! ```

pub mod authz;
pub mod conformance;
mod error;
pub mod freeze;
pub mod grpcurl_cmd;
mod health;
mod kafka;
mod kafka_proxy;
mod kafka_sasl;
mod kafka_wire;
pub mod kv;
pub mod lifecycle;
pub mod load;
pub mod otlp;
mod paths;
mod pki;
mod plugin;
mod ports;
mod postgres;
mod postgres_tls;
mod probe;
mod process;
pub mod pubsub;
mod redis;
pub mod rotation;
mod scram;
pub mod scrape;
pub mod server;
pub mod skeleton;
mod tee;
mod vault;
mod vault_pki;

pub use error::{Error, Result};
pub use health::{ServingStatus, connect, health_status, wait_for_health};
pub use kafka::Kafka;
pub use kafka_proxy::{KafkaProxy, ProxyOptions};
pub use paths::{grpcurl, plugin_binary, tool, venv_dir, workspace_root};
pub use pki::{ClientOptions, IssuedCert, TestCa, key_lines};
pub use plugin::{PluginProcess, borrowed_env};
pub use ports::free_port;
pub use postgres::{POSTGRES_DB, POSTGRES_PASSWORD, POSTGRES_USER, Postgres};
pub use postgres_tls::{CERT_LOGIN_GROUP, PgTls};
pub use redis::Redis;
pub use scram::{SCRAM_ITERATIONS, SaslMechanism, ScramCredential};
pub use server::Server;
pub use tee::{Tee, json_strings};
pub use vault::{VAULT_ROOT_TOKEN, Vault};
