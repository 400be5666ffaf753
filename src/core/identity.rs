//! Address-of-record extraction from To/From header values and the identity rules that tie a
//! token user or Digest username to that AOR.
//!
//! The parser is strict on purpose: the AOR decides whose identity a request claims, so a value
//! that two parsers could read differently is refused instead of guessed at.

use std::borrow::Cow;

use super::text::{is_lws, trim_lws, utf8, ByteClass, CONTROL, SIP_TOKEN, URI_CHARS};

/// An AOR borrowed from the header it was parsed from: only a host with upper-case letters
/// is copied (to lower-case it), so the usual To/From costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aor<'a> {
    /// User part, as written in the URI (no unescaping). May be empty.
    pub user: &'a str,
    /// Host part, lower-cased, without port or params.
    pub host: Cow<'a, str>,
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

/// Characters of an RFC 3261 user part other than escapes: unreserved and user-unreserved.
/// `#` is not in the grammar but phones send it unescaped in dial strings (`*31#123`); it
/// cannot shift any boundary, so it is tolerated.
const USER_CHARS: ByteClass = ByteClass::alphanumeric_and(b"-_.!~*'()&=+$,;?/#");

/// Bytes a hostname may hold. `_` is not in the hostname grammar but exists in real
/// internal names.
const HOST_CHARS: ByteClass = ByteClass::alphanumeric_and(b"-._");

/// RFC 3966 phonedigit-hex plus the `+` of global numbers.
fn is_tel_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b"*#-.()+".contains(&b)
}

/// Parses a To/From header value (`"Name" <sip:user@host;p>;tag=x`, `sip:user@host;tag=x`,
/// `<sips:...>`, `<tel:+123>`) into the AOR. Rejects values over 4096 bytes, CTL bytes, a
/// missing URI.
pub fn parse_aor(header_value: &[u8]) -> Result<Aor<'_>, AorError> {
    if header_value.len() > MAX_HEADER {
        return Err(bad("header too long"));
    }
    match plain_sip_aor(header_value) {
        Some(aor) => Ok(aor),
        None => parse_aor_in_full(header_value),
    }
}

/// `parse_aor` by the whole grammar, for every value the one-pass form leaves.
fn parse_aor_in_full(header_value: &[u8]) -> Result<Aor<'_>, AorError> {
    if header_value.iter().any(|&b| CONTROL.has(b)) {
        return Err(bad("control bytes"));
    }
    // Most values are ASCII: a word-wise check spares them the UTF-8 decoder.
    if !header_value.is_ascii() && utf8(header_value).is_none() {
        return Err(bad("not UTF-8"));
    }
    let text = trim_lws(header_value);
    if text.is_empty() {
        return Err(bad("empty"));
    }
    parse_uri(uri_of(text)?)
}

/// User bytes of the one-pass form: letters, digits and `-_.` (no escape, password or
/// parameter separator that the full grammar would have to weigh).
const PLAIN_USER: ByteClass = ByteClass::alphanumeric_and(b"-_.");

/// The usual To/From, `<sip:user@host>` with nothing or `;params` after it, in one pass.
/// It only ever accepts what the full parser below accepts, with the same result (a unit
/// test compares the two); anything else (a display name, sips, tel, a port, escapes,
/// spaces, non-ASCII or control bytes) returns None and takes the full parser.
fn plain_sip_aor(value: &[u8]) -> Option<Aor<'_>> {
    let rest = value.strip_prefix(b"<sip:")?;
    let at = rest.iter().position(|&b| !PLAIN_USER.has(b))?;
    if at == 0 || rest[at] != b'@' {
        return None;
    }
    let host_start = at + 1;
    let host_len = rest[host_start..]
        .iter()
        .position(|&b| !HOST_CHARS.has(b))?;
    let close = host_start + host_len;
    if host_len == 0 || rest[close] != b'>' {
        return None;
    }
    // Header parameters: printable ASCII, after a `;` right behind the `>`.
    let after = &rest[close + 1..];
    if after.first().is_some_and(|&b| b != b';')
        || !after.iter().all(|&b| (0x20..0x7f).contains(&b))
    {
        return None;
    }
    let host = ascii(&rest[host_start..close]);
    Some(Aor {
        user: ascii(&rest[..at]),
        host: if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        },
    })
}

