//! Who may reach what over HTTP.
//!
//! The web configuration file is the one Prometheus and Alertmanager read
//! (prometheus/exporter-toolkit): `tls_server_config` (certificate and key,
//! client certificates, protocol versions), `http_server_config` (response
//! headers) and `basic_auth_users` (bcrypt hashes). squadron adds a split the
//! toolkit does not have ([`AuthorizationConfig`]): read endpoints (the API,
//! `/metrics`) and write endpoints (ingest, reload) can be open to different
//! users, so Prometheus can scrape without being able to page anyone.
//!
//! Health endpoints (`/healthz`, `/readyz`, `/-/healthy`, `/-/ready`) are
//! always open: they say only whether squadron works, and orchestrators probe
//! them without credentials.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// squadron's own part of the policy, under `http.authorization`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// Basic-auth users (of the web config) who may read; empty: every user.
    pub readers: Vec<String>,
    /// Basic-auth users who may write (ingest, reload); empty: every user.
    pub writers: Vec<String>,
    /// Read endpoints answer without credentials (writes still need them).
    pub anonymous_read: bool,
}

/// The exporter-toolkit web configuration file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    /// User name to bcrypt hash.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The certificate chain and key inline (PEM), instead of files.
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    /// NoClientCert (default), RequestClientCert, RequireAnyClientCert,
    /// VerifyClientCertIfGiven or RequireAndVerifyClientCert.
    #[serde(default)]
    pub client_auth_type: Option<String>,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// TLS10, TLS11, TLS12 (default) or TLS13.
    #[serde(default)]
    pub min_version: Option<String>,
    #[serde(default)]
    pub max_version: Option<String>,
    // Known to the toolkit, not supported here: refused when set, never ignored.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    #[serde(default)]
    pub curve_preferences: Vec<String>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    pub client_allowed_sans: Vec<String>,
    #[serde(default)]
    pub client_ca: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// HTTP/2 over TLS (ALPN `h2`); on unless `false`, as in Prometheus' toolkit.
    #[serde(default)]
    pub http2: Option<bool>,
    /// Response headers the toolkit allows (security headers).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Response headers the exporter-toolkit lets a web config set.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    Read,
    Write,
}

impl Access {
    pub fn of(method: &hyper::Method, path: &str) -> Access {
        match (method, path) {
            (_, "/healthz" | "/readyz" | "/-/healthy" | "/-/ready") => Access::Public,
            (
                &hyper::Method::POST,
                "/api/v2/alerts" | "/-/reload" | "/api/v2/silences" | "/api/v1/acks"
                | "/api/v1/overrides",
            ) => Access::Write,
            (&hyper::Method::DELETE, _) => Access::Write,
            _ => Access::Read,
        }
    }
}

/// The answer to a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credentials, or wrong ones: 401.
    Unauthenticated,
    /// A known user without the right: 403.
    Forbidden(String),
}

/// The server's security, built once at start.
pub struct Web {
    pub tls: Option<openssl::ssl::SslAcceptor>,
    /// Added to every response.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    pub auth: Auth,
}

impl Web {
    /// No TLS, no users, no token: everything open (the default, on loopback).
    pub fn open() -> Web {
        Web {
            tls: None,
            headers: Vec::new(),
            auth: Auth::new(BTreeMap::new(), &AuthorizationConfig::default(), None),
        }
    }

    /// Reads the web config file (when given) and applies the policy.
    pub fn load(
        file: Option<&Path>,
        policy: &AuthorizationConfig,
        bearer_token: Option<String>,
    ) -> anyhow::Result<Web> {
        let Some(path) = file else {
            let mut web = Web::open();
            web.auth = Auth::new(BTreeMap::new(), policy, bearer_token);
            return Ok(web);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("web config {}: {e}", path.display()))?;
        let wc: WebConfigFile = serde_yaml_ng::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "web config {}: {}",
                path.display(),
                crate::rules::strip_location(&e.to_string())
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Web::from_file(wc, dir, policy, bearer_token)
            .map_err(|e| anyhow::anyhow!("web config {}: {e:#}", path.display()))
    }

