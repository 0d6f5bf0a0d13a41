//! Each plugin's Get and Set calls/s as a fraction of the **same process's**
//! `grpc.health.v1.Health/Check` calls/s (its gRPC floor: every layer of the
//! plugin, no backend), with the plugin's CPU per call beside the floor's.
//! Measured twice: with h2load (nghttp2's C load generator sending raw gRPC
//! frames: `-c 4 -m 16`, 64 calls in flight, so the client's own cost does
//! not cap the numbers) and with `prism-bench` (tonic client) at the same
//! concurrency. The plugin's CPU comes from `/proc/<pid>/stat` around the
//! measured window.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use prism_bench::Scenario;
use prism_bench::cpu;
use prost::Message as _;

use crate::args::{Args, NAMESPACE};
use crate::load::run_plugin;
use crate::processes::Running;

/// h2load's shape: 4 connections × 16 streams.
const H2LOAD_CONNECTIONS: usize = 4;
const H2LOAD_STREAMS: usize = 16;
/// The key the h2load Get reads (written by the h2load Set before it).
const KEY: &str = "h2load-key";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
const GET: &str = "/prism.interfaces.keyvalue.KeyValueBasicInterface/Get";
const SET: &str = "/prism.interfaces.keyvalue.KeyValueBasicInterface/Set";

/// One measured call kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) calls_per_sec: f64,
    /// Plugin CPU per call, µs.
    pub(crate) cpu_us: Option<f64>,
}

/// One plugin's floor, Get and Set, by one tool.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) plugin: &'static str,
    pub(crate) tool: &'static str,
    pub(crate) floor: Result<Rate, String>,
    pub(crate) get: Result<Rate, String>,
    pub(crate) set: Result<Rate, String>,
}

/// Measures every KeyValue plugin in `running` with both tools.
pub(crate) async fn measure(
    args: &Args,
    running: &BTreeMap<&'static str, Running>,
    work: &Path,
) -> Vec<Row> {
    let in_flight = H2LOAD_CONNECTIONS * H2LOAD_STREAMS;
    println!("== calls/s as a fraction of the same process's Health/Check ({in_flight} in flight)");
    let mut rows = Vec::new();
    for (plugin, get_scenario, set_scenario) in [
        ("redis", Scenario::CacheGet, Scenario::CacheSet),
        ("postgres", Scenario::KvGet, Scenario::KvSet),
    ] {
        let Some(r) = running.get(plugin) else {
            continue;
        };
        let h2 = |path: &'static str, message: Vec<u8>| h2load(args, r, work, path, message);
        let set_message = prism_plugin_core::proto::keyvalue::SetRequest {
            key: KEY.to_string(),
            value: vec![b'v'; args.value_size].into(),
            tags: None,
            ttl_seconds: 0,
        }
        .encode_to_vec();
        let get_message = prism_plugin_core::proto::keyvalue::GetRequest {
            key: KEY.to_string(),
        }
        .encode_to_vec();
        let health = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }
        .encode_to_vec();
        let floor = h2(HEALTH, health).await;
        let mut set = h2(SET, set_message).await;
        // h2load sees HTTP statuses only; a gRPC error is an HTTP 200 too.
        // The key its Sets wrote must read back with a gRPC client, or
        // neither rate measured a served call.
        if let Err(e) = check_written(r.port, args.value_size).await {
            set = Err(e);
        }
        let get = match &set {
            Ok(_) => h2(GET, get_message).await,
            Err(e) => Err(format!("not measured: {e}")),
        };
        rows.push(Row {
            plugin,
            tool: "h2load",
            floor,
            get,
            set,
        });
        let bench = |scenario| async move {
            run_plugin(args, r, scenario, in_flight)
                .await
                .and_then(|m| {
                    if m.errors > 0 {
                        Err(format!("{} failed calls: {}", m.errors, m.detail))
                    } else {
                        Ok(Rate {
                            calls_per_sec: m.ops_per_sec,
                            cpu_us: m.plugin_cpu_us,
                        })
                    }
                })
        };
        rows.push(Row {
            plugin,
            tool: "prism-bench",
            floor: bench(Scenario::Health).await,
            get: bench(get_scenario).await,
            set: bench(set_scenario).await,
        });
        for row in &rows[rows.len() - 2..] {
            println!("{}", line(row));
        }
    }
    rows
}

