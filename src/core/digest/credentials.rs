//! Parsers for credentials found in SIP requests: `Authorization` / `Proxy-Authorization`
//! header values (Digest, Bearer, anything else) and the token header value.
//! They work on bytes, check length first, and refuse anything doubtful rather than guess.

use crate::core::text::{is_lws, is_token68_like, trim_lws, utf8, SIP_TOKEN, TOKEN68};

/// Longest header value the module looks at; longer values are rejected as malformed.
pub const MAX_CREDENTIALS_LEN: usize = 8192;

/// Longest `response` accepted: SHA-512-256 gives 64 hex digits; leave room, refuse junk.
const MAX_RESPONSE_LEN: usize = 128;

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

// Parsed once per request and dropped: boxing the Digest variant would buy nothing.
#[allow(clippy::large_enum_variant)]
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

/// RFC 3261 token characters (parameter names, unquoted values, scheme names).
fn is_token_char(b: u8) -> bool {
    SIP_TOKEN.has(b)
}

/// Unquoted values may also hold the characters URIs and base64 use (clients send
/// `uri=sip:host` or `nonce=abc/+=` unquoted even though the grammar asks for quotes).
fn is_unquoted_value_char(b: u8) -> bool {
    is_token_char(b) || b"/:=@?&$#[]".contains(&b)
}

/// Bytes already known to be ASCII (or cut from valid UTF-8 at ASCII boundaries) as text;
/// never panics, the error branch only guards against a future caller breaking that rule.
fn text_of(bytes: &[u8]) -> Result<&str, ParseError> {
    utf8(bytes).ok_or_else(|| malformed("not UTF-8"))
}

/// Common checks, cheapest first: size, control bytes, UTF-8.
fn checked_text(value: &[u8]) -> Result<&[u8], ParseError> {
    if value.len() > MAX_CREDENTIALS_LEN {
        return Err(ParseError::TooLong);
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(malformed("control bytes"));
    }
    text_of(value)?;
    Ok(value)
}

/// Parses one Authorization / Proxy-Authorization header value (the part after the colon).
pub fn parse_authorization(value: &[u8]) -> Result<Credentials, ParseError> {
    let value = trim_lws(checked_text(value)?);
    let scheme_len = value.iter().position(|&b| is_lws(b)).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(scheme_len);
    if scheme.is_empty() || !scheme.iter().all(|&b| is_token_char(b)) {
        return Err(malformed("bad scheme"));
    }
    let scheme = text_of(scheme)?;
    // `rest` is empty or starts with the LWS that ended the scheme; the value is trimmed,
    // so what is left after skipping that LWS has no trailing spaces either.
    let rest = trim_lws(rest);
    if scheme.eq_ignore_ascii_case("Digest") {
        parse_digest(rest).map(Credentials::Digest)
    } else if scheme.eq_ignore_ascii_case("Bearer") {
        let token = text_of(rest)?;
        if !is_token68_like(token) {
            return Err(malformed("Bearer credentials are not one token68"));
        }
        Ok(Credentials::Bearer(token.to_string()))
    } else {
        Ok(Credentials::OtherScheme(scheme.to_string()))
    }
}

/// Parses the value of the token header (e.g. `X-SSO-Token: <token>`): trimmed, token68-like,
/// at most MAX_CREDENTIALS_LEN bytes.
pub fn parse_token_header(value: &[u8]) -> Result<&str, ParseError> {
    // The usual value, in one pass: only token68 bytes inside the spaces (so no control
    // bytes, and ASCII). Anything else takes the checks below, which name what is wrong.
    let trimmed = trim_lws(value);
    if value.len() <= MAX_CREDENTIALS_LEN && !trimmed.is_empty() && TOKEN68.all(trimmed) {
        return text_of(trimmed);
    }
    let token = text_of(trim_lws(checked_text(value)?))?;
    if !is_token68_like(token) {
        return Err(malformed("token is not token68"));
    }
    Ok(token)
}

