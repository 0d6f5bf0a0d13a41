//! Shared load and counting helpers for the fault-injection tests in `tests/`,
//! which spawn the plugin binaries through `prism-testkit` and talk to them
//! over gRPC while a backend, Vault or the plugin itself is killed or stalled.
//!
//! - [`Backend`] starts the server behind a plugin kind and names its address;
//! - [`Plugin`] spawns a built plugin binary (`target/<profile>/prism-*`, built
//!   by `make test-faults` / `make test`) with short health intervals,
//!   reads its gRPC health and `HealthCheck` details, and starts the common
//!   KeyValue Set and Publish loads;
//! - [`Load`] runs a few concurrent callers against it, bounds every call by
//!   a hang limit, and keeps a [`CallRecord`] per call so a test can count
//!   outcomes per phase ([`Counts`]) and check what was acknowledged;
//! - [`flood`] offers many raw HTTP/2 gRPC calls at once and times each one
//!   (the overload test).
//!
//! Vault for prism-postgres comes from `prism_testkit::Vault`
//! (`start_with_postgres`, `postgres_plugin_env`); `prism_testkit::Tee`
//! records the plugin's Vault traffic for the secrets test.

mod backend;
pub mod flood;
mod load;
mod plugin;

pub use backend::Backend;
pub use load::{CallOutcome, CallRecord, Counts, Load, LoadOptions, Report};
pub use plugin::{
    Kind, Plugin, binary, kv_get, kv_set, poll_until, publish_request, with_deadline,
};
