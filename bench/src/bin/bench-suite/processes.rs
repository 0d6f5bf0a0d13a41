//! The processes of a run: the backend servers (testkit's), the release
//! plugin binaries started next to this executable (spawned with testkit's
//! `spawn_plugin_on`, timed from spawn to SERVING, restarted twice), their
//! RSS, and their shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prism_testkit::{Kafka, PluginProcess, Postgres, Redis, ServingStatus};

use crate::args::{Args, Settings};
use crate::machine::command_line;
use crate::results::ProcessFacts;

/// A started plugin with its facts.
pub(crate) struct Running {
    pub(crate) process: PluginProcess,
    pub(crate) port: u16,
    pub(crate) facts: ProcessFacts,
}

/// The directory of this executable, where the plugin binaries are.
pub(crate) fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("executable has no directory")?
        .to_path_buf())
}

/// `VmRSS` of a process in KiB.
pub(crate) fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The backend servers of a run (each only when its plugin is wanted).
pub(crate) struct Backends {
    pub(crate) pg: Option<Postgres>,
    pub(crate) redis: Option<Redis>,
    pub(crate) kafka: Option<Kafka>,
    /// The prism-kafka binary (optional: measured when it was built).
    pub(crate) kafka_bin: PathBuf,
}

impl Backends {
    /// Starts the servers the wanted plugins need; a Kafka broker that does
    /// not start only skips prism-kafka.
    pub(crate) async fn start(args: &Args, bins: &Path) -> anyhow::Result<Self> {
        println!("== starting backends");
        let pg = if args.wants("postgres") {
            Some(Postgres::start().await.context("PostgreSQL")?)
        } else {
            None
        };
        let redis = if args.wants("redis") {
            Some(Redis::start().await.context("Redis")?)
        } else {
            None
        };
        let kafka_bin = bins.join("prism-kafka");
        let kafka = if args.wants("kafka") && kafka_bin.exists() {
            match Kafka::start().await {
                Ok(k) => Some(k),
                Err(e) => {
                    eprintln!("   Kafka broker did not start ({e}); skipping prism-kafka");
                    None
                }
            }
        } else {
            None
        };
        Ok(Backends {
            pg,
            redis,
            kafka,
            kafka_bin,
        })
    }

    /// Starts the plugin of every running backend (see [`start_plugin`]);
    /// prism-kafka is optional, so its failure is only reported.
    pub(crate) async fn start_plugins(
        &self,
        bins: &Path,
        settings: &Settings,
    ) -> anyhow::Result<BTreeMap<&'static str, Running>> {
        println!("== starting plugins (release binaries, PRISM_LOG_LEVEL=warn; 3 starts each)");
        let mut running: BTreeMap<&'static str, Running> = BTreeMap::new();
        let backends = [
            (
                "postgres",
                "DATABASE_URL",
                self.pg.as_ref().map(Postgres::url),
            ),
            (
                "redis",
                "REDIS_ADDRESS",
                self.redis.as_ref().map(Redis::addr),
            ),
            (
                "kafka",
                "KAFKA_BROKERS",
                self.kafka.as_ref().map(Kafka::bootstrap),
            ),
        ];
        for (name, var, value) in backends {
            let Some(value) = value else {
                continue;
            };
            match start_plugin(bins, name, (var, &value), &settings.plugin_env(name)).await {
                Ok(r) => {
                    running.insert(name, r);
                }
                // prism-kafka is optional: measured when it builds and serves.
                Err(e) if name == "kafka" => {
                    eprintln!("   prism-kafka did not become SERVING: {e:#}")
                }
                Err(e) => return Err(e),
            }
        }
        for r in running.values() {
            println!(
                "   prism-{:<8} port {:<5} first start {:>6.1} ms, restarts {:?} ms, idle RSS {} KiB",
                r.facts.name,
                r.port,
                r.facts.start_first_ms.unwrap_or(0.0),
                r.facts
                    .start_restart_ms
                    .iter()
                    .map(|v| (v * 10.0).round() / 10.0)
                    .collect::<Vec<_>>(),
                r.facts.idle_rss_kb.unwrap_or(0)
            );
        }
        Ok(running)
    }
}