    /// `dir`: where relative paths in the file start (the file's directory, as
    /// the toolkit does).
    pub fn from_file(
        wc: WebConfigFile,
        dir: &Path,
        policy: &AuthorizationConfig,
        bearer_token: Option<String>,
    ) -> anyhow::Result<Web> {
        for (user, hash) in &wc.basic_auth_users {
            anyhow::ensure!(
                bcrypt_cost(hash).is_some(),
                "basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
            );
        }
        for u in policy.readers.iter().chain(&policy.writers) {
            anyhow::ensure!(
                wc.basic_auth_users.contains_key(u),
                "http.authorization names {u:?}, who is not in basic_auth_users"
            );
        }
        let mut headers = Vec::new();
        for (name, value) in &wc.http_server_config.headers {
            anyhow::ensure!(
                ALLOWED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)),
                "http_server_config.headers: {name:?} is not one of {}",
                ALLOWED_HEADERS.join(", ")
            );
            headers.push((
                hyper::header::HeaderName::from_bytes(name.as_bytes())?,
                hyper::header::HeaderValue::from_str(value).map_err(|_| {
                    anyhow::anyhow!("http_server_config.headers.{name}: not a header value")
                })?,
            ));
        }
        // As in Prometheus' toolkit: HTTP/2 over TLS unless turned off.
        let http2 = wc.http_server_config.http2.unwrap_or(true);
        let tls = wc
            .tls_server_config
            .as_ref()
            .map(|t| tls_acceptor(t, dir, http2))
            .transpose()
            .map_err(|e| anyhow::anyhow!("tls_server_config: {e:#}"))?;
        Ok(Web {
            tls,
            headers,
            auth: Auth::new(wc.basic_auth_users, policy, bearer_token),
        })
    }
}

/// The cost of a bcrypt hash (`$2a$`, `$2b$` or `$2y$`), if it is one.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2a$", "$2b$", "$2y$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))?;
    let (cost, salt_and_hash) = rest.split_once('$')?;
    (salt_and_hash.len() == 53).then_some(())?;
    cost.parse().ok().filter(|c| (4..=31).contains(c))
}

