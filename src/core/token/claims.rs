//! The claims an SSO returned for a token, and what the script may ask of them: one claim's
//! value (`$sso(claim.<name>)`), group membership (`sso_is_user_in`) and the telephone
//! identity behind RPID / P-Asserted-Identity.
//!
//! Claims reach a worker either as a parsed JSON object (fresh introspection, JWT payload) or
//! as the compact JSON text the shared cache keeps; the text is parsed only when the script
//! actually looks at a claim, so the cache-hit path pays nothing for it.

use std::fmt;

use once_cell::unsync::OnceCell;
use serde_json::{Map, Value};

/// A token's claims, parsed on first use.
#[derive(Clone, Default)]
pub struct ClaimSet {
    text: Option<String>,
    /// Boxed: most sets are never parsed, and a small set keeps the records that carry it
    /// small.
    parsed: OnceCell<Box<Map<String, Value>>>,
}

impl ClaimSet {
    pub fn from_map(map: Map<String, Value>) -> ClaimSet {
        ClaimSet {
            text: None,
            parsed: OnceCell::with_value(Box::new(map)),
        }
    }

    /// Compact JSON text of an object, as `to_json` wrote it.
    pub fn from_json(text: &str) -> ClaimSet {
        ClaimSet {
            text: Some(text.into()),
            parsed: OnceCell::new(),
        }
    }

    /// Takes the JSON text buffer out (None after `from_map`), leaving no claims: a hit
    /// copies the cache's text into it and gives it back with `set_json`.
    pub fn take_json(&mut self) -> Option<String> {
        self.parsed = OnceCell::new();
        self.text.take()
    }

    /// Compact JSON text of an object, as `to_json` wrote it, in place of these claims.
    pub fn set_json(&mut self, text: String) {
        self.parsed = OnceCell::new();
        self.text = Some(text);
    }

    /// The claims as an object; text that is not a JSON object counts as no claims.
    pub fn map(&self) -> &Map<String, Value> {
        self.parsed.get_or_init(|| {
            Box::new(
                match self.text.as_deref().map(serde_json::from_str::<Value>) {
                    Some(Ok(Value::Object(m))) => m,
                    _ => Map::new(),
                },
            )
        })
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        claim(self.map(), name)
    }

    /// Compact JSON text of the claims, for the shared cache.
    pub fn to_json(&self) -> String {
        match (&self.text, self.parsed.get()) {
            (Some(t), None) => t.to_string(),
            _ => Value::Object(self.map().clone()).to_string(),
        }
    }

    /// Compact JSON of only the named claims (top-level part of a dotted name): what the
    /// cache keeps when the whole set is too large.
    pub fn to_json_only(&self, names: &[&str]) -> String {
        let map = self.map();
        let kept: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| {
                names
                    .iter()
                    .any(|n| n == k || n.split('.').next() == Some(k.as_str()))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Object(kept).to_string()
    }
}

impl PartialEq for ClaimSet {
    fn eq(&self, other: &ClaimSet) -> bool {
        self.map() == other.map()
    }
}

// Claims may hold personal data: Debug shows only their names.
impl fmt::Debug for ClaimSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.map().keys()).finish()
    }
}

impl From<Map<String, Value>> for ClaimSet {
    fn from(map: Map<String, Value>) -> ClaimSet {
        ClaimSet::from_map(map)
    }
}

/// A claim by name: the exact key first, then a dotted path into nested objects
/// (`realm_access.roles`, as Keycloak nests roles).
pub fn claim<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = map.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut cur = map.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// How a claim reads in the script: strings as they are, numbers and booleans as text, an
/// array of strings joined with commas, anything else as compact JSON. Null reads as absent.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) if items.iter().all(Value::is_string) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        other => Some(other.to_string()),
    }
}

/// True when `group` is one of the values of the first of `claim_names` that holds it: an
/// array of strings, or a space-separated string (the `scope` style). Exact, case-sensitive.
pub fn is_member(claims: &ClaimSet, claim_names: &[String], group: &str) -> bool {
    if group.is_empty() {
        return false;
    }
    claim_names
        .iter()
        .filter_map(|name| claims.get(name))
        .any(|value| match value {
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(group)),
            Value::String(s) => s.split_ascii_whitespace().any(|g| g == group),
            _ => false,
        })
}

/// Parses a comma-separated list of claim names (modparam `group_claims`).
pub fn parse_claim_names(list: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Err("no claim names given".into());
    }
    if let Some(bad) = names.iter().find(|n| !is_claim_name(n)) {
        return Err(format!("{bad:?} is not a usable claim name"));
    }
    Ok(names)
}

/// Claim names the module accepts: printable ASCII without spaces, quotes or separators that
/// would make the modparam or the pseudo-variable ambiguous.
pub fn is_claim_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b',' | b'(' | b')'))
}

/// What `$sso(name)` can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoVar {
    /// The authenticated user (token user, or the Digest username).
    User,
    /// The token's `exp` (unix seconds).
    Exp,
    /// Seconds the token has left (0 when expired).
    ExpiresIn,
    Scope,
    /// `header`, `bearer` or `digest`.
    TokenSource,
    Claim(String),
}

