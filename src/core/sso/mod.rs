//! The SSO client: RFC 7662 token introspection and the Digest login (`token_url`) contract,
//! over HTTP(S) with one keep-alive pool per OpenSIPS worker process, driven blocking (sync
//! script functions) or non-blocking (the async form; see `http`).

use std::fmt;
use std::io::BufReader;
#[cfg(test)]
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod call;
pub mod http;
pub mod resolve;
pub mod timer;

use self::call::{Expect, SsoAnswer, SsoCall};
use self::http::client::Client;
pub use self::http::nonblocking::InFlight;
#[cfg(test)]
use self::http::MAX_ERROR_TEXT;
use self::http::{HttpRequest, HttpResponse};
use self::resolve::Resolve;

use base64::Engine as _;
use serde_json::{Map, Value};

use super::text::is_token68_like;
use super::token::claims::ClaimSet;

/// Largest SSO answer body the module reads; anything longer is an error (-5).
pub const MAX_SSO_BODY: usize = 64 * 1024;

/// Longest access token accepted from `token_url`: it ends up in a SIP header.
pub const MAX_ACCESS_TOKEN: usize = 4096;

/// Default of [`SsoSettings::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;

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
    /// Exchanges in flight at once per process (blocking and async together); past it a
    /// request fails at once (-5) rather than queueing.
    pub max_connections: usize,
}

// Written by hand so the client secret never reaches a log line.
impl fmt::Debug for SsoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsoSettings")
            .field("introspect_url", &self.introspect_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("digest_grant_type", &self.digest_grant_type)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoError {
    /// URL for the call not configured.
    NotConfigured,
    /// Connection refused / reset / DNS / TLS failure (message is safe to log: no secrets).
    /// Also used by [`HttpSso::new`] for unusable settings (bad URL, unreadable CA file).
    Unreachable(String),
    Timeout,
    /// Unexpected HTTP status.
    Status(u16),
    /// Not JSON, wrong types, missing fields, a token with bytes not allowed in SIP.
    Malformed(&'static str),
    /// Body over MAX_SSO_BODY.
    TooLarge,
}

/// What introspection said about a token (RFC 7662).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Introspection {
    pub active: bool,
    /// `username`, else `sub`.
    pub user: Option<String>,
    /// Unix seconds.
    pub exp: Option<i64>,
    pub scope: Option<String>,
    /// The whole JSON object, for claims.
    pub claims: ClaimSet,
}

/// One Digest login request (form fields of the token_url contract).
#[derive(Clone, Default)]
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

// The Digest response plus the nonce allows an offline guess of the password: keep it out of
// Debug output.
impl fmt::Debug for DigestLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestLogin")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("nonce", &self.nonce)
            .field("uri", &self.uri)
            .field("response", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("method", &self.method)
            .field("qop", &self.qop)
            .field("nc", &self.nc)
            .field("cnonce", &self.cnonce)
            .field("opaque", &self.opaque)
            .field("body_hash", &self.body_hash)
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// 200 with access_token: the SSO opened a session.
    Session {
        access_token: String,
        expires_in: Option<u64>,
    },
    /// 400 {"error":"invalid_grant"}: wrong credentials.
    InvalidGrant,
    /// 400 {"error":"unknown_user"}: the SSO says the user does not exist.
    UnknownUser,
}

// The access token is a bearer credential: Debug shows only its length.
impl fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginOutcome::Session {
                access_token,
                expires_in,
            } => f
                .debug_struct("Session")
                .field(
                    "access_token",
                    &format_args!("<{} bytes>", access_token.len()),
                )
                .field("expires_in", expires_in)
                .finish(),
            LoginOutcome::InvalidGrant => f.write_str("InvalidGrant"),
            LoginOutcome::UnknownUser => f.write_str("UnknownUser"),
        }
    }
}

/// The two SSO operations; a trait so the decision logic can be tested without HTTP.
pub trait SsoApi {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError>;
    fn digest_login(&mut self, req: &DigestLogin) -> Result<LoginOutcome, SsoError>;
    /// The JWK Set at `url` (https), for local JWT validation.
    fn fetch_jwks(&mut self, _url: &str) -> Result<Vec<u8>, SsoError> {
        Err(SsoError::NotConfigured)
    }
    /// Every SSO request from now on must be over by `deadline` (None: each request gets
    /// the configured timeout): one budget for a whole sso_authorize call.
    fn set_deadline(&mut self, _deadline: Option<Instant>) {}
}

/// Parses a body that must be one JSON object.
fn json_object(body: &[u8], what: &'static str) -> Result<Map<String, Value>, SsoError> {
    if body.len() > MAX_SSO_BODY {
        return Err(SsoError::TooLarge);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(SsoError::Malformed(what)),
    }
}

/// An optional string member; JSON null counts as absent.
fn opt_str(
    map: &Map<String, Value>,
    key: &str,
    what: &'static str,
) -> Result<Option<String>, SsoError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SsoError::Malformed(what)),
    }
}

/// Maps an introspection answer to a result: 200 + JSON object with boolean `active`.
///
/// For an inactive token the other members are not interpreted (RFC 7662 says the server
/// should not send them), so a sloppy inactive answer still reads as "inactive".
pub fn interpret_introspection(status: u16, body: &[u8]) -> Result<Introspection, SsoError> {
    if status != 200 {
        return Err(SsoError::Status(status));
    }
    let claims = json_object(body, "introspection answer is not a JSON object")?;
    let active = match claims.get("active") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(SsoError::Malformed(
                "introspection `active` is missing or not a boolean",
            ))
        }
    };
    if !active {
        return Ok(Introspection {
            active,
            user: None,
            exp: None,
            scope: None,
            claims: claims.into(),
        });
    }
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Some(v),
            None => return Err(SsoError::Malformed("introspection `exp` is not an integer")),
        },
        Some(_) => return Err(SsoError::Malformed("introspection `exp` is not an integer")),
    };
    let username = opt_str(
        &claims,
        "username",
        "introspection `username` is not a string",
    )?;
    let sub = opt_str(&claims, "sub", "introspection `sub` is not a string")?;
    let scope = opt_str(&claims, "scope", "introspection `scope` is not a string")?;
    // An empty name is no name: fall back to `sub`.
    let user = username
        .filter(|u| !u.is_empty())
        .or(sub.filter(|s| !s.is_empty()));
    Ok(Introspection {
        active,
        user,
        exp,
        scope,
        claims: claims.into(),
    })
}

