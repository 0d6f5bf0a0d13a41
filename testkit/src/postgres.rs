//! A real PostgreSQL server for tests: `initdb` into a temp dir, `postgres` on a
//! free 127.0.0.1 port with password (scram-sha-256) auth, outage simulation via
//! [`Postgres::stop`] (or the crash [`Postgres::kill`]) / [`Postgres::start_again`]
//! and stall simulation via [`Postgres::pause`] / [`Postgres::resume`], and a
//! `psql` helper.
//!
//! `initdb` refuses to run as root, so when the tests run as uid 0 both `initdb`
//! and `postgres` run as the Debian `postgres` system user (the temp dir is chowned
//! to it); the testkit itself stays root and talks to the server over TCP only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::statvfs::statvfs;
use nix::unistd::{Gid, Uid, User, chown};
use tokio::process::Command;

use crate::error::{Error, Result};
use crate::freeze::FrozenTree;
use crate::paths::tool;
use crate::pki::IssuedCert;
use crate::ports::free_port;
use crate::postgres_tls::{CERT_LOGIN_GROUP, PgTls, TlsFiles};
use crate::process::{self, START_TIMEOUT, STOP_TIMEOUT, ServerProcess};
use crate::server::server_handle;

/// The superuser the test cluster is initialised with.
pub const POSTGRES_USER: &str = "prism";
/// The password of [`POSTGRES_USER`].
pub const POSTGRES_PASSWORD: &str = "prism-test-password";
/// The database created for tests.
pub const POSTGRES_DB: &str = "prism";
/// Minimum free space on `/dev/shm` for it to hold a cluster (a fresh one is ~40 MB;
/// Docker's default 64 MB `/dev/shm` is deliberately not enough).
const SHM_MIN_FREE: u64 = 1 << 30;
/// The system user servers run as when the tests run as root.
const SYSTEM_USER: &str = "postgres";

/// A running (or deliberately stopped) PostgreSQL server owning its temp dir.
///
/// Dropping it shuts the server down immediately (`SIGQUIT`, like
/// `pg_ctl stop -m immediate`) and removes the data directory.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    postgres_bin: PathBuf,
    psql_bin: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(Uid, Gid)>,
    /// `ssl=on` with these files (in the data dir).
    tls: Option<TlsFiles>,
    process: ServerProcess,
    /// The server's process tree while [`pause`](Self::pause)d.
    frozen: Option<FrozenTree>,
}

server_handle!(Postgres, "postgres");

impl Postgres {
    /// Initialises a fresh cluster (superuser [`POSTGRES_USER`], database
    /// [`POSTGRES_DB`]) and starts it on a free port.
    pub async fn start() -> Result<Self> {
        Self::start_with(None).await
    }

    /// Like [`start`](Self::start) with TLS on (`ssl=on`) using `server` (issue it
    /// from a [`TestCa`](crate::TestCa) for `localhost`/`127.0.0.1`). Plaintext
    /// connections are still accepted: check `pg_stat_ssl` to see which is used.
    pub async fn start_tls(server: &IssuedCert) -> Result<Self> {
        Self::start_with(Some(PgTls {
            server,
            client_ca: None,
            crl: None,
        }))
        .await
    }

    /// Like [`start_tls`](Self::start_tls) with the client-certificate
    /// settings of `tls` too: roles made by [`add_cert_user`](Self::add_cert_user)
    /// log in with a certificate from `tls.client_ca` (not revoked by
    /// `tls.crl`) and no password.
    pub async fn start_with_tls(tls: PgTls<'_>) -> Result<Self> {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<PgTls<'_>>) -> Result<Self> {
        let initdb = tool("initdb")?;
        let postgres_bin = tool("postgres")?;
        let psql_bin = tool("psql")?;
        let run_as = system_user()?;

        let dir = temp_dir_for(run_as)?;
        let root = dir.path().to_path_buf();
        let data_dir = root.join("data");
        let socket_dir = root.join("sock");
        let pwfile = root.join("pwfile");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| Error::io(format!("creating {}", socket_dir.display()), e))?;
        std::fs::write(&pwfile, POSTGRES_PASSWORD)
            .map_err(|e| Error::io(format!("writing {}", pwfile.display()), e))?;
        if let Some((uid, gid)) = run_as {
            for path in [&root, &socket_dir, &pwfile] {
                chown(path, Some(uid), Some(gid)).map_err(|e| {
                    Error::io(
                        format!("chown {} to {SYSTEM_USER}", path.display()),
                        e.into(),
                    )
                })?;
            }
        }

