//! Address-of-record extraction from To/From header values and the identity rules that tie a
//! token user or Digest username to that AOR.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aor {
    /// User part, as written in the URI (no unescaping). May be empty.
    pub user: String,
    /// Host part, lower-cased, without port or params.
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AorError {
    Malformed(&'static str),
}

/// Longest To/From value looked at.
const MAX_HEADER: usize = 4096;

fn bad(why: &'static str) -> AorError {
    AorError::Malformed(why)
}

/// Parses a To/From header value (`"Name" <sip:user@host;p>;tag=x`, `sip:user@host;tag=x`,
/// `<sips:...>`, `<tel:+123>`) into the AOR. Rejects values over 4096 bytes, CTL bytes, a
/// missing URI.
pub fn parse_aor(header_value: &[u8]) -> Result<Aor, AorError> {
    if header_value.len() > MAX_HEADER {
        return Err(bad("header too long"));
    }
    if header_value
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(bad("control bytes"));
    }
    let text = std::str::from_utf8(header_value)
        .map_err(|_| bad("not UTF-8"))?
        .trim();
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let uri = uri_of(text)?;
    parse_uri(uri)
}

/// The URI inside a name-addr (`<...>`, after an optional display name) or a bare addr-spec
/// (up to the first `;`, which starts header parameters).
fn uri_of(text: &str) -> Result<&str, AorError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_quotes = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => {
                let rest = &text[i + 1..];
                let end = rest.find('>').ok_or(bad("unterminated <"))?;
                return Ok(rest[..end].trim());
            }
            _ => {}
        }
        i += 1;
    }
    if in_quotes {
        return Err(bad("unterminated quote"));
    }
    Ok(text.split(';').next().unwrap_or("").trim())
}

fn parse_uri(uri: &str) -> Result<Aor, AorError> {
    let (scheme, rest) = uri.split_once(':').ok_or(bad("no URI scheme"))?;
    if scheme.eq_ignore_ascii_case("tel") {
        let number = rest.split(';').next().unwrap_or("").trim();
        if number.is_empty() {
            return Err(bad("empty tel URI"));
        }
        return Ok(Aor {
            user: number.to_string(),
            host: String::new(),
        });
    }
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return Err(bad("not a sip, sips or tel URI"));
    }
    // userinfo ends at the last '@' before any parameters or headers.
    let end_of_hostport = rest.find([';', '?']).unwrap_or(rest.len());
    let (userinfo, hostport) = match rest[..end_of_hostport].rfind('@') {
        Some(at) => (&rest[..at], &rest[at + 1..end_of_hostport]),
        None => ("", &rest[..end_of_hostport]),
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        let close = v6.find(']').ok_or(bad("unterminated IPv6 host"))?;
        &hostport[..close + 2]
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    if host.is_empty()
        || host.contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"')
    {
        return Err(bad("no usable host"));
    }
    if user.contains(|c: char| c.is_whitespace() || c == '<' || c == '>' || c == '"') {
        return Err(bad("bad user part"));
    }
    Ok(Aor {
        user: user.to_string(),
        host: host.to_ascii_lowercase(),
    })
}

fn matches(name: &str, aor: &Aor, use_domain: bool) -> bool {
    if name.is_empty() || aor.user.is_empty() {
        return false;
    }
    match name.rsplit_once('@') {
        Some((user, host)) => {
            !user.is_empty()
                && !host.is_empty()
                && user == aor.user
                && host.eq_ignore_ascii_case(&aor.host)
        }
        None => !use_domain && name == aor.user,
    }
}

/// Token user vs AOR: with "@" in the token user, or with `use_domain`, compare user@host
/// (host case-insensitive); otherwise compare with the user part only. Case-sensitive user.
pub fn token_user_matches(token_user: &str, aor: &Aor, use_domain: bool) -> bool {
    matches(token_user, aor, use_domain)
}

/// Digest username vs AOR, same rules as for tokens (a Digest username may be `user` or
/// `user@host`).
pub fn digest_user_matches(digest_username: &str, aor: &Aor, use_domain: bool) -> bool {
    matches(digest_username, aor, use_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aor(v: &str) -> Aor {
        parse_aor(v.as_bytes()).unwrap()
    }

    #[test]
    fn name_addr_and_addr_spec() {
        assert_eq!(
            aor("<sip:alice@example.com>"),
            Aor {
                user: "alice".into(),
                host: "example.com".into()
            }
        );
        assert_eq!(
            aor("\"Alice <x>\" <sip:alice:pw@EXAMPLE.com:5060;transport=tcp>;tag=1").host,
            "example.com"
        );
        assert_eq!(aor("\"A\\\"B\" <sips:bob@h>").user, "bob");
        assert_eq!(
            aor("sip:carol@h.net;tag=abc"),
            Aor {
                user: "carol".into(),
                host: "h.net".into()
            }
        );
        assert_eq!(aor("Carol <sip:carol@h.net?subject=x>").host, "h.net");
        assert_eq!(
            aor("sip:example.com"),
            Aor {
                user: "".into(),
                host: "example.com".into()
            }
        );
        assert_eq!(aor("<sip:dave@[2001:db8::1]:5060>").host, "[2001:db8::1]");
        assert_eq!(
            aor("<tel:+15551234;phone-context=x>"),
            Aor {
                user: "+15551234".into(),
                host: "".into()
            }
        );
    }

    #[test]
    fn malformed_values() {
        for v in [
            "",
            "   ",
            "<sip:alice@example.com",
            "\"unterminated <sip:a@b>",
            "<http://example.com>",
            "<sip:alice@>",
            "alice@example.com",
            "<sip:a b@c>",
            "<sip:a@[::1>",
        ] {
            assert!(parse_aor(v.as_bytes()).is_err(), "{v:?}");
        }
        assert!(parse_aor(b"<sip:a@b>\r\nX: y").is_err());
        assert!(parse_aor(b"<sip:a\x00@b>").is_err());
        assert!(parse_aor(&[0xff, 0xfe]).is_err());
        let long = format!("<sip:{}@b>", "a".repeat(5000));
        assert!(parse_aor(long.as_bytes()).is_err());
    }

    #[test]
    fn identity_rules() {
        let a = aor("<sip:alice@Example.com>");
        assert!(token_user_matches("alice", &a, false));
        assert!(
            !token_user_matches("Alice", &a, false),
            "user part is case-sensitive"
        );
        assert!(token_user_matches("alice@example.COM", &a, false));
        assert!(!token_user_matches("alice@other.com", &a, false));
        assert!(
            !token_user_matches("alice", &a, true),
            "use_domain needs user@host"
        );
        assert!(token_user_matches("alice@example.com", &a, true));
        assert!(!token_user_matches("", &a, false));
        assert!(!token_user_matches("@example.com", &a, false));
        assert!(digest_user_matches("alice", &a, false));
        assert!(!digest_user_matches("bob", &a, false));
        let tel = aor("<tel:+155>");
        assert!(!token_user_matches("+155@", &tel, false));
        assert!(token_user_matches("+155", &tel, false));
        let no_user = aor("<sip:example.com>");
        assert!(!token_user_matches("example.com", &no_user, false));
    }

    #[test]
    fn never_panics_on_noise() {
        let mut seed = 0x1234_5678u32;
        for _ in 0..20_000 {
            let len = (seed % 64) as usize;
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                v.push(b"<>\":;@[]sip:tel\\ a\xc3\xa9"[(seed % 19) as usize]);
            }
            let _ = parse_aor(&v);
        }
    }
}
