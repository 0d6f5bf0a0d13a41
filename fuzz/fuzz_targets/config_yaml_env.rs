//! Config parsing never panics: arbitrary YAML, environment variables and an
//! Initialize Struct go through core's loader; the result is a config or an
//! error naming a key, never a crash.
#![no_main]

use figment::Figment;
use figment::providers::{Format, Yaml};
use libfuzzer_sys::fuzz_target;
use prism_plugin_core::config::{self, Config};
use serde::{Deserialize, Serialize};

/// A backend section shaped like the real plugins' (strings, numbers,
/// durations, lists, nested sections).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Backend {
    address: String,
    pool_size: u32,
    password: String,
    brokers: Vec<String>,
    enabled: bool,
}

fn defaults() -> Config<Backend> {
    let yaml = "backend: {}\n";
    config::extract::<Backend>(&Figment::new().merge(Yaml::string(yaml)))
        .expect("defaults parse")
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Split the input: YAML | env lines (NAME=value) | JSON Initialize overrides.
    let mut parts = text.splitn(3, '\u{1}');
    let yaml = parts.next().unwrap_or("");
    let env = parts.next().unwrap_or("");
    let init = parts.next().unwrap_or("");

    let defaults = defaults();
    let vars = env.lines().filter_map(|line| {
        let (k, v) = line.split_once('=')?;
        Some((format!("PRISM_{k}"), v.to_string()))
    });
    let figment = Figment::new()
        .merge(Yaml::string(yaml))
        .merge(config::environment_from(&defaults, &[("ADDR", "backend.address")], vars));
    let overrides: serde_json::Value = serde_json::from_str(init).unwrap_or_default();
    let figment = config::with_initialize_overrides(figment, overrides);
    if let Ok(cfg) = config::extract::<Backend>(&figment) {
        let value = serde_json::to_value(&cfg).unwrap_or_default();
        let _ = config::redact(&value);
    }
    let _ = config::redact_url(&text);
});
