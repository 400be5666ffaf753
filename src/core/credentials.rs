//! Parsers for credentials found in SIP requests: `Authorization` / `Proxy-Authorization`
//! header values (Digest, Bearer, anything else) and the token header value.
//! They work on bytes, check length first, and refuse anything doubtful rather than guess.

use super::text::is_token68_like;

/// Longest header value the module looks at; longer values are rejected as malformed.
pub const MAX_CREDENTIALS_LEN: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Over MAX_CREDENTIALS_LEN.
    TooLong,
    /// Broken syntax: unterminated quote, missing `=`, duplicated parameter, bad bytes, ...
    Malformed(&'static str),
}

/// Digest credentials (RFC 2617 / RFC 7616 / RFC 3261 22.4). Values are unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// As sent (e.g. "MD5", "SHA-256-sess"); None when absent (means MD5).
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<String>,
    /// Exactly 8 hex digits when present (checked by the parser).
    pub nc: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Digest(DigestCredentials),
    /// RFC 6750 / RFC 8898 bearer token (token68 syntax checked).
    Bearer(String),
    /// Another scheme (Basic, ...): not ours.
    OtherScheme(String),
}

fn malformed(why: &'static str) -> ParseError {
    ParseError::Malformed(why)
}

fn is_lws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// RFC 3261 token characters (parameter names, unquoted values, scheme names).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Values of unquoted parameters may also hold the characters URIs and base64 use.
fn is_unquoted_value_char(b: u8) -> bool {
    is_token_char(b) || b"/:=@?&$#[]".contains(&b)
}

/// Common checks: size, control bytes, UTF-8.
fn checked_text(value: &[u8]) -> Result<&str, ParseError> {
    if value.len() > MAX_CREDENTIALS_LEN {
        return Err(ParseError::TooLong);
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(malformed("control bytes"));
    }
    std::str::from_utf8(value).map_err(|_| malformed("not UTF-8"))
}