/// A tiny cursor over the Digest parameter list.
struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        &self.input[start..self.pos]
    }

    /// Body of a quoted-string, the opening quote already consumed. RFC 3261 quoted-pair
    /// only escapes ASCII, so `\` before a non-ASCII byte is refused.
    fn quoted(&mut self) -> Result<String, ParseError> {
        let rest = &self.input[self.pos..];
        // Fast path, the common case: no escapes, so the value is the bytes up to the quote.
        if let Some(end) = rest.iter().position(|&b| b == b'"' || b == b'\\') {
            if rest[end] == b'"' {
                self.pos += end + 1;
                return String::from_utf8(rest[..end].to_vec()).map_err(|_| malformed("not UTF-8"));
            }
        }
        let mut out = Vec::with_capacity(rest.len().min(256));
        loop {
            match self.peek() {
                None => return Err(malformed("unterminated quoted string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(malformed("unterminated quoted string")),
                        Some(b) if b.is_ascii() => out.push(b),
                        Some(_) => return Err(malformed("escaped non-ASCII byte")),
                    }
                    self.pos += 1;
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
        // Only ASCII backslashes were removed from valid UTF-8, so this stays UTF-8.
        String::from_utf8(out).map_err(|_| malformed("not UTF-8"))
    }
}

/// Splits `name=value, name="quoted", ...` into (name as sent, unquoted value) pairs.
/// Empty list elements (`a=1,,b=2`) are allowed, as in the RFC 7230 list rule.
fn params(input: &[u8]) -> Result<Vec<(&str, String)>, ParseError> {
    let mut c = Cursor { input, pos: 0 };
    let mut out = Vec::new();
    loop {
        c.skip_while(|b| is_lws(b) || b == b',');
        if c.peek().is_none() {
            return Ok(out);
        }
        let name = c.skip_while(is_token_char);
        if name.is_empty() {
            return Err(malformed("parameter name expected"));
        }
        c.skip_while(is_lws);
        if c.peek() != Some(b'=') {
            return Err(malformed("parameter without '='"));
        }
        c.pos += 1;
        c.skip_while(is_lws);
        let value = if c.peek() == Some(b'"') {
            c.pos += 1;
            c.quoted()?
        } else {
            text_of(c.skip_while(is_unquoted_value_char))?.to_string()
        };
        c.skip_while(is_lws);
        if c.peek().is_some_and(|b| b != b',') {
            return Err(malformed("garbage after a parameter value"));
        }
        out.push((text_of(name)?, value));
    }
}

/// Parameters we read; every other one is ignored.
const KNOWN: [&str; 10] = [
    "username",
    "realm",
    "nonce",
    "uri",
    "response",
    "algorithm",
    "cnonce",
    "opaque",
    "qop",
    "nc",
];

fn parse_digest(input: &[u8]) -> Result<DigestCredentials, ParseError> {
    let mut slots: [Option<String>; KNOWN.len()] = Default::default();
    for (name, value) in params(input)? {
        let Some(i) = KNOWN.iter().position(|k| k.eq_ignore_ascii_case(name)) else {
            continue;
        };
        // Two realms (or two usernames...) would let us and the SSO read different values.
        if slots[i].is_some() {
            return Err(malformed("duplicated parameter"));
        }
        slots[i] = Some(value);
    }
    let [username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc] = slots;
    let (Some(username), Some(realm), Some(nonce), Some(uri), Some(response)) =
        (username, realm, nonce, uri, response)
    else {
        return Err(malformed("missing a mandatory Digest parameter"));
    };
    // An empty realm is legal syntax; it simply never equals the realm we serve.
    if username.is_empty() || nonce.is_empty() || uri.is_empty() || response.is_empty() {
        return Err(malformed("empty mandatory Digest parameter"));
    }
    if response.len() > MAX_RESPONSE_LEN || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("response is not hex"));
    }
    if let Some(nc) = &nc {
        if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("nc is not 8 hex digits"));
        }
    }
    if let Some(qop) = &qop {
        if qop.is_empty() {
            return Err(malformed("empty qop"));
        }
        // With qop the response covers nc and cnonce: without them it cannot be checked.
        if nc.is_none() || cnonce.as_deref().is_none_or(str::is_empty) {
            return Err(malformed("qop without nc and cnonce"));
        }
    }
    if algorithm.as_deref() == Some("") {
        return Err(malformed("empty algorithm"));
    }
    // Without qop the response covers neither nc nor cnonce (RFC 7616 3.4.1): they are
    // dropped, so nothing downstream can count uses or hash with values no MAC covers.
    // Such a nonce is single-use.
    let (nc, cnonce) = if qop.is_some() {
        (nc, cnonce)
    } else {
        (None, None)
    };
    Ok(DigestCredentials {
        username,
        realm,
        nonce,
        uri,
        response,
        algorithm,
        cnonce,
        opaque,
        qop,
        nc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "Digest username=\"alice\", realm=\"example.com\", nonce=\"abc123\", \
        uri=\"sip:example.com\", response=\"6629fae49393a05397450978507c4ef1\", qop=auth, \
        nc=00000001, cnonce=\"0a4f113b\", algorithm=MD5, opaque=\"xyz\"";

    fn digest(v: &str) -> Result<DigestCredentials, ParseError> {
        digest_bytes(v.as_bytes())
    }

    fn digest_bytes(v: &[u8]) -> Result<DigestCredentials, ParseError> {
        match parse_authorization(v)? {
            Credentials::Digest(d) => Ok(d),
            other => panic!("not digest: {other:?}"),
        }
    }

    fn is_malformed<T: std::fmt::Debug>(r: Result<T, ParseError>) -> bool {
        matches!(r, Err(ParseError::Malformed(_)))
    }

    #[test]
    fn full_digest() {
        let d = digest(GOOD).unwrap();
        assert_eq!(d.username, "alice");
        assert_eq!(d.realm, "example.com");
        assert_eq!(d.nonce, "abc123");
        assert_eq!(d.uri, "sip:example.com");
        assert_eq!(d.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(d.qop.as_deref(), Some("auth"));
        assert_eq!(d.nc.as_deref(), Some("00000001"));
        assert_eq!(d.cnonce.as_deref(), Some("0a4f113b"));
        assert_eq!(d.algorithm.as_deref(), Some("MD5"));
        assert_eq!(d.opaque.as_deref(), Some("xyz"));
    }

    #[test]
    fn minimal_digest_without_qop() {
        let d = digest("Digest username=u,realm=r,nonce=n,uri=\"sip:r\",response=0a").unwrap();
        assert_eq!(
            d,
            DigestCredentials {
                username: "u".into(),
                realm: "r".into(),
                nonce: "n".into(),
                uri: "sip:r".into(),
                response: "0a".into(),
                ..Default::default()
            }
        );
        // An empty realm is syntax we accept; it never matches a served realm.
        assert_eq!(
            digest("Digest username=u,realm=\"\",nonce=n,uri=x,response=0a")
                .unwrap()
                .realm,
            ""
        );
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
        assert_eq!(d.response, "ABCdef");
        assert_eq!(d.algorithm, None);
        // Tabs, leading/trailing/empty list elements, escaped backslash, UTF-8 in quotes.
        let d = digest(
            "\tDiGeSt\t, username=\"J\u{e4}s\u{f8}n \\\\ Doe\",\trealm = \"r\" ,, nonce=\"n\", \
             uri=\"sip:r;transport=tcp\", response=\"00\", userhash=false, ",
        )
        .unwrap();
        assert_eq!(d.username, "J\u{e4}s\u{f8}n \\ Doe");
        assert_eq!(d.uri, "sip:r;transport=tcp");
        // quoted-pair may escape any ASCII character, not only `"` and `\`.
        assert_eq!(
            digest("Digest username=\"\\a\\,b\",realm=r,nonce=n,uri=u,response=0")
                .unwrap()
                .username,
            "a,b"
        );
        // Commas and equals signs inside quoted strings do not split parameters.
        let d =
            digest("Digest username=\"a,b=c\",realm=r,nonce=\"x=,y\",uri=u,response=0").unwrap();
        assert_eq!((d.username.as_str(), d.nonce.as_str()), ("a,b=c", "x=,y"));
        // Unknown parameters may repeat and hold anything well-formed.
        assert!(
            digest("Digest foo=1,foo=\"2\",username=u,realm=r,nonce=n,uri=u,response=0").is_ok()
        );
    }

    #[test]
    fn unknown_algorithm_and_qop_values_are_passed_on() {
        // The parser keeps them as sent; the caller decides (and refuses) what it does not know.
        let d = digest(&GOOD.replace("algorithm=MD5", "algorithm=SHA-1")).unwrap();
        assert_eq!(d.algorithm.as_deref(), Some("SHA-1"));
        let d = digest(&GOOD.replace("qop=auth", "qop=\"auth-conf\"")).unwrap();
        assert_eq!(d.qop.as_deref(), Some("auth-conf"));
    }

    #[test]
    fn bearer_and_other_schemes() {
        assert_eq!(
            parse_authorization(b"Bearer abc.DEF-_~+/=").unwrap(),
            Credentials::Bearer("abc.DEF-_~+/=".into())
        );
        assert_eq!(
            parse_authorization(b"bearer   tok  ").unwrap(),
            Credentials::Bearer("tok".into())
        );
        assert_eq!(
            parse_authorization(b"  BEARER\teyJ.x.y\t").unwrap(),
            Credentials::Bearer("eyJ.x.y".into())
        );
        for bad in [
            &b"Bearer a b"[..],
            b"Bearer",
            b"Bearer   ",
            b"Bearer a,b",
            b"Bearer a\x01b",
            b"Bearer \"tok\"",
            b"Bearer tok;x",
            b"Bearer t\xc3\xa9",
            b"Bearer\x00 tok",
            b"Bearer tok\r\n",
        ] {
            assert!(is_malformed(parse_authorization(bad)), "{bad:?}");
        }
        assert_eq!(
            parse_authorization(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l").unwrap(),
            Credentials::OtherScheme("Basic".into())
        );
        assert_eq!(
            parse_authorization(b"Negotiate a b c ,,, \"").unwrap(),
            Credentials::OtherScheme("Negotiate".into())
        );
        assert_eq!(
            parse_authorization(b"Bearerx tok").unwrap(),
            Credentials::OtherScheme("Bearerx".into())
        );
        for bad in [
            &b""[..],
            b"   ",
            b"\t",
            b"Dig\"est x=y",
            b"Digest,username=u",
            b"=x",
        ] {
            assert!(is_malformed(parse_authorization(bad)), "{bad:?}");
        }
    }

    #[test]
    fn hostile_digest_values() {
        let cases: Vec<String> = vec![
            "Digest username=\"alice, realm=\"r\"".into(),
            "Digest username=\"alice".into(),
            "Digest username=\"a\\".into(),
            "Digest username=\"a\\\"".into(),
            GOOD.replace("realm=\"example.com\"", "realm=\"a\", realm=\"b\""),
            GOOD.replace("realm=\"example.com\"", "realm=\"a\", REALM=\"a\""),
            GOOD.replace(
                "realm=\"example.com\"",
                "realm=\"example.com\", realm=\"example.com\"",
            ),
            GOOD.replace("username=\"alice\"", "username=\"alice\", Username=\"bob\""),
            format!("{GOOD}, nonce=\"abc123\""),
            format!("{GOOD}, opaque=\"xyz\""),
            format!("{GOOD}, nc=00000001"),
            GOOD.replace("nc=00000001", "nc=1"),
            GOOD.replace("nc=00000001", "nc=000000001"),
            GOOD.replace("nc=00000001", "nc=0000000g"),
            GOOD.replace("nc=00000001", "nc=\"0000 001\""),
            GOOD.replace("nc=00000001", "nc="),
            GOOD.replace("nc=00000001", "nc=+0000001"),
            GOOD.replace("username=\"alice\"", "username=\"\""),
            GOOD.replace("username=\"alice\"", "username="),
            GOOD.replace("nonce=\"abc123\"", "nonce=\"\""),
            GOOD.replace("uri=\"sip:example.com\"", "uri=\"\""),
            GOOD.replace(
                "response=\"6629fae49393a05397450978507c4ef1\"",
                "response=\"\"",
            ),
            GOOD.replace(
                "response=\"6629fae49393a05397450978507c4ef1\"",
                "response=\"zz\"",
            ),
            GOOD.replace(
                "response=\"6629fae49393a05397450978507c4ef1\"",
                "response=\"0x12\"",
            ),
            GOOD.replace(
                "response=\"6629fae49393a05397450978507c4ef1\"",
                &format!("response=\"{}\"", "a".repeat(129)),
            ),
            GOOD.replace("username=\"alice\", ", ""),
            GOOD.replace("realm=\"example.com\", ", ""),
            GOOD.replace("nonce=\"abc123\", ", ""),
            GOOD.replace("uri=\"sip:example.com\", ", ""),
            GOOD.replace("response=\"6629fae49393a05397450978507c4ef1\", ", ""),
            GOOD.replace(", nc=00000001", ""),
            GOOD.replace(", cnonce=\"0a4f113b\"", ""),
            GOOD.replace("cnonce=\"0a4f113b\"", "cnonce=\"\""),
            GOOD.replace("qop=auth", "qop=\"\""),
            GOOD.replace("algorithm=MD5", "algorithm="),
            GOOD.replace("algorithm=MD5", "algorithm=\"\""),
            GOOD.replace("username=\"alice\"", "username=alice\"x\""),
            GOOD.replace("username=\"alice\"", "username=\"alice\"x"),
            GOOD.replace("username=\"alice\"", "username=al ice"),
            GOOD.replace("username=\"alice\"", "username=al<ice"),
            GOOD.replace("username=\"alice\"", "username=\"\\\u{e9}\""),
            GOOD.replace("username=\"alice\"", "username=\u{e9}"),
            GOOD.replace("username=\"alice\"", "\u{e9}=x, username=\"alice\""),
            GOOD.replace(", realm", " realm"),
            "Digest".into(),
            "Digest ".into(),
            "Digest username".into(),
            "Digest username=\"a\" realm=\"b\"".into(),
            "Digest =x".into(),
            "Digest ,=".into(),
            "Digest \"username\"=a".into(),
            "Digest user name=a".into(),
            "Digest username=\"a\";realm=\"b\"".into(),
        ];
        for c in &cases {
            assert!(is_malformed(digest(c)), "{c}");
        }
    }

    #[test]
    fn bad_bytes_anywhere() {
        for (i, bad) in [0u8, 1, 8, 0x0a, 0x0b, 0x0c, 0x0d, 0x1b, 0x1f, 0x7f]
            .iter()
            .enumerate()
        {
            // Inside a quoted value, in an unquoted value, after the last parameter.
            let mut quoted = GOOD.as_bytes().to_vec();
            quoted.insert(18, *bad);
            let mut tail = GOOD.as_bytes().to_vec();
            tail.push(*bad);
            let mut unquoted = GOOD.as_bytes().to_vec();
            let at = GOOD.find("qop=auth").unwrap() + 5;
            unquoted.insert(at, *bad);
            for v in [quoted, tail, unquoted] {
                assert!(is_malformed(parse_authorization(&v)), "case {i}: {v:?}");
                assert!(is_malformed(parse_token_header(&v)), "case {i}");
            }
        }
        // A horizontal tab is linear white space, not a control byte to refuse.
        assert!(digest(&GOOD.replace(", ", ",\t")).is_ok());
        // Non-UTF-8, also in quoted strings and after valid data.
        for v in [
            &b"Digest username=\"\xff\xfe\", realm=r, nonce=n, uri=u, response=0"[..],
            b"Digest username=\"\xc3\", realm=r, nonce=n, uri=u, response=0",
            b"Digest username=\"\xed\xa0\x80\", realm=r, nonce=n, uri=u, response=0",
            b"\xc0\xafDigest username=u",
            b"Bearer abc\x80",
        ] {
            assert!(is_malformed(parse_authorization(v)), "{v:?}");
        }
        let mut v = GOOD.as_bytes().to_vec();
        v.extend_from_slice(b", x=\"\xff\"");
        assert!(is_malformed(parse_authorization(&v)));
    }

    #[test]
    fn length_limit_comes_first() {
        let at_limit = format!(
            "Digest username=u,realm=r,nonce=n,uri=u,response=0,pad=\"{}\"",
            "a".repeat(MAX_CREDENTIALS_LEN - 57)
        );
        assert_eq!(at_limit.len(), MAX_CREDENTIALS_LEN);
        assert!(digest(&at_limit).is_ok());
        let over = format!("{at_limit} ");
        assert_eq!(
            parse_authorization(over.as_bytes()),
            Err(ParseError::TooLong)
        );
        let big = format!("Digest username=\"{}\"", "a".repeat(8 * 1024));
        assert_eq!(
            parse_authorization(big.as_bytes()),
            Err(ParseError::TooLong)
        );
        let huge = "a".repeat(60 * 1024);
        assert_eq!(
            parse_authorization(huge.as_bytes()),
            Err(ParseError::TooLong)
        );
        // Too long wins over bad bytes, broken quotes and non-UTF-8: no work before the check.
        let mut junk = vec![0u8; 60 * 1024];
        junk[..8].copy_from_slice(b"Digest \"");
        junk[100] = 0xff;
        assert_eq!(parse_authorization(&junk), Err(ParseError::TooLong));
        assert_eq!(parse_token_header(&junk), Err(ParseError::TooLong));
        let bearer = format!("Bearer {}", "t".repeat(MAX_CREDENTIALS_LEN));
        assert_eq!(
            parse_authorization(bearer.as_bytes()),
            Err(ParseError::TooLong)
        );
        let bearer = format!("Bearer {}", "t".repeat(MAX_CREDENTIALS_LEN - 7));
        assert!(matches!(
            parse_authorization(bearer.as_bytes()),
            Ok(Credentials::Bearer(_))
        ));
    }

    #[test]
    fn token_header_values() {
        assert_eq!(
            parse_token_header(b"  2YotnFZFEjr1zCsicMWpAA ").unwrap(),
            "2YotnFZFEjr1zCsicMWpAA"
        );
        assert_eq!(
            parse_token_header(b"\teyJ.a-b_c~d+e/f==\t").unwrap(),
            "eyJ.a-b_c~d+e/f=="
        );
        for bad in [
            &b""[..],
            b"   ",
            b"a b",
            b"a\r\nb",
            b"a\0",
            b"\"quoted\"",
            b"a,b",
            b"a;b",
            b"Bearer tok",
            b"t\xc3\xa9",
            b"\xff",
        ] {
            assert!(is_malformed(parse_token_header(bad)), "{bad:?}");
        }
        assert_eq!(
            parse_token_header("t".repeat(9000).as_bytes()),
            Err(ParseError::TooLong)
        );
        assert!(parse_token_header("t".repeat(MAX_CREDENTIALS_LEN).as_bytes()).is_ok());
    }

    /// xorshift32: deterministic noise without a dependency.
    fn noise(seed: &mut u32) -> u32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        *seed
    }

    fn check_accepted(v: &[u8]) {
        match parse_authorization(v) {
            Ok(Credentials::Digest(d)) => {
                for f in [&d.username, &d.realm, &d.nonce, &d.uri, &d.response] {
                    assert!(!f.bytes().any(|b| b < 0x20 && b != b'\t'), "{v:?}");
                }
                assert!(!d.username.is_empty() && !d.nonce.is_empty() && !d.response.is_empty());
                assert!(d.response.bytes().all(|b| b.is_ascii_hexdigit()));
                if let Some(nc) = &d.nc {
                    assert!(nc.len() == 8 && nc.bytes().all(|b| b.is_ascii_hexdigit()));
                }
                if d.qop.is_some() {
                    assert!(d.nc.is_some() && d.cnonce.is_some());
                }
            }
            Ok(Credentials::Bearer(t)) => assert!(is_token68_like(&t)),
            Ok(Credentials::OtherScheme(s)) => assert!(!s.is_empty()),
            Err(_) => {}
        }
        if let Ok(t) = parse_token_header(v) {
            assert!(is_token68_like(t));
        }
    }

    #[test]
    fn never_panics_on_noise() {
        let alphabet = b"Digest Bearer=\",\\ \tusernamrlcoqp0123456789\xc3\xa9\x00";
        let mut seed = 0x9e37_79b9u32;
        for _ in 0..50_000 {
            let len = (noise(&mut seed) % 96) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| alphabet[(noise(&mut seed) as usize) % alphabet.len()])
                .collect();
            check_accepted(&v);
        }
    }

    #[test]
    fn never_panics_on_random_bytes_or_mutations() {
        let mut seed = 0x2545_f491u32;
        for _ in 0..20_000 {
            let len = (noise(&mut seed) % 200) as usize;
            let v: Vec<u8> = (0..len).map(|_| noise(&mut seed) as u8).collect();
            check_accepted(&v);
        }
        const PICK: &[u8] = b"\",\\= \t\xff\xc3\x00x";
        // Mutations of a valid value reach the deeper branches that pure noise rarely does.
        for _ in 0..20_000 {
            let mut v = GOOD.as_bytes().to_vec();
            for _ in 0..(1 + noise(&mut seed) % 4) {
                let at = noise(&mut seed) as usize % (v.len() + 1);
                match noise(&mut seed) % 3 {
                    0 if at < v.len() => {
                        v.remove(at);
                    }
                    1 if at < v.len() => v[at] = PICK[noise(&mut seed) as usize % PICK.len()],
                    _ => v.insert(at, PICK[noise(&mut seed) as usize % PICK.len()]),
                }
            }
            check_accepted(&v);
        }
    }
}
