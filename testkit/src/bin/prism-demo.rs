//! `make demo`: starts real PostgreSQL, Redis and a Kafka-protocol broker on
//! free loopback ports, runs `prism-postgres`, `prism-kafka` and `prism-redis`
//! on 9090/9091/9092 against them, calls each with grpcurl the way an operator
//! would (reflection list, health, the gateway's lifecycle calls), then shuts
//! everything down with SIGTERM and checks every plugin exits 0.
//!
//! `--keep-running` leaves the stack up until Ctrl-C, for poking at by hand.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use prism_testkit::{
    Kafka, PluginProcess, Postgres, Redis, ServingStatus, Vault, wait_for_health, workspace_root,
};

/// Environment variables handed to one plugin.
type EnvVars<'a> = Vec<(&'a str, &'a str)>;

struct Plugin {
    name: &'static str,
    port: u16,
    process: PluginProcess,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    Ok(dir.to_path_buf())
}

async fn grpcurl(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let target = format!("localhost:{port}");
    let mut full = vec!["-plaintext"];
    full.extend_from_slice(&args[..args.len().saturating_sub(1)]);
    full.push(&target);
    if let Some(last) = args.last() {
        full.push(last);
    }
    let shown: Vec<String> = full.iter().map(|a| shell_quote(a)).collect();
    println!("$ grpcurl {}", shown.join(" "));
    let out = tokio::process::Command::new(prism_testkit::grpcurl()?)
        .args(&full)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    print!("{}", indent(&text));
    if !out.status.success() {
        bail!(
            "grpcurl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// Quotes an argument the way a shell user would type it.
fn shell_quote(arg: &str) -> String {
    let plain = arg
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._/:-=".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keep_running = std::env::args().any(|a| a == "--keep-running");
    let bins = bin_dir()?;

    println!("== starting backends (real servers, temp dirs, loopback)");
    let pg = Postgres::start().await.context("PostgreSQL")?;
    let redis = Redis::start().await.context("Redis")?;
    let kafka = Kafka::start().await.context("tansu Kafka broker")?;
    let (kafka_bootstrap, redis_addr) = (kafka.bootstrap(), redis.addr());
    let vault = Vault::start().await.context("OpenBao")?;
    println!("   PostgreSQL {}", prism_plugin_url(&pg.url()));
    println!("   Redis      {}", redis.addr());
    println!("   Kafka      {}", kafka.bootstrap());
    println!("   OpenBao    {}", vault.addr());
    vault_setup(&pg, &vault).await?;

    // prism-postgres gets its database user from Vault: the URL it is given
    // carries no credentials at all.
    let pg_url = format!("postgres://127.0.0.1:{}/{}", pg.port(), pg.database());
    let vault_addr = vault.addr();
    // Each plugin on the port its plugin.toml declares.
    let declared = prism_plugin_core::manifest::workspace_manifests(&workspace_root())?;
    let port = |name: &str| {
        declared
            .iter()
            .find(|m| m.name == name)
            .map_or(0, |m| m.port)
    };
    let specs: [(&str, u16, EnvVars<'_>); 3] = [
        (
            "postgres",
            port("postgres"),
            vec![
                ("DATABASE_URL", pg_url.as_str()),
                ("VAULT_ADDR", vault_addr.as_str()),
                ("VAULT_TOKEN", vault.root_token()),
                ("PRISM_VAULT__SECRET__ENGINE", "database"),
                ("PRISM_VAULT__SECRET__ROLE", "prism-postgres"),
            ],
        ),
        (
            "kafka",
            port("kafka"),
            vec![("KAFKA_BROKERS", &kafka_bootstrap)],
        ),
        ("redis", port("redis"), vec![("REDIS_ADDRESS", &redis_addr)]),
    ];
    println!("== starting plugins");
    let mut plugins = Vec::new();
    for (name, port, env) in specs {
        let path = bins.join(format!("prism-{name}"));
        if !path.exists() {
            bail!("{} not built: run `cargo build --bins`", path.display());
        }
        let mut envs = env.clone();
        envs.extend([("PRISM_LOG_FORMAT", "text"), ("PRISM_LOG_LEVEL", "warn")]);
        let port_arg = port.to_string();
        let process = PluginProcess::spawn(&path, &["--grpc-port", &port_arg], &envs).await?;
        plugins.push(Plugin {
            name,
            port,
            process,
        });
    }
    for p in &plugins {
        wait_for_health(p.port, "", ServingStatus::Serving, Duration::from_secs(60))
            .await
            .with_context(|| format!("prism-{} did not become SERVING", p.name))?;
        println!("   prism-{} SERVING on localhost:{}", p.name, p.port);
    }

    for p in &plugins {
        println!("\n== prism-{} (localhost:{})", p.name, p.port);
        let services = grpcurl(p.port, &["list"]).await?;
        grpcurl(
            p.port,
            &["-d", r#"{"service":""}"#, "grpc.health.v1.Health/Check"],
        )
        .await?;
        let init = grpcurl(
            p.port,
            &[
                "-d",
                r#"{"name":"demo","config":{}}"#,
                "prism.interfaces.LifecycleInterface/Initialize",
            ],
        )
        .await?;
        if !init.contains("\"success\": true") {
            bail!("Initialize of prism-{} did not succeed", p.name);
        }
        grpcurl(p.port, &["prism.interfaces.LifecycleInterface/HealthCheck"]).await?;
        data_calls(p, &services).await?;
    }

    if keep_running {
        println!("\n== running; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }

    println!("\n== shutting down (SIGTERM → drain → exit 0)");
    let mut failed = false;
    for p in &mut plugins {
        p.process.sigterm()?;
        let status = p.process.wait_exit(Duration::from_secs(35)).await?;
        println!("   prism-{} exited with {status}", p.name);
        failed |= !status.success();
    }
    drop((pg, redis, kafka, vault));
    if failed {
        bail!("a plugin did not exit cleanly");
    }
    println!("== demo complete");
    Ok(())
}

/// Configures OpenBao with `scripts/vault-dev-setup.sh` (database engine and
/// the `prism-postgres` role) for this PostgreSQL.
async fn vault_setup(pg: &Postgres, vault: &Vault) -> anyhow::Result<()> {
    // The script's own default lease TTLs (1 h, at most 24 h).
    if let Err(e) = vault.setup_postgres(pg, "1h", "24h", &[]).await {
        bail!("vault-dev-setup.sh failed: {e}");
    }
    println!("   OpenBao configured by scripts/vault-dev-setup.sh (database role prism-postgres)");
    Ok(())
}

/// A few data calls on whatever data services the plugin serves.
async fn data_calls(p: &Plugin, services: &str) -> anyhow::Result<()> {
    const NS: &str = "x-prism-namespace: demo";
    if services.contains("prism.interfaces.keyvalue.KeyValueBasicInterface") {
        // "aGVsbG8gcHJpc20=" is base64 for "hello prism".
        grpcurl(
            p.port,
            &[
                "-H",
                NS,
                "-d",
                r#"{"key":"greeting","value":"aGVsbG8gcHJpc20=","ttl_seconds":300}"#,
                "prism.interfaces.keyvalue.KeyValueBasicInterface/Set",
            ],
        )
        .await?;
        let got = grpcurl(
            p.port,
            &[
                "-H",
                NS,
                "-d",
                r#"{"key":"greeting"}"#,
                "prism.interfaces.keyvalue.KeyValueBasicInterface/Get",
            ],
        )
        .await?;
        if !got.contains("aGVsbG8gcHJpc20=") {
            bail!("prism-{}: Get did not return what Set stored", p.name);
        }
    }
    if services.contains("prism.interfaces.keyvalue.KeyValueTTLInterface") {
        grpcurl(
            p.port,
            &[
                "-H",
                NS,
                "-d",
                r#"{"key":"greeting"}"#,
                "prism.interfaces.keyvalue.KeyValueTTLInterface/GetTTL",
            ],
        )
        .await?;
    }
    if services.contains("prism.interfaces.keyvalue.KeyValueScanInterface") {
        grpcurl(
            p.port,
            &[
                "-H",
                NS,
                "-d",
                r#"{"prefix":"greet","limit":10}"#,
                "prism.interfaces.keyvalue.KeyValueScanInterface/Scan",
            ],
        )
        .await?;
    }
    if services.contains("prism.interfaces.pubsub.PubSubBasicInterface") {
        grpcurl(
            p.port,
            &[
                "-d",
                r#"{"topic":"prism-demo","payload":"aGVsbG8gcHJpc20=","metadata":{"source":"demo"}}"#,
                "prism.interfaces.pubsub.PubSubBasicInterface/Publish",
            ],
        )
        .await?;
        grpcurl(
            p.port,
            &[
                "-d",
                r#"{"topic":"prism-demo","position":"START_POSITION_EARLIEST","max_messages":1}"#,
                "prism.interfaces.pubsub.StreamInterface/Tail",
            ],
        )
        .await?;
    }
    Ok(())
}

/// Hides the password in a URL before printing it.
fn prism_plugin_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