        let mut cmd = Command::new(&initdb);
        cmd.arg("-D")
            .arg(&data_dir)
            .args(["-U", POSTGRES_USER, "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()));
        as_user(&mut cmd, run_as);
        process::run_output(cmd).await?;
        // The password file has done its job; failing to delete it is harmless.
        let _ = std::fs::remove_file(&pwfile);

        let tls = tls
            .map(|tls| TlsFiles::write(&data_dir, run_as, &tls))
            .transpose()?;

        let mut pg = Self {
            port: free_port(),
            postgres_bin,
            psql_bin,
            data_dir,
            socket_dir,
            run_as,
            tls,
            process: ServerProcess::new("postgres", dir),
            frozen: None,
        };
        pg.launch().await?;
        pg.psql_in("postgres", &format!("CREATE DATABASE {POSTGRES_DB}"))
            .await?;
        if pg.tls.as_ref().is_some_and(TlsFiles::client_certs) {
            pg.psql(&format!("CREATE ROLE {CERT_LOGIN_GROUP} NOLOGIN"))
                .await?;
        }
        Ok(pg)
    }

    /// Spawns `postgres` on the data dir and waits until it accepts connections.
    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.postgres_bin);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.socket_dir.display()
            ))
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"]);
        for setting in self.tls.iter().flat_map(TlsFiles::settings) {
            cmd.arg("-c").arg(setting);
        }
        as_user(&mut cmd, self.run_as);
        self.process.spawn(cmd)?;
        let pid = self.process.pid()?;
        let pid_file = self.data_dir.join("postmaster.pid");
        let ready = || {
            let ready = postmaster_ready(&pid_file, pid);
            async move { ready }
        };
        self.process
            .wait_ready(self.port, START_TIMEOUT, ready)
            .await
    }

    /// Fast shutdown (`SIGINT`, like `pg_ctl stop -m fast`): disconnects clients,
    /// checkpoints and exits. The data directory and port are kept for
    /// [`start_again`](Self::start_again). A paused server is resumed first, so it
    /// can act on the signal.
    pub async fn stop(&mut self) -> Result<()> {
        // Dropping the tree thaws it; a process that exited while frozen is no
        // reason to fail the stop.
        drop(self.frozen.take());
        self.process.stop(Signal::SIGINT, STOP_TIMEOUT).await?;
        Ok(())
    }

    /// Crashes the server: SIGKILL to the postmaster and every child at once
    /// (a paused server too), so nothing runs a shutdown path. Returns once
    /// every server process is gone; the data directory and port are kept, and
    /// [`start_again`](Self::start_again) then runs PostgreSQL's crash recovery.
    pub async fn kill(&mut self) -> Result<()> {
        // Freezing first keeps the postmaster from forking (or restarting a
        // child) while the tree is being killed.
        let tree = match self.frozen.take() {
            Some(tree) => tree,
            None => FrozenTree::freeze(self.process.pid()?)?,
        };
        let pids = tree.pids().to_vec();
        let killed = tree.kill();
        // Reap the postmaster (the signal finds it dead or dying) even if a
        // child could not be signalled.
        self.process.stop(Signal::SIGKILL, STOP_TIMEOUT).await?;
        killed?;
        // A new postmaster refuses the data directory while a dying child
        // still holds the old shared memory segment.
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        while let Some(&pid) = pids.iter().find(|&&pid| process_alive(pid)) {
            if std::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("killed postgres process {pid} to exit"),
                    timeout: STOP_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Restarts a stopped (or killed) server on the same port with the same data.
    pub async fn start_again(&mut self) -> Result<()> {
        self.launch().await
    }

    /// Freezes the server (SIGSTOP to the postmaster and every child: the
    /// backend serving each open connection, the background workers):
    /// connections stay open but nothing is answered, like a network stall.
    /// Stopping only the postmaster would leave open connections answered.
    /// [`resume`](Self::resume) undoes it; pausing a paused server does nothing.
    pub fn pause(&mut self) -> Result<()> {
        if self.frozen.is_none() {
            self.frozen = Some(FrozenTree::freeze(self.process.pid()?)?);
        }
        Ok(())
    }

    /// Resumes a paused server (SIGCONT to the whole tree); does nothing if it
    /// is not paused.
    pub fn resume(&mut self) -> Result<()> {
        match self.frozen.take() {
            Some(tree) => tree.thaw(),
            None => Ok(()),
        }
    }

    /// Creates role `name` that logs in with a client certificate whose CN
    /// is `name` and no password (server started by
    /// [`start_with_tls`](Self::start_with_tls) with a client CA), allowed
    /// to create tables in the test database's `public` schema.
    pub async fn add_cert_user(&self, name: &str) -> Result<()> {
        self.psql(&format!(
            "CREATE ROLE \"{name}\" LOGIN IN ROLE {CERT_LOGIN_GROUP}; \
             GRANT CREATE ON SCHEMA public TO \"{name}\""
        ))
        .await
        .map(drop)
    }

    /// The user name ([`POSTGRES_USER`]).
    pub fn user(&self) -> &str {
        POSTGRES_USER
    }

    /// The password ([`POSTGRES_PASSWORD`]).
    pub fn password(&self) -> &str {
        POSTGRES_PASSWORD
    }

    /// The test database name ([`POSTGRES_DB`]).
    pub fn database(&self) -> &str {
        POSTGRES_DB
    }

    /// `postgres://prism:prism-test-password@127.0.0.1:PORT/prism`.
    pub fn url(&self) -> String {
        self.url_for(POSTGRES_DB)
    }

    /// The superuser connection URL for the `postgres` maintenance database (for
    /// `CREATE DATABASE`, `pg_terminate_backend`, ...). [`POSTGRES_USER`] is itself a
    /// superuser, so only the database differs from [`url`](Self::url).
    pub fn superuser_url(&self) -> String {
        self.url_for("postgres")
    }

    /// `postgres://127.0.0.1:PORT/prism`: the test database with no
    /// credentials, for a plugin that gets its user from Vault (only Vault's
    /// credentials can work).
    pub fn url_without_credentials(&self) -> String {
        format!("postgres://127.0.0.1:{}/{POSTGRES_DB}", self.port)
    }

    /// A connection URL for another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs `sql` with `psql` over TCP with password auth against the test
    /// database; returns stdout in unaligned, tuples-only form (`-At`, `|` between
    /// columns, one row per line) without the trailing newline.
    pub async fn psql(&self, sql: &str) -> Result<String> {
        self.psql_in(POSTGRES_DB, sql).await
    }

    /// Whether an ACCESS EXCLUSIVE lock on `table` is granted (someone holds
    /// `LOCK TABLE … IN ACCESS EXCLUSIVE MODE`); false if the query fails.
    pub async fn exclusively_locked(&self, table: &str) -> bool {
        let sql = format!(
            "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass \
             AND mode = 'AccessExclusiveLock' AND granted"
        );
        self.psql(&sql).await.is_ok_and(|n| n == "1")
    }

    /// Like [`psql`](Self::psql) against another database.
    pub async fn psql_in(&self, database: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(&self.psql_bin);
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url_for(database))
            .arg("-c")
            .arg(sql)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGSERVICE")
            .env_remove("PGSSLMODE")
            .env_remove("PGOPTIONS");
        let out = process::run_output(cmd).await?;
        Ok(out.trim_end_matches('\n').to_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // A frozen server could not act on SIGQUIT: thaw it first.
        drop(self.frozen.take());
        // SIGQUIT = immediate shutdown; wait so the temp dir is removed afterwards.
        self.process
            .shutdown_blocking(Signal::SIGQUIT, Duration::from_secs(5));
    }
}

/// `Some((uid, gid))` of the `postgres` system user when running as root.
fn system_user() -> Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(SYSTEM_USER) {
        Ok(Some(user)) => Ok(Some((user.uid, user.gid))),
        _ => Err(Error::MissingUser(SYSTEM_USER.to_owned())),
    }
}

