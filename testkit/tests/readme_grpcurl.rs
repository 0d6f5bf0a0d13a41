//! Every `grpcurl` command in the READMEs runs as written against the demo
//! stack: the three plugins on real PostgreSQL, Redis and Kafka (tansu), as
//! `make demo` starts them, here on free ports (the commands' declared plugin
//! ports — 9090, 9091, 9092 from each plugin.toml — are rewritten to them, and
//! nothing else is touched).
//!
//! Extraction is generic: every `README*.md` in the workspace, every fenced
//! code block, every line that starts with `grpcurl ` (or `$ grpcurl `), with
//! `\` continuations joined. A command that cannot run here (a placeholder, a
//! TLS port, a stream that never ends) opts out only explicitly, with a shell
//! comment on the line before it: `# grpcurl-test: skip (why)`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prism_testkit::{
    Kafka, PluginProcess, Postgres, Redis, ServingStatus, grpcurl_cmd, wait_for_health,
    workspace_root,
};

const SKIP_MARKER: &str = "# grpcurl-test: skip";

/// One command found in a README.
#[derive(Debug, PartialEq)]
struct Found {
    file: String,
    line: usize,
    command: String,
}

/// The grpcurl commands of one markdown text, skipping the marked ones.
fn extract(file: &str, text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    let mut in_block = false;
    let mut previous = "";
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_block = !in_block;
            previous = "";
            continue;
        }
        let command = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        if in_block && command.starts_with("grpcurl ") {
            let mut full = command.to_owned();
            while full.ends_with('\\') {
                full.pop();
                match lines.next() {
                    Some((_, next)) => full.push_str(next.trim()),
                    None => break,
                }
            }
            let skipped = previous.starts_with(SKIP_MARKER) || full.contains(SKIP_MARKER);
            if !skipped {
                found.push(Found {
                    file: file.to_owned(),
                    line: n + 1,
                    command: full,
                });
            }
        }
        previous = trimmed;
    }
    found
}

/// Every README*.md under `root` (not in target/, .venv/ or hidden dirs).
fn readmes(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "corpus") {
                    dirs.push(path);
                }
            } else if name.starts_with("README") && name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn extraction_finds_commands_joins_continuations_and_honours_only_the_marker() {
    let md = "text grpcurl not in a block\n```sh\nDATABASE_URL=x prism-postgres\n\
              grpcurl -plaintext localhost:9090 list\n$ grpcurl -plaintext \\\n  -d '{}' localhost:9092 a/B\n\
              # grpcurl-test: skip (placeholder)\ngrpcurl -plaintext localhost:9090 <service>/<method>\n\
              # an ordinary comment\ngrpcurl -plaintext localhost:9091 list\n```\n";
    let found: Vec<String> = extract("R.md", md).into_iter().map(|f| f.command).collect();
    assert_eq!(
        found,
        [
            "grpcurl -plaintext localhost:9090 list",
            "grpcurl -plaintext -d '{}' localhost:9092 a/B",
            "grpcurl -plaintext localhost:9091 list",
        ]
    );
}

/// The plugin binaries next to this test's binary (target/debug).
/// Rewrites `HOST:PORT` for each declared plugin port to the stack's port.
fn retarget(command: &str, ports: &[(u16, u16)]) -> String {
    let mut out = command.to_owned();
    for (declared, actual) in ports {
        for host in ["localhost", "127.0.0.1", "[::1]"] {
            out = out.replace(
                &format!("{host}:{declared}"),
                &format!("127.0.0.1:{actual}"),
            );
        }
    }
    out
}

#[tokio::test]
async fn every_readme_grpcurl_command_runs_as_written_against_the_demo_stack() {
    let root = workspace_root();
    let mut commands = Vec::new();
    for path in readmes(&root) {
        let text = std::fs::read_to_string(&path).unwrap();
        let shown = path.strip_prefix(&root).unwrap().display().to_string();
        commands.extend(extract(&shown, &text));
    }
    assert!(
        !commands.is_empty(),
        "no grpcurl command found in any README"
    );

    // The demo stack: the backends `make demo` starts, each plugin on them.
    let (pg, redis, kafka) = tokio::join!(Postgres::start(), Redis::start(), Kafka::start());
    let (pg, redis, kafka) = (pg.unwrap(), redis.unwrap(), kafka.unwrap());
    let declared = prism_plugin_core::manifest::workspace_manifests(&root).unwrap();
    let (pg_url, redis_addr, brokers) = (pg.url(), redis.addr(), kafka.bootstrap());
    let mut plugins = Vec::new();
    let mut ports = Vec::new();
    for manifest in &declared {
        let env: Vec<(&str, &str)> = match manifest.name.as_str() {
            "postgres" => vec![("DATABASE_URL", &pg_url)],
            "kafka" => vec![("KAFKA_BROKERS", &brokers)],
            "redis" => vec![("REDIS_ADDRESS", &redis_addr)],
            _ => continue, // a plugin this stack has no backend for
        };
        let port = prism_testkit::free_port();
        let binary = prism_testkit::plugin_binary(&manifest.name);
        let process = PluginProcess::spawn(&binary, &["--grpc-port", &port.to_string()], &env)
            .await
            .unwrap();
        plugins.push(process);
        ports.push((manifest.port, port));
    }
    for (_, port) in &ports {
        wait_for_health(*port, "", ServingStatus::Serving, Duration::from_secs(60))
            .await
            .unwrap();
    }

    let mut failures = Vec::new();
    for found in &commands {
        let command = retarget(&found.command, &ports);
        let run = grpcurl_cmd::shell(&command).current_dir(&root).output();
        let place = format!("{}:{}: {}", found.file, found.line, found.command);
        match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(Ok(out)) if out.status.success() => eprintln!("ok   {place}"),
            Ok(Ok(out)) => failures.push(format!(
                "{place}\n    exit {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(Err(e)) => failures.push(format!("{place}\n    cannot run bash: {e}")),
            Err(_) => failures.push(format!(
                "{place}\n    still running after 30 s (a stream? give it -max-time, or mark it `{SKIP_MARKER} (why)`)"
            )),
        }
    }
    eprintln!(
        "{} README grpcurl commands run, {} failed",
        commands.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "README grpcurl commands that do not run as written (fix the command or the code; opt out only with `{SKIP_MARKER} (why)` on the line before):\n{}",
        failures.join("\n")
    );
    drop(plugins);
}
