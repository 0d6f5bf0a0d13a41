//! The `prism-kafka` binary: hands the plugin to core's bootstrap.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    prism_plugin_core::run(prism_kafka::KafkaPlugin::default())
}
