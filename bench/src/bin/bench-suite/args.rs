//! The suite's command line ([`Args`]), what the flags and the suite's
//! defaults add up to ([`Settings`]: the plugins' environment, the direct
//! Kafka clients' settings), and the fixed workload both sides of a
//! comparison share (namespace, key prefix, table, topic).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Namespace of every KeyValue scenario (so the direct tools can address the
/// same rows / keys).
pub(crate) const NAMESPACE: &str = "bench";
/// Topic of the Kafka scenarios (plugin and direct).
pub(crate) const TOPIC: &str = "prism-bench";
/// The prism-redis default key prefix.
pub(crate) const REDIS_PREFIX: &str = "prism:";
/// The prism-postgres default schema and table.
pub(crate) const PG_SCHEMA: &str = "public";
/// See [`PG_SCHEMA`].
pub(crate) const PG_TABLE: &str = "prism_kv";
/// The librdkafka setting both publish → deliver consumers (plugin and
/// direct) run with unless the flags set it: tansu, the testkit's broker,
/// answers a fetch only when this long-poll expires rather than when data
/// arrives, so librdkafka's default (500 ms) would measure the broker's wait,
/// not the plugin (BENCHMARKS.md, Analysis §3).
const FETCH_WAIT: (&str, &str) = ("fetch.wait.max.ms", "10");
/// prism-kafka's pass-through librdkafka map in the environment; an entry is
/// `PRISM_BACKEND__LIBRDKAFKA__<property>`.
const LIBRDKAFKA_ENV: &str = "PRISM_BACKEND__LIBRDKAFKA";

/// Plugin vs direct backend benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// Markdown report to write (default: BENCHMARKS.md in the workspace root).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Short runs (3 s per scenario) for CI smoke tests.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Measured seconds per scenario (default 10, or 3 with --quick).
    #[arg(long)]
    pub(crate) seconds: Option<u64>,
    /// HTTP/2 connections of the load generator.
    #[arg(long, default_value_t = 2)]
    pub(crate) connections: usize,
    /// Requests in flight (total) to compare at; each is split over the connections.
    #[arg(long, value_delimiter = ',', default_value = "32,64")]
    pub(crate) in_flight: Vec<usize>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub(crate) value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) keys: u64,
    /// Only these plugins (postgres, redis, kafka), and `tracing` for the
    /// tracing-overhead section (on Redis/PostgreSQL when named); default all.
    #[arg(long, value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Extra environment for every plugin process, e.g.
    /// `--plugin-env PRISM_BACKEND__POOL_SIZE=32` (experiments; the report lists them).
    /// `PRISM_BACKEND__LIBRDKAFKA…` entries go to prism-kafka only, e.g.
    /// `PRISM_BACKEND__LIBRDKAFKA__fetch.wait.max.ms=500` (default 10).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) plugin_env: Vec<String>,
    /// Extra librdkafka settings for the direct Kafka baseline's producer and
    /// consumer, e.g. `--kafka-direct fetch.wait.max.ms=500` (default 10; experiments).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(crate) kafka_direct: Vec<String>,
    /// Keep the stack up after the run (prints ports) until Ctrl-C, for profiling.
    #[arg(long)]
    pub(crate) keep_running: bool,
}

impl Args {
    pub(crate) fn wants(&self, plugin: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == plugin)
    }

    pub(crate) fn duration(&self) -> Duration {
        Duration::from_secs(self.seconds.unwrap_or(if self.quick { 3 } else { 10 }))
    }
}

/// The environment and client settings the flags and the suite's defaults
/// add up to.
pub(crate) struct Settings {
    /// `--plugin-env`.
    plugin_env: Vec<(String, String)>,
    /// The direct Kafka clients' extra librdkafka settings: [`FETCH_WAIT`]
    /// unless `--kafka-direct` sets it, then `--kafka-direct`.
    pub(crate) kafka_direct: Vec<(String, String)>,
}

impl Settings {
    pub(crate) fn new(args: &Args) -> anyhow::Result<Self> {
        let plugin_env = key_values("--plugin-env", &args.plugin_env)?;
        let user = key_values("--kafka-direct", &args.kafka_direct)?;
        let overridden = user.iter().any(|(k, _)| k == FETCH_WAIT.0);
        let kafka_direct = default_unless(overridden, FETCH_WAIT.0, user);
        Ok(Settings {
            plugin_env,
            kafka_direct,
        })
    }

