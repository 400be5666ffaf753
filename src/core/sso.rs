//! The SSO client: RFC 7662 token introspection and the Digest login (`token_url`) contract,
//! over HTTP(S) with one keep-alive agent per OpenSIPS worker process.

use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Map, Value};

use super::text::is_token68_like;

/// Largest SSO answer body the module reads; anything longer is an error (-5).
pub const MAX_SSO_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct SsoSettings {
    pub introspect_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// Whole-request budget: connect + send + answer.
    pub timeout: Duration,
    /// PEM bundle replacing the system roots for https URLs.
    pub tls_ca_file: Option<String>,
    pub digest_grant_type: String,
}

// Hand-written: the client secret must never reach a log through `{:?}`.
impl fmt::Debug for SsoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsoSettings")
            .field("introspect_url", &self.introspect_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("digest_grant_type", &self.digest_grant_type)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoError {
    /// URL for the call not configured.
    NotConfigured,
    /// Connection refused / reset / DNS / TLS failure (message is safe to log: no secrets).
    Unreachable(String),
    Timeout,
    /// Unexpected HTTP status.
    Status(u16),
    /// Not JSON, wrong types, missing fields, a token with bytes not allowed in SIP.
    Malformed(&'static str),
    /// Body over MAX_SSO_BODY.
    TooLarge,
    /// Client settings unusable (unreadable CA file, ...).
    Config(String),
}

/// What introspection said about a token (RFC 7662).
#[derive(Debug, Clone, PartialEq)]
pub struct Introspection {
    pub active: bool,
    /// `username`, else `sub`.
    pub user: Option<String>,
    /// Unix seconds.
    pub exp: Option<i64>,
    pub scope: Option<String>,
    /// The whole JSON object, for claims.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// One Digest login request (form fields of the token_url contract).
#[derive(Debug, Clone, Default)]
pub struct DigestLogin {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: String,
    pub method: String,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub body_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// 200 with access_token: the SSO opened a session.
    Session { access_token: String, expires_in: Option<u64> },
    /// 400 {"error":"invalid_grant"}: wrong credentials.
    InvalidGrant,
    /// 400 {"error":"unknown_user"}: the SSO says the user does not exist.
    UnknownUser,
}

/// The two SSO operations; a trait so the decision logic can be tested without HTTP.
pub trait SsoApi {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError>;
    fn digest_login(&mut self, req: &DigestLogin) -> Result<LoginOutcome, SsoError>;
}

/// Maps an introspection answer to a result: 200 + JSON object with boolean `active`.
pub fn interpret_introspection(status: u16, body: &[u8]) -> Result<Introspection, SsoError> {
    if status != 200 {
        return Err(SsoError::Status(status));
    }
    let obj = json_object(body)?;
    let active = match obj.get("active") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(SsoError::Malformed("`active` is not a boolean")),
        None => return Err(SsoError::Malformed("no `active` member")),
    };
    let exp = match obj.get("exp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or(SsoError::Malformed("`exp` is not an integer"))?),
        Some(_) => return Err(SsoError::Malformed("`exp` is not a number")),
    };
    let text = |name: &'static str, why: &'static str| -> Result<Option<String>, SsoError> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(SsoError::Malformed(why)),
        }
    };
    let username = text("username", "`username` is not a string")?;
    let sub = text("sub", "`sub` is not a string")?;
    let scope = text("scope", "`scope` is not a string")?;
    let user = username.filter(|u| !u.is_empty()).or(sub.filter(|s| !s.is_empty()));
    Ok(Introspection { active, user, exp, scope, claims: obj })
}

/// Maps a token_url answer: 200 + access_token (token68-like) → Session; 400 invalid_grant →
/// InvalidGrant; 400 unknown_user → UnknownUser; anything else → Err.
pub fn interpret_token_response(status: u16, body: &[u8]) -> Result<LoginOutcome, SsoError> {
    match status {
        200 => {
            let obj = json_object(body)?;
            let token = match obj.get("access_token") {
                Some(Value::String(t)) => t,
                Some(_) => return Err(SsoError::Malformed("`access_token` is not a string")),
                None => return Err(SsoError::Malformed("no `access_token`")),
            };
            if token.len() > 4096 || !is_token68_like(token) {
                return Err(SsoError::Malformed("`access_token` holds characters not allowed in a SIP header"));
            }
            let expires_in = match obj.get("expires_in") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => {
                    Some(n.as_u64().ok_or(SsoError::Malformed("`expires_in` is not a non-negative integer"))?)
                }
                Some(_) => return Err(SsoError::Malformed("`expires_in` is not a number")),
            };
            Ok(LoginOutcome::Session { access_token: token.clone(), expires_in })
        }
        400 => {
            let obj = json_object(body)?;
            match obj.get("error").and_then(Value::as_str) {
                Some("invalid_grant") => Ok(LoginOutcome::InvalidGrant),
                Some("unknown_user") => Ok(LoginOutcome::UnknownUser),
                _ => Err(SsoError::Status(400)),
            }
        }
        other => Err(SsoError::Status(other)),
    }
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, SsoError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(SsoError::Malformed("answer is not a JSON object")),
        Err(_) => Err(SsoError::Malformed("answer is not JSON")),
    }
}

