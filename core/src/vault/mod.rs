//! Backend credentials from Vault / OpenBao (DESIGN.md §5): the `vault:`
//! config section, login (token, token file, AppRole, Kubernetes), token
//! renewal, dynamic database credentials with lease renewal and rotation, KV
//! v2 secrets with version polling, and PKI client certificates re-issued
//! at 2/3 of their life.
//!
//! A [`CredentialSource`] owns one background task that keeps credentials
//! fresh and publishes each new set on a `watch` channel; a plugin builds a new
//! pool/connection from every published set and swaps it in. vaultrs covers
//! login, token lookup/renewal and KV v2; it has no lease renewal or
//! revocation and its `database::role::creds` drops `lease_id`,
//! `lease_duration` and `renewable`, so those three calls are made over HTTP
//! here.
//!
//! Layout, each file depending only on those listed after it:
//! - `source`: [`CredentialSource`], the handle a plugin holds;
//! - `worker`: the background task (login, renewals, rotation, revocation);
//! - `client` (vaultrs), `http` (raw HTTP) and `pki` (the PKI engine's
//!   issue call and its credentials): the calls to Vault;
//! - `policy`: the pure decisions (when to renew, renew or replace, backoff);
//! - `status`: reachability, counts and expiry for health;
//! - `config`: the `vault:` section; `credentials`: what is handed out.
//!
//! All timing is on tokio's clock (`tokio::time::Instant`), so tests drive
//! renewal on a paused clock without a server.

mod client;
mod config;
mod credentials;
mod http;
mod pki;
mod policy;
mod source;
mod status;
mod worker;

pub use config::{
    AuthConfig, AuthMethod, SecretConfig, SecretEngine, VAULT_ENV_ALIASES, VaultConfig, VaultTls,
};
pub use credentials::{ClientCertificate, Credentials, Lease, SecretString};
pub use source::CredentialSource;
