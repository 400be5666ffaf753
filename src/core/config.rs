//! Module configuration: one setter per `modparam`, each checking its own value so that a wrong
//! value stops OpenSIPS at start-up with an error naming the parameter, and a final check of
//! the whole at `mod_init`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::sso::SsoSettings;
use super::text::{is_header_safe, is_quoted_safe};
use super::token::claims;
use super::token::jwt::{self, KeySet};

/// When `sso_challenge` / `sso_proxy_challenge` add a Bearer challenge (token checks on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerChallenge {
    /// In every challenge (RFC 8898 clients only: many Digest-only phones fail on it).
    Always,
    /// Only when the challenged request carried a token (header or Bearer credentials).
    WhenToken,
    /// Never: Digest only.
    Never,
}

impl BearerChallenge {
    pub fn parse(s: &str) -> Option<BearerChallenge> {
        match s.trim() {
            "always" => Some(BearerChallenge::Always),
            "when_token" => Some(BearerChallenge::WhenToken),
            "never" => Some(BearerChallenge::Never),
            _ => None,
        }
    }
}

/// Shortest accepted nonce MAC key.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Clone)]
pub struct Config {
    pub introspect_url: Option<String>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub token_header: String,
    /// None until `finish` fills in a random one.
    pub secret: Option<Vec<u8>>,
    pub nonce_expire: u64,
    pub realm_prefix: String,
    pub use_domain: bool,
    pub http_timeout_ms: u64,
    pub authz_server: Option<String>,
    pub bearer_scope: Option<String>,
    /// When a challenge carries the Bearer scheme next to Digest.
    pub bearer_challenge: BearerChallenge,
    pub digest_grant_type: String,
    pub cache_ttl: u64,
    pub negative_cache_ttl: u64,
    pub cache_slots: u64,
    pub nonce_slots: u64,
    /// Answers to Digest requests kept for their retransmissions.
    pub retransmission_slots: u64,
    pub tls_ca_file: Option<String>,
    /// Claims holding group names, in the order sso_is_user_in looks at them.
    pub group_claims: Vec<String>,
    /// Claim with the caller's telephone identity (RPID / P-Asserted-Identity).
    pub rpid_claim: String,
    pub rpid_prefix: String,
    pub rpid_suffix: String,
    /// Cap the lifetime of token-authorized registrations at the token's remaining life.
    pub bind_register_to_token: bool,
    /// Local JWT validation: keys from this https URL ...
    pub jwks_url: Option<String>,
    /// ... or from this file (JWKS or one PEM public key).
    pub jwt_key_file: Option<String>,
    pub jwt_algorithms: String,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_leeway: u64,
    pub jwks_refresh: u64,
    /// Seconds between two lookups of the SSO URLs' host names by the resolver process.
    pub dns_refresh: u64,
    /// The keys of jwt_key_file, read by `finish` (main process, before fork).
    pub jwt_file_keys: Option<Arc<KeySet>>,
    /// This node's name in its nonces; None: every start is a node of its own.
    pub node_id: Option<String>,
    /// As registrar's `case_sensitive`: false lowercases the user part before comparing.
    pub case_sensitive: bool,
    /// Every token (introspected or JWT) must list this in its `aud`.
    pub audience: Option<String>,
    /// Scopes every token must hold (all of them).
    pub required_scope: Vec<String>,
    /// Shared store for several nodes (OpenSIPS cachedb URL, e.g. `redis://host:6379/`).
    pub cachedb_url: Option<String>,
    /// Longest a store call may take before the store counts as down (ms).
    pub cachedb_timeout_ms: u64,
    /// SSO requests one process may have in flight at once; in the async form more wait
    /// for a free connection, within their http_timeout.
    pub sso_max_connections: u64,
}

