//! Configuration: the shared sections every plugin has, and the one loader that
//! layers built-in defaults ← YAML file ← environment ← command-line flags ←
//! the gateway's Initialize Struct (DESIGN.md §4).
//!
//! Unknown keys and wrong types are errors naming the key and where it came
//! from; the Go original silently ignored misspelt keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Yaml};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::Error;

/// Where the config file is looked for when neither `--config` nor
/// `$PRISM_PLUGIN_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/prism/plugin.yaml";

/// The whole configuration of one plugin; `B` is the plugin's `backend` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config<B> {
    /// Identity reported in Initialize metadata.
    #[serde(default)]
    pub plugin: PluginSection,
    /// The gRPC control-plane server.
    #[serde(default)]
    pub control_plane: ControlPlane,
    /// Plugin-specific backend settings.
    pub backend: B,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Prometheus metrics and HTTP health endpoints.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Backend credentials from Vault/OpenBao (used when `vault.secret` is set).
    #[serde(default)]
    pub vault: crate::vault::VaultConfig,
    /// OpenTelemetry trace export (off unless `otlp_endpoint` is set).
    #[serde(default)]
    pub telemetry: crate::otel::TelemetryConfig,
}

/// `plugin:` — identity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSection {
    /// Plugin name (default: the binary's plugin name, e.g. `postgres`).
    pub name: String,
    /// Plugin version (default: the crate version).
    pub version: String,
}

/// `control_plane:` — the one gRPC port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlPlane {
    /// gRPC port (`--grpc-port` overrides). 0 picks a free port.
    pub port: u16,
    /// Address to bind; `::` is dual-stack (IPv4 and IPv6), falling back to
    /// `0.0.0.0` where IPv6 is disabled.
    pub bind_address: String,
    /// Longest time in-flight data calls get to finish on Drain or SIGTERM.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Largest gRPC message accepted or sent, in bytes (must fit 16 MiB values).
    pub max_message_bytes: usize,
    /// How often the backend's health is re-checked.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// TLS (and mTLS with `client_ca_file`) on the plugin port; unset = plaintext h2c.
    pub tls: Option<crate::tls::TlsConfig>,
    /// Extra plaintext port serving only `grpc.health.v1` (for Kubernetes
    /// probes, which cannot present client certificates); unset = off.
    pub probe_port: Option<u16>,
    /// Namespaces each verified client identity may use (needs mTLS);
    /// unset = every client may use every namespace.
    pub authorization: Option<crate::authz::AuthorizationConfig>,
    /// Bounds on data calls held at once (admission control).
    pub admission: crate::admission::AdmissionConfig,
    /// HTTP/2 keepalive and connection limits.
    pub connections: crate::connections::ConnectionConfig,
}

impl Default for ControlPlane {
    fn default() -> Self {
        ControlPlane {
            port: 0,
            bind_address: "::".to_string(),
            drain_timeout: Duration::from_secs(30),
            max_message_bytes: 64 * 1024 * 1024,
            health_interval: Duration::from_millis(500),
            tls: None,
            probe_port: None,
            authorization: None,
            admission: Default::default(),
            connections: Default::default(),
        }
    }
}

/// `log:` — tracing output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive
    /// (`PRISM_LOG_LEVEL`, `--log-level`).
    pub level: String,
    /// `json` (default) or `text` (`PRISM_LOG_FORMAT`).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Json,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (for log shippers).
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// `metrics:` — optional HTTP endpoint with `/metrics`, `/health/live`, `/health/ready`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// HTTP port (`PRISM_METRICS_PORT`); unset = off.
    pub port: Option<u16>,
}

/// Environment names that map onto config keys without the `PRISM_<SECTION>__`
/// form: the names the original suite documented.
pub const CORE_ENV_ALIASES: &[(&str, &str)] = &[
    ("PRISM_LOG_LEVEL", "log.level"),
    ("PRISM_LOG_FORMAT", "log.format"),
    ("PRISM_METRICS_PORT", "metrics.port"),
];

/// Values given on the command line, the layer above the environment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FlagOverrides {
    /// `--grpc-port`.
    pub grpc_port: Option<u16>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

