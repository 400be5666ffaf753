//! Builders for the challenge header lines the module adds to 401/407 replies.

use super::digest::Algorithm;
use super::text::is_quoted_safe;

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
        let (mut auth, mut int) = (false, false);
        for part in s.split(',').map(str::trim) {
            match part {
                "" if s.trim().is_empty() => {}
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
}