fn tls_acceptor(
    t: &TlsServerConfig,
    dir: &Path,
    http2: bool,
) -> anyhow::Result<openssl::ssl::SslAcceptor> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode, SslVersion};
    let unsupported = [
        ("cipher_suites", !t.cipher_suites.is_empty()),
        ("curve_preferences", !t.curve_preferences.is_empty()),
        (
            "prefer_server_cipher_suites",
            t.prefer_server_cipher_suites.is_some(),
        ),
        ("client_allowed_sans", !t.client_allowed_sans.is_empty()),
        ("client_ca", t.client_ca.is_some()),
    ];
    for (key, set) in unsupported {
        anyhow::ensure!(
            !set,
            "{key} is not supported by squadron (OpenSSL's defaults apply)"
        );
    }
    let path = |p: &PathBuf| {
        if p.is_relative() {
            dir.join(p)
        } else {
            p.clone()
        }
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    match (&t.cert_file, &t.cert) {
        (Some(f), None) => b
            .set_certificate_chain_file(path(f))
            .map_err(|e| anyhow::anyhow!("cert_file {}: {e}", path(f).display()))?,
        (None, Some(pem)) => {
            let mut chain = openssl::x509::X509::stack_from_pem(pem.as_bytes())?.into_iter();
            let leaf = chain
                .next()
                .ok_or_else(|| anyhow::anyhow!("cert: no certificate"))?;
            b.set_certificate(&leaf)?;
            for c in chain {
                b.add_extra_chain_cert(c)?;
            }
        }
        _ => anyhow::bail!("needs exactly one of cert_file and cert"),
    }
    match (&t.key_file, &t.key) {
        (Some(f), None) => b
            .set_private_key_file(path(f), SslFiletype::PEM)
            .map_err(|e| anyhow::anyhow!("key_file {}: {e}", path(f).display()))?,
        (None, Some(pem)) => {
            let key = openssl::pkey::PKey::private_key_from_pem(pem.as_bytes())?;
            b.set_private_key(&key)?
        }
        _ => anyhow::bail!("needs exactly one of key_file and key"),
    }
    b.check_private_key()
        .map_err(|e| anyhow::anyhow!("the key does not match the certificate: {e}"))?;
    let version = |v: &Option<String>, default| -> anyhow::Result<Option<SslVersion>> {
        Ok(match v.as_deref() {
            None => default,
            Some("TLS10") => Some(SslVersion::TLS1),
            Some("TLS11") => Some(SslVersion::TLS1_1),
            Some("TLS12") => Some(SslVersion::TLS1_2),
            Some("TLS13") => Some(SslVersion::TLS1_3),
            Some(other) => anyhow::bail!("{other:?} is not TLS10, TLS11, TLS12 or TLS13"),
        })
    };
    b.set_min_proto_version(version(&t.min_version, Some(SslVersion::TLS1_2))?)?;
    b.set_max_proto_version(version(&t.max_version, None)?)?;
    let verify = match t.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => None,
        "RequestClientCert" => Some((SslVerifyMode::PEER, false)),
        "RequireAnyClientCert" => Some((
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            false,
        )),
        "VerifyClientCertIfGiven" => Some((SslVerifyMode::PEER, true)),
        "RequireAndVerifyClientCert" => Some((
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            true,
        )),
        other => anyhow::bail!("client_auth_type {other:?} is not one the toolkit knows"),
    };
    if let Some((mode, verified)) = verify {
        if verified {
            let ca = t.client_ca_file.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "client_auth_type verifies client certificates: client_ca_file is needed"
                )
            })?;
            b.set_ca_file(path(ca))
                .map_err(|e| anyhow::anyhow!("client_ca_file {}: {e}", path(ca).display()))?;
            b.set_verify(mode);
        } else {
            // Asked for, any accepted (the toolkit's Request/RequireAny).
            b.set_verify_callback(mode, |_, _| true);
        }
    }
    // HTTP/2 first, as Go and curl prefer it (refused requests' bodies are
    // read before the answer, so clients see the status: `http.rs`).
    let ours: &'static [u8] = if http2 {
        b"\x02h2\x08http/1.1"
    } else {
        b"\x08http/1.1"
    };
    b.set_alpn_select_callback(move |_, client| {
        openssl::ssl::select_next_proto(ours, client).ok_or(openssl::ssl::AlpnError::NOACK)
    });
    Ok(b.build())
}

/// Basic-auth users, the read/write split, and the bearer token that may
/// write (the ingest token). Verified passwords are cached (bcrypt costs tens
/// of milliseconds by design), keyed by a hash of user, password and stored
/// hash, so a changed password is never served from the cache.
pub struct Auth {
    users: BTreeMap<String, String>,
    readers: Option<HashSet<String>>,
    writers: Option<HashSet<String>>,
    anonymous_read: bool,
    /// SHA-256 of the bearer token.
    bearer: Option<[u8; 32]>,
    cache: Arc<Mutex<HashMap<[u8; 32], bool>>>,
    /// One bcrypt check at a time: a client sending wrong passwords as fast
    /// as it can costs squadron at most one core, never the pipeline's.
    hashing: Arc<tokio::sync::Semaphore>,
}

/// Entries at most in the password cache; it starts over when full.
const CACHE_ENTRIES: usize = 1024;

/// Checked against when the user is unknown, so that an unknown user takes as
/// long as a wrong password (no user enumeration by timing).
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