/// Stops every plugin (SIGTERM, then waits for its exit) and returns their facts.
pub(crate) async fn stop_plugins(
    running: BTreeMap<&'static str, Running>,
) -> anyhow::Result<Vec<ProcessFacts>> {
    println!("== stopping plugins");
    let mut facts = Vec::new();
    for (_, mut r) in running {
        r.process.sigterm()?;
        let status = r.process.wait_exit(Duration::from_secs(35)).await?;
        if !status.success() {
            eprintln!("   prism-{} exited with {status}", r.facts.name);
        }
        facts.push(r.facts);
    }
    Ok(facts)
}

/// Polls the whole-server health every 2 ms until SERVING. (testkit's
/// `wait_plugin_health` polls every 50 ms, too coarse for a 100 ms start
/// target, and panics on timeout, where an optional plugin must not stop
/// the suite; the status itself comes from testkit's `health_status`.)
async fn wait_serving(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_millis(500));
    let channel = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => bail!("port {port} never accepted: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    };
    loop {
        let status = prism_testkit::health_status(&channel, "").await;
        if matches!(status, Ok(ServingStatus::Serving)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("not SERVING after {timeout:?} (last: {status:?})");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Spawns a plugin (testkit's `spawn_plugin_on`: text logs, hermetic
/// environment) and returns it with the spawn → SERVING time.
async fn spawn_plugin(
    path: &Path,
    port: u16,
    env: (&str, &str),
    extra: &[(String, String)],
) -> anyhow::Result<(PluginProcess, f64)> {
    let mut envs = vec![env, ("PRISM_LOG_LEVEL", "warn")];
    envs.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let started = Instant::now();
    let process = prism_testkit::lifecycle::spawn_plugin_on(path, port, &[], &envs).await;
    wait_serving(port, Duration::from_secs(30))
        .await
        .with_context(|| format!("{} on port {port}", path.display()))?;
    Ok((process, started.elapsed().as_secs_f64() * 1000.0))
}

/// Starts a plugin, restarts it twice (start time with the backend up and the
/// table already created), and records idle RSS.
async fn start_plugin(
    bins: &Path,
    name: &'static str,
    env: (&str, &str),
    extra: &[(String, String)],
) -> anyhow::Result<Running> {
    let path = bins.join(format!("prism-{name}"));
    let port = prism_testkit::free_port();
    let version = command_line(&path, &["--version"]).await;
    let (mut process, first) = spawn_plugin(&path, port, env, extra).await?;
    let mut restarts = Vec::new();
    for _ in 0..2 {
        process.sigterm()?;
        process.wait_exit(Duration::from_secs(30)).await?;
        let (p, ms) = spawn_plugin(&path, port, env, extra).await?;
        process = p;
        restarts.push(ms);
    }
    // Let the startup work settle (health loop, pools) before reading RSS.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kb(process.pid());
    let facts = ProcessFacts {
        name,
        version,
        start_first_ms: Some(first),
        start_restart_ms: restarts,
        idle_rss_kb: idle,
        max_rss_kb: Arc::new(AtomicU64::new(idle.unwrap_or(0))),
        binary_bytes: std::fs::metadata(&path).ok().map(|m| m.len()),
        image_bytes: image_size(name).await,
        note: String::new(),
    };
    Ok(Running {
        process,
        port,
        facts,
    })
}

/// Size of the production image `prism/<name>-plugin:latest`, if podman has it.
async fn image_size(name: &str) -> Option<u64> {
    let out = tokio::process::Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Size}}"])
        .arg(format!("prism/{name}-plugin:latest"))
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Samples the RSS of every plugin every 100 ms, keeping the maximum.
pub(crate) fn sample_rss(targets: Vec<(u32, Arc<AtomicU64>)>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for (pid, max) in &targets {
                if let Some(kb) = rss_kb(*pid) {
                    max.fetch_max(kb, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
