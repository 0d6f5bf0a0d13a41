//! The `prism-postgres` binary: hands the plugin to core's bootstrap.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    prism_plugin_core::run(prism_postgres::PostgresPlugin::default())
}