impl Auth {
    pub fn new(
        users: BTreeMap<String, String>,
        policy: &AuthorizationConfig,
        bearer_token: Option<String>,
    ) -> Auth {
        let set = |v: &[String]| (!v.is_empty()).then(|| v.iter().cloned().collect());
        Auth {
            users,
            readers: set(&policy.readers),
            writers: set(&policy.writers),
            anonymous_read: policy.anonymous_read,
            bearer: bearer_token
                .filter(|t| !t.is_empty())
                .map(|t| sha256(&[t.as_bytes()])),
            cache: Default::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Whether anything is protected at all.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty() || self.bearer.is_some()
    }

    /// Whether reads need credentials.
    pub fn protects_reads(&self) -> bool {
        !self.users.is_empty() && !self.anonymous_read
    }

    /// Checks a request's `Authorization` header for `access`.
    pub async fn check(&self, access: Access, authorization: Option<&str>) -> Verdict {
        if access == Access::Public || !self.enabled() {
            return Verdict::Allowed;
        }
        if access == Access::Read && !self.protects_reads() {
            return Verdict::Allowed;
        }
        let header = authorization.unwrap_or("");
        if let Some(token) = strip_scheme(header, "Bearer") {
            // The bearer token may write, and so read.
            return match self.bearer {
                Some(want) if constant_time_eq(&sha256(&[token.as_bytes()]), &want) => {
                    Verdict::Allowed
                }
                _ => Verdict::Unauthenticated,
            };
        }
        let Some((user, password)) = strip_scheme(header, "Basic").and_then(decode_basic) else {
            return Verdict::Unauthenticated;
        };
        if !self.verify(&user, &password).await {
            return Verdict::Unauthenticated;
        }
        let allowed = match access {
            Access::Write => &self.writers,
            _ => &self.readers,
        };
        match allowed {
            Some(set) if !set.contains(&user) => Verdict::Forbidden(format!(
                "user {user:?} may not {}",
                if access == Access::Write {
                    "write"
                } else {
                    "read"
                }
            )),
            _ => Verdict::Allowed,
        }
    }

    async fn verify(&self, user: &str, password: &str) -> bool {
        let hash = self.users.get(user).cloned();
        let stored = hash.as_deref().unwrap_or(DUMMY_HASH);
        let key = sha256(&[user.as_bytes(), password.as_bytes(), stored.as_bytes()]);
        if let Some(ok) = self.cache.lock().expect("auth cache").get(&key) {
            return *ok;
        }
        let (password, stored_owned) = (password.to_owned(), stored.to_owned());
        let Ok(_turn) = self.hashing.acquire().await else {
            return false;
        };
        // bcrypt is slow on purpose: off the async workers.
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password, &stored_owned).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
            && hash.is_some();
        let mut cache = self.cache.lock().expect("auth cache");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, ok);
        ok
    }
}

pub(crate) fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