/// The URI inside a name-addr (`<...>`, after an optional display name) or a bare addr-spec
/// (up to the first `;`, which starts header parameters).
fn uri_of(text: &[u8]) -> Result<&[u8], AorError> {
    let mut i = 0;
    let mut in_quotes = false;
    let mut open = None;
    while i < text.len() {
        match text[i] {
            // quoted-pair: the next byte is literal (a `"` or `\` must not end the string).
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => {
                open = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    if in_quotes {
        return Err(bad("unterminated quote"));
    }
    let Some(open) = open else {
        let end = text.iter().position(|&b| b == b';').unwrap_or(text.len());
        return Ok(trim_lws(&text[..end]));
    };
    check_display_name(&text[..open])?;
    let inner = &text[open + 1..];
    let close = inner
        .iter()
        .position(|&b| b == b'>')
        .ok_or(bad("unterminated <"))?;
    // Only header parameters may follow: a second URI or stray text would make the value
    // mean different things to different parsers.
    let after = trim_lws(&inner[close + 1..]);
    if after.first().is_some_and(|&b| b != b';') {
        return Err(bad("text after the URI"));
    }
    Ok(trim_lws(&inner[..close]))
}

/// A display name is empty, one quoted-string, or words of token characters. Non-ASCII
/// letters are tolerated in unquoted words because many phones send them unquoted.
fn check_display_name(name: &[u8]) -> Result<(), AorError> {
    let name = trim_lws(name);
    if let Some(body) = name.strip_prefix(b"\"") {
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'\\' => i += 2,
                b'"' => {
                    return if body.len() == i + 1 {
                        Ok(())
                    } else {
                        Err(bad("text after the quoted display name"))
                    };
                }
                _ => i += 1,
            }
        }
        return Err(bad("unterminated quote"));
    }
    if name
        .iter()
        .all(|&b| SIP_TOKEN.has(b) || is_lws(b) || b >= 0x80)
    {
        Ok(())
    } else {
        Err(bad("bad display name"))
    }
}

fn parse_uri(uri: &[u8]) -> Result<Aor<'_>, AorError> {
    // SIP and tel URIs are ASCII without spaces or quotes; anything else is not one.
    if !URI_CHARS.all(uri) {
        return Err(bad("bad character in URI"));
    }
    // ASCII from here: the parts below are slices of this one text, converted once.
    let text = ascii(uri);
    let part = |bytes: &[u8]| -> &str {
        let start = bytes.as_ptr() as usize - uri.as_ptr() as usize;
        text.get(start..start + bytes.len()).unwrap_or_default()
    };
    let colon = uri
        .iter()
        .position(|&b| b == b':')
        .ok_or(bad("no URI scheme"))?;
    let (scheme, rest) = (&uri[..colon], &uri[colon + 1..]);
    if scheme.eq_ignore_ascii_case(b"tel") {
        let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        let number = &rest[..end];
        if !number.iter().any(u8::is_ascii_hexdigit) || !number.iter().all(|&b| is_tel_char(b)) {
            return Err(bad("bad tel number"));
        }
        return Ok(Aor {
            user: part(number),
            host: Cow::Borrowed(""),
        });
    }
    if !scheme.eq_ignore_ascii_case(b"sip") && !scheme.eq_ignore_ascii_case(b"sips") {
        return Err(bad("not a sip, sips or tel URI"));
    }
    // No part of a SIP URI after the userinfo may hold `@` (RFC 3261 25.1), so the one `@`
    // ends the userinfo even when the user holds `;` or `?`; two of them is not a SIP URI.
    let (user, hostpart) = match rest.iter().position(|&b| b == b'@') {
        None => (&rest[..0], rest),
        Some(at) if rest[at + 1..].contains(&b'@') => return Err(bad("more than one '@'")),
        Some(at) => (user_of(&rest[..at])?, &rest[at + 1..]),
    };
    let end = hostpart
        .iter()
        .position(|&b| b == b';' || b == b'?')
        .unwrap_or(hostpart.len());
    let host = part(host_of(&hostpart[..end])?);
    Ok(Aor {
        user: part(user),
        host: if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        },
    })
}

