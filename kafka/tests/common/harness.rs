//! tansu and a ready plugin using it, as the data-service suites
//! (`streaming.rs`, `timeseries.rs`) start them: every test its own broker
//! and plugin, so they run in parallel.

use prism_testkit::{Kafka, PluginProcess, free_port};
use tonic::transport::Channel;

use super::{ready_channel, spawn_on};

/// tansu, the plugin on `port` using it, and a channel to the plugin.
pub struct Harness {
    pub kafka: Kafka,
    pub plugin: PluginProcess,
    pub port: u16,
    pub channel: Channel,
}

impl Harness {
    /// A new tansu and a ready plugin with `extra` env.
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let kafka = Kafka::start().await.expect("tansu starts");
        let port = free_port();
        let (plugin, channel) = serving(&kafka.bootstrap(), port, extra).await;
        Harness {
            kafka,
            plugin,
            port,
            channel,
        }
    }

    /// A new plugin on the same port and broker (the old one has exited),
    /// ready; it replaces the old one.
    pub async fn respawn(&mut self, extra: &[(&str, &str)]) {
        let brokers = self.kafka.bootstrap();
        let (plugin, channel) = serving(&brokers, self.port, extra).await;
        self.plugin = plugin;
        self.channel = channel;
    }
}

/// The plugin on `port` with `KAFKA_BROKERS=brokers` and `extra`, ready.
pub async fn serving(brokers: &str, port: u16, extra: &[(&str, &str)]) -> (PluginProcess, Channel) {
    let mut envs = vec![("KAFKA_BROKERS", brokers)];
    envs.extend_from_slice(extra);
    let plugin = spawn_on(port, &envs).await;
    let channel = ready_channel(&plugin, port).await;
    (plugin, channel)
}