/// The config file to read: `--config`, else `$PRISM_PLUGIN_CONFIG`, else
/// [`DEFAULT_CONFIG_PATH`] if it exists. An explicitly named file must exist.
pub fn config_path(flag: Option<&Path>) -> Result<Option<PathBuf>, Error> {
    let explicit = flag
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PRISM_PLUGIN_CONFIG").map(PathBuf::from));
    match explicit {
        Some(path) if path.is_file() => Ok(Some(path)),
        Some(path) => Err(Error::config(format!(
            "config file {} does not exist or is not a file",
            path.display()
        ))),
        None => Ok(Some(PathBuf::from(DEFAULT_CONFIG_PATH)).filter(|p| p.is_file())),
    }
}

/// Builds the layered figment (everything but the Initialize Struct).
/// `defaults` is the fully populated default config of the plugin;
/// `env_aliases` maps conventional environment names to dotted keys.
pub fn layered<B: Serialize>(
    defaults: &Config<B>,
    file: Option<&Path>,
    env_aliases: &[(&str, &str)],
    flags: &FlagOverrides,
) -> Figment {
    let mut figment = Figment::new().merge(Named::new("built-in defaults", defaults));
    if let Some(file) = file {
        figment = figment.merge(Yaml::file_exact(file));
    }
    figment = figment.merge(environment(defaults, env_aliases));
    if let Some(port) = flags.grpc_port {
        figment = figment.merge(Named::new(
            "command-line flag --grpc-port",
            serde_json::json!({ "control_plane": { "port": port } }),
        ));
    }
    if let Some(level) = &flags.log_level {
        figment = figment.merge(Named::new(
            "command-line flag --log-level",
            serde_json::json!({ "log": { "level": level } }),
        ));
    }
    figment
}

/// The environment layer, read from the process environment.
pub fn environment<B: Serialize>(defaults: &Config<B>, aliases: &[(&str, &str)]) -> Figment {
    environment_from(defaults, aliases, std::env::vars())
}

/// The environment layer from explicit variables: `PRISM_<SECTION>__<KEY>`
/// (only names containing `__`, so unrelated `PRISM_*` variables such as
/// Kubernetes service links are not mistaken for settings) over the
/// conventional aliases. Each variable is its own provider, so an error names
/// the exact variable. A value is kept as a string where the key's default is
/// a string (a password `123456` stays a string); otherwise it is parsed as a
/// YAML scalar or list (`20`, `true`, `[a, b]`).
pub fn environment_from<B: Serialize>(
    defaults: &Config<B>,
    aliases: &[(&str, &str)],
    vars: impl IntoIterator<Item = (String, String)>,
) -> Figment {
    let defaults = serde_json::to_value(defaults).unwrap_or_default();
    let mut aliased = Vec::new();
    let mut nested = Vec::new();
    let core_aliases = CORE_ENV_ALIASES
        .iter()
        .chain(crate::vault::VAULT_ENV_ALIASES);
    let core_aliases: Vec<&(&str, &str)> = core_aliases.collect();
    for (name, raw) in vars {
        if let Some(rest) = name.strip_prefix("PRISM_").filter(|r| r.contains("__")) {
            // Segments split on `__` only: a segment may itself contain dots
            // (`PRISM_BACKEND__LIBRDKAFKA__fetch.wait.max.ms` is one map key).
            let key: Vec<String> = rest
                .to_ascii_lowercase()
                .split("__")
                .map(str::to_owned)
                .collect();
            nested.push((name, key, raw));
        } else if let Some((_, key)) = core_aliases
            .iter()
            .copied()
            .chain(aliases)
            .find(|(alias, _)| *alias == name)
        {
            aliased.push((name, key.split('.').map(str::to_owned).collect(), raw));
        }
    }
    aliased.sort();
    nested.sort();
    aliased
        .into_iter()
        .chain(nested)
        .fold(Figment::new(), |figment, (name, key, raw)| {
            let value = typed_env_value(&defaults, &key, raw);
            figment.merge(Named::new(
                format!("environment variable {name}"),
                nest(&key, value),
            ))
        })
}

fn typed_env_value(defaults: &serde_json::Value, key: &[String], raw: String) -> serde_json::Value {
    let default = key.iter().try_fold(defaults, |v, part| v.get(part));
    // An entry of a map whose default is empty (e.g. kafka's `librdkafka`
    // pass-through) has no default of its own: such maps hold strings.
    let in_empty_map = || {
        let parent = key[..key.len().saturating_sub(1)]
            .iter()
            .try_fold(defaults, |v, part| v.get(part));
        matches!(parent, Some(serde_json::Value::Object(map)) if map.is_empty())
    };
    match default {
        Some(serde_json::Value::String(_)) => serde_json::Value::String(raw),
        None if in_empty_map() => serde_json::Value::String(raw),
        _ => serde_yaml::from_str::<serde_json::Value>(&raw)
            .ok()
            .filter(|v| !v.is_null() || raw.trim().is_empty())
            .unwrap_or(serde_json::Value::String(raw)),
    }
}

