//! compose.yaml's wiring, proved without pulling an image: the test reads
//! compose.yaml, starts real servers on loopback for its backend services
//! (PostgreSQL with compose's POSTGRES_* user and database, `redis-server` with
//! compose's command line, tansu behind a SASL/PLAIN proxy holding the users
//! compose's broker declares, OpenBao knowing compose's root token), runs each
//! init step's command with exactly compose's environment, then starts the
//! three plugins with exactly compose's plugin environment and checks they
//! serve — on credentials only Vault has: the environments carry no backend
//! password, PostgreSQL and Redis users are minted by Vault (`vault_user` in
//! health), the broker saw the Kafka user from Vault's KV v2.
//!
//! Service names are mapped to the loopback servers: `host:port`, a value equal
//! to a service name, and a value equal to a service's port are rewritten;
//! nothing else in the environments is touched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prism_testkit::{
    Kafka, KafkaProxy, PluginProcess, Postgres, ProxyOptions, Redis, ServingStatus, Vault,
    free_port, grpcurl, tool, wait_for_health,
};
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("compose.yaml")).unwrap();
    let mut value: Value = serde_yaml::from_str(&text).unwrap();
    value.apply_merge().unwrap();
    // `<<` nested one level down (environment: { <<: *plugin-env }) too.
    if let Some(services) = value.get_mut("services").and_then(Value::as_mapping_mut) {
        for (_, service) in services.iter_mut() {
            service.apply_merge().unwrap();
            if let Some(env) = service.get_mut("environment") {
                env.apply_merge().unwrap();
            }
        }
    }
    value
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("compose.yaml has no service {name}"))
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    service
        .get("environment")
        .and_then(Value::as_mapping)
        .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
        .unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_sequence)
        .map(|s| s.iter().map(scalar).collect())
        .unwrap_or_default()
}

/// compose service name → (its port in the compose network, the loopback port).
struct Mapping(Vec<(String, u16, u16)>);

impl Mapping {
    fn apply(&self, value: &str) -> String {
        let mut out = value.to_owned();
        for (name, port, actual) in &self.0 {
            out = out.replace(&format!("{name}:{port}"), &format!("127.0.0.1:{actual}"));
        }
        for (name, port, actual) in &self.0 {
            if out == *name {
                return "127.0.0.1".to_owned();
            }
            if out == port.to_string() {
                return actual.to_string();
            }
        }
        out
    }
}

/// `user_NAME="PASSWORD"` entries of the broker's JAAS configuration.
fn jaas_users(kafka: &Value) -> Vec<(String, String)> {
    let env = environment(kafka);
    let jaas = env
        .iter()
        .find(|(k, _)| k.ends_with("_SASL_JAAS_CONFIG"))
        .map(|(_, v)| v.clone())
        .expect("compose's kafka declares its SASL users");
    jaas.split_whitespace()
        .filter_map(|w| w.strip_prefix("user_"))
        .filter_map(|w| w.split_once('='))
        .map(|(u, p)| {
            (
                u.to_owned(),
                p.trim_end_matches(';').trim_matches('"').to_owned(),
            )
        })
        .collect()
}