impl SsoVar {
    pub fn parse(name: &str) -> Result<SsoVar, String> {
        match name.trim() {
            "user" => Ok(SsoVar::User),
            "exp" => Ok(SsoVar::Exp),
            "expires_in" => Ok(SsoVar::ExpiresIn),
            "scope" => Ok(SsoVar::Scope),
            "token_source" => Ok(SsoVar::TokenSource),
            other => match other.strip_prefix("claim.") {
                Some(c) if is_claim_name(c) => Ok(SsoVar::Claim(c.to_string())),
                Some(c) => Err(format!("{c:?} is not a usable claim name")),
                None => Err(format!(
                    "unknown $sso name {other:?}: expected user, exp, expires_in, scope, \
                     token_source or claim.<name>"
                )),
            },
        }
    }
}

/// Why a claim cannot become an asserted identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityValueError {
    /// Empty, or not a string or number.
    Unusable,
    /// Holds bytes that must not reach a SIP header.
    Unsafe,
}

/// Bytes allowed in the user part and host of an asserted URI: RFC 3261's unreserved and
/// user-unreserved characters plus escapes; nothing that could end the URI or the header.
fn is_uri_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_'
                | b'.'
                | b'!'
                | b'~'
                | b'*'
                | b'\''
                | b'%'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b';'
                | b'?'
                | b'/'
                | b':'
                | b'@'
                | b'['
                | b']'
        )
}

