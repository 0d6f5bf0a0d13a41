//! A throwaway certificate authority for TLS tests: generated at test time,
//! never checked in.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SanType, SerialNumber, date_time_ymd,
};

use crate::Result;

/// A test CA that issues server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// How a client certificate from [`TestCa::client_with`] differs from
/// [`TestCa::client`]'s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientOptions<'a> {
    /// A URI subject alternative name (e.g. `spiffe://prism/ns/a`), the
    /// identity a plugin's `control_plane.authorization` prefers to the CN.
    pub uri: Option<&'a str>,
    /// Valid only in 2000: expired long ago.
    pub expired: bool,
    /// The serial number (for [`TestCa::crl`]); random when unset.
    pub serial: Option<u64>,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl IssuedCert {
    /// The leaf certificate as DER (what a TLS peer presents), to compare
    /// with [`KafkaProxy::client_certificates`](crate::KafkaProxy::client_certificates).
    pub fn cert_der(&self) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()
            .and_then(|der| der.ok())
            .map(|der| der.to_vec())
            .unwrap_or_default()
    }
}

/// The lines of key material in a PEM private key: each is distinctive, so
/// a text that quoted any of them would leak part of the key (what the
/// secret-leak checks search for).
pub fn key_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 8)
        .collect()
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate (PEM), for trust stores.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Result<IssuedCert> {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, name: &str) -> Result<IssuedCert> {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate with common name `name`, shaped by `options`.
    pub fn client_with(&self, name: &str, options: ClientOptions<'_>) -> Result<IssuedCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(uri) = options.uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
        if options.expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        params.serial_number = options.serial.map(SerialNumber::from);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate revocation list (PEM) of this CA revoking the
    /// certificates with these serial numbers (e.g. for PostgreSQL's
    /// `ssl_crl_file`).
    pub fn crl(&self, revoked: &[u64]) -> Result<String> {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(4000, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Result<IssuedCert> {
        let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
