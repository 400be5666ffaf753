//! Module configuration: one setter per `modparam`, each checking its own value so that a wrong
//! value stops OpenSIPS at start-up with an error naming the parameter, and a final check of
//! the whole at `mod_init`.

use std::fmt;
use std::time::Duration;

use super::sso::SsoSettings;
use super::text::is_quoted_safe;

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
    pub digest_grant_type: String,
    pub cache_ttl: u64,
    pub negative_cache_ttl: u64,
    pub cache_slots: u64,
    pub nonce_slots: u64,
    pub tls_ca_file: Option<String>,
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
            .field("digest_grant_type", &self.digest_grant_type)
            .field("cache_ttl", &self.cache_ttl)
            .field("negative_cache_ttl", &self.negative_cache_ttl)
            .field("cache_slots", &self.cache_slots)
            .field("nonce_slots", &self.nonce_slots)
            .field("tls_ca_file", &self.tls_ca_file)
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
            digest_grant_type: "urn:sso-auth:grant-type:sip-digest".to_string(),
            cache_ttl: 60,
            negative_cache_ttl: 5,
            cache_slots: 8192,
            nonce_slots: 262_144,
            tls_ca_file: None,
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
    "digest_grant_type",
    "tls_ca_file",
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
            "negative_cache_ttl" => self.negative_cache_ttl = v,
            "cache_slots" | "nonce_slots" => {
                if !(64..=16_777_216).contains(&v) {
                    return Err(err(name, "must be between 64 and 16777216"));
                }
                if name == "cache_slots" {
                    self.cache_slots = v
                } else {
                    self.nonce_slots = v
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
        if self.introspect_url.is_none() && self.token_url.is_none() {
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
        if self.secret.is_none() {
            self.secret = Some(random_secret());
            notes.push(
                "no secret set: using a random one; nonces will not verify on other nodes or after a restart"
                    .to_string(),
            );
        }
        Ok(notes)
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
    fn debug_hides_secrets() {
        let mut c = Config::default();
        c.set_str("client_secret", "topsecretvalue").unwrap();
        c.set_str("secret", &"z".repeat(40)).unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("topsecretvalue"));
        assert!(!text.contains(&"z".repeat(40)));
    }
}