fn nest(key: &[String], value: serde_json::Value) -> serde_json::Value {
    key.iter().rev().fold(value, |inner, part| {
        serde_json::Value::Object([(part.clone(), inner)].into_iter().collect())
    })
}

/// Adds the gateway's Initialize Struct on top: its fields override `backend` keys.
pub fn with_initialize_overrides(figment: Figment, backend: serde_json::Value) -> Figment {
    match &backend {
        serde_json::Value::Object(map) if !map.is_empty() => figment.merge(Named::new(
            "Initialize request config",
            serde_json::json!({ "backend": backend }),
        )),
        _ => figment,
    }
}

/// Extracts the typed config, turning every figment error into a line that
/// names the key and where its value came from.
pub fn extract<B: DeserializeOwned>(figment: &Figment) -> Result<Config<B>, Error> {
    figment.extract::<Config<B>>().map_err(|err| {
        Error::Config(
            err.into_iter()
                .map(|e| describe_figment_error(figment, &e))
                .collect(),
        )
    })
}

fn describe_figment_error(figment: &Figment, e: &figment::Error) -> String {
    use figment::error::Kind;
    // For UnknownField figment's path already ends with the field; for
    // MissingField it names the parent.
    let mut path = e.path.clone();
    let what = match &e.kind {
        Kind::UnknownField(_, expected) => {
            format!("unknown key (expected one of: {})", expected.join(", "))
        }
        Kind::MissingField(field) => {
            path.push(field.to_string());
            "missing required key".to_string()
        }
        other => other.to_string(),
    };
    let key = path.join(".");
    let source = e
        .metadata
        .as_ref()
        .or_else(|| figment.find_metadata(&key))
        .map(|md| match &md.source {
            Some(figment::Source::File(file)) => format!("{} {}", md.name, file.display()),
            _ => md.name.to_string(),
        })
        .unwrap_or_else(|| "unknown source".to_string());
    format!("`{key}`: {what}; set by {source}")
}

/// A provider with a readable name for error messages (figment's `Serialized`
/// would be reported only as "Serialized").
struct Named {
    name: String,
    value: serde_json::Value,
}

impl Named {
    fn new<T: Serialize>(name: impl Into<String>, value: T) -> Self {
        Named {
            name: name.into(),
            value: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl Provider for Named {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> figment::Result<figment::value::Map<Profile, figment::value::Dict>> {
        Serialized::defaults(&self.value).data()
    }
}

/// Converts a protobuf `Struct` (the Initialize config) to JSON. Whole numbers
/// become integers so `pool_size: 20` fits an integer field.
pub fn struct_to_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), proto_value_to_json(v)))
            .collect(),
    )
}

fn proto_value_to_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(*n as i64)
            } else {
                serde_json::Value::from(*n)
            }
        }
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(proto_value_to_json).collect())
        }
    }
}

/// Key names whose values are secrets and never printed.
const SECRET_KEY_PARTS: &[&str] = &["password", "secret", "token", "credential", "private_key"];

/// Returns a copy of `value` safe to print: secret-looking keys are replaced
/// and passwords inside URLs (`scheme://user:pass@host`) are masked.
pub fn redact(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = SECRET_KEY_PARTS.iter().any(|p| lower.contains(p))
                        && !lower.ends_with("_file")
                        && !v.is_null()
                        && v.as_str() != Some("");
                    let v = if secret {
                        serde_json::Value::String("<redacted>".into())
                    } else {
                        redact(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(redact).collect())
        }
        serde_json::Value::String(s) => serde_json::Value::String(redact_url(s)),
        other => other.clone(),
    }
}

