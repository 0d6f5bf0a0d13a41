//! `prism-watcher`: parses flags, sets up logging and the signal handling, and
//! hands over to [`prism_watcher::run`]. Ctrl-C (or SIGTERM) stops the loop and
//! every plugin it started; a second one exits at once.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use prism_watcher::{Cli, Outcome};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::BuildFailed) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("prism-watcher: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let cancel = CancellationToken::new();
    let done = CancellationToken::new();
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let signals = tokio::spawn({
        let cancel = cancel.clone();
        let done = done.clone();
        async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
                _ = done.cancelled() => return,
            }
            tracing::info!("shutting down: stopping the plugins (Ctrl-C again to exit at once)");
            cancel.cancel();
            tokio::select! {
                _ = interrupt.recv() => std::process::exit(130),
                _ = terminate.recv() => std::process::exit(130),
                _ = done.cancelled() => {}
            }
        }
    });
    let result = prism_watcher::run(cli, cancel.child_token()).await;
    done.cancel();
    signals.await.context("signal task")?;
    Ok(result?)
}