/// A telephone number written for people ("+1 (425) 555-1212") in the form a URI wants:
/// visual separators removed (RFC 3966 allows - . ( ) as such). None if it is not one.
fn compact_phone_number(value: &str) -> Option<String> {
    let digits: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let body = digits.strip_prefix('+').unwrap_or(&digits);
    (!body.is_empty() && body.len() <= 32 && body.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// The URI, in angle brackets, that an identity claim asserts: a sip:/sips:/tel: URI is used
/// as it is; a telephone number becomes `sip:<number>@<host>;user=phone`; any other user
/// name `sip:<name>@<host>`. Every value is checked before it can reach the wire.
pub fn asserted_uri(value: &Value, host: &str) -> Result<String, IdentityValueError> {
    let text = match value {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Err(IdentityValueError::Unusable),
    };
    let text = text
        .strip_prefix('<')
        .and_then(|t| t.strip_suffix('>'))
        .map(str::to_string)
        .unwrap_or(text);
    if text.is_empty() || text.len() > 256 {
        return Err(IdentityValueError::Unusable);
    }
    let lower = text.to_ascii_lowercase();
    let uri =
        if lower.starts_with("sip:") || lower.starts_with("sips:") || lower.starts_with("tel:") {
            text
        } else if let Some(number) = compact_phone_number(&text) {
            format!("sip:{number}@{host};user=phone")
        } else {
            format!("sip:{text}@{host}")
        };
    if host.is_empty() || !uri.bytes().all(is_uri_byte) {
        return Err(IdentityValueError::Unsafe);
    }
    Ok(format!("<{uri}>"))
}

/// The user part of an asserted URI (`<sip:user@host;...>` or `<tel:number;...>`).
pub fn uri_user(asserted: &str) -> &str {
    let inner = asserted
        .trim_start_matches('<')
        .trim_end_matches('>')
        .split_once(':')
        .map(|(_, rest)| rest)
        .unwrap_or("");
    let end = inner.find(['@', ';', '?']).unwrap_or(inner.len());
    let user = &inner[..end];
    // tel: has no '@'; sip: without a user has only a host.
    if inner[end..].starts_with('@') || asserted.to_ascii_lowercase().starts_with("<tel:") {
        user
    } else {
        ""
    }
}

/// E.164 as OpenSIPS auth's is_rpid_user_e164 checks it: '+' then 2 to 15 digits.
pub fn is_e164(user: &str) -> bool {
    match user.strip_prefix('+') {
        Some(d) => (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: Value) -> ClaimSet {
        match v {
            Value::Object(m) => ClaimSet::from_map(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn text_and_map_forms_agree() {
        let a = set(json!({"groups": ["staff"], "n": 3}));
        let b = ClaimSet::from_json(&a.to_json());
        assert_eq!(a, b);
        assert_eq!(b.get("n"), Some(&json!(3)));
        assert!(ClaimSet::from_json("not json").map().is_empty());
        assert!(ClaimSet::from_json("[1,2]").map().is_empty());
    }

    #[test]
    fn dotted_names_reach_nested_claims() {
        let c = set(json!({"realm_access": {"roles": ["sip-user"]}, "a.b": 1}));
        assert_eq!(c.get("realm_access.roles"), Some(&json!(["sip-user"])));
        assert_eq!(c.get("a.b"), Some(&json!(1)), "an exact key wins");
        assert_eq!(c.get("realm_access.nothing"), None);
        assert_eq!(c.get("realm_access.roles.x"), None);
    }

    #[test]
    fn reduced_json_keeps_only_named_claims() {
        let c =
            set(json!({"groups": ["a"], "big": "x".repeat(100), "realm_access": {"roles": []}}));
        let kept = ClaimSet::from_json(&c.to_json_only(&["groups", "realm_access.roles"]));
        assert!(kept.get("big").is_none());
        assert!(kept.get("groups").is_some());
        assert!(kept.get("realm_access.roles").is_some());
    }

    #[test]
    fn claim_text_forms() {
        assert_eq!(claim_text(&json!("x y")).as_deref(), Some("x y"));
        assert_eq!(claim_text(&json!(42)).as_deref(), Some("42"));
        assert_eq!(claim_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(claim_text(&json!(["a", "b"])).as_deref(), Some("a,b"));
        assert_eq!(claim_text(&json!([1, "b"])).as_deref(), Some("[1,\"b\"]"));
        assert_eq!(claim_text(&json!({"k": 1})).as_deref(), Some("{\"k\":1}"));
        assert_eq!(claim_text(&Value::Null), None);
    }

    #[test]
    fn membership_in_arrays_and_scope_strings() {
        let names: Vec<String> = ["groups", "roles", "scope"].map(String::from).into();
        let c = set(json!({"groups": ["staff", "sip"], "roles": "admin", "scope": "openid voip"}));
        assert!(is_member(&c, &names, "staff"));
        assert!(is_member(&c, &names, "admin"));
        assert!(is_member(&c, &names, "voip"));
        assert!(!is_member(&c, &names, "Staff"), "case-sensitive");
        assert!(!is_member(&c, &names, "open"), "whole values only");
        assert!(!is_member(&c, &names, ""));
        let only_roles = vec!["roles".to_string()];
        assert!(!is_member(&c, &only_roles, "staff"));
        let odd = set(json!({"groups": {"staff": true}, "roles": [1, 2]}));
        assert!(!is_member(&odd, &names, "staff"));
    }

    #[test]
    fn claim_name_lists() {
        assert_eq!(
            parse_claim_names(" groups, realm_access.roles ,scope").unwrap(),
            vec!["groups", "realm_access.roles", "scope"]
        );
        assert!(parse_claim_names(" , ").is_err());
        assert!(parse_claim_names("gro\"ups").is_err());
        assert!(parse_claim_names("a b").is_err());
    }

    #[test]
    fn sso_var_names() {
        assert_eq!(SsoVar::parse("user"), Ok(SsoVar::User));
        assert_eq!(SsoVar::parse("expires_in"), Ok(SsoVar::ExpiresIn));
        assert_eq!(
            SsoVar::parse("claim.realm_access.roles"),
            Ok(SsoVar::Claim("realm_access.roles".into()))
        );
        assert!(SsoVar::parse("claim.").is_err());
        assert!(SsoVar::parse("claim.a b").is_err());
        assert!(SsoVar::parse("password").is_err());
    }

    #[test]
    fn asserted_uris_from_claims() {
        let h = "example.com";
        assert_eq!(
            asserted_uri(&json!("+1 (425) 555-1212"), h).unwrap(),
            "<sip:+14255551212@example.com;user=phone>"
        );
        assert_eq!(
            asserted_uri(&json!(4915112345_u64), h).unwrap(),
            "<sip:4915112345@example.com;user=phone>"
        );
        assert_eq!(
            asserted_uri(&json!("sip:alice@example.com"), h).unwrap(),
            "<sip:alice@example.com>"
        );
        assert_eq!(
            asserted_uri(&json!("<tel:+4930123456>"), h).unwrap(),
            "<tel:+4930123456>"
        );
        assert_eq!(
            asserted_uri(&json!("alice"), h).unwrap(),
            "<sip:alice@example.com>"
        );
        for bad in [
            "a\r\nX: y",
            "a b",
            "sip:a>b",
            "a\"b",
            "<sip:x@y>>",
            "a\u{e9}",
        ] {
            assert_eq!(
                asserted_uri(&json!(bad), h),
                Err(IdentityValueError::Unsafe),
                "{bad:?}"
            );
        }
        assert_eq!(
            asserted_uri(&json!(""), h),
            Err(IdentityValueError::Unusable)
        );
        assert_eq!(
            asserted_uri(&json!(["+1"]), h),
            Err(IdentityValueError::Unusable)
        );
        assert_eq!(
            asserted_uri(&json!("x".repeat(300)), h),
            Err(IdentityValueError::Unusable)
        );
        assert_eq!(
            asserted_uri(&json!("+123"), ""),
            Err(IdentityValueError::Unsafe)
        );
    }

    #[test]
    fn users_of_asserted_uris_and_e164() {
        assert_eq!(uri_user("<sip:+14255551212@h;user=phone>"), "+14255551212");
        assert_eq!(uri_user("<tel:+4930123456;phone-context=x>"), "+4930123456");
        assert_eq!(uri_user("<sip:example.com>"), "");
        assert!(is_e164("+14255551212"));
        assert!(is_e164("+12"));
        assert!(!is_e164("+1"));
        assert!(!is_e164("+1234567890123456"));
        assert!(!is_e164("14255551212"));
        assert!(!is_e164("+1425555121a"));
    }
}