async fn grpc(port: u16, args: &[&str]) -> String {
    let target = format!("127.0.0.1:{port}");
    let mut full = vec!["-plaintext"];
    full.extend_from_slice(&args[..args.len() - 1]);
    full.push(&target);
    full.push(args[args.len() - 1]);
    let out = tokio::process::Command::new(grpcurl().unwrap())
        .args(&full)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "grpcurl {full:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn compose_init_steps_and_plugins_come_up_on_vault_credentials() {
    let compose = compose();

    // --- the backend services, as compose declares them ---
    let pg_env = environment(service(&compose, "postgres"));
    let redis_cmd = strings(service(&compose, "redis").get("command"));
    assert_eq!(redis_cmd.first().map(String::as_str), Some("redis-server"));
    let redis_args: Vec<&str> = redis_cmd[1..].iter().map(String::as_str).collect();
    let vault_cmd = strings(service(&compose, "vault").get("command"));
    let root_token = vault_cmd
        .iter()
        .find_map(|a| a.strip_prefix("-dev-root-token-id="))
        .expect("compose's vault has a dev root token")
        .to_owned();
    let users = jaas_users(service(&compose, "kafka"));
    let proxy_port = free_port();
    let (pg, redis, vault, kafka) = tokio::join!(
        Postgres::start(),
        Redis::start_with_args(&redis_args),
        Vault::start(),
        Kafka::start_advertising(proxy_port)
    );
    let (pg, redis, vault, kafka) = (pg.unwrap(), redis.unwrap(), vault.unwrap(), kafka.unwrap());
    let options = ProxyOptions {
        tls: None,
        sasl_users: Some(users.clone()),
        ..ProxyOptions::default()
    };
    let proxy = KafkaProxy::start(proxy_port, kafka.port(), options)
        .await
        .unwrap();
    // What the postgres image does with POSTGRES_USER/PASSWORD/DB.
    let (user, password, db) = (
        &pg_env["POSTGRES_USER"],
        &pg_env["POSTGRES_PASSWORD"],
        &pg_env["POSTGRES_DB"],
    );
    let exists = pg
        .psql(&format!("SELECT 1 FROM pg_database WHERE datname = '{db}'"))
        .await
        .unwrap();
    if exists.trim() != "1" {
        pg.psql(&format!("CREATE DATABASE \"{db}\"")).await.unwrap();
    }
    pg.psql(&format!(
        "DO $$ BEGIN CREATE ROLE \"{user}\" SUPERUSER LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         ALTER ROLE \"{user}\" SUPERUSER LOGIN PASSWORD '{password}'"
    ))
    .await
    .unwrap();
    // What `bao server -dev -dev-root-token-id=...` does.
    vault
        .bao(&[
            "token",
            "create",
            &format!("-id={root_token}"),
            "-policy=root",
        ])
        .await
        .unwrap();
    let vault_port: u16 = vault.addr().rsplit(':').next().unwrap().parse().unwrap();
    let mapping = Mapping(vec![
        ("vault".into(), 8200, vault_port),
        ("postgres".into(), 5432, pg.port()),
        ("redis".into(), 6379, redis.port()),
        ("kafka".into(), 9092, proxy_port),
    ]);

    // --- the init steps: services the plugins wait for to complete ---
    let bao_dir = tool("bao").unwrap().parent().unwrap().to_path_buf();
    let services = compose.get("services").and_then(Value::as_mapping).unwrap();
    let mut init_steps = Vec::new();
    for (name, svc) in services {
        let completed = svc
            .get("depends_on")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .any(|(_, cond)| {
                cond.get("condition").map(scalar).as_deref()
                    == Some("service_completed_successfully")
            });
        if completed {
            for (dep, cond) in svc.get("depends_on").and_then(Value::as_mapping).unwrap() {
                if cond.get("condition").map(scalar).as_deref()
                    == Some("service_completed_successfully")
                {
                    let dep = scalar(dep);
                    if !init_steps.contains(&dep) {
                        init_steps.push(dep);
                    }
                }
            }
        }
        let _ = name;
    }
    assert!(!init_steps.is_empty(), "no init step in compose.yaml");
    for step in &init_steps {
        let svc = service(&compose, step);
        let mut argv = strings(svc.get("entrypoint"));
        argv.extend(strings(svc.get("command")));
        // Container paths of bind mounts (./scripts:/scripts:ro) → the checkout.
        for volume in strings(svc.get("volumes")) {
            let mut parts = volume.split(':');
            let (host, container) = (parts.next().unwrap(), parts.next().unwrap());
            let host = root().join(host.trim_start_matches("./"));
            for arg in &mut argv {
                if let Some(rest) = arg.strip_prefix(container) {
                    *arg = format!("{}{rest}", host.display());
                }
            }
        }
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bao_dir.display()))
            .env("HOME", pg.dir());
        if let Some(marker) = std::env::var_os("PRISM_TEST_RUN") {
            cmd.env("PRISM_TEST_RUN", marker);
        }
        for (key, value) in environment(svc) {
            cmd.env(key, mapping.apply(&value));
        }
        let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("init step finishes")
            .unwrap();
        assert!(
            out.status.success(),
            "init step {step} ({argv:?}) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "init step {step}: ok\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // --- the plugins, with exactly compose's environment ---
    let bins = root().join("target/debug");
    let mut running = Vec::new();
    for (name, svc) in services {
        let name = scalar(name);
        let Some(plugin) = name.strip_suffix("-plugin") else {
            continue;
        };
        let env: Vec<(String, String)> = environment(svc)
            .into_iter()
            .map(|(k, v)| (k, mapping.apply(&v)))
            .collect();
        for (key, value) in &env {
            let lower = key.to_lowercase();
            assert!(
                !(lower.contains("password") || value.contains(":prism-dev@")),
                "{name}: a backend password in compose's plugin environment: {key}"
            );
        }
        let port = free_port();
        let metrics = free_port().to_string();
        let mut args: Vec<String> = strings(svc.get("command"));
        let at = args
            .iter()
            .position(|a| a == "--grpc-port")
            .expect("--grpc-port");
        args[at + 1] = port.to_string();
        let mut envs: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // The only change: a free metrics port (compose gives each container its own 9100).
        for (key, value) in &mut envs {
            if *key == "PRISM_METRICS_PORT" {
                *value = metrics.as_str();
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let binary = bins.join(format!("prism-{plugin}"));
        assert!(
            binary.is_file(),
            "{} missing: cargo build --bins",
            binary.display()
        );
        let process = PluginProcess::spawn(&binary, &args, &envs).await.unwrap();
        running.push((plugin.to_owned(), port, metrics.clone(), process));
    }
    assert!(running.len() >= 3, "the three plugins are in compose.yaml");

    for (plugin, port, metrics, process) in &running {
        wait_for_health(
            *port,
            "readiness",
            ServingStatus::Serving,
            Duration::from_secs(90),
        )
        .await
        .unwrap_or_else(|e| panic!("prism-{plugin}: {e}\n{}", process.logs()));
        let health = grpc(*port, &["prism.interfaces.LifecycleInterface/HealthCheck"]).await;
        match plugin.as_str() {
            "kafka" => {
                grpc(
                    *port,
                    &[
                        "-d",
                        r#"{"topic":"compose-wiring","payload":"aGk="}"#,
                        "prism.interfaces.pubsub.PubSubBasicInterface/Publish",
                    ],
                )
                .await;
                let seen = proxy.authenticated();
                let want: Vec<&String> = users.iter().map(|(u, _)| u).collect();
                assert!(
                    !seen.is_empty() && seen.iter().all(|u| want.contains(&u)),
                    "the broker saw {seen:?}; want the Vault KV user among {want:?}"
                );
            }
            "postgres" | "redis" => {
                let ns = "x-prism-namespace: compose";
                grpc(
                    *port,
                    &[
                        "-H",
                        ns,
                        "-d",
                        r#"{"key":"wired","value":"aGk="}"#,
                        "prism.interfaces.keyvalue.KeyValueBasicInterface/Set",
                    ],
                )
                .await;
                let got = grpc(
                    *port,
                    &[
                        "-H",
                        ns,
                        "-d",
                        r#"{"key":"wired"}"#,
                        "prism.interfaces.keyvalue.KeyValueBasicInterface/Get",
                    ],
                )
                .await;
                assert!(got.contains("aGk="), "prism-{plugin} Get: {got}");
                // A user Vault minted: the database engine names it
                // v-<token>-<role>-… (truncated for postgres; upper-case
                // with `_` for redis).
                let user = health
                    .split("\"vault_user\": \"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .unwrap_or_default()
                    .to_lowercase()
                    .replace('_', "-");
                assert!(
                    user.starts_with("v-") && user.contains("-prism-"),
                    "prism-{plugin} is not on a Vault-minted user: {health}"
                );
            }
            // A plugin added later: serving (readiness above) is what compose promises.
            _ => {}
        }
        // Metrics on by default: the scrape port answers.
        let body = prism_testkit::scrape::scrape(metrics.parse().unwrap()).await;
        assert!(body.contains("# TYPE"), "prism-{plugin} /metrics: {body}");
        eprintln!("prism-{plugin}: serving on Vault credentials, /metrics up");
    }
    drop(running);
}