/// Masks the password in `scheme://user:password@host/...`, leaving the rest.
pub fn redact_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:<redacted>{}",
            &s[..scheme_end + 3],
            &userinfo[..colon],
            &s[scheme_end + 3 + at..]
        ),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Backend {
        address: String,
        pool_size: u32,
        password: String,
        extra: std::collections::BTreeMap<String, String>,
    }

    fn defaults() -> Config<Backend> {
        Config {
            plugin: PluginSection {
                name: "test".into(),
                version: "0.0.0".into(),
            },
            control_plane: ControlPlane {
                port: 9999,
                ..ControlPlane::default()
            },
            backend: Backend {
                address: "localhost:1".into(),
                pool_size: 5,
                password: String::new(),
                extra: Default::default(),
            },
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            telemetry: Default::default(),
            vault: Default::default(),
        }
    }

    fn yaml(text: &str) -> Figment {
        Figment::new()
            .merge(Named::new("built-in defaults", defaults()))
            .merge(Yaml::string(text))
    }

    #[test]
    fn layers_apply_in_order() {
        let figment =
            yaml("backend: { pool_size: 7, address: 'a:1' }\ncontrol_plane: { port: 1 }").merge(
                Named::new("flags", serde_json::json!({"control_plane": {"port": 2}})),
            );
        let figment = with_initialize_overrides(figment, serde_json::json!({"pool_size": 9}));
        let config: Config<Backend> = extract(&figment).unwrap();
        assert_eq!(config.backend.pool_size, 9, "Initialize Struct wins");
        assert_eq!(config.backend.address, "a:1", "file beats defaults");
        assert_eq!(config.control_plane.port, 2, "flags beat the file");
        assert_eq!(config.plugin.name, "test");
    }

    #[test]
    fn unknown_key_is_named_with_its_source() {
        let err = extract::<Backend>(&yaml("backend: { pool_sise: 7 }")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`backend.pool_sise`"), "{text}");
        assert!(text.contains("unknown key"), "{text}");
        assert!(text.contains("YAML"), "{text}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = extract::<Backend>(&yaml("backend: { pool_size: lots }")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`backend.pool_size`"), "{text}");
    }

    fn env(vars: &[(&str, &str)]) -> Figment {
        yaml("").merge(environment_from(
            &defaults(),
            &[("TEST_ADDRESS", "backend.address")],
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        ))
    }

    #[test]
    fn env_values_follow_the_key_type() {
        let config: Config<Backend> = extract(&env(&[
            ("PRISM_BACKEND__PASSWORD", "123456"),
            ("PRISM_BACKEND__POOL_SIZE", "20"),
            ("PRISM_LOG_LEVEL", "debug"),
            ("PRISM_METRICS_PORT", "9100"),
            ("PRISM_POSTGRES_SERVICE_PORT", "tcp://10.0.0.1:9090"),
        ]))
        .unwrap();
        assert_eq!(config.backend.password, "123456");
        assert_eq!(config.backend.pool_size, 20);
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.metrics.port, Some(9100));
    }

    #[test]
    fn prism_names_beat_conventional_aliases() {
        let config: Config<Backend> = extract(&env(&[
            ("TEST_ADDRESS", "alias:1"),
            ("PRISM_BACKEND__ADDRESS", "nested:2"),
        ]))
        .unwrap();
        assert_eq!(config.backend.address, "nested:2");
    }

    #[test]
    fn env_map_keys_keep_their_dots_and_stay_strings() {
        let config =
            extract::<Backend>(&env(&[("PRISM_BACKEND__EXTRA__fetch.wait.max.ms", "10")])).unwrap();
        assert_eq!(
            config
                .backend
                .extra
                .get("fetch.wait.max.ms")
                .map(String::as_str),
            Some("10")
        );
    }

    #[test]
    fn misspelt_env_key_names_the_variable() {
        let err = extract::<Backend>(&env(&[("PRISM_BACKEND__POOL_SISE", "3")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`backend.pool_sise`"), "{text}");
        assert!(
            text.contains("environment variable PRISM_BACKEND__POOL_SISE"),
            "{text}"
        );
    }

    #[test]
    fn empty_initialize_struct_changes_nothing() {
        let figment = with_initialize_overrides(yaml(""), serde_json::json!({}));
        let config: Config<Backend> = extract(&figment).unwrap();
        assert_eq!(config.backend, defaults().backend);
    }

    #[test]
    fn struct_numbers_become_integers() {
        let mut s = prost_types::Struct::default();
        s.fields.insert(
            "pool_size".into(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::NumberValue(20.0)),
            },
        );
        assert_eq!(struct_to_json(&s), serde_json::json!({"pool_size": 20}));
    }

    #[test]
    fn redaction_hides_secrets_and_url_passwords() {
        let v = serde_json::json!({
            "backend": {
                "password": "hunter2",
                "database_url": "postgres://app:hunter2@db:5432/x",
                "token_file": "/var/run/token",
                "address": "redis://:hunter2@r:6379",
            }
        });
        let text = redact(&v).to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("postgres://app:<redacted>@db:5432/x"),
            "{text}"
        );
        assert!(text.contains("/var/run/token"), "{text}");
    }
}