/// Maps a token_url answer: 200 + access_token (token68-like) → Session; 400 invalid_grant →
/// InvalidGrant; 400 unknown_user → UnknownUser; anything else → Err.
pub fn interpret_token_response(status: u16, body: &[u8]) -> Result<LoginOutcome, SsoError> {
    match status {
        200 => {
            let map = json_object(body, "token answer is not a JSON object")?;
            let access_token = match map.get("access_token") {
                Some(Value::String(t)) if t.len() <= MAX_ACCESS_TOKEN && is_token68_like(t) => {
                    t.clone()
                }
                Some(Value::String(_)) => {
                    return Err(SsoError::Malformed(
                        "access_token is too long or has bytes not allowed in SIP",
                    ))
                }
                _ => {
                    return Err(SsoError::Malformed(
                        "token answer has no string access_token",
                    ))
                }
            };
            let expires_in = match map.get("expires_in") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(v) => Some(v),
                    None => {
                        return Err(SsoError::Malformed(
                            "expires_in is not a non-negative integer",
                        ))
                    }
                },
                Some(_) => {
                    return Err(SsoError::Malformed(
                        "expires_in is not a non-negative integer",
                    ))
                }
            };
            Ok(LoginOutcome::Session {
                access_token,
                expires_in,
            })
        }
        400 => {
            let map = json_object(body, "token error answer is not a JSON object")?;
            match map.get("error").and_then(Value::as_str) {
                Some("invalid_grant") => Ok(LoginOutcome::InvalidGrant),
                Some("unknown_user") => Ok(LoginOutcome::UnknownUser),
                _ => Err(SsoError::Status(400)),
            }
        }
        other => Err(SsoError::Status(other)),
    }
}

/// The real client. Creating it opens no connection (safe before fork, but the FFI layer
/// still builds it lazily in each worker). No thread anywhere: names are resolved by the
/// [`Resolve`] given to it (IP literals only by default).
pub struct HttpSso {
    settings: SsoSettings,
    /// Pool, in-flight limit, resolver, TLS; behind a lock only because `get` takes `&self`.
    client: Mutex<Client>,
    /// End of the current call's budget (`set_deadline`).
    deadline: Option<Instant>,
    /// Precomputed `Authorization` value when a client id is configured.
    basic_auth: Option<String>,
}

// Hand-written: the Basic header holds the client secret.
impl fmt::Debug for HttpSso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSso")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Rejects what the agent could not use, naming the parameter but not echoing the value.
fn check_url(param: &str, value: &Option<String>) -> Result<(), SsoError> {
    let Some(value) = value else { return Ok(()) };
    let bad = |why: &str| Err(SsoError::Unreachable(format!("{param}: {why}")));
    let Ok(url) = url::Url::parse(value) else {
        return bad("not a valid URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("scheme is not http or https");
    }
    if url.host_str().is_none() {
        return bad("URL has no host");
    }
    // They would never be sent as credentials, and would show up wherever the URL is logged.
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials belong in client_id/client_secret, not in the URL");
    }
    Ok(())
}

/// Trust anchors: exactly the certificates of `tls_ca_file`, or the system store.
/// `more_https`: an https URL outside the settings (jwks_url) will be fetched too.
fn root_store(settings: &SsoSettings, more_https: bool) -> Result<rustls::RootCertStore, SsoError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &settings.tls_ca_file {
        let fail = |why: String| SsoError::Unreachable(format!("tls_ca_file {path}: {why}"));
        let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open ({e})")))?;
        for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
            let cert = cert.map_err(|e| fail(format!("cannot read PEM ({e})")))?;
            roots
                .add(cert)
                .map_err(|e| fail(format!("unusable certificate ({e})")))?;
        }
        if roots.is_empty() {
            return Err(fail("no certificate found".to_string()));
        }
        return Ok(roots);
    }
    // Plain-http setups never use the system store; do not read it for nothing.
    let any_https = more_https
        || [&settings.introspect_url, &settings.token_url]
            .into_iter()
            .flatten()
            .any(|u| is_https(u));
    if any_https {
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            return Err(SsoError::Unreachable(
                "no usable system CA certificate for the https SSO URLs; set tls_ca_file"
                    .to_string(),
            ));
        }
    }
    Ok(roots)
}