/// The real client. Creating it opens no connection (safe before fork, but the FFI layer
/// still builds it lazily in each worker).
pub struct HttpSso {
    settings: SsoSettings,
    agent: ureq::Agent,
    basic: Option<String>,
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// rustls configuration: the roots of `tls_ca_file`, else the system's; verification on.
fn tls_config(ca_file: Option<&str>) -> Result<Arc<rustls::ClientConfig>, SsoError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(|e| SsoError::Config(format!("tls_ca_file {path}: {e}")))?;
            let mut reader = std::io::BufReader::new(file);
            for cert in rustls_pemfile::certs(&mut reader) {
                let cert = cert.map_err(|e| SsoError::Config(format!("tls_ca_file {path}: {e}")))?;
                roots.add(cert).map_err(|e| SsoError::Config(format!("tls_ca_file {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(SsoError::Config(format!("tls_ca_file {path}: no certificate found")));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SsoError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl HttpSso {
    pub fn new(settings: SsoSettings) -> Result<HttpSso, SsoError> {
        let uses_tls = [&settings.introspect_url, &settings.token_url]
            .into_iter()
            .flatten()
            .any(|u| u.starts_with("https:"));
        let mut builder = ureq::AgentBuilder::new().timeout(settings.timeout).redirects(0).max_idle_connections_per_host(2);
        if uses_tls || settings.tls_ca_file.is_some() {
            builder = builder.tls_config(tls_config(settings.tls_ca_file.as_deref())?);
        }
        let basic = settings.client_id.as_ref().map(|id| {
            let secret = settings.client_secret.as_deref().unwrap_or("");
            let pair = format!("{}:{}", form_encode(id), form_encode(secret));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        Ok(HttpSso { agent: builder.build(), settings, basic })
    }

    pub fn settings(&self) -> &SsoSettings {
        &self.settings
    }

    /// POSTs a form; returns (status, body) for any HTTP answer.
    fn post(&self, url: &str, form: &[(&str, &str)]) -> Result<(u16, Vec<u8>), SsoError> {
        let mut req = self.agent.post(url).set("Accept", "application/json");
        if let Some(b) = &self.basic {
            req = req.set("Authorization", b);
        }
        let response = match req.send_form(form) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => return Err(transport_error(&t)),
        };
        let status = response.status();
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_SSO_BODY as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| io_error(&e))?;
        if body.len() > MAX_SSO_BODY {
            return Err(SsoError::TooLarge);
        }
        Ok((status, body))
    }
}

fn io_error(e: &std::io::Error) -> SsoError {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => SsoError::Timeout,
        _ if e.to_string().contains("timed out") => SsoError::Timeout,
        _ => SsoError::Unreachable(format!("read failed: {}", e.kind())),
    }
}

/// Transport errors as loggable text; URLs are reduced to scheme://host:port by ureq's kinds.
fn transport_error(t: &ureq::Transport) -> SsoError {
    let text = t.to_string();
    if text.contains("timed out") || text.contains("Timeout") {
        return SsoError::Timeout;
    }
    let detail = t.message().map(|m| format!(": {m}")).unwrap_or_default();
    SsoError::Unreachable(format!("{}{}", t.kind(), detail))
}

impl SsoApi for HttpSso {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError> {
        let url = self.settings.introspect_url.clone().ok_or(SsoError::NotConfigured)?;
        let (status, body) = self.post(&url, &[("token", token), ("token_type_hint", "access_token")])?;
        interpret_introspection(status, &body)
    }

    fn digest_login(&mut self, r: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        let url = self.settings.token_url.clone().ok_or(SsoError::NotConfigured)?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", self.settings.digest_grant_type.as_str()),
            ("username", &r.username),
            ("realm", &r.realm),
            ("nonce", &r.nonce),
            ("uri", &r.uri),
            ("response", &r.response),
            ("algorithm", &r.algorithm),
            ("method", &r.method),
        ];
        for (name, value) in [
            ("qop", &r.qop),
            ("nc", &r.nc),
            ("cnonce", &r.cnonce),
            ("opaque", &r.opaque),
            ("body_hash", &r.body_hash),
        ] {
            if let Some(v) = value {
                form.push((name, v));
            }
        }
        let (status, body) = self.post(&url, &form)?;
        interpret_token_response(status, &body)
    }
}

#[cfg(test)]
mod tests;