/// Where the cluster's temp dir goes: `/dev/shm` when it is a tmpfs with at least
/// [`SHM_MIN_FREE`] free (initdb is about twice as fast on tmpfs), else the system
/// temp dir, else `/tmp`; in every case a directory the server user can traverse.
fn temp_dir_for(run_as: Option<(Uid, Gid)>) -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let shm_free = statvfs(shm)
        .map(|st| st.blocks_available().saturating_mul(st.fragment_size()))
        .unwrap_or(0);
    let candidates = [
        (shm_free >= SHM_MIN_FREE).then(|| shm.to_path_buf()),
        Some(std::env::temp_dir()),
        Some(PathBuf::from("/tmp")),
    ];
    let usable = |dir: &Path| {
        std::fs::metadata(dir)
            .map(|m| m.is_dir() && (run_as.is_none() || m.permissions().mode() & 0o001 != 0))
            .unwrap_or(false)
    };
    let base = candidates
        .into_iter()
        .flatten()
        .find(|dir| usable(dir))
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("prism-pg-")
        .tempdir_in(&base)
        .map_err(|e| {
            Error::io(
                format!("creating temp dir for postgres in {}", base.display()),
                e,
            )
        })
}

/// Makes `cmd` run as `run_as` (if set).
fn as_user(cmd: &mut Command, run_as: Option<(Uid, Gid)>) {
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
}