/// `user[:password]` -> user, checked against the RFC 3261 user grammar.
fn user_of(userinfo: &[u8]) -> Result<&[u8], AorError> {
    let end = userinfo
        .iter()
        .position(|&b| b == b':')
        .unwrap_or(userinfo.len());
    let user = &userinfo[..end];
    if user.is_empty() {
        return Err(bad("empty user part before '@'"));
    }
    let mut i = 0;
    while i < user.len() {
        if user[i] == b'%' {
            let escape_ok = user
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !escape_ok {
                return Err(bad("bad escape in user part"));
            }
            i += 3;
        } else if USER_CHARS.has(user[i]) {
            i += 1;
        } else {
            return Err(bad("bad user part"));
        }
    }
    Ok(user)
}

/// `host[:port]` or `[v6][:port]` -> host (brackets kept for IPv6).
fn host_of(hostport: &[u8]) -> Result<&[u8], AorError> {
    let (host, port) = if hostport.first() == Some(&b'[') {
        let close = hostport
            .iter()
            .position(|&b| b == b']')
            .ok_or(bad("unterminated IPv6 host"))?;
        let inside = &hostport[1..close];
        if !inside.contains(&b':')
            || !inside
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad("bad IPv6 host"));
        }
        hostport.split_at(close + 1)
    } else {
        let end = hostport
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(hostport.len());
        let host = &hostport[..end];
        if host.is_empty() || !HOST_CHARS.all(host) {
            return Err(bad("no usable host"));
        }
        hostport.split_at(end)
    };
    match port {
        [] => Ok(host),
        [b':', digits @ ..]
            if (1..=5).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
                && ascii(digits).parse::<u32>().is_ok_and(|p| p <= 65535) =>
        {
            Ok(host)
        }
        _ => Err(bad("bad port")),
    }
}

/// Bytes the URI checks have already limited to ASCII, as text. Anything else would be a
/// bug upstream: it reads as empty, which names no user and matches no identity.
fn ascii(bytes: &[u8]) -> &str {
    utf8(bytes).unwrap_or_default()
}

/// How registrar turns an AOR into the key it stores bindings under; the module compares
/// identities on that same form, so what it accepts is exactly what registrar files.
#[derive(Debug, Clone, Copy, Default)]
pub struct AorRules<'a> {
    /// registrar's `use_domain`: the key is user@domain, else the user alone.
    pub use_domain: bool,
    /// registrar's `case_sensitive`: 0 lowercases the user part too (the domain always is).
    pub case_sensitive: bool,
    /// Removed from the front of the domain (registrar's and auth's `realm_prefix`).
    pub realm_prefix: &'a str,
}

