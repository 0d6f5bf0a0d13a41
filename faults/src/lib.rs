//! Shared load and counting helpers for the fault-injection tests in `tests/`,
//! which spawn the plugin binaries through `prism-testkit` and talk to them
//! over gRPC while a backend, Vault or the plugin itself is killed or stalled.