/// Whether `postmaster.pid` says the postmaster `pid` accepts connections (its
/// 8th line is `ready`, PostgreSQL 10+). The pid on the first line must match:
/// after a [`kill`](Postgres::kill) the stale file of the crashed server says
/// `ready` until the new postmaster replaces it.
fn postmaster_ready(pid_file: &Path, pid: u32) -> bool {
    std::fs::read_to_string(pid_file)
        .map(|s| {
            let mut lines = s.lines();
            lines.next().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
                && lines.nth(6).is_some_and(|l| l.trim() == "ready")
        })
        .unwrap_or(false)
}

/// Whether `pid` is a live process (not gone, not a zombie: a zombie has
/// released its memory, shared segments included).
fn process_alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|state| !matches!(state, 'Z' | 'X'))
}

/// The state letter of `pid` from `/proc/<pid>/stat` (`T` = stopped, `Z` =
/// zombie), `None` once it is gone.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls until `pid` is (or is not) stopped. A process that exited just
    /// before the freeze counts as stopped too: its frozen parent cannot reap
    /// it, so it stays a zombie (`Z`), or it is already gone.
    async fn wait_state(pid: u32, stopped: bool) {
        let halted = |s: Option<char>| matches!(s, None | Some('T' | 't' | 'Z' | 'X'));
        let what = format!("pid {pid} to reach stopped={stopped}");
        crate::kv::poll_until(Duration::from_secs(10), &what, || async move {
            let s = process_state(pid);
            if stopped {
                halted(s)
            } else {
                !matches!(s, Some('T' | 't'))
            }
        })
        .await;
    }

    #[tokio::test]
    async fn pause_freezes_the_whole_server_tree_and_resume_thaws_it() {
        let mut pg = Postgres::start().await.expect("postgres starts");
        pg.pause().expect("pause");
        // Pausing twice keeps the first freeze (its tree still thaws on resume).
        pg.pause().expect("pause again");
        let pids = pg.frozen.as_ref().expect("frozen").pids().to_vec();
        // The postmaster and its auxiliary processes (checkpointer, WAL writer, ...).
        assert!(pids.len() > 1, "only {pids:?} frozen");
        for &pid in &pids {
            wait_state(pid, true).await;
        }
        pg.resume().expect("resume");
        for &pid in &pids {
            wait_state(pid, false).await;
        }
        assert_eq!(
            pg.psql("SELECT 1").await.expect("answers after resume"),
            "1"
        );
        // Resuming a running server is a no-op; stopping a paused one works.
        pg.resume().expect("resume again");
        pg.pause().expect("pause before stop");
        pg.stop().await.expect("stop a paused server");
    }

    #[tokio::test]
    async fn kill_crashes_the_whole_tree_and_start_again_recovers() {
        let mut pg = Postgres::start().await.expect("postgres starts");
        pg.psql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
            .await
            .expect("insert");
        // Forces the insert to disk (the server runs with
        // synchronous_commit=off), so the crash cannot lose it.
        pg.psql("CHECKPOINT").await.expect("checkpoint");
        // Freezing (and at once thawing) the tree is how to list its pids.
        let pids = FrozenTree::freeze(pg.process.pid().expect("pid"))
            .expect("freeze")
            .pids()
            .to_vec();
        assert!(pids.len() > 1, "only {pids:?} in the tree");

        pg.kill().await.expect("kill");
        assert!(!pg.is_running());
        for &pid in &pids {
            assert!(!process_alive(pid), "pid {pid} of {pids:?} survived");
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", pg.port())).is_err(),
            "the port refuses connections"
        );

        pg.start_again().await.expect("restarts after the crash");
        assert_eq!(pg.psql("SELECT v FROM kept").await.expect("query"), "7");
        assert!(
            pg.logs().contains("not properly shut down"),
            "the restart ran crash recovery:\n{}",
            pg.logs()
        );
        // Killing a paused server works too.
        pg.pause().expect("pause");
        pg.kill().await.expect("kill a paused server");
        pg.start_again().await.expect("restarts again");
        assert_eq!(pg.psql("SELECT 1").await.expect("answers"), "1");
    }
}
