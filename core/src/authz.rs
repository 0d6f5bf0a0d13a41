//! Namespace access by client identity (defence in depth behind the
//! gateway): the optional `control_plane.authorization` section maps a
//! verified client identity — the first URI SAN of its certificate (e.g.
//! `spiffe://…`), else its subject CN — to the namespaces it may use, as
//! exact names or trailing-`*` globs.
//!
//! A tower layer ([`AuthzLayer`]) reads the identity of every data call from
//! the mTLS session and puts an [`Access`] into the request's extensions;
//! [`crate::Call::begin`] checks the call's `x-prism-namespace` against it,
//! and a pub/sub service checks each topic with [`permit_topic`] (a topic's
//! namespace is its name up to the first `.`). A denied call is
//! `PERMISSION_DENIED` naming the identity and the namespace. Lifecycle,
//! health and reflection are not namespace-scoped. Without the section no
//! layer is installed and nothing changes. The grants file is re-read when
//! it changes, on the TLS files' reload interval.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::Error;
use crate::around::{Around, AroundLayer, Before};

/// `control_plane.authorization`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// Client identity (URI SAN, else CN) → the namespaces it may use:
    /// exact names or trailing-`*` globs (`team-a`, `team-a-*`, `*`).
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    /// YAML file of more grants (same shape), re-read when it changes every
    /// `control_plane.tls.reload_interval`; a file that does not parse keeps
    /// the previous grants.
    #[serde(default)]
    pub grants_file: Option<PathBuf>,
}

/// One namespace pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        let (body, glob) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let valid = body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid || (body.is_empty() && !glob) {
            return Err(format!(
                "namespace pattern {text:?}: use a namespace ([A-Za-z0-9._-]) with an optional trailing `*`"
            ));
        }
        Ok(if glob {
            Pattern::Prefix(body.to_string())
        } else {
            Pattern::Exact(body.to_string())
        })
    }

    fn matches(&self, namespace: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == namespace,
            Pattern::Prefix(prefix) => namespace.starts_with(prefix.as_str()),
        }
    }
}

/// The compiled grants.
#[derive(Debug, Default)]
pub(crate) struct Policy {
    grants: HashMap<String, Vec<Pattern>>,
}

impl Policy {
    fn compile(grants: &BTreeMap<String, Vec<String>>, key: &str) -> Result<Self, Vec<String>> {
        let mut policy = Policy::default();
        let mut problems = Vec::new();
        for (identity, patterns) in grants {
            if identity.is_empty() {
                problems.push(format!("`{key}`: an identity must not be empty"));
            }
            let entry = policy.grants.entry(identity.clone()).or_default();
            for pattern in patterns {
                match Pattern::parse(pattern) {
                    Ok(p) => entry.push(p),
                    Err(problem) => problems.push(format!("`{key}.{identity}`: {problem}")),
                }
            }
        }
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems)
        }
    }

    fn merged(mut self, other: Policy) -> Self {
        for (identity, patterns) in other.grants {
            self.grants.entry(identity).or_default().extend(patterns);
        }
        self
    }

    fn allows(&self, identity: &str, namespace: &str) -> bool {
        self.grants
            .get(identity)
            .is_some_and(|patterns| patterns.iter().any(|p| p.matches(namespace)))
    }
}

impl AuthorizationConfig {
    /// Pure checks: the patterns, and that clients are verified at all (mTLS).
    pub fn validate(&self, tls: Option<&crate::tls::TlsConfig>) -> Vec<String> {
        let mut problems = Vec::new();
        if tls.is_none_or(|t| t.client_ca_file.is_none()) {
            problems.push(
                "`control_plane.authorization`: needs `control_plane.tls.client_ca_file` \
                 (client identities come from verified client certificates)"
                    .to_string(),
            );
        }
        if self.grants.is_empty() && self.grants_file.is_none() {
            problems
                .push("`control_plane.authorization`: set `grants` or `grants_file`".to_string());
        }
        if let Err(more) = Policy::compile(&self.grants, "control_plane.authorization.grants") {
            problems.extend(more);
        }
        problems
    }