// Hand-written so that no secret ever reaches a log through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("introspect_url", &self.introspect_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<set>"),
            )
            .field("token_header", &self.token_header)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("nonce_expire", &self.nonce_expire)
            .field("realm_prefix", &self.realm_prefix)
            .field("use_domain", &self.use_domain)
            .field("http_timeout_ms", &self.http_timeout_ms)
            .field("authz_server", &self.authz_server)
            .field("bearer_scope", &self.bearer_scope)
            .field("bearer_challenge", &self.bearer_challenge)
            .field("digest_grant_type", &self.digest_grant_type)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("cache_slots", &self.cache_slots)
            .field("nonce_slots", &self.nonce_slots)
            .field("retransmission_slots", &self.retransmission_slots)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("group_claims", &self.group_claims)
            .field("rpid_claim", &self.rpid_claim)
            .field("rpid_prefix", &self.rpid_prefix)
            .field("rpid_suffix", &self.rpid_suffix)
            .field("bind_register_to_token", &self.bind_register_to_token)
            .field("jwks_url", &self.jwks_url)
            .field("jwt_key_file", &self.jwt_key_file)
            .field("jwt_algorithms", &self.jwt_algorithms)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("dns_refresh", &self.dns_refresh)
            .field("node_id", &self.node_id)
            .field("case_sensitive", &self.case_sensitive)
            .field("audience", &self.audience)
            .field("required_scope", &self.required_scope)
            .field("cachedb_url", &self.cachedb_engine())
            .field("cachedb_timeout_ms", &self.cachedb_timeout_ms)
            .field("sso_max_connections", &self.sso_max_connections)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            introspect_url: None,
            token_url: None,
            client_id: None,
            client_secret: None,
            token_header: "X-SSO-Token".to_string(),
            secret: None,
            nonce_expire: 300,
            realm_prefix: String::new(),
            use_domain: false,
            http_timeout_ms: 2000,
            authz_server: None,
            bearer_scope: None,
            bearer_challenge: BearerChallenge::WhenToken,
            digest_grant_type: "urn:sso-auth:grant-type:sip-digest".to_string(),
            cache_ttl: 60,
            negative_cache_ttl: 5,
            cache_slots: 8192,
            nonce_slots: 262_144,
            retransmission_slots: 4096,
            tls_ca_file: None,
            group_claims: ["groups", "roles", "scope"].map(String::from).into(),
            rpid_claim: "phone_number".to_string(),
            rpid_prefix: String::new(),
            rpid_suffix: ";party=calling;id-type=subscriber;screen=yes".to_string(),
            bind_register_to_token: false,
            jwks_url: None,
            jwt_key_file: None,
            jwt_algorithms: "RS256,ES256,EdDSA".to_string(),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway: 30,
            jwks_refresh: 3600,
            dns_refresh: 30,
            jwt_file_keys: None,
            node_id: None,
            case_sensitive: false,
            audience: None,
            required_scope: Vec::new(),
            cachedb_url: None,
            cachedb_timeout_ms: 250,
            sso_max_connections: 32,
        }
    }
}

/// A rejected parameter value; the message names the parameter and never echoes a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(param: &str, why: &str) -> ConfigError {
    ConfigError(format!("modparam {param}: {why}"))
}

/// Names of the string parameters, in the order they are documented.
pub const STRING_PARAMS: &[&str] = &[
    "introspect_url",
    "token_url",
    "client_id",
    "client_secret",
    "token_header",
    "secret",
    "realm_prefix",
    "authz_server",
    "bearer_scope",
    "bearer_challenge",
    "digest_grant_type",
    "tls_ca_file",
    "group_claims",
    "rpid_claim",
    "rpid_prefix",
    "rpid_suffix",
    "jwks_url",
    "jwt_key_file",
    "jwt_algorithms",
    "jwt_issuer",
    "jwt_audience",
    "node_id",
    "audience",
    "required_scope",
    "cachedb_url",
];

/// Names of the integer parameters.
pub const INT_PARAMS: &[&str] = &[
    "nonce_expire",
    "use_domain",
    "http_timeout",
    "cache_ttl",
    "negative_cache_ttl",
    "cache_slots",
    "nonce_slots",
    "retransmission_slots",
    "bind_register_to_token",
    "jwt_leeway",
    "jwks_refresh",
    "dns_refresh",
    "case_sensitive",
    "cachedb_timeout",
    "sso_max_connections",
];

