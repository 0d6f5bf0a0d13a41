//! `grpcurl` run the way a person runs it: one call against a plaintext
//! plugin ([`call`]), or a command line as a README writes it, through the
//! shell with the venv's grpcurl first on `PATH` ([`shell`], [`run_shell`]).

use tokio::process::Command;

/// `grpcurl -plaintext <flags> 127.0.0.1:<port> <method>` for `args` =
/// flags then the method; asserts it succeeds and returns its stdout.
pub async fn call(port: u16, args: &[&str]) -> String {
    let (method, flags) = args.split_last().expect("a method");
    let grpcurl = crate::grpcurl().expect("grpcurl (scripts/install-deps.sh)");
    let out = Command::new(grpcurl)
        .arg("-plaintext")
        .args(flags)
        .arg(format!("127.0.0.1:{port}"))
        .arg(method)
        .output()
        .await
        .expect("grpcurl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "grpcurl {args:?}: {stderr}{stdout}");
    stdout
}

/// `bash -c <command>` with the venv's grpcurl first on `PATH`, killed when
/// dropped; the caller adds what else it needs and runs it.
pub fn shell(command: &str) -> Command {
    let grpcurl = crate::grpcurl().expect("grpcurl (scripts/install-deps.sh)");
    let dir = grpcurl.parent().expect("grpcurl's dir");
    let path = std::env::var("PATH").unwrap_or_default();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", command])
        .env("PATH", format!("{}:{path}", dir.display()))
        .kill_on_drop(true);
    cmd
}

/// Runs `command` through [`shell`]; asserts it succeeds and returns its
/// stdout.
pub async fn run_shell(command: &str) -> String {
    let out = shell(command).output().await.expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{command}: {stderr}{stdout}");
    stdout
}
