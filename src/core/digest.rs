//! SIP Digest arithmetic (RFC 2617, RFC 7616): algorithms, H(), and the expected response.
//! The module itself never verifies a response (the SSO does); it needs H() for `body_hash`
//! (qop=auth-int) and the response computation for tests and the reference SSO.

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

const NAMES: [(Algorithm, &str); 6] = [
    (Algorithm::Md5, "MD5"),
    (Algorithm::Md5Sess, "MD5-sess"),
    (Algorithm::Sha256, "SHA-256"),
    (Algorithm::Sha256Sess, "SHA-256-sess"),
    (Algorithm::Sha512_256, "SHA-512-256"),
    (Algorithm::Sha512_256Sess, "SHA-512-256-sess"),
];

impl Algorithm {
    /// Case-insensitive parse of an RFC 7616 algorithm name.
    pub fn parse(name: &str) -> Option<Algorithm> {
        NAMES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(a, _)| *a)
    }

    /// Canonical name as written in challenges ("MD5", "SHA-512-256-sess", ...).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(a, _)| *a == self)
            .map(|(_, n)| *n)
            .unwrap_or("MD5")
    }

    pub fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Lower-case hex of H(data) for the algorithm's hash.
pub fn hash_hex(alg: Algorithm, data: &[u8]) -> String {
    match alg {
        Algorithm::Md5 | Algorithm::Md5Sess => hex(&Md5::digest(data)),
        Algorithm::Sha256 | Algorithm::Sha256Sess => hex(&Sha256::digest(data)),
        Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => hex(&Sha512_256::digest(data)),
    }
}

/// Inputs of a Digest response computation.
pub struct ResponseInput<'a> {
    pub algorithm: Algorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// None (RFC 2069 style), Some("auth") or Some("auth-int")
    pub qop: Option<&'a str>,
    pub nc: &'a str,
    pub cnonce: &'a str,
    /// Message body, used for auth-int
    pub body: &'a [u8],
}

/// The expected `response` value (lower-case hex).
pub fn expected_response(i: &ResponseInput) -> String {
    let h = |s: &str| hash_hex(i.algorithm, s.as_bytes());
    let mut ha1 = h(&format!("{}:{}:{}", i.username, i.realm, i.password));
    if i.algorithm.is_session() {
        ha1 = h(&format!("{ha1}:{}:{}", i.nonce, i.cnonce));
    }
    let ha2 = match i.qop {
        Some("auth-int") => h(&format!(
            "{}:{}:{}",
            i.method,
            i.uri,
            hash_hex(i.algorithm, i.body)
        )),
        _ => h(&format!("{}:{}", i.method, i.uri)),
    };
    match i.qop {
        Some(q) => h(&format!(
            "{ha1}:{}:{}:{}:{q}:{ha2}",
            i.nonce, i.nc, i.cnonce
        )),
        None => h(&format!("{ha1}:{}:{ha2}", i.nonce)),
    }
}

/// Constant-time equality of two response strings (case-insensitive hex).
pub fn responses_equal(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let a = a.to_ascii_lowercase();
    let b = b.to_ascii_lowercase();
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(alg: Algorithm, qop: Option<&'a str>) -> ResponseInput<'a> {
        ResponseInput {
            algorithm: alg,
            username: "Mufasa",
            realm: "http-auth@example.org",
            password: "Circle of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop,
            nc: "00000001",
            cnonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            body: b"",
        }
    }

    #[test]
    fn rfc7616_section_3_9_1_vectors() {
        assert_eq!(
            expected_response(&input(Algorithm::Md5, Some("auth"))),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        assert_eq!(
            expected_response(&input(Algorithm::Sha256, Some("auth"))),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc2617_section_3_5_vector() {
        let i = ResponseInput {
            algorithm: Algorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop: Some("auth"),
            nc: "00000001",
            cnonce: "0a4f113b",
            body: b"",
        };
        assert_eq!(expected_response(&i), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn hashes_of_the_empty_string() {
        assert_eq!(
            hash_hex(Algorithm::Md5, b""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            hash_hex(Algorithm::Sha256, b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hash_hex(Algorithm::Sha512_256, b""),
            "c672b8d1ef56ed28ab87c3622c5114069bdd3ad7b8f9737498d0c01ecef0967a"
        );
    }

    #[test]
    fn session_variants_and_auth_int_differ() {
        let plain = expected_response(&input(Algorithm::Sha512_256, Some("auth")));
        let sess = expected_response(&input(Algorithm::Sha512_256Sess, Some("auth")));
        assert_ne!(plain, sess);
        assert_eq!(plain.len(), 64);
        let mut i = input(Algorithm::Md5, Some("auth-int"));
        let empty_body = expected_response(&i);
        i.body = b"v=0\r\n";
        assert_ne!(empty_body, expected_response(&i));
        assert_ne!(
            expected_response(&input(Algorithm::Md5, None)),
            expected_response(&input(Algorithm::Md5, Some("auth")))
        );
    }

    #[test]
    fn names_round_trip() {
        for (a, n) in NAMES {
            assert_eq!(Algorithm::parse(n), Some(a));
            assert_eq!(Algorithm::parse(&n.to_ascii_lowercase()), Some(a));
            assert_eq!(a.name(), n);
        }
        assert_eq!(Algorithm::parse("MD4"), None);
        assert_eq!(Algorithm::parse(""), None);
        assert!(Algorithm::Md5Sess.is_session() && !Algorithm::Sha256.is_session());
    }

    #[test]
    fn constant_time_compare() {
        assert!(responses_equal("ABCdef", "abcDEF"));
        assert!(!responses_equal("abc", "abd"));
        assert!(!responses_equal("abc", "abcd"));
    }
}