fn check_url(param: &str, value: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(value).map_err(|e| err(param, &format!("not a URL ({e})")))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => {
            return Err(err(
                param,
                &format!("scheme {other:?} is not http or https"),
            ))
        }
    }
    if parsed.host_str().is_none() {
        return Err(err(param, "URL has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(err(
            param,
            "put client credentials in client_id/client_secret, not in the URL",
        ));
    }
    Ok(value.to_string())
}

/// A cachedb URL as OpenSIPS reads it: `engine[:group]://...`, no spaces or control bytes.
/// The value is never echoed (it may hold the store's password).
fn check_cachedb_url(value: &str) -> Result<String, ConfigError> {
    let name = "cachedb_url";
    if !value.bytes().all(|b| b > 0x20 && b != 0x7f) {
        return Err(err(name, "contains spaces or control bytes"));
    }
    let Some((head, rest)) = value.split_once("://") else {
        return Err(err(
            name,
            "must look like engine://host:port/ (the engine being a loaded cachedb module)",
        ));
    };
    let engine = head.split(':').next().unwrap_or("");
    let engine_ok = !engine.is_empty()
        && engine
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !engine_ok || head.split(':').count() > 2 || rest.is_empty() {
        return Err(err(
            name,
            "must look like engine://host:port/ (the engine being a loaded cachedb module)",
        ));
    }
    Ok(value.to_string())
}