    /// The inline grants plus the file's (read now).
    fn load(&self) -> Result<Policy, Error> {
        let inline = Policy::compile(&self.grants, "control_plane.authorization.grants")
            .map_err(Error::Config)?;
        let Some(path) = &self.grants_file else {
            return Ok(inline);
        };
        let key = "control_plane.authorization.grants_file";
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(format!("`{key}`: cannot read {}: {e}", path.display())))?;
        let grants: BTreeMap<String, Vec<String>> = serde_yaml::from_str(&text)
            .map_err(|e| Error::config(format!("`{key}`: {}: {e}", path.display())))?;
        Ok(inline.merged(Policy::compile(&grants, key).map_err(Error::Config)?))
    }

    fn modified(&self) -> Option<SystemTime> {
        let path = self.grants_file.as_ref()?;
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }
}

/// The current grants, shared by the layer and the reload task.
#[derive(Clone)]
pub(crate) struct Authz {
    current: Arc<RwLock<Arc<Policy>>>,
}

impl Authz {
    /// Loads the grants (a bad file is a configuration error at startup).
    pub(crate) fn load(config: &AuthorizationConfig) -> Result<Self, Error> {
        Ok(Authz {
            current: Arc::new(RwLock::new(Arc::new(config.load()?))),
        })
    }

    fn policy(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the grants file whenever it changed, every `interval`, until
    /// `shutdown`; a file that does not load keeps the previous grants.
    pub(crate) async fn reload_loop(
        self,
        config: AuthorizationConfig,
        interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut seen = config.modified();
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            let now = config.modified();
            if now == seen {
                continue;
            }
            match config.load() {
                Ok(policy) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                    seen = now;
                    tracing::info!("reloaded the authorization grants");
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "authorization grants changed but cannot be loaded; keeping the old ones"
                ),
            }
        }
    }
}

/// A data call's verified client identity and the grants it is checked
/// against; in the request's extensions when authorization is on.
#[derive(Clone, Debug)]
pub struct Access {
    identity: Arc<str>,
    policy: Arc<Policy>,
}

impl Access {
    /// The client identity (URI SAN or CN).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// `PERMISSION_DENIED` unless the identity may use `namespace`.
    #[allow(clippy::result_large_err)]
    pub fn permit(&self, namespace: &str) -> Result<(), Status> {
        if self.policy.allows(&self.identity, namespace) {
            return Ok(());
        }
        tracing::debug!(identity = %self.identity, namespace, "namespace access denied");
        Err(Status::permission_denied(format!(
            "client {:?} may not use namespace {namespace:?}",
            &*self.identity
        )))
    }
}

/// The call's [`Access`] (none when authorization is off).
pub fn access<T>(request: &tonic::Request<T>) -> Option<Access> {
    request.extensions().get::<Access>().cloned()
}

/// Checks a namespace for a call that carries `access` (from [`access`]).
#[allow(clippy::result_large_err)]
pub fn permit(access: Option<&Access>, namespace: &str) -> Result<(), Status> {
    access.map_or(Ok(()), |a| a.permit(namespace))
}

/// Pub/sub: a topic's namespace is its name up to the first `.` (the whole
/// name when it has none), checked like any other namespace.
#[allow(clippy::result_large_err)]
pub fn permit_topic(access: Option<&Access>, topic: &str) -> Result<(), Status> {
    permit(access, topic_namespace(topic))
}

/// The namespace of a topic (see [`permit_topic`]).
pub fn topic_namespace(topic: &str) -> &str {
    topic
        .split_once('.')
        .map_or(topic, |(namespace, _)| namespace)
}

