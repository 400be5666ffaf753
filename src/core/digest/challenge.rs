//! Builders for the challenge header lines the module adds to 401/407 replies.

use crate::core::digest::Algorithm;
use crate::core::text::is_quoted_safe;

/// Which qop values a challenge offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QopOffer {
    None,
    Auth,
    AuthInt,
    Both,
}

impl QopOffer {
    /// "", "auth", "auth-int", "auth,auth-int" (also "auth-int,auth"; spaces allowed).
    pub fn parse(s: &str) -> Option<QopOffer> {
        if s.trim().is_empty() {
            return Some(QopOffer::None);
        }
        let (mut auth, mut int) = (false, false);
        // Empty items ("auth,") and repeats are refused: they hint at a typo in the script.
        for part in s.split(',').map(str::trim) {
            match part {
                "auth" if !auth => auth = true,
                "auth-int" if !int => int = true,
                _ => return None,
            }
        }
        Some(match (auth, int) {
            (false, false) => QopOffer::None,
            (true, false) => QopOffer::Auth,
            (false, true) => QopOffer::AuthInt,
            (true, true) => QopOffer::Both,
        })
    }

    fn value(self) -> Option<&'static str> {
        match self {
            QopOffer::None => None,
            QopOffer::Auth => Some("auth"),
            QopOffer::AuthInt => Some("auth-int"),
            QopOffer::Both => Some("auth,auth-int"),
        }
    }
}

/// Parses a comma list of algorithm names; None when empty or an unknown/duplicate name.
pub fn parse_algorithms(s: &str) -> Option<Vec<Algorithm>> {
    let mut out = Vec::new();
    for name in s.split(',') {
        let alg = Algorithm::parse(name)?;
        if out.contains(&alg) {
            return None;
        }
        out.push(alg);
    }
    (!out.is_empty()).then_some(out)
}

/// RFC 6750 error attribute of a Bearer challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    InvalidToken,
    InvalidRequest,
    /// The token lacks a scope the service requires (RFC 6750 3.1).
    InsufficientScope,
}

fn header_name(proxy: bool) -> &'static str {
    if proxy {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    }
}

/// One complete header line including the name and a trailing CRLF, e.g.
/// `WWW-Authenticate: Digest realm="r", nonce="n", qop="auth", algorithm=MD5\r\n`
/// (`stale=true` when asked; `qop` omitted for QopOffer::None).
/// `proxy` selects `Proxy-Authenticate`. Returns None when realm or nonce is not quoted-safe.
pub fn digest_challenge(
    proxy: bool,
    realm: &str,
    nonce: &str,
    qop: QopOffer,
    algorithm: Algorithm,
    stale: bool,
) -> Option<String> {
    if !is_quoted_safe(realm) || !is_quoted_safe(nonce) {
        return None;
    }
    let mut line = format!(
        "{}: Digest realm=\"{realm}\", nonce=\"{nonce}\"",
        header_name(proxy)
    );
    if let Some(q) = qop.value() {
        line.push_str(&format!(", qop=\"{q}\""));
    }
    line.push_str(", algorithm=");
    line.push_str(algorithm.name());
    if stale {
        line.push_str(", stale=true");
    }
    line.push_str("\r\n");
    Some(line)
}