/// An HTTP header field name (RFC 7230 token).
fn is_field_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Config {
    /// Applies one string `modparam`.
    pub fn set_str(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let some = |v: &str| {
            if v.is_empty() {
                None
            } else {
                Some(v.to_string())
            }
        };
        match name {
            "introspect_url" => {
                self.introspect_url = if value.is_empty() {
                    None
                } else {
                    Some(check_url(name, value)?)
                }
            }
            "token_url" => {
                self.token_url = if value.is_empty() {
                    None
                } else {
                    Some(check_url(name, value)?)
                }
            }
            "client_id" => {
                if !value.bytes().all(|b| b >= 0x20 && b != 0x7f) {
                    return Err(err(name, "contains control bytes"));
                }
                self.client_id = some(value)
            }
            "client_secret" => {
                if !value.bytes().all(|b| b >= 0x20 && b != 0x7f) {
                    return Err(err(name, "contains control bytes"));
                }
                self.client_secret = some(value)
            }
            "token_header" => {
                if !is_field_name(value) {
                    return Err(err(name, "not a valid SIP header name"));
                }
                self.token_header = value.to_string()
            }
            "secret" => {
                if value.len() < MIN_SECRET_LEN {
                    return Err(err(
                        name,
                        &format!("must be at least {MIN_SECRET_LEN} bytes long"),
                    ));
                }
                self.secret = Some(value.as_bytes().to_vec())
            }
            "realm_prefix" => {
                if !is_quoted_safe(value) {
                    return Err(err(name, "contains bytes not allowed in a realm"));
                }
                self.realm_prefix = value.to_string()
            }
            "authz_server" => {
                if value.is_empty() {
                    self.authz_server = None;
                    return Ok(());
                }
                let url = check_url(name, value)?;
                if !url.starts_with("https://") {
                    return Err(err(name, "must be an https URI (RFC 8898)"));
                }
                if !is_quoted_safe(&url) {
                    return Err(err(name, "contains bytes not allowed in a header"));
                }
                self.authz_server = Some(url)
            }
            "bearer_scope" => {
                if !is_quoted_safe(value) {
                    return Err(err(name, "contains bytes not allowed in a header"));
                }
                self.bearer_scope = some(value)
            }
            "bearer_challenge" => {
                self.bearer_challenge = BearerChallenge::parse(value)
                    .ok_or_else(|| err(name, "must be \"always\", \"when_token\" or \"never\""))?
            }
            "digest_grant_type" => {
                if value.is_empty() || !value.bytes().all(|b| b > 0x20 && b != 0x7f) {
                    return Err(err(name, "must be a non-empty URI or name without spaces"));
                }
                self.digest_grant_type = value.to_string()
            }
            "tls_ca_file" => {
                if !value.is_empty() && !std::path::Path::new(value).is_file() {
                    return Err(err(name, &format!("{value}: no such file")));
                }
                self.tls_ca_file = some(value)
            }
            "group_claims" => {
                self.group_claims = claims::parse_claim_names(value).map_err(|e| err(name, &e))?
            }
            "rpid_claim" => {
                if !claims::is_claim_name(value) {
                    return Err(err(name, "not a usable claim name"));
                }
                self.rpid_claim = value.to_string()
            }
            "rpid_prefix" | "rpid_suffix" => {
                if !is_header_safe(value) {
                    return Err(err(name, "contains bytes not allowed in a header"));
                }
                if name == "rpid_prefix" {
                    self.rpid_prefix = value.to_string()
                } else {
                    self.rpid_suffix = value.to_string()
                }
            }
            "jwks_url" => {
                self.jwks_url = if value.is_empty() {
                    None
                } else {
                    let url = check_url(name, value)?;
                    if !url.starts_with("https://") {
                        return Err(err(name, "must be an https URL"));
                    }
                    Some(url)
                }
            }
            "jwt_key_file" => {
                if !value.is_empty() && !std::path::Path::new(value).is_file() {
                    return Err(err(name, &format!("{value}: no such file")));
                }
                self.jwt_key_file = some(value)
            }
            "jwt_algorithms" => {
                jwt::parse_algorithms(value).map_err(|e| err(name, &e))?;
                self.jwt_algorithms = value.to_string()
            }
            "jwt_issuer" => self.jwt_issuer = some(value),
            "jwt_audience" => self.jwt_audience = some(value),
            "node_id" => {
                if value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(err(
                        name,
                        "must be at most 128 printable ASCII characters, without spaces",
                    ));
                }
                self.node_id = some(value)
            }
            "audience" => {
                if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
                    return Err(err(name, "contains control bytes"));
                }
                self.audience = some(value)
            }
            "required_scope" => {
                if !value
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
                {
                    return Err(err(
                        name,
                        "scopes are printable ASCII without quotes or backslashes (RFC 6749 3.3)",
                    ));
                }
                self.required_scope = value
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
            "cachedb_url" => {
                self.cachedb_url = if value.is_empty() {
                    None
                } else {
                    Some(check_cachedb_url(value)?)
                }
            }
            _ => return Err(err(name, "unknown string parameter")),
        }
        Ok(())
    }

    /// Applies one integer `modparam`.
    pub fn set_int(&mut self, name: &str, value: i64) -> Result<(), ConfigError> {
        if value < 0 {
            return Err(err(name, "must not be negative"));
        }
        let v = value as u64;
        match name {
            "nonce_expire" => {
                if v == 0 {
                    return Err(err(name, "must be at least 1 second"));
                }
                self.nonce_expire = v
            }
            "use_domain" => {
                if v > 1 {
                    return Err(err(name, "must be 0 or 1"));
                }
                self.use_domain = v == 1
            }
            "http_timeout" => {
                if v == 0 || v > 60_000 {
                    return Err(err(name, "must be between 1 and 60000 ms"));
                }
                self.http_timeout_ms = v
            }
            "cache_ttl" => self.cache_ttl = v,
            "bind_register_to_token" => {
                if v > 1 {
                    return Err(err(name, "must be 0 or 1"));
                }
                self.bind_register_to_token = v == 1
            }
            "jwt_leeway" => {
                if v > 600 {
                    return Err(err(name, "must be at most 600 seconds"));
                }
                self.jwt_leeway = v
            }
            "case_sensitive" => {
                if v > 1 {
                    return Err(err(name, "must be 0 or 1"));
                }
                self.case_sensitive = v == 1
            }
            "jwks_refresh" => {
                if v < 60 {
                    return Err(err(name, "must be at least 60 seconds"));
                }
                self.jwks_refresh = v
            }
            "dns_refresh" => {
                if v == 0 {
                    return Err(err(name, "must be at least 1 second"));
                }
                self.dns_refresh = v
            }
            "negative_cache_ttl" => self.negative_cache_ttl = v,
            "cachedb_timeout" => {
                if v == 0 || v > 10_000 {
                    return Err(err(name, "must be between 1 and 10000 ms"));
                }
                self.cachedb_timeout_ms = v
            }
            "sso_max_connections" => {
                if !(1..=4096).contains(&v) {
                    return Err(err(name, "must be between 1 and 4096"));
                }
                self.sso_max_connections = v
            }
            "cache_slots" | "nonce_slots" | "retransmission_slots" => {
                if !(64..=16_777_216).contains(&v) {
                    return Err(err(name, "must be between 64 and 16777216"));
                }
                match name {
                    "cache_slots" => self.cache_slots = v,
                    "nonce_slots" => self.nonce_slots = v,
                    _ => self.retransmission_slots = v,
                }
            }
            _ => return Err(err(name, "unknown integer parameter")),
        }
        Ok(())
    }

    /// Whole-configuration checks at start-up; fills in a random secret when none was set
    /// (single-node use: nonces then die with the process and differ between nodes).
    pub fn finish(
        &mut self,
        random_secret: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut notes = Vec::new();
        if self.client_secret.is_some() && self.client_id.is_none() {
            return Err(err("client_secret", "set without client_id"));
        }
        if self.jwks_url.is_some() && self.jwt_key_file.is_some() {
            return Err(err("jwks_url", "set jwks_url or jwt_key_file, not both"));
        }
        if self.introspect_url.is_none() && self.token_url.is_none() && !self.jwt_enabled() {
            notes.push(
                "neither introspect_url nor token_url is set: every request will get -4 or -5"
                    .to_string(),
            );
        }
        for url in [&self.introspect_url, &self.token_url]
            .into_iter()
            .flatten()
        {
            if url.starts_with("http://") {
                notes.push(format!(
                    "SSO URL {} is plain http: client credentials and tokens cross the network unencrypted",
                    url
                ));
            }
        }
        if let Some(path) = &self.jwt_key_file {
            let data =
                std::fs::read(path).map_err(|e| err("jwt_key_file", &format!("{path}: {e}")))?;
            let keys = KeySet::from_file_contents(&data)
                .map_err(|e| err("jwt_key_file", &format!("{path}: {e}")))?;
            notes.push(format!("jwt_key_file {path}: {}", keys.summary()));
            self.jwt_file_keys = Some(Arc::new(keys));
        }
        if self.jwt_enabled() && self.introspect_url.is_none() {
            notes.push(
                "JWT keys set without introspect_url: tokens that are not JWTs get -6".to_string(),
            );
        }
        if self.secret.is_none() {
            self.secret = Some(random_secret());
            notes.push(
                "no secret set: using a random one; nonces will not verify on other nodes or after a restart"
                    .to_string(),
            );
        }
        Ok(notes)
    }

    /// The cachedb engine of `cachedb_url` (e.g. "redis"): what logs may show of the URL,
    /// which can hold a password.
    pub fn cachedb_engine(&self) -> Option<&str> {
        let url = self.cachedb_url.as_deref()?;
        url.split(':').next()
    }

    /// Tokens are checked locally when the SSO's JWT keys are configured.
    pub fn jwt_enabled(&self) -> bool {
        self.jwks_url.is_some() || self.jwt_key_file.is_some()
    }

    /// Token checks are on: by introspection, local JWT validation, or both.
    pub fn token_checks(&self) -> bool {
        self.introspect_url.is_some() || self.jwt_enabled()
    }

    /// Every SSO URL the module calls: the resolver process looks up their host names.
    pub fn sso_urls(&self) -> impl Iterator<Item = &str> {
        [&self.introspect_url, &self.token_url, &self.jwks_url]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    pub fn sso_settings(&self) -> SsoSettings {
        SsoSettings {
            introspect_url: self.introspect_url.clone(),
            token_url: self.token_url.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            timeout: Duration::from_millis(self.http_timeout_ms),
            tls_ca_file: self.tls_ca_file.clone(),
            digest_grant_type: self.digest_grant_type.clone(),
            max_connections: self.sso_max_connections as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_docs() {
        let c = Config::default();
        assert_eq!(c.token_header, "X-SSO-Token");
        assert_eq!(c.nonce_expire, 300);
        assert_eq!(c.http_timeout_ms, 2000);
        assert_eq!(c.cache_ttl, 60);
        assert!(!c.use_domain);
        assert_eq!(c.digest_grant_type, "urn:sso-auth:grant-type:sip-digest");
        assert_eq!(c.bearer_challenge, BearerChallenge::WhenToken);
    }

    #[test]
    fn bearer_challenge_values() {
        let mut c = Config::default();
        for (text, want) in [
            ("always", BearerChallenge::Always),
            ("never", BearerChallenge::Never),
            (" when_token ", BearerChallenge::WhenToken),
        ] {
            c.set_str("bearer_challenge", text).unwrap();
            assert_eq!(c.bearer_challenge, want);
        }
        for bad in ["", "Always", "yes", "1", "when-token"] {
            let e = c.set_str("bearer_challenge", bad).unwrap_err();
            assert!(e.0.contains("bearer_challenge"), "{bad:?}");
        }
    }

    #[test]
    fn wrong_values_name_the_parameter() {
        let mut c = Config::default();
        let e = c
            .set_str("authz_server", "http://sso.example.com/")
            .unwrap_err();
        assert!(e.0.contains("authz_server") && e.0.contains("https"));
        let e = c.set_str("secret", "short").unwrap_err();
        assert!(e.0.contains("secret") && !e.0.contains("short"));
        let e = c.set_str("introspect_url", "not a url").unwrap_err();
        assert!(e.0.contains("introspect_url"));
        let e = c.set_str("token_url", "ftp://x/").unwrap_err();
        assert!(e.0.contains("token_url"));
        let e = c.set_int("nonce_expire", -1).unwrap_err();
        assert!(e.0.contains("nonce_expire"));
        assert!(c.set_int("http_timeout", 0).is_err());
        assert!(c.set_int("use_domain", 2).is_err());
        assert!(c.set_int("nonce_slots", 10).is_err());
        assert!(c.set_int("cache_slots", -5).is_err());
        assert!(c.set_str("token_header", "X Bad").is_err());
        assert!(c
            .set_str("introspect_url", "https://user:pw@sso/x")
            .is_err());
        assert!(c.set_str("tls_ca_file", "/nonexistent/ca.pem").is_err());
    }

    #[test]
    fn good_values_apply() {
        let mut c = Config::default();
        c.set_str("introspect_url", "https://sso.example.com/introspect")
            .unwrap();
        c.set_str("authz_server", "https://sso.example.com/")
            .unwrap();
        c.set_str("secret", &"k".repeat(32)).unwrap();
        c.set_int("use_domain", 1).unwrap();
        c.set_int("cache_ttl", 0).unwrap();
        assert!(c.use_domain);
        assert_eq!(c.cache_ttl, 0);
        assert!(c.finish(|| vec![0; 32]).unwrap().is_empty());
    }

    #[test]
    fn finish_fills_secret_and_checks_pairs() {
        let mut c = Config::default();
        let notes = c.finish(|| vec![7; 32]).unwrap();
        assert_eq!(c.secret.as_deref(), Some(&[7u8; 32][..]));
        assert!(!notes.is_empty());
        let mut c = Config::default();
        c.set_str("client_secret", "s").unwrap();
        assert!(c.finish(|| vec![0; 32]).is_err());
    }

    #[test]
    fn identity_params() {
        let mut c = Config::default();
        assert_eq!(c.group_claims, ["groups", "roles", "scope"]);
        c.set_str("group_claims", "realm_access.roles, groups")
            .unwrap();
        assert_eq!(c.group_claims, ["realm_access.roles", "groups"]);
        assert!(c.set_str("group_claims", "").is_err());
        assert!(c.set_str("rpid_claim", "bad name").is_err());
        assert!(c.set_str("rpid_suffix", ";a\r\nX: y").is_err());
        c.set_int("bind_register_to_token", 1).unwrap();
        assert!(c.bind_register_to_token);
        assert!(c.set_int("bind_register_to_token", 2).is_err());
    }

    #[test]
    fn jwt_params() {
        let mut c = Config::default();
        assert!(!c.jwt_enabled());
        assert!(c.set_str("jwks_url", "http://sso/jwks").is_err());
        c.set_str("jwks_url", "https://sso.example.com/jwks")
            .unwrap();
        assert!(c.jwt_enabled() && c.token_checks());
        assert!(c.set_str("jwt_algorithms", "HS256").is_err());
        assert!(c.set_str("jwt_algorithms", "none").is_err());
        c.set_str("jwt_algorithms", "ES256").unwrap();
        assert!(c.set_int("jwt_leeway", 601).is_err());
        assert!(c.set_int("jwks_refresh", 10).is_err());
        assert_eq!(c.dns_refresh, 30);
        assert!(c.set_int("dns_refresh", 0).is_err());
        c.set_int("dns_refresh", 1).unwrap();
        assert_eq!(c.dns_refresh, 1);
        assert!(c.set_str("jwt_key_file", "/nonexistent").is_err());
    }

    #[test]
    fn cachedb_params() {
        let mut c = Config::default();
        assert_eq!(c.cachedb_url, None);
        assert_eq!(c.cachedb_timeout_ms, 250);
        c.set_str("cachedb_url", "redis://127.0.0.1:6379/").unwrap();
        assert_eq!(c.cachedb_engine(), Some("redis"));
        c.set_str("cachedb_url", "redis:cluster1://:pw@10.0.0.1:6379/")
            .unwrap();
        assert_eq!(c.cachedb_engine(), Some("redis"));
        assert!(!format!("{c:?}").contains("pw@"), "no password in Debug");
        for bad in [
            "redis",
            "127.0.0.1:6379",
            "://x",
            "re dis://x",
            "redis://",
            "a:b:c://x",
        ] {
            let e = c.set_str("cachedb_url", bad).unwrap_err();
            assert!(
                e.0.contains("cachedb_url") && !e.0.contains(bad),
                "{bad}: {e}"
            );
        }
        c.set_str("cachedb_url", "").unwrap();
        assert_eq!(c.cachedb_url, None);
        c.set_int("cachedb_timeout", 100).unwrap();
        assert!(c.set_int("cachedb_timeout", 0).is_err());
        assert!(c.set_int("cachedb_timeout", 10_001).is_err());
    }

    #[test]
    fn sso_max_connections_is_bounded() {
        let mut c = Config::default();
        assert_eq!(c.sso_max_connections, 32);
        c.set_int("sso_max_connections", 64).unwrap();
        assert_eq!(c.sso_max_connections, 64);
        assert!(c.set_int("sso_max_connections", 0).is_err());
        assert!(c.set_int("sso_max_connections", 4097).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = Config::default();
        c.set_str("client_secret", "topsecretvalue").unwrap();
        c.set_str("secret", &"z".repeat(40)).unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("topsecretvalue"));
        assert!(!text.contains(&"z".repeat(40)));
    }

    #[test]
    fn security_review_params() {
        let mut c = Config::default();
        assert_eq!((c.node_id.as_deref(), c.case_sensitive), (None, false));
        assert!(c.audience.is_none() && c.required_scope.is_empty());
        c.set_str("node_id", "sip-a.example.com").unwrap();
        assert_eq!(c.node_id.as_deref(), Some("sip-a.example.com"));
        assert!(c.set_str("node_id", "has space").is_err());
        assert!(c.set_str("node_id", &"n".repeat(129)).is_err());
        c.set_str("node_id", "").unwrap();
        assert_eq!(c.node_id, None);
        c.set_int("case_sensitive", 1).unwrap();
        assert!(c.case_sensitive);
        assert!(c.set_int("case_sensitive", 2).is_err());
        c.set_str("audience", "opensips").unwrap();
        assert_eq!(c.audience.as_deref(), Some("opensips"));
        assert!(c.set_str("audience", "a\nb").is_err());
        c.set_str("required_scope", " sip  voice ").unwrap();
        assert_eq!(c.required_scope, ["sip", "voice"]);
        assert!(c.set_str("required_scope", "sip \"x\"").is_err());
        c.set_str("required_scope", "").unwrap();
        assert!(c.required_scope.is_empty());
        assert!(STRING_PARAMS.contains(&"node_id") && INT_PARAMS.contains(&"case_sensitive"));
    }
}