/// `%XX` escapes decoded (parse_aor has checked that every `%` starts one).
fn unescape(user: &str) -> Vec<u8> {
    let b = user.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn fold_user(user: &[u8], rules: &AorRules) -> Vec<u8> {
    if rules.case_sensitive {
        user.to_vec()
    } else {
        user.to_ascii_lowercase()
    }
}

fn fold_domain(host: &str, rules: &AorRules) -> Vec<u8> {
    let prefix = rules.realm_prefix;
    let host = match host.get(..prefix.len()) {
        Some(head)
            if !prefix.is_empty()
                && prefix.len() < host.len()
                && head.eq_ignore_ascii_case(prefix) =>
        {
            &host[prefix.len()..]
        }
        _ => host,
    };
    host.as_bytes().to_ascii_lowercase()
}

/// The key registrar's `save()` stores this AOR under (un-escaped user, `@domain` with
/// use_domain, case folded); None when the AOR cannot name a user.
pub fn registrar_aor(aor: &Aor, rules: &AorRules) -> Option<Vec<u8>> {
    let user = unescape(aor.user);
    if user.is_empty() {
        return None;
    }
    let mut key = fold_user(&user, rules);
    if rules.use_domain {
        if aor.host.is_empty() {
            return None;
        }
        key.push(b'@');
        key.extend(fold_domain(&aor.host, rules));
    }
    Some(key)
}

/// A login name (token user, Digest identity) on the same form. Without use_domain the whole
/// name must be the stored user (so `alice@globex.com` never passes for `alice`); with it the
/// name must be user@domain, split at its last '@'.
fn canonical_name(name: &str, rules: &AorRules) -> Option<Vec<u8>> {
    if name.is_empty() {
        return None;
    }
    if !rules.use_domain {
        return Some(fold_user(name.as_bytes(), rules));
    }
    let (user, host) = name.rsplit_once('@')?;
    if user.is_empty() || host.is_empty() {
        return None;
    }
    let mut key = fold_user(user.as_bytes(), rules);
    key.push(b'@');
    key.extend(fold_domain(host, rules));
    Some(key)
}

fn same_key(name: Option<Vec<u8>>, aor: &Aor, rules: &AorRules) -> bool {
    match (name, registrar_aor(aor, rules)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Token user vs AOR, both on registrar's form. A token carries no realm: with use_domain
/// its user must be user@domain.
pub fn token_user_matches(token_user: &str, aor: &Aor, rules: &AorRules) -> bool {
    // The usual case on the cached-token path, without building either key: no domain in
    // the key and no escape in the AOR's user, so both keys are the names case-folded.
    if !rules.use_domain && !aor.user.as_bytes().contains(&b'%') {
        return !token_user.is_empty()
            && !aor.user.is_empty()
            && if rules.case_sensitive {
                token_user == aor.user
            } else {
                token_user.eq_ignore_ascii_case(aor.user)
            };
    }
    same_key(canonical_name(token_user, rules), aor, rules)
}

/// Digest identity vs AOR, both on registrar's form. With use_domain, a username without
/// '@' takes its domain from the realm of the credentials, as OpenSIPS auth does.
pub fn digest_user_matches(username: &str, realm: &str, aor: &Aor, rules: &AorRules) -> bool {
    if rules.use_domain && !username.contains('@') && !username.is_empty() {
        if realm.is_empty() {
            return false;
        }
        return same_key(
            canonical_name(&format!("{username}@{realm}"), rules),
            aor,
            rules,
        );
    }
    same_key(canonical_name(username, rules), aor, rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aor(v: &str) -> Aor<'_> {
        parse_aor(v.as_bytes()).unwrap_or_else(|e| panic!("{v:?}: {e:?}"))
    }

    fn ua<'a>(user: &'a str, host: &'a str) -> Aor<'a> {
        Aor {
            user,
            host: host.into(),
        }
    }

    #[test]
    fn the_one_pass_form_agrees_with_the_full_parser() {
        // Values built slot by slot (opening, user, separator, host, closing and after),
        // each slot holding usual pieces and pieces near a boundary the one-pass form
        // draws; wherever it answers, the full grammar must give the same AOR.
        const SLOTS: &[&[&str]] = &[
            &[
                "<sip:",
                "<sips:",
                "<SIP:",
                "sip:",
                "\"A\" <sip:",
                " <sip:",
                "<sip:<sip:",
            ],
            &[
                "alice", "Bob.O-K_", "a%41", "a:pw", "", "+49", "a;b", "\u{e9}", "a b",
            ],
            &["@", "@@", "", ":"],
            &[
                "example.com",
                "EXAMPLE.com",
                "[::1]",
                "h:5060",
                "",
                "a_b",
                "h@x",
                "h;p",
            ],
            &[
                ">", ">;tag=1", "> ;tag=2", ">;x<y>", ">x", ">;\t", ">;\u{e9}", "", ">\u{1}", ">;",
            ],
            &["", ";user=phone", "?h=v", " ", "\t", ">"],
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut answered = 0;
        for _ in 0..500_000 {
            let value: String = SLOTS.iter().map(|slot| slot[next(slot.len())]).collect();
            if let Some(fast) = plain_sip_aor(value.as_bytes()) {
                answered += 1;
                assert_eq!(Ok(fast), parse_aor_in_full(value.as_bytes()), "{value:?}");
            }
        }
        assert!(
            answered > 400,
            "the generator reached the one-pass form {answered} times"
        );
        assert_eq!(
            plain_sip_aor(b"<sip:Alice@Example.COM>;tag=9"),
            Some(ua("Alice", "example.com"))
        );
        for value in [
            "\"A\" <sip:a@b>",
            "<sip:a@b:5060>",
            "<sip:a%41@b>",
            "<sip:a@b> ;t",
        ] {
            assert_eq!(plain_sip_aor(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn name_addr_and_addr_spec() {
        assert_eq!(aor("<sip:alice@example.com>"), ua("alice", "example.com"));
        assert_eq!(
            aor("\"Alice <x>\" <sip:alice:pw@EXAMPLE.com:5060;transport=tcp>;tag=1"),
            ua("alice", "example.com")
        );
        assert_eq!(aor("\"A\\\"B\" <sips:bob@h>").user, "bob");
        assert_eq!(aor("\"A\\\\\" <sips:bob@h>").user, "bob");
        assert_eq!(aor("sip:carol@h.net;tag=abc"), ua("carol", "h.net"));
        assert_eq!(aor("Carol <sip:carol@h.net?subject=x>").host, "h.net");
        assert_eq!(aor("Carol Ann  Smith <sip:carol@h.net>").user, "carol");
        assert_eq!(aor("J\u{f6}rg <sip:joerg@h.net>").user, "joerg");
        assert_eq!(
            aor("\"J\u{f6}rg; \\\"x\\\" <y>\" <sip:joerg@h.net>").user,
            "joerg"
        );
        assert_eq!(aor("sip:example.com"), ua("", "example.com"));
        assert_eq!(aor("<sip:example.com:5060;lr>"), ua("", "example.com"));
        assert_eq!(
            aor("<sip:dave@[2001:db8::1]:5060>"),
            ua("dave", "[2001:db8::1]")
        );
        assert_eq!(aor("<sip:dave@[2001:DB8::1]>").host, "[2001:db8::1]");
        assert_eq!(aor("sip:[::1];tag=x"), ua("", "[::1]"));
        assert_eq!(aor("<sip:e@192.0.2.1:5061>"), ua("e", "192.0.2.1"));
        assert_eq!(aor("<tel:+15551234;phone-context=x>"), ua("+15551234", ""));
        assert_eq!(aor("TEL:+1-555-12(34)").user, "+1-555-12(34)");
        assert_eq!(aor("<tel:*31#5>;tag=1").user, "*31#5");
    }

    #[test]
    fn schemes_spacing_and_params() {
        assert_eq!(aor("  <SIP:alice@Example.COM>  ").host, "example.com");
        assert_eq!(aor("\t<SiPs:alice@h>;tag=1 ; x=\"a;b<c>\"").user, "alice");
        assert_eq!(aor("< sip:alice@h >").user, "alice");
        assert_eq!(aor("<sip:alice@h>;tag=1").user, "alice");
        assert_eq!(aor("\"\" <sip:alice@h>").user, "alice");
        // Params and headers of the URI never leak into the host.
        assert_eq!(aor("<sip:alice@h;user=phone?X=1>").host, "h");
        assert_eq!(aor("<sip:alice@h?X=1;y>").host, "h");
        // The user part may hold `;`, `?`, escapes and other user-unreserved characters.
        assert_eq!(aor("<sip:alice;x=y@h>"), ua("alice;x=y", "h"));
        assert_eq!(aor("<sip:a%40b?&=+$,/@h>").user, "a%40b?&=+$,/");
        assert_eq!(aor("<sip:*31#123@h>").user, "*31#123");
        assert_eq!(aor("<sip:+15551234@h;user=phone>").user, "+15551234");
        // In an addr-spec everything after the first `;` belongs to the header.
        assert_eq!(aor("sip:alice@h;transport=tcp;tag=9"), ua("alice", "h"));
        assert_eq!(aor("sip:h.net:5060;tag=9"), ua("", "h.net"));
        assert_eq!(aor("sip:alice:secret@h:1"), ua("alice", "h"));
        assert_eq!(aor("sip:alice:@h"), ua("alice", "h"));
        assert_eq!(aor("<sip:alice@host_1.internal>").host, "host_1.internal");
    }

    #[test]
    fn malformed_values() {
        for v in [
            "",
            "   ",
            "\t",
            "<>",
            "< >",
            "<sip:alice@example.com",
            "sip:alice@example.com>",
            "\"unterminated <sip:a@b>",
            "\"a\\\" <sip:a@b>",
            "Al\"ice\" <sip:a@b>",
            "\"A\" \"B\" <sip:a@b>",
            "\"A\" x <sip:a@b>",
            "a@b <sip:a@b>",
            "x:y <sip:a@b>",
            "a;b <sip:a@b>",
            "<sip:a@b> <sip:c@d>",
            "<sip:a@b>x",
            "<sip:a@b> tag=1",
            "<http://example.com>",
            "<mailto:a@b>",
            "<sip>",
            "<sip:>",
            "<:a@b>",
            "<sip:alice@>",
            "<sip:@h>",
            "<sip::pw@h>",
            "<sip:a@b@c>",
            "<sip:a@b;x=@c>",
            "alice@example.com",
            "alice",
            "<sip:a b@c>",
            "<sip:a\tb@c>",
            "<sip:a@b c>",
            "<sip:a\"b@c>",
            "<sip:a\\b@c>",
            "<sip:a@b\"c>",
            "<sip:\u{e9}@c>",
            "<sip:a@\u{e9}.com>",
            "<sip:a%4@b>",
            "<sip:a%zz@b>",
            "<sip:a%@b>",
            "<sip:a[1]@b>",
            "<sip:a@[::1>",
            "<sip:a@[]>",
            "<sip:a@[g::1]>",
            "<sip:a@[1.2.3.4]>",
            "<sip:a@[::1]x>",
            "<sip:a@[::1]:>",
            "<sip:a@h:>",
            "<sip:a@h:99999>",
            "<sip:a@h:123456>",
            "<sip:a@h:5o6o>",
            "<sip:a@h:5060:1>",
            "<sip:a@:5060>",
            "<sip:a@h/x>",
            "<sip:a@h,g>",
            "sip:a@b,sip:c@d",
            "<tel:>",
            "<tel:;x=1>",
            "<tel:+>",
            "<tel:+1 555>",
            "<tel:+1@h>",
            "<tel:abc>x",
            "<tel:+1%32>",
        ] {
            assert!(parse_aor(v.as_bytes()).is_err(), "{v:?}");
        }
    }

    #[test]
    fn hostile_bytes_and_sizes() {
        for bad in [0u8, 1, 0x0a, 0x0d, 0x1f, 0x7f] {
            let mut v = b"<sip:alice@example.com>;tag=1".to_vec();
            v.insert(5, bad);
            assert!(parse_aor(&v).is_err(), "{bad:#x} in the URI");
            let mut v = b"\"Al ice\" <sip:alice@example.com>".to_vec();
            v.insert(3, bad);
            assert!(parse_aor(&v).is_err(), "{bad:#x} in the display name");
            let mut v = b"<sip:alice@example.com>;tag=1".to_vec();
            v.push(bad);
            assert!(parse_aor(&v).is_err(), "{bad:#x} after the params");
        }
        assert!(parse_aor(b"<sip:a@b>\r\nX: y").is_err());
        for v in [
            &[0xffu8, 0xfe][..],
            b"<sip:a@b>;tag=\xff",
            b"\"\xc3\" <sip:a@b>",
            b"\xed\xa0\x80 <sip:a@b>",
        ] {
            assert!(parse_aor(v).is_err(), "{v:?}");
        }
        let fits = format!("<sip:{}@b>", "a".repeat(MAX_HEADER - 8));
        assert_eq!(fits.len(), MAX_HEADER);
        assert_eq!(parse_aor(fits.as_bytes()).unwrap().host, "b");
        let long = format!("<sip:{}@b>", "a".repeat(MAX_HEADER - 7));
        assert!(parse_aor(long.as_bytes()).is_err());
        assert!(parse_aor("a".repeat(60 * 1024).as_bytes()).is_err());
        let mut junk = vec![b'"'; 60 * 1024];
        junk[0] = 0;
        assert!(parse_aor(&junk).is_err());
    }

    const PLAIN: AorRules = AorRules {
        use_domain: false,
        case_sensitive: false,
        realm_prefix: "",
    };
    const DOMAIN: AorRules = AorRules {
        use_domain: true,
        case_sensitive: false,
        realm_prefix: "",
    };

    /// The rules as registrar stores AORs (issue 14 item 5). This replaces the old rules,
    /// which compared a raw, case-sensitive user part and user@host with use_domain=0.
    #[test]
    fn identity_rules() {
        let a = aor("<sip:alice@Example.com>");
        assert!(token_user_matches("alice", &a, &PLAIN));
        assert!(
            token_user_matches("Alice", &a, &PLAIN),
            "registrar lowercases by default"
        );
        let cs = AorRules {
            case_sensitive: true,
            ..PLAIN
        };
        assert!(!token_user_matches("Alice", &a, &cs), "case_sensitive=1");
        // use_domain=0: registrar files sip:alice@<any domain> under "alice", so a name
        // with a domain never matches (it would take over another domain's alice).
        assert!(!token_user_matches("alice@example.com", &a, &PLAIN));
        assert!(!token_user_matches("alice@other.com", &a, &PLAIN));
        assert!(
            !token_user_matches("alice", &a, &DOMAIN),
            "use_domain needs user@host"
        );
        assert!(token_user_matches("alice@example.com", &a, &DOMAIN));
        assert!(token_user_matches("ALICE@EXAMPLE.com", &a, &DOMAIN));
        let cs_dom = AorRules {
            case_sensitive: true,
            ..DOMAIN
        };
        assert!(
            token_user_matches("alice@EXAMPLE.com", &a, &cs_dom),
            "domain always folded"
        );
        assert!(!token_user_matches("Alice@example.com", &a, &cs_dom));
        assert!(!token_user_matches("alice@other.com", &a, &DOMAIN));
        for bad in [
            "",
            "@example.com",
            "alice@",
            "@",
            "alice ",
            "x@alice@example.com",
        ] {
            assert!(!token_user_matches(bad, &a, &PLAIN), "{bad:?}");
            assert!(!token_user_matches(bad, &a, &DOMAIN), "{bad:?}");
        }
        assert!(!token_user_matches("alice@example.com ", &a, &DOMAIN));
        // Digest: with use_domain a plain username takes the realm as its domain.
        assert!(digest_user_matches("alice", "example.com", &a, &PLAIN));
        assert!(digest_user_matches("alice", "example.com", &a, &DOMAIN));
        assert!(!digest_user_matches("alice", "other.com", &a, &DOMAIN));
        assert!(!digest_user_matches("alice", "", &a, &DOMAIN));
        assert!(digest_user_matches(
            "alice@example.com",
            "whatever",
            &a,
            &DOMAIN
        ));
        assert!(!digest_user_matches(
            "alice@example.com",
            "example.com",
            &a,
            &PLAIN
        ));
        assert!(!digest_user_matches("bob", "example.com", &a, &PLAIN));
        assert!(!digest_user_matches("", "example.com", &a, &DOMAIN));
        // The last '@' splits: a user part holding an escaped '@' compares as a whole.
        let odd = aor("<sip:a%40b@h>");
        assert!(token_user_matches("a@b", &odd, &PLAIN));
        assert!(token_user_matches("a@b@h", &odd, &DOMAIN));
        let tel = aor("<tel:+155>");
        assert!(!token_user_matches("+155@", &tel, &PLAIN));
        assert!(!token_user_matches("+155@", &tel, &DOMAIN));
        assert!(token_user_matches("+155", &tel, &PLAIN));
        assert!(!token_user_matches("+155", &tel, &DOMAIN));
        let no_user = aor("<sip:example.com>");
        assert!(!token_user_matches("example.com", &no_user, &PLAIN));
        assert!(!token_user_matches("@example.com", &no_user, &DOMAIN));
        let v6 = aor("<sip:bob@[2001:DB8::1]>");
        assert!(token_user_matches("bob@[2001:db8::1]", &v6, &DOMAIN));
    }

    #[test]
    fn registrar_keys() {
        let key = |v: &str, r: &AorRules| {
            registrar_aor(&aor(v), r).map(|k| String::from_utf8(k).unwrap())
        };
        assert_eq!(
            key("<sip:%61lice@Example.COM>", &PLAIN).as_deref(),
            Some("alice")
        );
        assert_eq!(
            key("<sip:%41lice@Example.COM>", &DOMAIN).as_deref(),
            Some("alice@example.com")
        );
        let cs = AorRules {
            case_sensitive: true,
            ..DOMAIN
        };
        assert_eq!(
            key("<sip:Alice@Example.COM>", &cs).as_deref(),
            Some("Alice@example.com")
        );
        let prefixed = AorRules {
            realm_prefix: "sip.",
            ..DOMAIN
        };
        assert_eq!(
            key("<sip:bob@sip.example.com>", &prefixed).as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(
            key("<sip:bob@sip.>", &prefixed).as_deref(),
            Some("bob@sip."),
            "prefix shorter than the host only"
        );
        assert_eq!(key("<sip:example.com>", &PLAIN), None);
        assert_eq!(key("<tel:+155>", &DOMAIN), None);
        // Escaped user parts compare after un-escaping (issue 14 item 5).
        let a = aor("<sip:%61lice@example.com>");
        assert!(token_user_matches("alice", &a, &PLAIN));
        assert!(!token_user_matches("%61lice", &a, &PLAIN));
        // The scenario: the SSO user alice@globex.com cannot register
        // sip:alice@globex.com with use_domain=0 (registrar would file it under "alice").
        let globex = aor("<sip:alice@globex.com>");
        assert!(!token_user_matches("alice@globex.com", &globex, &PLAIN));
        assert!(!digest_user_matches(
            "alice@globex.com",
            "globex.com",
            &globex,
            &PLAIN
        ));
        assert!(token_user_matches("alice@globex.com", &globex, &DOMAIN));
        assert!(token_user_matches(
            "bob@example.com",
            &aor("<sip:bob@sip.example.com>"),
            &prefixed
        ));
    }

    /// xorshift32: deterministic noise without a dependency.
    fn noise(seed: &mut u32) -> u32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 17;
        *seed ^= *seed << 5;
        *seed
    }

    fn check(v: &[u8]) {
        if let Ok(a) = parse_aor(v) {
            // Whatever is accepted is plain ASCII without separators that could confuse a
            // later comparison or log line.
            assert!(a.host.bytes().all(|b| b.is_ascii_graphic()), "{v:?}");
            assert!(
                a.user.bytes().all(|b| b.is_ascii_graphic() && b != b'@'),
                "{v:?}"
            );
            assert_eq!(a.host, a.host.to_ascii_lowercase());
            if !a.user.is_empty() && !a.user.contains('%') {
                assert!(token_user_matches(a.user, &a, &PLAIN));
                if !a.host.is_empty() {
                    let full = format!("{}@{}", a.user, a.host);
                    assert!(digest_user_matches(&full, "", &a, &DOMAIN), "{v:?}");
                }
            }
        }
    }

    #[test]
    fn never_panics_on_noise() {
        let alphabet = b"<>\":;@[]sip:tel\\ \ta.5?%\xc3\xa9\xff\x00";
        let mut seed = 0x1234_5678u32;
        for _ in 0..30_000 {
            let len = (noise(&mut seed) % 64) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| alphabet[noise(&mut seed) as usize % alphabet.len()])
                .collect();
            check(&v);
        }
        for _ in 0..10_000 {
            let len = (noise(&mut seed) % 128) as usize;
            let v: Vec<u8> = (0..len).map(|_| noise(&mut seed) as u8).collect();
            check(&v);
        }
        // Mutations of a valid value reach the deeper branches.
        let base = b"\"Al\\\"ice\" <sips:alice:pw@[::1]:5061;lr?h=v>;tag=1";
        const PICK: &[u8] = b"<>\":;@[]\\ ?%\xc3x";
        for _ in 0..30_000 {
            let mut v = base.to_vec();
            for _ in 0..(1 + noise(&mut seed) % 3) {
                let at = noise(&mut seed) as usize % (v.len() + 1);
                let b = PICK[noise(&mut seed) as usize % PICK.len()];
                match noise(&mut seed) % 3 {
                    0 if at < v.len() => {
                        v.remove(at);
                    }
                    1 if at < v.len() => v[at] = b,
                    _ => v.insert(at, b),
                }
            }
            check(&v);
        }
    }

    #[test]
    fn token_fast_path_agrees_with_the_registrar_keys() {
        let names = [
            "alice",
            "Alice",
            "ALICE",
            "alice@globex.com",
            "",
            "al%69ce",
            "bob",
            "ali",
        ];
        let users = [
            "alice",
            "ALICE",
            "Alice",
            "alice@globex.com",
            "bob",
            "ali",
            "",
        ];
        for case_sensitive in [false, true] {
            let rules = AorRules {
                use_domain: false,
                case_sensitive,
                realm_prefix: "",
            };
            for name in names {
                for user in users {
                    let aor = ua(user, "example.com");
                    assert_eq!(
                        token_user_matches(name, &aor, &rules),
                        same_key(canonical_name(name, &rules), &aor, &rules),
                        "{name:?} vs {user:?}, case_sensitive {case_sensitive}"
                    );
                }
            }
        }
    }
}
