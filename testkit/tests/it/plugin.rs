//! PluginProcess: output capture, env handling, signals and exit status, using
//! `/bin/sh` scripts as stand-in plugins.

use std::time::Duration;

use prism_testkit::{Error, PluginProcess};

use crate::WAIT;

const SCRIPT: &str = r#"
echo "out-line"
echo "err-line" >&2
echo "X=$X PATH_SET=${PATH:+yes} DATABASE_URL=${DATABASE_URL:-unset}"
trap 'echo "got-term"; exit 3' TERM
echo "ready"
while :; do sleep 0.02; done
"#;

#[tokio::test]
async fn captures_output_and_handles_sigterm() {
    let mut plugin = PluginProcess::spawn("/bin/sh", &["-c", SCRIPT], &[("X", "1")])
        .await
        .expect("spawn");
    assert!(plugin.pid() > 0);
    assert_eq!(plugin.name(), "sh");
    plugin.wait_for_log("ready", WAIT).await.expect("ready");
    let logs = plugin.logs();
    assert!(logs.contains("out-line"), "{logs}");
    assert!(logs.contains("err-line"), "{logs}");
    assert!(
        logs.contains("X=1 PATH_SET=yes"),
        "env applied, not cleared: {logs}"
    );
    assert!(plugin.try_status().expect("status").is_none());

    plugin.sigterm().expect("sigterm");
    let status = plugin.wait_exit(WAIT).await.expect("exits");
    assert_eq!(status.code(), Some(3));
    assert!(plugin.logs().contains("got-term"), "{}", plugin.logs());
    assert!(matches!(
        plugin.signal(nix::sys::signal::Signal::SIGTERM),
        Err(Error::NotRunning(_))
    ));
}

#[tokio::test]
async fn envs_override_scrubbed_names() {
    let plugin = PluginProcess::spawn(
        "/bin/sh",
        &["-c", r#"echo "DATABASE_URL=$DATABASE_URL""#],
        &[("DATABASE_URL", "postgres://explicit")],
    )
    .await
    .expect("spawn");
    plugin
        .wait_for_log("DATABASE_URL=postgres://explicit", WAIT)
        .await
        .expect("explicit env wins");
}

#[tokio::test]
async fn wait_for_log_fails_fast_when_output_closes() {
    let mut plugin = PluginProcess::spawn("/bin/sh", &["-c", "echo bye; exit 7"], &[])
        .await
        .expect("spawn");
    let err = plugin
        .wait_for_log("never printed", Duration::from_secs(30))
        .await
        .expect_err("process exits without logging it");
    let msg = err.to_string();
    assert!(msg.contains("closed its output"), "{msg}");
    assert!(msg.contains("bye"), "{msg}");
    assert_eq!(plugin.wait_exit(WAIT).await.expect("exit").code(), Some(7));
}

#[tokio::test]
async fn wait_exit_times_out_and_drop_kills() {
    let mut plugin = PluginProcess::spawn("/bin/sh", &["-c", "sleep 30"], &[])
        .await
        .expect("spawn");
    let pid = plugin.pid();
    let err = plugin
        .wait_exit(Duration::from_millis(100))
        .await
        .expect_err("still running");
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    drop(plugin);
    // kill_on_drop delivers SIGKILL right away; the pid disappears once reaped.
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    for _ in 0..200 {
        let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        if state.is_empty() || state.contains(") Z ") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pid {pid} still alive after drop");
}