/// One h2load run of `path` with `message` as every request's body.
async fn h2load(
    args: &Args,
    plugin: &Running,
    work: &Path,
    path: &str,
    message: Vec<u8>,
) -> Result<Rate, String> {
    let mut body = Vec::with_capacity(message.len() + 5);
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let file = work.join(format!(
        "h2load-{}{}.bin",
        plugin.facts.name,
        path.replace('/', "-")
    ));
    std::fs::write(&file, &body).map_err(|e| format!("writing {}: {e}", file.display()))?;
    let seconds = args.duration().as_secs().max(1);
    let pid = plugin.process.pid();
    // Warm-up run (connections, pool, key), then the measured one.
    for (measured, duration) in [(false, 1), (true, seconds)] {
        let before = cpu::process_ticks(pid);
        let out = tokio::process::Command::new("h2load")
            .args(["-c", &H2LOAD_CONNECTIONS.to_string()])
            .args(["-m", &H2LOAD_STREAMS.to_string()])
            .args(["-D", &duration.to_string()])
            .args(["-H", "content-type: application/grpc"])
            .args(["-H", "te: trailers"])
            .args(["-H", &format!("x-prism-namespace: {NAMESPACE}")])
            .arg("-d")
            .arg(&file)
            .arg(format!("http://127.0.0.1:{}{path}", plugin.port))
            .output()
            .await
            .map_err(|e| format!("h2load: {e} (Debian package nghttp2-client)"))?;
        let after = cpu::process_ticks(pid);
        if !measured {
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let (rate, done) = parse(&text).ok_or_else(|| format!("h2load output: {text}"))?;
        let cpu_us = before
            .zip(after)
            .map(|(b, a)| cpu::per_op(a.saturating_sub(b), done));
        return Ok(Rate {
            calls_per_sec: rate,
            cpu_us,
        });
    }
    Err("h2load did not run".to_string())
}

/// Reads [`KEY`] back through a tonic client: the h2load Sets must have
/// stored a value of `value_size` bytes.
async fn check_written(port: u16, value_size: usize) -> Result<(), String> {
    use prism_plugin_core::proto::keyvalue::GetRequest;
    use prism_plugin_core::proto::keyvalue::key_value_basic_interface_client::KeyValueBasicInterfaceClient;
    let mut client = KeyValueBasicInterfaceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|e| format!("gRPC check: {e}"))?;
    let mut request = tonic::Request::new(GetRequest {
        key: KEY.to_string(),
    });
    request.metadata_mut().insert(
        "x-prism-namespace",
        tonic::metadata::MetadataValue::from_static(NAMESPACE),
    );
    let reply = client
        .get(request)
        .await
        .map_err(|s| format!("gRPC check: Get {KEY}: {s}"))?
        .into_inner();
    if !reply.found || reply.value.len() != value_size {
        return Err(format!(
            "gRPC check: Get {KEY} after the h2load Sets: found {}, {} bytes (want {value_size})",
            reply.found,
            reply.value.len()
        ));
    }
    Ok(())
}

/// `(req/s, succeeded)` from h2load's summary.
fn parse(text: &str) -> Option<(f64, u64)> {
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))?
        .split(", ")
        .find_map(|part| part.strip_suffix(" req/s"))?
        .trim()
        .parse()
        .ok()?;
    let requests = text.lines().find(|l| l.starts_with("requests:"))?;
    let succeeded = requests
        .split(", ")
        .find_map(|part| part.strip_suffix(" succeeded"))?
        .trim()
        .parse()
        .ok()?;
    Some((rate, succeeded))
}

fn cell(rate: &Result<Rate, String>, floor: &Result<Rate, String>) -> String {
    match (rate, floor) {
        (Ok(r), Ok(f)) => format!(
            "{:.0} ({:.2}×) | {}",
            r.calls_per_sec,
            r.calls_per_sec / f.calls_per_sec.max(1e-9),
            us(r.cpu_us)
        ),
        (Ok(r), Err(_)) => format!("{:.0} | {}", r.calls_per_sec, us(r.cpu_us)),
        (Err(e), _) => format!("failed: {} | –", e.lines().next().unwrap_or_default()),
    }
}

fn us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} µs"))
        .unwrap_or_else(|| "–".into())
}

fn line(row: &Row) -> String {
    format!(
        "   prism-{:<9} {:<12} floor {} · Get {} · Set {}",
        row.plugin,
        row.tool,
        match &row.floor {
            Ok(f) => format!("{:.0}/s {}", f.calls_per_sec, us(f.cpu_us)),
            Err(e) => format!("failed: {e}"),
        },
        cell(&row.get, &row.floor).replace(" | ", " "),
        cell(&row.set, &row.floor).replace(" | ", " "),
    )
}

/// The markdown section.
pub(crate) fn markdown(rows: &[Row], md: &mut String) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Calls/s as a fraction of the gRPC floor\n");
    let _ = writeln!(
        md,
        "Each plugin's Get and Set against `grpc.health.v1.Health/Check` on the **same process** \
         (every layer of the plugin, no backend), {} calls in flight; plugin CPU per call from \
         `/proc/<pid>/stat`. `h2load` is nghttp2's C load generator sending raw gRPC frames \
         (`-c {H2LOAD_CONNECTIONS} -m {H2LOAD_STREAMS}`; it checks HTTP status only, so the key its \
         Sets wrote is read back with a gRPC client before its Gets run); `prism-bench` is the tonic client. Targets (issue 19): \
         prism-redis Get ≥ 0.8×, prism-postgres Get ≥ 0.6×.\n",
        H2LOAD_CONNECTIONS * H2LOAD_STREAMS
    );
    let _ = writeln!(
        md,
        "| plugin | tool | Health/Check calls/s | floor CPU/call | Get calls/s (× floor) | Get CPU/call | Set calls/s (× floor) | Set CPU/call |"
    );
    let _ = writeln!(md, "|---|---|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let floor = match &row.floor {
            Ok(f) => format!("{:.0} | {}", f.calls_per_sec, us(f.cpu_us)),
            Err(e) => format!("failed: {} | –", e.lines().next().unwrap_or_default()),
        };
        let _ = writeln!(
            md,
            "| prism-{} | {} | {floor} | {} | {} |",
            row.plugin,
            row.tool,
            cell(&row.get, &row.floor),
            cell(&row.set, &row.floor)
        );
    }
    let _ = writeln!(md);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_h2load_summary() {
        let text = "finished in 5.00s, 47123.40 req/s, 2.10MB/s\n\
                    requests: 235617 total, 235617 started, 235617 done, 235600 succeeded, 17 failed, 0 errored, 0 timeout\n";
        assert_eq!(parse(text), Some((47123.40, 235600)));
    }
}