pub(crate) fn decode_basic(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn auth(policy: AuthorizationConfig, token: Option<&str>) -> Auth {
        // Cost 4: the lowest bcrypt allows, so the test stays quick.
        let users = [("alice", "alice-pw"), ("prometheus", "scrape-pw")]
            .into_iter()
            .map(|(u, p)| (u.to_owned(), bcrypt::hash(p, 4).unwrap()))
            .collect();
        Auth::new(users, &policy, token.map(Into::into))
    }

    #[tokio::test]
    async fn reads_and_writes_are_authorized_apart() {
        let a = auth(
            AuthorizationConfig {
                writers: vec!["alice".into()],
                ..Default::default()
            },
            Some("ingest-token"),
        );
        let check = |access, header: Option<String>| {
            let a = &a;
            async move { a.check(access, header.as_deref()).await }
        };
        use Access::*;
        assert_eq!(check(Public, None).await, Verdict::Allowed);
        assert_eq!(check(Read, None).await, Verdict::Unauthenticated);
        assert_eq!(check(Write, None).await, Verdict::Unauthenticated);
        assert_eq!(
            check(Read, Some(basic("prometheus", "scrape-pw"))).await,
            Verdict::Allowed
        );
        assert!(matches!(
            check(Write, Some(basic("prometheus", "scrape-pw"))).await,
            Verdict::Forbidden(_)
        ));
        assert_eq!(
            check(Write, Some(basic("alice", "alice-pw"))).await,
            Verdict::Allowed
        );
        // Again, from the cache.
        assert_eq!(
            check(Write, Some(basic("alice", "alice-pw"))).await,
            Verdict::Allowed
        );
        assert_eq!(
            check(Write, Some(basic("alice", "wrong"))).await,
            Verdict::Unauthenticated
        );
        assert_eq!(
            check(Write, Some(basic("mallory", "alice-pw"))).await,
            Verdict::Unauthenticated
        );
        assert_eq!(
            check(Write, Some("Bearer ingest-token".into())).await,
            Verdict::Allowed
        );
        assert_eq!(
            check(Write, Some("bearer  ingest-token".into())).await,
            Verdict::Allowed
        );
        assert_eq!(
            check(Write, Some("Bearer other".into())).await,
            Verdict::Unauthenticated
        );
        assert_eq!(
            check(Write, Some("Basic !!!".into())).await,
            Verdict::Unauthenticated
        );
        let open_reads = auth(
            AuthorizationConfig {
                anonymous_read: true,
                ..Default::default()
            },
            None,
        );
        assert_eq!(open_reads.check(Read, None).await, Verdict::Allowed);
        assert_eq!(
            open_reads.check(Write, None).await,
            Verdict::Unauthenticated
        );
        // Only a token: reads open (as before), writes need it.
        let token_only = Auth::new(BTreeMap::new(), &Default::default(), Some("t".into()));
        assert_eq!(token_only.check(Read, None).await, Verdict::Allowed);
        assert_eq!(
            token_only.check(Write, None).await,
            Verdict::Unauthenticated
        );
        assert!(!Web::open().auth.enabled());
    }

    #[test]
    fn endpoints_are_classified() {
        use hyper::Method;
        assert_eq!(Access::of(&Method::GET, "/readyz"), Access::Public);
        assert_eq!(Access::of(&Method::GET, "/metrics"), Access::Read);
        assert_eq!(Access::of(&Method::POST, "/-/reload"), Access::Write);
        assert_eq!(Access::of(&Method::POST, "/api/v2/alerts"), Access::Write);
        assert_eq!(Access::of(&Method::GET, "/api/v2/alerts"), Access::Read);
    }

    #[test]
    fn web_config_errors_are_clear() {
        let err = |yaml: &str, policy: AuthorizationConfig| {
            let wc: WebConfigFile = match serde_yaml_ng::from_str(yaml) {
                Ok(wc) => wc,
                Err(e) => return e.to_string(),
            };
            match Web::from_file(wc, Path::new("/nonexistent"), &policy, None) {
                Ok(_) => String::new(),
                Err(e) => format!("{e:#}"),
            }
        };
        let none = AuthorizationConfig::default;
        assert!(err("basic_auth_users: {a: plain}\n", none()).contains("not a bcrypt hash"));
        assert!(
            err(
                "tls_server_config: {cert_file: c.pem, key_file: k.pem}\n",
                none()
            )
            .contains("cert_file /nonexistent/c.pem")
        );
        assert!(err("tls_server_config: {cipher_suites: [X]}\n", none()).contains("not supported"));
        assert!(
            err("http_server_config: {headers: {Server: x}}\n", none()).contains("is not one of")
        );
        assert!(err("tls_config: {}\n", none()).contains("unknown field"));
        let writers = AuthorizationConfig {
            writers: vec!["bob".into()],
            ..Default::default()
        };
        assert!(err("basic_auth_users: {}\n", writers).contains("not in basic_auth_users"));
        assert_eq!(
            err(
                &format!("basic_auth_users: {{a: '{DUMMY_HASH}'}}\n"),
                none()
            ),
            ""
        );
    }
}
