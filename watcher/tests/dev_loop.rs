//! The dev loop end to end, hermetic and fast: each test writes a tiny cargo
//! workspace to a temp dir (a `prism-plugin-core` library and two "plugins",
//! std-only binaries that listen on `--grpc-port` and answer every connection
//! with their name and version), runs the real `prism-watcher` binary on it with
//! `--ready tcp`, edits files and asserts on the served versions and the
//! watcher's log.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const TIMEOUT: Duration = Duration::from_secs(120);

/// core: `serve` listens on the `--grpc-port` and tells every client who it is.
fn core_lib(core_version: &str) -> String {
    format!(
        r#"pub const CORE: &str = "{core_version}";
pub fn serve(name: &str, version: &str) {{
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--version") {{
        println!("{{name}} {{version}} {{CORE}}");
        return;
    }}
    let port = args.iter().position(|a| a == "--grpc-port")
        .and_then(|i| args.get(i + 1)).expect("--grpc-port N");
    let listener = std::net::TcpListener::bind(format!("127.0.0.1:{{port}}")).expect("bind");
    println!("fake plugin {{name}} {{version}} {{CORE}} listening on {{port}}");
    for stream in listener.incoming() {{
        use std::io::Write;
        let _ = stream.and_then(|mut s| writeln!(s, "{{name}} {{version}} {{CORE}}"));
    }}
}}
"#
    )
}

fn plugin_main(name: &str, version: &str) -> String {
    format!(
        "const VERSION: &str = \"{version}\";\nfn main() {{ prism_plugin_core::serve(\"{name}\", VERSION) }}\n"
    )
}

fn manifest(name: &str, bin: bool) -> String {
    let mut text = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\n"
    );
    if bin {
        text.push_str("prism-plugin-core = { path = \"../core\" }\n");
    }
    text
}