fn tls_config(
    settings: &SsoSettings,
    more_https: bool,
) -> Result<Arc<rustls::ClientConfig>, SsoError> {
    let roots = root_store(settings, more_https)?;
    // An explicit provider: nothing depends on a process-wide default being installed.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SsoError::Unreachable(format!("TLS setup failed ({e})")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `Authorization: Basic` for client authentication; RFC 6749 2.3.1 wants id and secret
/// form-urlencoded before they are joined and base64-encoded.
fn basic_auth(settings: &SsoSettings) -> Option<String> {
    let id = settings.client_id.as_deref()?;
    let secret = settings.client_secret.as_deref().unwrap_or("");
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", enc(id), enc(secret));
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

impl HttpSso {
    pub fn new(settings: SsoSettings) -> Result<HttpSso, SsoError> {
        HttpSso::with_jwks_url(settings, None)
    }

    /// Like [`HttpSso::new`], for a client that will also fetch `jwks_url` (which must be
    /// https): the system CA store is then loaded even when the other URLs are plain http.
    pub fn with_jwks_url(
        settings: SsoSettings,
        jwks_url: Option<&str>,
    ) -> Result<HttpSso, SsoError> {
        if let Some(url) = jwks_url {
            check_url("jwks_url", &Some(url.to_string()))?;
            if !is_https(url) {
                return Err(SsoError::Unreachable(
                    "jwks_url: must be an https URL".to_string(),
                ));
            }
        }
        check_url("introspect_url", &settings.introspect_url)?;
        check_url("token_url", &settings.token_url)?;
        if settings.timeout.is_zero() {
            return Err(SsoError::Unreachable(
                "the HTTP timeout must be above zero".to_string(),
            ));
        }
        let client = Client::new(
            tls_config(&settings, jwks_url.is_some())?,
            settings.max_connections,
        );
        let basic_auth = basic_auth(&settings);
        Ok(HttpSso {
            settings,
            client: Mutex::new(client),
            deadline: None,
            basic_auth,
        })
    }

    /// With `resolver` for host names instead of IP literals only.
    pub fn with_resolver(mut self, resolver: Box<dyn Resolve>) -> HttpSso {
        self.set_resolver(resolver);
        self
    }

    pub fn set_resolver(&mut self, resolver: Box<dyn Resolve>) {
        self.client().set_resolver(resolver);
    }

    fn client(&self) -> std::sync::MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exchanges in flight in this process (async ones until they finish).
    pub fn in_flight(&self) -> usize {
        self.client().in_flight()
    }

    /// Idle keep-alive connections held (tests, statistics).
    pub fn idle_connections(&self) -> usize {
        self.client().idle()
    }

    pub fn settings(&self) -> &SsoSettings {
        &self.settings
    }

    /// When the next request must be over: the configured timeout, cut to the call's
    /// deadline; Err(Timeout) when less than a millisecond is left.
    fn request_deadline(&self, call_deadline: Option<Instant>) -> Result<Instant, SsoError> {
        let now = Instant::now();
        let own = now + self.settings.timeout;
        match call_deadline {
            None => Ok(own),
            Some(d) if d.saturating_duration_since(now) < Duration::from_millis(1) => {
                Err(SsoError::Timeout)
            }
            Some(d) => Ok(d.min(own)),
        }
    }

    fn common_headers(&self, accept: &str) -> Vec<(&'static str, String)> {
        vec![
            ("Accept", accept.to_string()),
            (
                "User-Agent",
                concat!("sso_auth/", env!("CARGO_PKG_VERSION")).to_string(),
            ),
        ]
    }

    /// A form POST with client authentication.
    fn form_request(&self, url: &str, form: &[(&str, &str)]) -> Result<HttpRequest, SsoError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish()
            .into_bytes();
        let mut headers = self.common_headers("application/json");
        headers.push((
            "Content-Type",
            "application/x-www-form-urlencoded".to_string(),
        ));
        if let Some(auth) = &self.basic_auth {
            headers.push(("Authorization", auth.clone()));
        }
        HttpRequest::new(url, "POST", headers, body)
    }

    /// A GET without client credentials: what is fetched this way (a JWK Set) is public.
    fn get_request(&self, url: &str, accept: &str) -> Result<HttpRequest, SsoError> {
        check_url("URL", &Some(url.to_string()))?;
        HttpRequest::new(url, "GET", self.common_headers(accept), Vec::new())
    }

    fn introspect_request(&self, token: &str) -> Result<HttpRequest, SsoError> {
        let url = self
            .settings
            .introspect_url
            .as_deref()
            .ok_or(SsoError::NotConfigured)?;
        self.form_request(
            url,
            &[("token", token), ("token_type_hint", "access_token")],
        )
    }

    fn login_request(&self, req: &DigestLogin) -> Result<HttpRequest, SsoError> {
        let url = self
            .settings
            .token_url
            .as_deref()
            .ok_or(SsoError::NotConfigured)?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", &self.settings.digest_grant_type),
            ("username", &req.username),
            ("realm", &req.realm),
            ("nonce", &req.nonce),
            ("uri", &req.uri),
            ("response", &req.response),
            ("algorithm", &req.algorithm),
            ("method", &req.method),
        ];
        let optional = [
            ("qop", &req.qop),
            ("nc", &req.nc),
            ("cnonce", &req.cnonce),
            ("opaque", &req.opaque),
            ("body_hash", &req.body_hash),
        ];
        form.extend(
            optional
                .iter()
                .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))),
        );
        self.form_request(url, &form)
    }

    fn jwks_request(&self, url: &str) -> Result<HttpRequest, SsoError> {
        if !is_https(url) {
            return Err(SsoError::Unreachable(
                "jwks_url: must be an https URL".to_string(),
            ));
        }
        self.get_request(url, "application/jwk-set+json, application/json")
    }

    fn request_for(&self, call: &SsoCall) -> Result<HttpRequest, SsoError> {
        match call {
            SsoCall::Introspect { token } => self.introspect_request(token),
            SsoCall::DigestLogin(login) => self.login_request(login),
            SsoCall::FetchJwks { url } => self.jwks_request(url),
        }
    }

    /// Runs a request blocking, within the current call's budget.
    fn exchange(&self, req: HttpRequest) -> Result<(u16, Vec<u8>), SsoError> {
        let deadline = self.request_deadline(self.deadline)?;
        let resp = self.client().blocking(req, deadline)?;
        Ok((resp.status, resp.body))
    }

    /// One GET with the client's timeout, TLS setup and body limit; any status comes back
    /// with its (bounded) body. No client credentials are sent.
    pub fn get(&self, url: &str, accept: &str) -> Result<(u16, Vec<u8>), SsoError> {
        self.exchange(self.get_request(url, accept)?)
    }

    /// Starts `call` without waiting, to be over by `deadline` (and within the configured
    /// timeout). Err: it is over already (deadline passed, connect refused at once, every
    /// connection busy, URL not set...), with its answer.
    pub fn start(&mut self, call: &SsoCall, deadline: Instant) -> Result<InFlight, SsoAnswer> {
        let expect = call.expect();
        let deadline = self
            .request_deadline(Some(deadline))
            .map_err(|e| expect.failed(e))?;
        let req = self.request_for(call).map_err(|e| expect.failed(e))?;
        self.client()
            .start(req, deadline, expect)
            .map_err(|result| answer(expect, result))
    }

    /// Moves `f` on without waiting: None while in flight (watch `f.fd()` for reading),
    /// else its answer. A keep-alive connection goes back to the pool.
    pub fn progress(&mut self, f: &mut InFlight) -> Option<SsoAnswer> {
        let expect = f.expect;
        self.client()
            .progress(f)
            .map(|result| answer(expect, result))
    }
}

