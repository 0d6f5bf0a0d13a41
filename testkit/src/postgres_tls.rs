//! TLS for the test PostgreSQL: the server certificate, and optionally a CA
//! that client certificates must chain to plus a CRL, written into the data
//! directory where the server user can read them, the `-c` settings naming
//! them, and the `pg_hba.conf` line that makes members of
//! [`CERT_LOGIN_GROUP`] log in with a certificate only (`hostssl … cert`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, chown};

use crate::error::{Error, Result};
use crate::pki::IssuedCert;

/// Roles in this group log in over TLS with a client certificate whose CN is
/// their name, and with nothing else (`hostssl all +prism_cert_login … cert`).
pub const CERT_LOGIN_GROUP: &str = "prism_cert_login";

/// TLS settings of a test PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub struct PgTls<'a> {
    /// The server certificate (issue it for `localhost`/`127.0.0.1`).
    pub server: &'a IssuedCert,
    /// CA bundle (PEM) client certificates must chain to (`ssl_ca_file`);
    /// with it, roles made by [`Postgres::add_cert_user`](crate::Postgres::add_cert_user)
    /// log in by certificate.
    pub client_ca: Option<&'a str>,
    /// Certificate revocation list (PEM) the server checks client
    /// certificates against (`ssl_crl_file`).
    pub crl: Option<&'a str>,
}

/// The TLS files in the data directory.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    crl: Option<PathBuf>,
}

impl TlsFiles {
    /// Writes the files of `tls` into `data_dir` (mode 0600, owned by
    /// `run_as`: PostgreSQL refuses a key others can read) and, with a client
    /// CA, puts the certificate login line first in `pg_hba.conf`.
    pub(crate) fn write(
        data_dir: &Path,
        run_as: Option<(Uid, Gid)>,
        tls: &PgTls<'_>,
    ) -> Result<Self> {
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = data_dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
            if let Some((uid, gid)) = run_as {
                chown(&path, Some(uid), Some(gid)).map_err(|e| {
                    Error::io(format!("chown {} to postgres", path.display()), e.into())
                })?;
            }
            Ok(path)
        };
        let files = TlsFiles {
            cert: write("server.crt", &tls.server.cert_pem)?,
            key: write("server.key", &tls.server.key_pem)?,
            client_ca: tls
                .client_ca
                .map(|pem| write("client-ca.crt", pem))
                .transpose()?,
            crl: tls.crl.map(|pem| write("client.crl", pem)).transpose()?,
        };
        if files.client_ca.is_some() {
            let hba = data_dir.join("pg_hba.conf");
            let old = std::fs::read_to_string(&hba)
                .map_err(|e| Error::io(format!("reading {}", hba.display()), e))?;
            // First match wins: members of the group log in by certificate
            // only; everyone else falls through to initdb's password lines.
            let line = format!("hostssl all +{CERT_LOGIN_GROUP} 127.0.0.1/32 cert\n");
            std::fs::write(&hba, format!("{line}{old}"))
                .map_err(|e| Error::io(format!("writing {}", hba.display()), e))?;
        }
        Ok(files)
    }

    /// Whether client certificates are checked (a client CA is set).
    pub(crate) fn client_certs(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The `-c` settings for `postgres`.
    pub(crate) fn settings(&self) -> Vec<String> {
        let mut settings = vec![
            "ssl=on".to_string(),
            format!("ssl_cert_file={}", self.cert.display()),
            format!("ssl_key_file={}", self.key.display()),
        ];
        if let Some(ca) = &self.client_ca {
            settings.push(format!("ssl_ca_file={}", ca.display()));
        }
        if let Some(crl) = &self.crl {
            settings.push(format!("ssl_crl_file={}", crl.display()));
        }
        settings
    }
}