/// Writes the fixture workspace: core, alpha and beta plugins, and `tool`, a
/// binary that is not a plugin (does not depend on core).
fn write_workspace(dir: &Path) {
    let files: Vec<(&str, String)> =
        vec![
        (
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"core\", \"alpha\", \"beta\", \"tool\"]\n"
                .to_owned(),
        ),
        ("core/Cargo.toml", manifest("prism-plugin-core", false)),
        ("core/src/lib.rs", core_lib("c1")),
        ("alpha/Cargo.toml", manifest("prism-alpha", true)),
        ("alpha/src/main.rs", plugin_main("alpha", "a1")),
        ("beta/Cargo.toml", manifest("prism-beta", true)),
        ("beta/src/main.rs", plugin_main("beta", "b1")),
        ("tool/Cargo.toml", manifest("prism-tool", false)),
        ("tool/src/main.rs", "fn main() {}\n".to_owned()),
        ("proto/prism/fake.proto", "syntax = \"proto3\";\n".to_owned()),
        ("build-image.sh", BUILD_IMAGE_SH.to_owned()),
    ];
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `prism-watcher` with its (and its plugins') output captured.
struct Watcher {
    child: Child,
    log: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
    alpha: u16,
    beta: u16,
}

impl Watcher {
    /// Ctrl-C (SIGINT) to the watcher; it exits 0 within `timeout`.
    async fn interrupt_and_expect_success(&mut self, timeout: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let exited = tokio::time::timeout(timeout, self.child.wait()).await;
        let status = exited.expect("watcher exits").unwrap();
        assert!(status.success(), "{status}\n{}", self.log());
    }

    async fn start(extra: &[&str]) -> Watcher {
        let dir = tempfile::tempdir().unwrap();
        write_workspace(dir.path());
        let (alpha, beta) = (free_port(), free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism-watcher"));
        cmd.args(["--dir", dir.path().to_str().unwrap(), "--ready", "tcp"])
            .args(["--debounce", "300ms", "--stop-timeout", "5s"])
            .args([
                "--port",
                &format!("alpha={alpha}"),
                "--port",
                &format!("beta={beta}"),
            ])
            .args(extra)
            // The fixture's own target dir, whatever the outer build uses.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn prism-watcher");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[watcher] {line}");
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Watcher {
            child,
            log,
            dir,
            alpha,
            beta,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write(&self, relative: &str, text: &str) {
        std::fs::write(self.path(relative), text).unwrap();
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Lines containing all of `needles`.
    fn count(&self, needles: &[&str]) -> usize {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    async fn wait_count(&self, needles: &[&str], n: usize) {
        let start = Instant::now();
        while self.count(needles) < n {
            assert!(
                start.elapsed() < TIMEOUT,
                "waited {TIMEOUT:?} for {n} log lines with {needles:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the first `n` builds finished and both plugins are up.
    async fn wait_started(&self) {
        self.wait_count(&["plugin ready", "plugin=alpha"], 1).await;
        self.wait_count(&["plugin ready", "plugin=beta"], 1).await;
    }
}

/// What the plugin on `port` says it is (`None` if nothing answers).
async fn served(port: u16) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    Some(text.trim().to_owned())
}

async fn wait_served(port: u16, want: &str) {
    let start = Instant::now();
    loop {
        let now = served(port).await;
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < TIMEOUT,
            "port {port} serves {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_burst_of_ten_edits_triggers_one_build_and_the_new_version_serves() {
    let w = Watcher::start(&[]).await;
    w.wait_started().await;
    assert_eq!(served(w.alpha).await.as_deref(), Some("alpha a1 c1"));
    assert_eq!(w.count(&["build started"]), 1, "the initial build");

    for i in 2..=11 {
        w.write("alpha/src/main.rs", &plugin_main("alpha", &format!("a{i}")));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_served(w.alpha, "alpha a11 c1").await;
    // Anything late would show up well within a few debounce periods.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.count(&["build started"]),
        2,
        "one build for the burst:\n{}",
        w.log()
    );
    let alpha_only = w
        .log()
        .lines()
        .filter(|l| l.contains("build started") && l.ends_with("plugins=alpha"))
        .count();
    assert_eq!(alpha_only, 1);
    // beta was not affected: started once, still serving.
    assert_eq!(w.count(&["plugin started", "plugin=beta"]), 1);
    assert_eq!(served(w.beta).await.as_deref(), Some("beta b1 c1"));
}

#[tokio::test]
async fn a_core_edit_rebuilds_and_restarts_every_plugin() {
    let w = Watcher::start(&[]).await;
    w.wait_started().await;
    w.write("core/src/lib.rs", &core_lib("c2"));
    wait_served(w.alpha, "alpha a1 c2").await;
    wait_served(w.beta, "beta b1 c2").await;
    assert_eq!(w.count(&["build started", "plugins=alpha,beta"]), 2);

    // A proto change affects all plugins too; a non-plugin crate affects none.
    w.write("tool/src/main.rs", "fn main() { println!(); }\n");
    std::fs::create_dir_all(w.path("proto/prism/new")).unwrap();
    w.write("proto/prism/new/extra.proto", "syntax = \"proto3\";\n");
    w.wait_count(&["build started"], 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.count(&["build started", "plugins=alpha,beta"]),
        3,
        "{}",
        w.log()
    );
    assert_eq!(
        w.count(&["build started"]),
        3,
        "the tool edit built nothing"
    );
}

#[tokio::test]
async fn a_syntax_error_keeps_the_old_plugin_serving_and_the_fix_reloads_it() {
    let w = Watcher::start(&[]).await;
    w.wait_started().await;
    w.write(
        "alpha/src/main.rs",
        "const VERSION: &str = \"a2\"\nfn main() { broken( }\n",
    );
    w.wait_count(&["build failed"], 1).await;
    let log = w.log();
    assert!(
        log.contains("error"),
        "the compiler errors are printed:\n{log}"
    );
    assert!(
        log.contains("alpha/src/main.rs"),
        "they name the file:\n{log}"
    );
    // Still the old process, still serving the old version.
    assert_eq!(served(w.alpha).await.as_deref(), Some("alpha a1 c1"));
    assert_eq!(w.count(&["plugin started", "plugin=alpha"]), 1);
    assert_eq!(w.count(&["plugin stopped"]), 0);

    w.write("alpha/src/main.rs", &plugin_main("alpha", "a3"));
    wait_served(w.alpha, "alpha a3 c1").await;
    assert_eq!(w.count(&["plugin started", "plugin=alpha"]), 2);
    assert_eq!(w.count(&["plugin stopped", "plugin=alpha"]), 1);
}

#[tokio::test]
async fn ctrl_c_stops_the_plugins_and_exits_zero() {
    let mut w = Watcher::start(&[]).await;
    w.wait_started().await;
    w.interrupt_and_expect_success(Duration::from_secs(20))
        .await;
    assert!(served(w.alpha).await.is_none(), "alpha is stopped");
    assert!(served(w.beta).await.is_none(), "beta is stopped");
    assert_eq!(w.count(&["plugin stopped"]), 2, "{}", w.log());
}

/// The pids of the plugins the watcher reports started (`pid=N` in its log).
fn plugin_pids(log: &str) -> Vec<i32> {
    log.lines()
        .filter(|l| l.contains("plugin started"))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")))
        .map(|pid| pid.trim_matches('"').parse().expect("pid"))
        .collect()
}

#[tokio::test]
async fn sigkill_to_the_watcher_takes_its_plugins_down() {
    let mut w = Watcher::start(&[]).await;
    w.wait_started().await;
    let pids = plugin_pids(&w.log());
    assert_eq!(pids.len(), 2, "{}", w.log());
    w.child.start_kill().unwrap();
    w.child.wait().await.unwrap();
    // PR_SET_PDEATHSIG: the kernel sends each plugin SIGTERM at once.
    let start = Instant::now();
    // Alive = exists and is not a zombie waiting for its new parent to reap it.
    let alive = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    };
    while pids.iter().any(alive) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "plugins {pids:?} outlived the SIGKILLed watcher"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served(w.alpha).await.is_none(), "alpha's port is free");
    assert!(served(w.beta).await.is_none(), "beta's port is free");
    eprintln!(
        "plugins gone {:?} after the watcher's SIGKILL",
        start.elapsed()
    );
}

#[tokio::test]
async fn once_builds_and_exits_with_the_build_status() {
    let mut w = Watcher::start(&["--once", "--plugins", "beta"]).await;
    let status = tokio::time::timeout(TIMEOUT, w.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{}", w.log());
    assert!(w.path("target/debug/prism-beta").exists());
    assert!(
        !w.path("target/debug/prism-alpha").exists(),
        "only --plugins were built"
    );
    assert_eq!(w.count(&["plugin started"]), 0, "--once starts nothing");

    w.write("beta/src/main.rs", "fn main() { nope }\n");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism-watcher"));
    let out = cmd
        .args(["--once", "--dir", w.path("").to_str().unwrap()])
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot find value `nope`"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_prism-watcher"))
        .args([
            "--once",
            "--plugins",
            "gamma",
            "--dir",
            w.path("").to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown plugin \"gamma\"; the workspace has: alpha, beta"),
        "{stderr}"
    );
}

/// Builds `$1`'s fixture binary statically and an image `FROM scratch` holding
/// only it, tagged `$2` (what `--image-cmd` runs in podman mode).
const BUILD_IMAGE_SH: &str = r#"set -e
plugin=$1 image=$2 ctx=.image-$1
RUSTFLAGS='-C target-feature=+crt-static' cargo build -q --release -p "prism-$plugin"
mkdir -p "$ctx"
cp "target/release/prism-$plugin" "$ctx/plugin"
printf 'FROM scratch\nCOPY plugin /plugin\nUSER 65532:65532\nENTRYPOINT ["/plugin"]\n' > "$ctx/Containerfile"
podman --runtime runc build -q -t "$image" "$ctx"
"#;

fn podman_available() -> bool {
    std::process::Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .await
        .expect("podman");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn podman_mode_builds_an_image_and_replaces_the_container() {
    if !podman_available() {
        eprintln!("SKIPPED: podman is not installed (scripts/install-deps.sh installs it)");
        return;
    }
    // A registry name of this test's own, so parallel runs and real dev images
    // are not touched.
    let image = format!(
        "prism-watcher-test-{}/{{plugin}}-plugin:dev",
        std::process::id()
    );
    let mut w = Watcher::start(&[
        "--mode",
        "podman",
        "--plugins",
        "alpha",
        "--image-cmd",
        &format!("sh build-image.sh {{plugin}} {image}"),
        "--image",
        &image,
        "--podman",
        "podman --runtime runc",
        "--run-args",
        "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024",
    ])
    .await;
    let alpha_image = image.replace("{plugin}", "alpha");
    let container = "prism-alpha-dev";
    let _cleanup = PodmanCleanup {
        container,
        image: alpha_image.clone(),
    };

    wait_served(w.alpha, "alpha a1 c1").await;
    let first_id = podman(&["container", "inspect", "--format", "{{.Id}}", container]).await;
    assert!(
        !first_id.is_empty(),
        "container {container} runs:\n{}",
        w.log()
    );
    assert_eq!(
        podman(&[
            "container",
            "inspect",
            "--format",
            "{{.Config.User}}",
            container
        ])
        .await,
        "65532:65532"
    );

    // An edit: a new image, the old container replaced by one running it.
    w.write("alpha/src/main.rs", &plugin_main("alpha", "a2"));
    wait_served(w.alpha, "alpha a2 c1").await;
    let second_id = podman(&["container", "inspect", "--format", "{{.Id}}", container]).await;
    assert_ne!(first_id, second_id, "the container was replaced");
    let running = podman(&[
        "container",
        "inspect",
        "--format",
        "{{.ImageName}}",
        container,
    ])
    .await;
    assert_eq!(
        running.strip_prefix("localhost/").unwrap_or(&running),
        alpha_image
    );

    // A broken edit: the image build fails, the running container keeps serving.
    w.write("alpha/src/main.rs", "fn main() { broken( }\n");
    w.wait_count(&["build failed"], 1).await;
    assert_eq!(served(w.alpha).await.as_deref(), Some("alpha a2 c1"));
    assert_eq!(
        podman(&["container", "inspect", "--format", "{{.Id}}", container]).await,
        second_id
    );

    // Ctrl-C: the watcher removes the container it started and exits 0.
    w.interrupt_and_expect_success(Duration::from_secs(60))
        .await;
    assert!(served(w.alpha).await.is_none(), "alpha's container is gone");
    assert_eq!(
        podman(&[
            "ps",
            "--all",
            "--filter",
            &format!("name={container}"),
            "--format",
            "{{.Names}}"
        ])
        .await,
        "",
        "container removed"
    );
}

/// Removes the test's container and image however the test ends.
struct PodmanCleanup {
    container: &'static str,
    image: String,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        for args in [
            vec!["rm", "--force", "--ignore", "--time", "0", self.container],
            vec!["rmi", "--force", &self.image],
        ] {
            let _ = std::process::Command::new("podman")
                .args(["--runtime", "runc"])
                .args(args)
                .output();
        }
    }
}