/// The answer an HTTP result gives for the kind of call it was.
fn answer(expect: Expect, result: Result<HttpResponse, SsoError>) -> SsoAnswer {
    let result = result.map(|r| (r.status, r.body));
    match expect {
        Expect::Introspection => SsoAnswer::Introspection(
            result.and_then(|(status, body)| interpret_introspection(status, &body)),
        ),
        Expect::Login => SsoAnswer::Login(
            result.and_then(|(status, body)| interpret_token_response(status, &body)),
        ),
        Expect::Jwks => SsoAnswer::Jwks(result.and_then(|(status, body)| match status {
            200 => Ok(body),
            other => Err(SsoError::Status(other)),
        })),
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// Fetches the SSO's JWK Set (RFC 7517) for local JWT validation. Keys decide which tokens
/// are genuine, so they are only taken over https, and only from a 200 answer.
pub fn fetch_jwks(sso: &HttpSso, url: &str) -> Result<Vec<u8>, SsoError> {
    match sso.exchange(sso.jwks_request(url)?)? {
        (200, body) => Ok(body),
        (status, _) => Err(SsoError::Status(status)),
    }
}

impl SsoApi for HttpSso {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError> {
        let (status, body) = self.exchange(self.introspect_request(token)?)?;
        interpret_introspection(status, &body)
    }

    fn digest_login(&mut self, req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        let (status, body) = self.exchange(self.login_request(req)?)?;
        interpret_token_response(status, &body)
    }

    fn fetch_jwks(&mut self, url: &str) -> Result<Vec<u8>, SsoError> {
        fetch_jwks(self, url)
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::thread;
    use std::time::Instant;

    /// Both HTTP drivers against the fake servers below (tests/drivers.rs).
    mod drivers;

    // ---- interpret_introspection ----

    fn introspect_ok(body: &str) -> Result<Introspection, SsoError> {
        interpret_introspection(200, body.as_bytes())
    }

    #[test]
    fn introspection_active_with_fields() {
        let i = introspect_ok(r#"{"active":true,"username":"alice","sub":"u-1","exp":1700000000,"scope":"sip","x":1}"#)
            .unwrap();
        assert!(i.active);
        assert_eq!(i.user.as_deref(), Some("alice"));
        assert_eq!(i.exp, Some(1_700_000_000));
        assert_eq!(i.scope.as_deref(), Some("sip"));
        assert_eq!(i.claims.get("x"), Some(&Value::from(1)));
        assert_eq!(i.claims.map().len(), 6);
    }

    #[test]
    fn introspection_user_falls_back_to_sub_and_may_be_absent() {
        assert_eq!(
            introspect_ok(r#"{"active":true,"sub":"u-1"}"#)
                .unwrap()
                .user
                .as_deref(),
            Some("u-1")
        );
        assert_eq!(
            introspect_ok(r#"{"active":true,"username":"","sub":"u-1"}"#)
                .unwrap()
                .user
                .as_deref(),
            Some("u-1")
        );
        assert_eq!(
            introspect_ok(r#"{"active":true,"sub":""}"#).unwrap().user,
            None
        );
        let i = introspect_ok(r#"{"active":true}"#).unwrap();
        assert!(i.active && i.user.is_none() && i.exp.is_none() && i.scope.is_none());
        // null reads as absent
        let i = introspect_ok(r#"{"active":true,"username":null,"sub":"s","exp":null}"#).unwrap();
        assert_eq!(i.user.as_deref(), Some("s"));
        assert_eq!(i.exp, None);
    }

    #[test]
    fn introspection_inactive() {
        let i = introspect_ok(r#"{"active":false}"#).unwrap();
        assert!(!i.active);
        // members of an inactive answer are not interpreted
        let i = introspect_ok(r#"{"active":false,"exp":"soon","username":5}"#).unwrap();
        assert!(!i.active && i.user.is_none() && i.exp.is_none());
    }

    #[test]
    fn introspection_wrong_types_are_malformed() {
        for body in [
            r#"{"active":"true"}"#,
            r#"{"active":1}"#,
            r#"{"active":null}"#,
            r#"{}"#,
            r#"{"active":true,"exp":"1700000000"}"#,
            r#"{"active":true,"exp":1.5}"#,
            r#"{"active":true,"exp":18446744073709551615}"#,
            r#"{"active":true,"username":42}"#,
            r#"{"active":true,"sub":["a"]}"#,
            r#"{"active":true,"scope":{"a":1}}"#,
            r#"[{"active":true}]"#,
            r#""active""#,
            r#"true"#,
            "",
            "not json",
            r#"{"active":true"#,
        ] {
            assert!(
                matches!(introspect_ok(body), Err(SsoError::Malformed(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn introspection_status_and_size() {
        assert_eq!(
            interpret_introspection(500, b"{\"active\":true}"),
            Err(SsoError::Status(500))
        );
        assert_eq!(
            interpret_introspection(302, b""),
            Err(SsoError::Status(302))
        );
        assert_eq!(
            interpret_introspection(401, b"{}"),
            Err(SsoError::Status(401))
        );
        assert_eq!(
            interpret_introspection(204, b""),
            Err(SsoError::Status(204))
        );
        let mut huge = br#"{"active":true,"pad":""#.to_vec();
        huge.resize(MAX_SSO_BODY + 10, b'a');
        huge.extend_from_slice(b"\"}");
        assert_eq!(interpret_introspection(200, &huge), Err(SsoError::TooLarge));
    }

    // ---- interpret_token_response ----

    #[test]
    fn token_session() {
        let ok = |b: &str| interpret_token_response(200, b.as_bytes());
        assert_eq!(
            ok(r#"{"access_token":"eyJ.abc-_~+/=","token_type":"Bearer","expires_in":300}"#),
            Ok(LoginOutcome::Session {
                access_token: "eyJ.abc-_~+/=".into(),
                expires_in: Some(300)
            })
        );
        assert_eq!(
            ok(r#"{"access_token":"t"}"#),
            Ok(LoginOutcome::Session {
                access_token: "t".into(),
                expires_in: None
            })
        );
        let longest = "a".repeat(MAX_ACCESS_TOKEN);
        assert!(ok(&format!(r#"{{"access_token":"{longest}"}}"#)).is_ok());
    }

    #[test]
    fn token_bad_answers_are_malformed() {
        let too_long = format!(
            r#"{{"access_token":"{}"}}"#,
            "a".repeat(MAX_ACCESS_TOKEN + 1)
        );
        for body in [
            r#"{"expires_in":300}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":42}"#,
            r#"{"access_token":null}"#,
            r#"{"access_token":"a\r\nVia: evil"}"#,
            r#"{"access_token":"a\nb"}"#,
            r#"{"access_token":"a b"}"#,
            r#"{"access_token":"a,b"}"#,
            r#"{"access_token":"a\"b"}"#,
            r#"{"access_token":"é"}"#,
            r#"{"access_token":"t","expires_in":-1}"#,
            r#"{"access_token":"t","expires_in":"300"}"#,
            r#"{"access_token":"t","expires_in":1.5}"#,
            r#"["access_token"]"#,
            "",
            "<html>",
            &too_long,
        ] {
            assert!(
                matches!(
                    interpret_token_response(200, body.as_bytes()),
                    Err(SsoError::Malformed(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn token_errors() {
        let r = |s: u16, b: &str| interpret_token_response(s, b.as_bytes());
        assert_eq!(
            r(400, r#"{"error":"invalid_grant","error_description":"x"}"#),
            Ok(LoginOutcome::InvalidGrant)
        );
        assert_eq!(
            r(400, r#"{"error":"unknown_user"}"#),
            Ok(LoginOutcome::UnknownUser)
        );
        assert_eq!(
            r(400, r#"{"error":"invalid_request"}"#),
            Err(SsoError::Status(400))
        );
        assert_eq!(r(400, r#"{"error":7}"#), Err(SsoError::Status(400)));
        assert!(matches!(r(400, "Bad Request"), Err(SsoError::Malformed(_))));
        assert!(matches!(r(400, ""), Err(SsoError::Malformed(_))));
        assert_eq!(
            r(401, r#"{"error":"invalid_client"}"#),
            Err(SsoError::Status(401))
        );
        // only a 400 may carry invalid_grant
        assert_eq!(
            r(403, r#"{"error":"invalid_grant"}"#),
            Err(SsoError::Status(403))
        );
        assert_eq!(r(500, "oops"), Err(SsoError::Status(500)));
        assert_eq!(r(302, ""), Err(SsoError::Status(302)));
        assert_eq!(
            r(201, r#"{"access_token":"t"}"#),
            Err(SsoError::Status(201))
        );
        let mut huge = br#"{"access_token":"t","pad":""#.to_vec();
        huge.resize(MAX_SSO_BODY + 1, b'a');
        assert_eq!(
            interpret_token_response(200, &huge),
            Err(SsoError::TooLarge)
        );
        assert_eq!(
            interpret_token_response(400, &huge),
            Err(SsoError::TooLarge)
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = settings("http://127.0.0.1:1/i");
        let text = format!("{s:?}");
        assert!(
            !text.contains("s:e/c%") && text.contains("<redacted>"),
            "{text}"
        );
        let sso = HttpSso::new(s).unwrap();
        let text = format!("{sso:?}");
        assert!(
            !text.contains("s:e/c%") && !text.contains("Basic"),
            "{text}"
        );
        let outcome = LoginOutcome::Session {
            access_token: "SECRETTOKEN".into(),
            expires_in: None,
        };
        assert!(!format!("{outcome:?}").contains("SECRETTOKEN"));
        let login = DigestLogin {
            response: "6629fae49393a05397450978507c4ef1".into(),
            ..Default::default()
        };
        assert!(!format!("{login:?}").contains("6629fae4"));
    }

    // ---- HttpSso against a local server ----

    /// One request as the test server saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        conn: usize,
        line: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// What the server does with a request: send these bytes, or hold the connection silently.
    enum Answer {
        Send(Vec<u8>),
        Silent,
    }

    struct Server {
        port: u16,
        conns: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Server {
        fn url(&self, scheme: &str, path: &str) -> String {
            format!("{scheme}://127.0.0.1:{}{path}", self.port)
        }
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    /// Accepts connections forever; each one is handled by `handle` in its own thread, with a
    /// read timeout so no thread outlives the test by long.
    fn raw_server(
        handle: impl Fn(TcpStream, usize) + Send + Sync + 'static,
    ) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        let handle = Arc::new(handle);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let id = counter.fetch_add(1, Ordering::SeqCst);
                stream
                    .set_read_timeout(Some(Duration::from_secs(3)))
                    .unwrap();
                let handle = handle.clone();
                thread::spawn(move || handle(stream, id));
            }
        });
        (port, conns)
    }

    /// A minimal HTTP/1.1 server (Content-Length bodies only, keep-alive), optionally over TLS.
    fn http_server(
        tls: Option<Arc<rustls::ServerConfig>>,
        reply: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    ) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let (port, conns) = raw_server(move |stream, id| match &tls {
            Some(cfg) => {
                let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                serve(rustls::StreamOwned::new(conn, stream), id, &log, &reply)
            }
            None => serve(stream, id, &log, &reply),
        });
        Server { port, conns, seen }
    }

    fn serve<S: Read + Write>(
        stream: S,
        id: usize,
        log: &Mutex<Vec<Seen>>,
        reply: &dyn Fn(&Seen) -> Answer,
    ) {
        let mut r = BufReader::new(stream);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                if h == "\r\n" {
                    break;
                }
                let (k, v) = h.trim_end().split_once(':').unwrap();
                headers.push((k.to_string(), v.trim().to_string()));
            }
            let mut seen = Seen {
                conn: id,
                line: line.trim_end().to_string(),
                headers,
                body: String::new(),
            };
            let len = seen
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_err() {
                return;
            }
            seen.body = String::from_utf8(body).unwrap();
            let answer = reply(&seen);
            log.lock().unwrap().push(seen);
            match answer {
                Answer::Send(bytes) => {
                    if r.get_mut()
                        .write_all(&bytes)
                        .and_then(|_| r.get_mut().flush())
                        .is_err()
                    {
                        return;
                    }
                }
                Answer::Silent => {
                    thread::sleep(Duration::from_secs(2));
                    return;
                }
            }
        }
    }

    fn response(status: u16, body: &str) -> Answer {
        Answer::Send(
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    fn settings(introspect_url: &str) -> SsoSettings {
        SsoSettings {
            introspect_url: Some(introspect_url.to_string()),
            token_url: Some(introspect_url.replace("/introspect", "/token")),
            client_id: Some("my client".into()),
            client_secret: Some("s:e/c%".into()),
            timeout: Duration::from_millis(300),
            tls_ca_file: None,
            digest_grant_type: "urn:sso-auth:grant-type:sip-digest".into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    fn expected_basic() -> String {
        // RFC 6749 2.3.1: form-urlencode each part first.
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my+client:s%3Ae%2Fc%25")
        )
    }

    #[test]
    fn introspect_sends_the_form_and_basic_auth_and_reuses_the_connection() {
        let srv = http_server(None, |_| {
            response(
                200,
                r#"{"active":true,"username":"alice","exp":4000000000}"#,
            )
        });
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        assert_eq!(
            srv.conns.load(Ordering::SeqCst),
            0,
            "new() must not connect"
        );
        let i = sso.introspect("ab+/=c d&e").unwrap();
        assert!(i.active);
        assert_eq!(i.user.as_deref(), Some("alice"));
        assert_eq!(sso.introspect("second").unwrap().exp, Some(4_000_000_000));
        let seen = srv.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].line, "POST /introspect HTTP/1.1");
        assert_eq!(
            seen[0].body,
            "token=ab%2B%2F%3Dc+d%26e&token_type_hint=access_token"
        );
        assert_eq!(seen[1].body, "token=second&token_type_hint=access_token");
        assert_eq!(
            seen[0].header("authorization"),
            Some(expected_basic().as_str())
        );
        assert_eq!(seen[0].header("accept"), Some("application/json"));
        assert_eq!(
            seen[0].header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        // keep-alive: both requests over one TCP connection
        assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
        assert_eq!(seen[0].conn, seen[1].conn);
    }

    #[test]
    fn no_basic_auth_without_client_id() {
        let srv = http_server(None, |_| response(200, r#"{"active":false}"#));
        let mut s = settings(&srv.url("http", "/introspect"));
        s.client_id = None;
        let mut sso = HttpSso::new(s).unwrap();
        assert!(!sso.introspect("t").unwrap().active);
        assert_eq!(srv.seen()[0].header("authorization"), None);
    }

    #[test]
    fn digest_login_sends_every_field() {
        let srv = http_server(None, |req| {
            if req.body.contains("cnonce") {
                response(200, r#"{"access_token":"new-tok","expires_in":600}"#)
            } else {
                response(400, r#"{"error":"invalid_grant"}"#)
            }
        });
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        let mut login = DigestLogin {
            username: "alice smith".into(),
            realm: "sip.example.com".into(),
            nonce: "n/1=".into(),
            uri: "sip:bob@example.com;transport=tcp".into(),
            response: "0123abcd".into(),
            algorithm: "SHA-256".into(),
            method: "REGISTER".into(),
            qop: Some("auth-int".into()),
            nc: Some("00000001".into()),
            cnonce: Some("c&n".into()),
            opaque: Some("op".into()),
            body_hash: Some("bh".into()),
        };
        assert_eq!(
            sso.digest_login(&login),
            Ok(LoginOutcome::Session {
                access_token: "new-tok".into(),
                expires_in: Some(600)
            })
        );
        login.qop = None;
        login.nc = None;
        login.cnonce = None;
        login.opaque = None;
        login.body_hash = None;
        // a 400 comes back from ureq as an error, its body must still be read
        assert_eq!(sso.digest_login(&login), Ok(LoginOutcome::InvalidGrant));
        let seen = srv.seen();
        assert_eq!(seen[0].line, "POST /token HTTP/1.1");
        assert_eq!(
            seen[0].body,
            "grant_type=urn%3Asso-auth%3Agrant-type%3Asip-digest&username=alice+smith&realm=sip.example.com\
             &nonce=n%2F1%3D&uri=sip%3Abob%40example.com%3Btransport%3Dtcp&response=0123abcd\
             &algorithm=SHA-256&method=REGISTER&qop=auth-int&nc=00000001&cnonce=c%26n&opaque=op&body_hash=bh"
        );
        assert_eq!(
            seen[1].body,
            "grant_type=urn%3Asso-auth%3Agrant-type%3Asip-digest&username=alice+smith&realm=sip.example.com\
             &nonce=n%2F1%3D&uri=sip%3Abob%40example.com%3Btransport%3Dtcp&response=0123abcd\
             &algorithm=SHA-256&method=REGISTER"
        );
        assert_eq!(
            seen[1].header("authorization"),
            Some(expected_basic().as_str())
        );
        // the error answer was read to the end, so the connection was kept
        assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn http_error_statuses() {
        let srv = http_server(None, |req| match req.line.as_str() {
            "POST /token HTTP/1.1" => response(401, r#"{"error":"invalid_client"}"#),
            _ => response(500, "<html>oops</html>"),
        });
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        assert_eq!(
            sso.digest_login(&DigestLogin::default()),
            Err(SsoError::Status(401))
        );
        assert_eq!(sso.introspect("t"), Err(SsoError::Status(500)));
        // 400 unknown_user through the real client
        let srv = http_server(None, |_| response(400, r#"{"error":"unknown_user"}"#));
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        assert_eq!(
            sso.digest_login(&DigestLogin::default()),
            Ok(LoginOutcome::UnknownUser)
        );
    }

    #[test]
    fn not_configured() {
        let mut s = settings("http://127.0.0.1:1/introspect");
        s.introspect_url = None;
        s.token_url = None;
        let mut sso = HttpSso::new(s).unwrap();
        assert_eq!(sso.introspect("t"), Err(SsoError::NotConfigured));
        assert_eq!(
            sso.digest_login(&DigestLogin::default()),
            Err(SsoError::NotConfigured)
        );
    }

    #[test]
    fn redirect_is_not_followed() {
        let srv = http_server(None, |_| {
            Answer::Send(
                b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        });
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        assert_eq!(sso.introspect("t"), Err(SsoError::Status(302)));
        assert_eq!(srv.seen().len(), 1);
    }

    #[test]
    fn silent_server_times_out_on_budget() {
        let srv = http_server(None, |_| Answer::Silent);
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        let start = Instant::now();
        assert_eq!(sso.introspect("t"), Err(SsoError::Timeout));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(400),
            "{took:?}"
        );
    }

    #[test]
    fn slow_body_times_out() {
        // headers arrive, the body never completes
        let (port, _) = raw_server(|mut s, _| {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"act");
            thread::sleep(Duration::from_secs(2));
        });
        let mut sso =
            HttpSso::new(settings(&format!("http://127.0.0.1:{port}/introspect"))).unwrap();
        let start = Instant::now();
        assert_eq!(sso.introspect("t"), Err(SsoError::Timeout));
        assert!(start.elapsed() < Duration::from_millis(400));
    }

    #[test]
    fn refused_connection_is_unreachable() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut sso =
            HttpSso::new(settings(&format!("http://127.0.0.1:{port}/introspect"))).unwrap();
        match sso.introspect("SECRETTOKEN") {
            Err(SsoError::Unreachable(msg)) => {
                assert!(msg.contains("refused"), "{msg}");
                assert!(
                    !msg.contains("SECRETTOKEN")
                        && !msg.contains("s:e/c%")
                        && !msg.contains("127.0.0.1:"),
                    "{msg}"
                );
                assert!(msg.len() <= MAX_ERROR_TEXT + 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_bodies_are_refused() {
        // announced by Content-Length
        let big = format!(r#"{{"active":true,"pad":"{}"}}"#, "a".repeat(MAX_SSO_BODY));
        let srv = http_server(None, move |_| response(200, &big));
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        assert_eq!(sso.introspect("t"), Err(SsoError::TooLarge));

        // endless close-delimited body: must stop after MAX_SSO_BODY + 1 bytes
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        let (port, _) = raw_server(move |mut s, _| {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = [b'a'; 8192];
            for _ in 0..1000 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        });
        let mut sso =
            HttpSso::new(settings(&format!("http://127.0.0.1:{port}/introspect"))).unwrap();
        assert_eq!(sso.introspect("t"), Err(SsoError::TooLarge));

        // chunked, no length announced
        let (port, _) = raw_server(|mut s, _| {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n");
            for _ in 0..20 {
                let chunk = format!("1000\r\n{}\r\n", "b".repeat(0x1000));
                if s.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n");
        });
        let mut sso = HttpSso::new(settings(&format!("http://127.0.0.1:{port}/token"))).unwrap();
        assert_eq!(
            sso.digest_login(&DigestLogin::default()),
            Err(SsoError::TooLarge)
        );
    }

    #[test]
    fn body_at_the_limit_is_read() {
        let exact = {
            let head = r#"{"active":true,"pad":""#;
            format!("{head}{}\"}}", "a".repeat(MAX_SSO_BODY - head.len() - 2))
        };
        assert_eq!(exact.len(), MAX_SSO_BODY);
        let srv = http_server(None, move |_| response(200, &exact));
        let mut sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        assert!(sso.introspect("t").unwrap().active);
    }

    #[test]
    fn bad_settings_are_rejected() {
        let reject = |s: SsoSettings| match HttpSso::new(s) {
            Err(SsoError::Unreachable(msg)) => msg,
            other => panic!("{:?}", other.map(|_| ())),
        };
        let mut s = settings("ftp://h/introspect");
        assert!(reject(s.clone()).contains("introspect_url"));
        s.introspect_url = Some("http://user:pw@h/x".into());
        let msg = reject(s.clone());
        assert!(
            msg.contains("introspect_url") && !msg.contains("pw"),
            "{msg}"
        );
        let mut s = settings("http://h/introspect");
        s.token_url = Some("not a url".into());
        assert!(reject(s).contains("token_url"));
        let mut s = settings("http://h/introspect");
        s.timeout = Duration::ZERO;
        reject(s);
        let mut s = settings("http://h/introspect");
        s.tls_ca_file = Some("/nonexistent/sso-ca.pem".into());
        assert!(reject(s).contains("/nonexistent/sso-ca.pem"));
        let empty = TempFile::new("empty", "");
        let mut s = settings("http://h/introspect");
        s.tls_ca_file = Some(empty.path());
        assert!(reject(s).contains("no certificate"));
        let junk = TempFile::new(
            "junk",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let mut s = settings("http://h/introspect");
        s.tls_ca_file = Some(junk.path());
        reject(s);
    }

    // ---- TLS ----

    // Test-only PKI generated for these tests (valid 2000-2100); the key protects nothing.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBajCCARCgAwIBAgICEAAwCgYIKoZIzj0EAwIwGzEZMBcGA1UEAwwQc3NvX2F1
dGggdGVzdCBDQTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowGzEZ
MBcGA1UEAwwQc3NvX2F1dGggdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABPgYyMps41BrW8E1GaB4LcyLqBHyNaEpxkZJq0qD7xAf5SIblnHkrD0AVukX
CmAt1u84kB9l+hY8FkOd6YxJflujQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0P
AQH/BAQDAgEGMB0GA1UdDgQWBBQYuxXbcxAtJGyTNiVcCNGJxVr3LzAKBggqhkjO
PQQDAgNIADBFAiB0MR+GOQCd19bT/hu5c4ey2zr76zO4SGn93qDcWZRZmgIhALmW
ezE0P3WW9zqQDORf9CC9MUn3l4L7+M+DEORSNlUQ
-----END CERTIFICATE-----
";
    const TEST_LEAF: &str = "-----BEGIN CERTIFICATE-----
MIIBszCCAVqgAwIBAgICEAEwCgYIKoZIzj0EAwIwGzEZMBcGA1UEAwwQc3NvX2F1
dGggdGVzdCBDQTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowFDES
MBAGA1UEAwwJMTI3LjAuMC4xMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEntwj
6PKa7+0apo7m+ILcpJKqiTZpVlr7ufS70lN2htDH8AKtXuP0j4Hlv+VVs0gVLb5o
5taH/v9zlD5uTHgO3aOBkjCBjzAMBgNVHRMBAf8EAjAAMA4GA1UdDwEB/wQEAwIH
gDATBgNVHSUEDDAKBggrBgEFBQcDATAaBgNVHREEEzARhwR/AAABgglsb2NhbGhv
c3QwHwYDVR0jBBgwFoAUGLsV23MQLSRskzYlXAjRicVa9y8wHQYDVR0OBBYEFHaA
khCljJLmqhSpuL367ualzV9gMAoGCCqGSM49BAMCA0cAMEQCIB53DYlk14Wv51mg
BRovcQ607scWjkUoE9xdtTFzwuP/AiBHX1jaM20L/Lu4PJ3w24K50Yb+a/XPSXsP
TghVyiPY+A==
-----END CERTIFICATE-----
";
    const TEST_LEAF_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghaLPFi0RoJYGgNjI
+oeebmwVkRth6/E0dwImOwQxFTGhRANCAASe3CPo8prv7Rqmjub4gtykkqqJNmlW
Wvu59LvSU3aG0MfwAq1e4/SPgeW/5VWzSBUtvmjm1of+/3OUPm5MeA7d
-----END PRIVATE KEY-----
";
    const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBYzCCAQqgAwIBAgICEAIwCgYIKoZIzj0EAwIwGDEWMBQGA1UEAwwNb3RoZXIg
dGVzdCBDQTAgFw0wMDAxMDEwMDAwMDBaGA8yMTAwMDEwMTAwMDAwMFowGDEWMBQG
A1UEAwwNb3RoZXIgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABHWK
BoHHtHbMDMVYRgYtjmN2ey3SltLa6xovwJtmJgpLFPv15fP2CrobSNyYvTRXoatC
Tcqdsw1EEvGSsMC8/oKjQjBAMA8GA1UdEwEB/wQFMAMBAf8wDgYDVR0PAQH/BAQD
AgEGMB0GA1UdDgQWBBTOjEN3TzcMBE488U0Jw1DHj2SC4TAKBggqhkjOPQQDAgNH
ADBEAiA9Sgwdre0WE8P71PFeNAN5aqEpkp+TFoe1y1qn7w+vtQIgBcQdAc4Qj6P9
u0057AMOm4QOH/q2v+xm/jFEdsmx9aQ=
-----END CERTIFICATE-----
";

    /// A file removed on drop, named per process and test.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, content: &str) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("sso_auth_test_{}_{name}.pem", std::process::id()));
            std::fs::write(&path, content).unwrap();
            TempFile(path)
        }
        fn path(&self) -> String {
            self.0.to_str().unwrap().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn tls_server_config() -> Arc<rustls::ServerConfig> {
        let certs = rustls_pemfile::certs(&mut TEST_LEAF.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut TEST_LEAF_KEY.as_bytes())
            .unwrap()
            .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Arc::new(cfg)
    }

    #[test]
    fn https_with_the_configured_ca() {
        let ca = TempFile::new("ca", TEST_CA);
        let srv = http_server(Some(tls_server_config()), |_| {
            response(200, r#"{"active":true,"sub":"bob"}"#)
        });
        let mut s = settings(&srv.url("https", "/introspect"));
        s.tls_ca_file = Some(ca.path());
        s.timeout = Duration::from_secs(1);
        let mut sso = HttpSso::new(s).unwrap();
        assert_eq!(sso.introspect("t").unwrap().user.as_deref(), Some("bob"));
        assert_eq!(sso.introspect("u").unwrap().user.as_deref(), Some("bob"));
        assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
        assert_eq!(
            srv.seen()[0].header("authorization"),
            Some(expected_basic().as_str())
        );
    }

    #[test]
    fn https_with_an_unknown_ca_is_unreachable() {
        let other = TempFile::new("other", OTHER_CA);
        let srv = http_server(Some(tls_server_config()), |_| {
            response(200, r#"{"active":true}"#)
        });
        let mut s = settings(&srv.url("https", "/introspect"));
        s.tls_ca_file = Some(other.path());
        s.timeout = Duration::from_secs(1);
        let mut sso = HttpSso::new(s).unwrap();
        match sso.introspect("t") {
            // the cause reaches the log: an operator needs to see it is the certificate
            Err(SsoError::Unreachable(msg)) => assert!(msg.contains("certificate"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(srv.seen().is_empty());
    }

    #[test]
    fn https_with_system_roots_rejects_the_test_ca() {
        let srv = http_server(Some(tls_server_config()), |_| {
            response(200, r#"{"active":true}"#)
        });
        let mut s = settings(&srv.url("https", "/introspect"));
        s.timeout = Duration::from_secs(1);
        match HttpSso::new(s) {
            Ok(mut sso) => assert!(matches!(sso.introspect("t"), Err(SsoError::Unreachable(_)))),
            // a host without any system CA: refused up front, which is just as closed
            Err(e) => assert!(matches!(e, SsoError::Unreachable(_))),
        }
        assert!(srv.seen().is_empty());
    }

    #[test]
    fn https_against_a_plain_http_server_is_unreachable() {
        let (port, _) = raw_server(|mut s, _| {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        });
        let ca = TempFile::new("ca_plain", TEST_CA);
        let mut s = settings(&format!("https://127.0.0.1:{port}/introspect"));
        s.tls_ca_file = Some(ca.path());
        let mut sso = HttpSso::new(s).unwrap();
        assert!(matches!(sso.introspect("t"), Err(SsoError::Unreachable(_))));
    }

    // ---- JWKS fetch ----

    #[test]
    fn fetch_jwks_over_https_with_the_configured_ca() {
        let ca = TempFile::new("ca_jwks", TEST_CA);
        let srv = http_server(Some(tls_server_config()), |req| match req.line.as_str() {
            "GET /jwks HTTP/1.1" => response(200, r#"{"keys":[]}"#),
            _ => response(404, "{}"),
        });
        let mut s = settings(&srv.url("http", "/introspect"));
        s.tls_ca_file = Some(ca.path());
        s.timeout = Duration::from_secs(1);
        let jwks = srv.url("https", "/jwks");
        let sso = HttpSso::with_jwks_url(s, Some(&jwks)).unwrap();
        assert_eq!(fetch_jwks(&sso, &jwks).unwrap(), br#"{"keys":[]}"#);
        assert_eq!(
            fetch_jwks(&sso, &srv.url("https", "/nope")),
            Err(SsoError::Status(404))
        );
        let seen = srv.seen();
        assert_eq!(seen.len(), 2);
        // a public document: the client secret stays home
        assert_eq!(seen[0].header("authorization"), None);
        assert!(seen[0].header("accept").unwrap().contains("jwk-set+json"));
        // keep-alive on the shared agent
        assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn fetch_jwks_refuses_plain_http_and_bad_urls() {
        let srv = http_server(None, |_| response(200, r#"{"keys":[]}"#));
        let sso = HttpSso::new(settings(&srv.url("http", "/introspect"))).unwrap();
        assert!(matches!(
            fetch_jwks(&sso, &srv.url("http", "/jwks")),
            Err(SsoError::Unreachable(m)) if m.contains("https")
        ));
        assert!(srv.seen().is_empty());
        let reject =
            |url: &str| match HttpSso::with_jwks_url(settings("http://h/introspect"), Some(url)) {
                Err(SsoError::Unreachable(m)) => m,
                other => panic!("{:?}", other.map(|_| ())),
            };
        assert!(reject("http://h/jwks").contains("jwks_url"));
        assert!(reject("https://u:pw@h/jwks").contains("jwks_url"));
        assert!(reject("nonsense").contains("jwks_url"));
    }

    #[test]
    fn fetch_jwks_with_an_unknown_ca_is_unreachable() {
        let other = TempFile::new("other_jwks", OTHER_CA);
        let srv = http_server(Some(tls_server_config()), |_| response(200, "{}"));
        let mut s = settings(&srv.url("http", "/introspect"));
        s.tls_ca_file = Some(other.path());
        let jwks = srv.url("https", "/jwks");
        let sso = HttpSso::with_jwks_url(s, Some(&jwks)).unwrap();
        assert!(matches!(
            fetch_jwks(&sso, &jwks),
            Err(SsoError::Unreachable(_))
        ));
        assert!(srv.seen().is_empty());
    }

    /// A request started with its budget already spent is not sent at all.
    #[test]
    fn spent_budget_sends_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut sso = HttpSso::new(SsoSettings {
            introspect_url: Some(format!("http://127.0.0.1:{port}/introspect")),
            token_url: None,
            client_id: None,
            client_secret: None,
            timeout: Duration::from_secs(2),
            tls_ca_file: None,
            digest_grant_type: "x".into(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        })
        .unwrap();
        sso.set_deadline(Some(Instant::now()));
        assert_eq!(sso.introspect("t"), Err(SsoError::Timeout));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "nothing connected");
    }
}