/// Parses one Authorization / Proxy-Authorization header value (the part after the colon).
pub fn parse_authorization(value: &[u8]) -> Result<Credentials, ParseError> {
    let text = checked_text(value)?.trim_matches(|c| c == ' ' || c == '\t');
    let scheme_end = text.find([' ', '\t']).unwrap_or(text.len());
    let (scheme, rest) = text.split_at(scheme_end);
    if scheme.is_empty() || !scheme.bytes().all(is_token_char) {
        return Err(malformed("bad scheme"));
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    if scheme.eq_ignore_ascii_case("Digest") {
        parse_digest(rest.as_bytes()).map(Credentials::Digest)
    } else if scheme.eq_ignore_ascii_case("Bearer") {
        if !is_token68_like(rest) {
            return Err(malformed("Bearer credentials are not one token68"));
        }
        Ok(Credentials::Bearer(rest.to_string()))
    } else {
        Ok(Credentials::OtherScheme(scheme.to_string()))
    }
}

/// Parses the value of the token header (e.g. `X-SSO-Token: <token>`): trimmed, token68-like,
/// at most MAX_CREDENTIALS_LEN bytes.
pub fn parse_token_header(value: &[u8]) -> Result<String, ParseError> {
    let text = checked_text(value)?.trim_matches(|c| c == ' ' || c == '\t');
    if !is_token68_like(text) {
        return Err(malformed("token is not token68"));
    }
    Ok(text.to_string())
}

/// Splits `name=value, name="quoted", ...` into (lower-cased name, unquoted value) pairs.
fn params(input: &[u8]) -> Result<Vec<(String, String)>, ParseError> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = input.len();
    loop {
        while i < n && (is_lws(input[i]) || input[i] == b',') {
            i += 1;
        }
        if i >= n {
            break;
        }
        let start = i;
        while i < n && is_token_char(input[i]) {
            i += 1;
        }
        if i == start {
            return Err(malformed("parameter name expected"));
        }
        let name = std::str::from_utf8(&input[start..i]).unwrap().to_ascii_lowercase();
        while i < n && is_lws(input[i]) {
            i += 1;
        }
        if i >= n || input[i] != b'=' {
            return Err(malformed("parameter without '='"));
        }
        i += 1;
        while i < n && is_lws(input[i]) {
            i += 1;
        }
        let value = if i < n && input[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            loop {
                if i >= n {
                    return Err(malformed("unterminated quoted string"));
                }
                match input[i] {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        if i + 1 >= n {
                            return Err(malformed("unterminated quoted string"));
                        }
                        v.push(input[i + 1]);
                        i += 2;
                    }
                    b => {
                        v.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).map_err(|_| malformed("not UTF-8"))?
        } else {
            let s = i;
            while i < n && is_unquoted_value_char(input[i]) {
                i += 1;
            }
            std::str::from_utf8(&input[s..i]).unwrap().to_string()
        };
        while i < n && is_lws(input[i]) {
            i += 1;
        }
        if i < n && input[i] != b',' {
            return Err(malformed("garbage after a parameter value"));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn parse_digest(input: &[u8]) -> Result<DigestCredentials, ParseError> {
    let mut d = DigestCredentials::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in params(input)? {
        let slot: Option<&mut String> = match name.as_str() {
            "username" => Some(&mut d.username),
            "realm" => Some(&mut d.realm),
            "nonce" => Some(&mut d.nonce),
            "uri" => Some(&mut d.uri),
            "response" => Some(&mut d.response),
            _ => None,
        };
        let optional: Option<&mut Option<String>> = match name.as_str() {
            "algorithm" => Some(&mut d.algorithm),
            "cnonce" => Some(&mut d.cnonce),
            "opaque" => Some(&mut d.opaque),
            "qop" => Some(&mut d.qop),
            "nc" => Some(&mut d.nc),
            _ => None,
        };
        if slot.is_none() && optional.is_none() {
            continue; // unknown parameters are allowed and ignored
        }
        if seen.contains(&name) {
            return Err(malformed("duplicated parameter"));
        }
        if let Some(s) = slot {
            *s = value;
        } else if let Some(o) = optional {
            *o = Some(value);
        }
        seen.push(name);
    }
    for (field, what) in [
        (&d.username, "username"),
        (&d.realm, "realm"),
        (&d.nonce, "nonce"),
        (&d.uri, "uri"),
        (&d.response, "response"),
    ] {
        if !seen.iter().any(|s| s == what) {
            return Err(malformed("missing a mandatory Digest parameter"));
        }
        if field.is_empty() && what != "realm" {
            return Err(malformed("empty mandatory Digest parameter"));
        }
    }
    if d.response.len() > 128 || !d.response.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("response is not hex"));
    }
    if let Some(nc) = &d.nc {
        if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("nc is not 8 hex digits"));
        }
    }
    if let Some(qop) = &d.qop {
        if qop.is_empty() {
            return Err(malformed("empty qop"));
        }
        if d.nc.is_none() || d.cnonce.as_deref().is_none_or(str::is_empty) {
            return Err(malformed("qop without nc and cnonce"));
        }
    }
    if d.algorithm.as_deref() == Some("") {
        return Err(malformed("empty algorithm"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "Digest username=\"alice\", realm=\"example.com\", nonce=\"abc123\", \
        uri=\"sip:example.com\", response=\"6629fae49393a05397450978507c4ef1\", qop=auth, \
        nc=00000001, cnonce=\"0a4f113b\", algorithm=MD5, opaque=\"xyz\"";

    fn digest(v: &str) -> Result<DigestCredentials, ParseError> {
        match parse_authorization(v.as_bytes())? {
            Credentials::Digest(d) => Ok(d),
            other => panic!("not digest: {other:?}"),
        }
    }

    #[test]
    fn full_digest() {
        let d = digest(GOOD).unwrap();
        assert_eq!(d.username, "alice");
        assert_eq!(d.realm, "example.com");
        assert_eq!(d.uri, "sip:example.com");
        assert_eq!(d.qop.as_deref(), Some("auth"));
        assert_eq!(d.nc.as_deref(), Some("00000001"));
        assert_eq!(d.algorithm.as_deref(), Some("MD5"));
        assert_eq!(d.opaque.as_deref(), Some("xyz"));
    }

    #[test]
    fn spacing_case_escapes_and_unknown_params() {
        let d = digest(
            "digest  USERNAME = \"a\\\"b\" ,realm=\"r\",nonce=n,uri=sip:r,response=ABCdef,foo=\"bar\",x=y",
        )
        .unwrap();
        assert_eq!(d.username, "a\"b");
        assert_eq!(d.nonce, "n");
        assert_eq!(d.uri, "sip:r");
        assert_eq!(d.algorithm, None);
    }

    #[test]
    fn bearer_and_other_schemes() {
        assert_eq!(parse_authorization(b"Bearer abc.DEF-_~+/=").unwrap(), Credentials::Bearer("abc.DEF-_~+/=".into()));
        assert_eq!(parse_authorization(b"bearer   tok  ").unwrap(), Credentials::Bearer("tok".into()));
        assert!(parse_authorization(b"Bearer a b").is_err());
        assert!(parse_authorization(b"Bearer").is_err());
        assert!(parse_authorization(b"Bearer a,b").is_err());
        assert!(parse_authorization(b"Bearer a\x01b").is_err());
        assert_eq!(parse_authorization(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l").unwrap(), Credentials::OtherScheme("Basic".into()));
    }

    #[test]
    fn hostile_digest_values() {
        let cases: Vec<String> = vec![
            "Digest username=\"alice, realm=\"r\"".into(),
            GOOD.replace("realm=\"example.com\"", "realm=\"a\", realm=\"b\""),
            GOOD.replace("realm=\"example.com\"", "realm=\"a\", REALM=\"a\""),
            GOOD.replace("nc=00000001", "nc=1"),
            GOOD.replace("nc=00000001", "nc=0000000g"),
            GOOD.replace("nc=00000001", "nc="),
            GOOD.replace("username=\"alice\"", "username=\"\""),
            GOOD.replace("response=\"6629fae49393a05397450978507c4ef1\"", "response=\"zz\""),
            GOOD.replace("nonce=\"abc123\"", ""),
            GOOD.replace(", nc=00000001", ""),
            GOOD.replace("algorithm=MD5", "algorithm="),
            "Digest".into(),
            "Digest username".into(),
            "Digest username=\"a\" realm=\"b\"".into(),
            "Digest =x".into(),
            "Digest username=\"a\\".into(),
        ];
        for c in &cases {
            assert!(digest_or_err(c).is_err(), "{c}");
        }
        assert!(parse_authorization(format!("{GOOD}\0").as_bytes()).is_err());
        assert!(parse_authorization(format!("{GOOD}\r\nX: y").as_bytes()).is_err());
        assert!(parse_authorization(b"Digest username=\"\xff\xfe\"").is_err());
        let big = format!("Digest username=\"{}\"", "a".repeat(8 * 1024));
        assert_eq!(parse_authorization(big.as_bytes()), Err(ParseError::TooLong));
        let huge = "a".repeat(60 * 1024);
        assert_eq!(parse_authorization(huge.as_bytes()), Err(ParseError::TooLong));
    }

    fn digest_or_err(v: &str) -> Result<(), ParseError> {
        match parse_authorization(v.as_bytes()) {
            Ok(Credentials::Digest(_)) => Ok(()),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn token_header_values() {
        assert_eq!(parse_token_header(b"  2YotnFZFEjr1zCsicMWpAA ").unwrap(), "2YotnFZFEjr1zCsicMWpAA");
        assert!(parse_token_header(b"").is_err());
        assert!(parse_token_header(b"a b").is_err());
        assert!(parse_token_header(b"a\r\nb").is_err());
        assert!(parse_token_header(b"\"quoted\"").is_err());
        assert_eq!(parse_token_header("t".repeat(9000).as_bytes()), Err(ParseError::TooLong));
    }

    #[test]
    fn never_panics_on_noise() {
        let alphabet = b"Digest Bearer=\",\\ \tusernamrlcoqp0123456789\xc3\xa9\x00";
        let mut seed = 0x9e37_79b9u32;
        for _ in 0..50_000 {
            let len = (seed % 96) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                v.push(alphabet[(seed as usize) % alphabet.len()]);
            }
            let _ = parse_authorization(&v);
            let _ = parse_token_header(&v);
        }
    }
}