/// `WWW-Authenticate: Bearer realm="r", authz_server="https://..."[, scope="s"][, error="invalid_token"]\r\n`
/// (RFC 8898). None when any value is not quoted-safe.
pub fn bearer_challenge(
    proxy: bool,
    realm: &str,
    authz_server: Option<&str>,
    scope: Option<&str>,
    error: Option<BearerError>,
) -> Option<String> {
    if !is_quoted_safe(realm) {
        return None;
    }
    let mut line = format!("{}: Bearer realm=\"{realm}\"", header_name(proxy));
    for (name, value) in [("authz_server", authz_server), ("scope", scope)] {
        if let Some(v) = value {
            if !is_quoted_safe(v) {
                return None;
            }
            line.push_str(&format!(", {name}=\"{v}\""));
        }
    }
    match error {
        Some(BearerError::InvalidToken) => line.push_str(", error=\"invalid_token\""),
        Some(BearerError::InvalidRequest) => line.push_str(", error=\"invalid_request\""),
        Some(BearerError::InsufficientScope) => line.push_str(", error=\"insufficient_scope\""),
        None => {}
    }
    line.push_str("\r\n");
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qop_offers() {
        assert_eq!(QopOffer::parse(""), Some(QopOffer::None));
        assert_eq!(QopOffer::parse(" "), Some(QopOffer::None));
        assert_eq!(QopOffer::parse("auth"), Some(QopOffer::Auth));
        assert_eq!(QopOffer::parse("auth-int"), Some(QopOffer::AuthInt));
        assert_eq!(QopOffer::parse("auth, auth-int"), Some(QopOffer::Both));
        assert_eq!(QopOffer::parse("auth-int,auth"), Some(QopOffer::Both));
        assert_eq!(QopOffer::parse("auth,auth"), None);
        assert_eq!(QopOffer::parse("auth,"), None);
        assert_eq!(QopOffer::parse("AUTH"), None);
        assert_eq!(QopOffer::parse("conf"), None);
    }

    #[test]
    fn algorithm_lists() {
        assert_eq!(
            parse_algorithms("SHA-256, md5"),
            Some(vec![Algorithm::Sha256, Algorithm::Md5])
        );
        assert_eq!(parse_algorithms("MD5,MD5"), None);
        assert_eq!(parse_algorithms(""), None);
        assert_eq!(parse_algorithms("MD5,"), None);
        assert_eq!(parse_algorithms("SHA-1"), None);
    }

    #[test]
    fn digest_lines() {
        let l = digest_challenge(
            false,
            "example.com",
            "abc",
            QopOffer::Auth,
            Algorithm::Md5,
            false,
        )
        .unwrap();
        assert_eq!(l, "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"abc\", qop=\"auth\", algorithm=MD5\r\n");
        let l = digest_challenge(
            true,
            "r",
            "n",
            QopOffer::None,
            Algorithm::Sha512_256Sess,
            true,
        )
        .unwrap();
        assert_eq!(l, "Proxy-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256-sess, stale=true\r\n");
        let l =
            digest_challenge(false, "r", "n", QopOffer::Both, Algorithm::Sha256, false).unwrap();
        assert!(l.contains("qop=\"auth,auth-int\""));
        assert!(digest_challenge(
            false,
            "bad\"realm",
            "n",
            QopOffer::Auth,
            Algorithm::Md5,
            false
        )
        .is_none());
        assert!(digest_challenge(
            false,
            "r\r\nX-Evil: 1",
            "n",
            QopOffer::Auth,
            Algorithm::Md5,
            false
        )
        .is_none());
    }

    #[test]
    fn bearer_lines() {
        let l = bearer_challenge(
            false,
            "r",
            Some("https://sso/x"),
            Some("sip"),
            Some(BearerError::InvalidToken),
        )
        .unwrap();
        assert_eq!(l, "WWW-Authenticate: Bearer realm=\"r\", authz_server=\"https://sso/x\", scope=\"sip\", error=\"invalid_token\"\r\n");
        let l = bearer_challenge(true, "r", None, None, Some(BearerError::InvalidRequest)).unwrap();
        assert_eq!(
            l,
            "Proxy-Authenticate: Bearer realm=\"r\", error=\"invalid_request\"\r\n"
        );
        assert!(bearer_challenge(false, "r", Some("https://x\r\n"), None, None).is_none());
    }

    #[test]
    fn more_qop_and_algorithm_lists() {
        assert_eq!(QopOffer::parse("\t auth \t"), Some(QopOffer::Auth));
        assert_eq!(QopOffer::parse(" auth-int , auth "), Some(QopOffer::Both));
        for bad in [
            ",",
            " , ",
            "auth,,auth-int",
            ",auth",
            "auth;auth-int",
            "auth auth-int",
            "auth-int,auth-int",
            "auth,auth-int,auth",
            "auth-conf",
            "\0",
        ] {
            assert_eq!(QopOffer::parse(bad), None, "{bad:?}");
        }
        let all = "md5, MD5-sess ,sha-256,SHA-256-sess,sha-512-256,SHA-512-256-SESS";
        assert_eq!(parse_algorithms(all).map(|v| v.len()), Some(6));
        assert_eq!(
            parse_algorithms(" sha-512-256 "),
            Some(vec![Algorithm::Sha512_256])
        );
        for bad in [
            " ",
            ",",
            ",MD5",
            "MD5,,SHA-256",
            "MD5;SHA-256",
            "MD5 SHA-256",
            "md5,MD5",
            "SHA-256,sha-256",
            "MD5,unknown",
            "\u{e9}",
        ] {
            assert_eq!(parse_algorithms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_algorithm_and_flag_combination() {
        let algs =
            parse_algorithms("MD5,MD5-sess,SHA-256,SHA-256-sess,SHA-512-256,SHA-512-256-sess")
                .unwrap();
        let qops = [
            QopOffer::None,
            QopOffer::Auth,
            QopOffer::AuthInt,
            QopOffer::Both,
        ];
        for alg in algs {
            for qop in qops {
                for proxy in [false, true] {
                    for stale in [false, true] {
                        let l = digest_challenge(proxy, "sip.example.com", "abc", qop, alg, stale)
                            .unwrap();
                        let name = if proxy {
                            "Proxy-Authenticate"
                        } else {
                            "WWW-Authenticate"
                        };
                        let qop_part = match qop {
                            QopOffer::None => String::new(),
                            QopOffer::Auth => ", qop=\"auth\"".into(),
                            QopOffer::AuthInt => ", qop=\"auth-int\"".into(),
                            QopOffer::Both => ", qop=\"auth,auth-int\"".into(),
                        };
                        let stale_part = if stale { ", stale=true" } else { "" };
                        assert_eq!(
                            l,
                            format!(
                                "{name}: Digest realm=\"sip.example.com\", nonce=\"abc\"{qop_part}, \
                                 algorithm={}{stale_part}\r\n",
                                alg.name()
                            )
                        );
                        // Exactly one line, ending in CRLF.
                        assert_eq!(l.matches("\r\n").count(), 1);
                        assert!(l.ends_with("\r\n"));
                    }
                }
            }
        }
    }

    #[test]
    fn unsafe_values_are_refused() {
        let hostile = [
            "a\"b",
            "a\\b",
            "a\r\nX: y",
            "a\nb",
            "a\0b",
            "a\x7fb",
            "\"",
            "\\",
        ];
        for h in hostile {
            assert!(
                digest_challenge(false, h, "n", QopOffer::Auth, Algorithm::Md5, false).is_none(),
                "{h:?}"
            );
            assert!(
                digest_challenge(false, "r", h, QopOffer::Auth, Algorithm::Md5, false).is_none(),
                "{h:?}"
            );
            assert!(
                bearer_challenge(false, h, None, None, None).is_none(),
                "{h:?}"
            );
            assert!(
                bearer_challenge(false, "r", Some(h), None, None).is_none(),
                "{h:?}"
            );
            assert!(
                bearer_challenge(false, "r", None, Some(h), None).is_none(),
                "{h:?}"
            );
        }
        // Tabs, spaces and UTF-8 are fine inside a quoted-string.
        let l = bearer_challenge(false, "r\u{e9} x\ty", None, Some("sip openid"), None).unwrap();
        assert_eq!(
            l,
            "WWW-Authenticate: Bearer realm=\"r\u{e9} x\ty\", scope=\"sip openid\"\r\n"
        );
    }

    #[test]
    fn bearer_optional_parts() {
        assert_eq!(
            bearer_challenge(false, "r", None, None, None).unwrap(),
            "WWW-Authenticate: Bearer realm=\"r\"\r\n"
        );
        assert_eq!(
            bearer_challenge(true, "r", Some("https://sso/x"), None, None).unwrap(),
            "Proxy-Authenticate: Bearer realm=\"r\", authz_server=\"https://sso/x\"\r\n"
        );
        assert_eq!(
            bearer_challenge(
                false,
                "r",
                None,
                Some("sip"),
                Some(BearerError::InvalidToken)
            )
            .unwrap(),
            "WWW-Authenticate: Bearer realm=\"r\", scope=\"sip\", error=\"invalid_token\"\r\n"
        );
    }

    #[test]
    fn parsers_never_panic_on_noise() {
        let alphabet = b"auth-int,MD5SHA256sess \t\xc3\xa9\x00\"";
        let mut seed = 0x0bad_f00du32;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[(seed.rotate_left(i as u32) as usize + i) % alphabet.len()])
                .collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = QopOffer::parse(&s);
            if let Some(algs) = parse_algorithms(&s) {
                assert!(!algs.is_empty() && algs.len() <= 6);
            }
        }
    }
}
