//! What every server handle ([`Postgres`](crate::Postgres), [`Redis`](crate::Redis),
//! [`Kafka`](crate::Kafka), [`Vault`](crate::Vault)) offers alike, written once:
//! the [`Server`] trait that generic suites (the plugin lifecycle suite, the
//! testkit's own outage tests) drive, and the `server_handle!` macro that gives a
//! handle its accessors and — for servers stopped with `SIGTERM` and frozen with
//! `SIGSTOP` — its outage controls and its `Drop`.

use std::future::Future;

use crate::error::Result;

/// A real server a test can take away and bring back on the same port.
pub trait Server {
    /// The server program's name, for messages ("postgres", "redis-server", ...).
    const NAME: &'static str;

    /// Starts a server with the default test settings.
    fn start() -> impl Future<Output = Result<Self>>
    where
        Self: Sized;

    /// The TCP port on 127.0.0.1 (kept across [`stop`](Self::stop) /
    /// [`start_again`](Self::start_again)).
    fn port(&self) -> u16;

    /// Whether the server process is running.
    fn is_running(&mut self) -> bool;

    /// Stops the server gracefully; its port is kept.
    fn stop(&mut self) -> impl Future<Output = Result<()>>;

    /// Restarts a stopped server on the same port.
    fn start_again(&mut self) -> impl Future<Output = Result<()>>;
}

/// Accessors every handle has (`port`, `is_running`, `log_path`, `logs`) and its
/// [`Server`] impl (`stop` and `start_again` are the handle's own, inherent
/// methods). With `signals`, also the inherent `stop` (`SIGTERM`, port kept),
/// `start_again` (relaunch), `pause` / `resume` (`SIGSTOP` / `SIGCONT`) and a
/// `Drop` that kills the server (`SIGKILL`, 2 s grace) before its temp dir goes.
/// The handle needs fields `port: u16` and `process: ServerProcess` and an async
/// `launch(&mut self) -> Result<()>`.
macro_rules! server_handle {
    ($handle:ident, $name:literal) => {
        impl $handle {
            /// Whether the server process is running.
            pub fn is_running(&mut self) -> bool {
                self.process.is_running()
            }

            /// The TCP port on 127.0.0.1.
            pub fn port(&self) -> u16 {
                self.port
            }

            /// The server log file.
            pub fn log_path(&self) -> &std::path::Path {
                self.process.log_path()
            }

            /// The server's temp dir (removed when the handle is dropped).
            pub fn dir(&self) -> &std::path::Path {
                self.process.dir()
            }

            /// Everything the server logged so far.
            pub fn logs(&self) -> String {
                self.process.log_contents()
            }
        }

        impl $crate::server::Server for $handle {
            const NAME: &'static str = $name;

            async fn start() -> $crate::Result<Self> {
                $handle::start().await
            }

            fn port(&self) -> u16 {
                self.port
            }

            fn is_running(&mut self) -> bool {
                self.process.is_running()
            }

            async fn stop(&mut self) -> $crate::Result<()> {
                $handle::stop(self).await
            }

            async fn start_again(&mut self) -> $crate::Result<()> {
                $handle::start_again(self).await
            }
        }
    };
    ($handle:ident, $name:literal, signals, $lost:literal) => {
        $crate::server::server_handle!($handle, $name);

        impl $handle {
            #[doc = concat!(
                                        "Stops the server (`SIGTERM`); the port is kept for ",
                                        "[`start_again`](Self::start_again). ",
                                        $lost
                                    )]
            pub async fn stop(&mut self) -> $crate::Result<()> {
                self.process
                    .stop(
                        nix::sys::signal::Signal::SIGTERM,
                        $crate::process::STOP_TIMEOUT,
                    )
                    .await?;
                Ok(())
            }

            /// Launches a new handle's server (see `launch`).
            async fn launched(mut self) -> $crate::Result<Self> {
                self.launch().await?;
                Ok(self)
            }

            /// Restarts a stopped server on the same port with the same settings.
            pub async fn start_again(&mut self) -> $crate::Result<()> {
                self.launch().await
            }

            /// Freezes the server (SIGSTOP): connections stay open but nothing is
            /// answered, like a network stall. [`resume`](Self::resume) undoes it.
            pub fn pause(&mut self) -> $crate::Result<()> {
                self.process.signal(nix::sys::signal::Signal::SIGSTOP)
            }

            /// Resumes a paused server (SIGCONT).
            pub fn resume(&mut self) -> $crate::Result<()> {
                self.process.signal(nix::sys::signal::Signal::SIGCONT)
            }
        }

        impl Drop for $handle {
            fn drop(&mut self) {
                self.process.shutdown_blocking(
                    nix::sys::signal::Signal::SIGKILL,
                    std::time::Duration::from_secs(2),
                );
            }
        }
    };
}

pub(crate) use server_handle;