/// The identity of a verified peer certificate (DER): its first URI SAN,
/// else its subject's first CN.
pub(crate) fn identity(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let uri = san.value.general_names.iter().find_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        });
        if uri.is_some() {
            return uri;
        }
    }
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Tower layer resolving each data call's client identity (see the module docs).
pub(crate) type AuthzLayer = AroundLayer<Authz>;

impl Around for Authz {
    type Call = ();

    fn before<B>(&self, req: &mut http::Request<B>) -> Before<()> {
        if !crate::gate::is_data_path(req.uri().path()) {
            return Before::Pass;
        }
        let identity = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().and_then(|leaf| identity(leaf)));
        match identity {
            Some(identity) => {
                req.extensions_mut().insert(Access {
                    identity: identity.into(),
                    policy: self.policy(),
                });
                Before::Pass
            }
            None => Before::Answer(
                Status::permission_denied(
                    "no client identity: data calls need a client certificate with a URI SAN or a CN",
                )
                .into_http::<tonic::body::Body>(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(id, ps)| (id.to_string(), ps.iter().map(|p| p.to_string()).collect()))
            .collect()
    }

    #[test]
    fn exact_names_and_trailing_globs() {
        let policy = Policy::compile(
            &grants(&[
                ("spiffe://prism/a", &["team-a", "shared-*"]),
                ("ops", &["*"]),
            ]),
            "k",
        )
        .unwrap();
        assert!(policy.allows("spiffe://prism/a", "team-a"));
        assert!(policy.allows("spiffe://prism/a", "shared-cache"));
        assert!(!policy.allows("spiffe://prism/a", "team-ab"));
        assert!(!policy.allows("spiffe://prism/a", "default"));
        assert!(policy.allows("ops", "anything"));
        assert!(!policy.allows("nobody", "team-a"));
    }

    #[test]
    fn bad_patterns_name_their_key() {
        let err = Policy::compile(&grants(&[("a", &["te*am", "", "x/y"])]), "k").unwrap_err();
        assert_eq!(err.len(), 3, "{err:?}");
        assert!(err.iter().all(|p| p.starts_with("`k.a`")), "{err:?}");
    }

    #[test]
    fn authorization_needs_mtls_and_some_grants() {
        let config = AuthorizationConfig::default();
        let problems = config.validate(None);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("client_ca_file"), "{problems:?}");
    }

    #[test]
    fn the_identity_is_the_first_uri_san_else_the_cn() {
        use rcgen::{CertificateParams, DnType, KeyPair, SanType};
        let der = |uri: Option<&str>| {
            let mut params = CertificateParams::new(vec!["host.example".to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, "app-cn");
            if let Some(uri) = uri {
                params
                    .subject_alt_names
                    .push(SanType::URI(uri.try_into().unwrap()));
            }
            let key = KeyPair::generate().unwrap();
            params.self_signed(&key).unwrap().der().to_vec()
        };
        assert_eq!(
            identity(&der(Some("spiffe://prism/ns/a"))).as_deref(),
            Some("spiffe://prism/ns/a")
        );
        assert_eq!(identity(&der(None)).as_deref(), Some("app-cn"));
        assert_eq!(identity(b"not a certificate"), None);
    }

    #[test]
    fn a_topic_belongs_to_the_namespace_before_its_first_dot() {
        assert_eq!(topic_namespace("team-a.orders.v1"), "team-a");
        assert_eq!(topic_namespace("events"), "events");
        let access = Access {
            identity: "a".into(),
            policy: Arc::new(Policy::compile(&grants(&[("a", &["team-a"])]), "k").unwrap()),
        };
        assert!(permit_topic(Some(&access), "team-a.orders").is_ok());
        let denied = permit_topic(Some(&access), "team-b.orders").unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            denied.message(),
            "client \"a\" may not use namespace \"team-b\""
        );
        assert!(
            permit_topic(None, "team-b.orders").is_ok(),
            "authorization off"
        );
    }
}