    /// Environment of plugin `name`: `--plugin-env`, except that entries for
    /// prism-kafka's librdkafka map go to prism-kafka only (the other plugins
    /// refuse unknown backend keys); prism-kafka gets [`FETCH_WAIT`] first
    /// unless they set it.
    pub(crate) fn plugin_env(&self, name: &str) -> Vec<(String, String)> {
        let librdkafka = |key: &str| key.to_ascii_uppercase().starts_with(LIBRDKAFKA_ENV);
        if name != "kafka" {
            return self
                .plugin_env
                .iter()
                .filter(|(k, _)| !librdkafka(k))
                .cloned()
                .collect();
        }
        let key = fetch_wait_env();
        let overridden = self.plugin_env.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case(&key)
                || (k.eq_ignore_ascii_case(LIBRDKAFKA_ENV) && v.contains(FETCH_WAIT.0))
        });
        default_unless(overridden, &key, self.plugin_env.clone())
    }

    /// The publish → deliver setting: how each side's consumer long-polls.
    pub(crate) fn fetch_wait_line(&self) -> String {
        let (fetch, key) = (FETCH_WAIT.0, fetch_wait_env());
        let plugin = self
            .plugin_env("kafka")
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&key))
            .map_or_else(
                || format!("as set in `{LIBRDKAFKA_ENV}`"),
                |(_, v)| format!("`{fetch}={v}`"),
            );
        let direct = self
            .kafka_direct
            .iter()
            .rev()
            .find(|(k, _)| k == FETCH_WAIT.0)
            .map_or_else(|| "?".to_string(), |(_, v)| format!("`{fetch}={v}`"));
        format!(
            "- Kafka consumers (`Publish → deliver`): {plugin} for the plugin (`{key}`) and {direct} \
             for the direct consumer, instead of librdkafka's default 500 ms: tansu, the testkit's \
             broker, answers a fetch only when that long-poll expires, not when data arrives \
             (Analysis §3); `--plugin-env` / `--kafka-direct` override it"
        )
    }
}

/// `PRISM_BACKEND__LIBRDKAFKA__fetch.wait.max.ms`.
fn fetch_wait_env() -> String {
    format!("{LIBRDKAFKA_ENV}__{}", FETCH_WAIT.0)
}

/// `key` = the [`FETCH_WAIT`] value (unless `overridden`), then `entries`.
fn default_unless(
    overridden: bool,
    key: &str,
    entries: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let default = (!overridden).then(|| (key.to_string(), FETCH_WAIT.1.to_string()));
    default.into_iter().chain(entries).collect()
}

/// `KEY=VALUE` arguments of `flag`.
fn key_values(flag: &str, values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(anyhow::anyhow!("{flag} {kv:?}: expected KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(flags: &[&str]) -> Settings {
        let args = Args::parse_from(std::iter::once("bench-suite").chain(flags.iter().copied()));
        Settings::new(&args).expect("valid flags")
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn both_kafka_consumers_get_the_short_fetch_wait_by_default() {
        let s = settings(&["--plugin-env", "PRISM_BACKEND__POOL_SIZE=32"]);
        assert_eq!(s.kafka_direct, pairs(&[("fetch.wait.max.ms", "10")]));
        assert_eq!(
            s.plugin_env("kafka"),
            pairs(&[
                ("PRISM_BACKEND__LIBRDKAFKA__fetch.wait.max.ms", "10"),
                ("PRISM_BACKEND__POOL_SIZE", "32"),
            ])
        );
        assert_eq!(
            s.plugin_env("redis"),
            pairs(&[("PRISM_BACKEND__POOL_SIZE", "32")])
        );
    }

    #[test]
    fn flags_override_the_fetch_wait_and_librdkafka_entries_reach_prism_kafka_only() {
        let s = settings(&[
            "--kafka-direct",
            "fetch.wait.max.ms=500",
            "--plugin-env",
            "PRISM_BACKEND__LIBRDKAFKA__FETCH.WAIT.MAX.MS=500",
        ]);
        assert_eq!(s.kafka_direct, pairs(&[("fetch.wait.max.ms", "500")]));
        assert_eq!(
            s.plugin_env("kafka"),
            pairs(&[("PRISM_BACKEND__LIBRDKAFKA__FETCH.WAIT.MAX.MS", "500")])
        );
        assert!(s.plugin_env("postgres").is_empty());
        let line = s.fetch_wait_line();
        assert_eq!(line.matches("`fetch.wait.max.ms=500`").count(), 2, "{line}");

        let map = settings(&[
            "--plugin-env",
            r#"PRISM_BACKEND__LIBRDKAFKA={"fetch.wait.max.ms": "50"}"#,
        ]);
        assert_eq!(map.plugin_env("kafka").len(), 1);
    }

    #[test]
    fn a_setting_without_equals_sign_is_refused() {
        let args = Args::parse_from(["bench-suite", "--kafka-direct", "fetch.wait.max.ms"]);
        let err = Settings::new(&args).err().expect("refused");
        assert!(err.to_string().contains("--kafka-direct"), "{err}");
    }
}
