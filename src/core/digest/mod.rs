//! SIP Digest arithmetic (RFC 2617, RFC 7616): algorithms, H(), and the expected response.
//! The module itself never verifies a response (the SSO does); it needs H() for `body_hash`
//! (qop=auth-int) and the response computation for tests and the reference SSO.

pub mod challenge;
pub mod credentials;
pub mod nonce;
pub mod replay;
pub mod retrans;

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
        // Exhaustive on purpose: a new variant must get its name here and in NAMES.
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
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

    /// RFC 2069 style (no qop): the value of the RFC 2069 erratum for its section 2.4
    /// example (the printed e966c932... is wrong); recomputed with Python's hashlib.
    #[test]
    fn rfc2069_without_qop() {
        let i = ResponseInput {
            algorithm: Algorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            password: "CircleOfLife",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop: None,
            nc: "",
            cnonce: "",
            body: b"",
        };
        assert_eq!(expected_response(&i), "1949323746fe6a43ef61f9606e7febea");
    }

    /// Every algorithm x {auth, auth-int, no qop} on the RFC 7616 inputs, with body "v=0\r\n"
    /// for auth-int. Expected values come from an independent implementation (Python hashlib
    /// following RFC 7616 section 3.4); the two RFC vectors above are rows of this table.
    #[test]
    fn all_algorithms_cross_checked() {
        use Algorithm::*;
        let table = [
            (Md5, Some("auth"), "8ca523f5e9506fed4657c9700eebdbec"),
            (Md5, Some("auth-int"), "d1b8e2ac3f6782372de4bf3d8735b406"),
            (Md5, None, "7b2cc3b30e75b4777ea31027084363fd"),
            (Md5Sess, Some("auth"), "e783283f46242139c486a698fec7211d"),
            (
                Md5Sess,
                Some("auth-int"),
                "4321e8772738f242cc32334079264d8c",
            ),
            (Md5Sess, None, "37a7f42db2090a3fcac4e26e747d4fc8"),
            (
                Sha256,
                Some("auth"),
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
            (
                Sha256,
                Some("auth-int"),
                "385d2de062660ced11876f42d9497c69cacf5caaf3d951dd424aee9f7157d563",
            ),
            (
                Sha256,
                None,
                "a1306b0595a6c7fe96c448631fb5cfbd5107bd1fe1da729d978dd7446b812363",
            ),
            (
                Sha256Sess,
                Some("auth"),
                "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7",
            ),
            (
                Sha256Sess,
                Some("auth-int"),
                "cade7e5b751d9c3c2f066a95f2405c5509ad0171cf93f117e98b7f0ebb212e57",
            ),
            (
                Sha256Sess,
                None,
                "30bc0742357e535c85094121d22cf826b794be0667e19537beb7b28f2251c274",
            ),
            (
                Sha512_256,
                Some("auth"),
                "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0",
            ),
            (
                Sha512_256,
                Some("auth-int"),
                "5e69357dfa951887c95e88aae45b1f7f834aeba94f85648b86d532e82afdb589",
            ),
            (
                Sha512_256,
                None,
                "93e9122020ea0624d2ca801426d5bfbeb93d10ff4cc24cb410af3920fa4730e7",
            ),
            (
                Sha512_256Sess,
                Some("auth"),
                "3f2a34f923c38b0fb26dce2fdfc2ce326c23cecf86fbb1444f3e51fbbc2cb92e",
            ),
            (
                Sha512_256Sess,
                Some("auth-int"),
                "1ba4333021256e8b4eebe5c8d20ba53b167f1dac1f6d8c916a08c17ef99eae9a",
            ),
            (
                Sha512_256Sess,
                None,
                "7c70dbd9f483cbccedbd3e92ac246a9f2b712bed77914b52c3ae2254fdb2edba",
            ),
        ];
        for (alg, qop, want) in table {
            let mut i = input(alg, qop);
            i.body = b"v=0\r\n";
            assert_eq!(expected_response(&i), want, "{} {qop:?}", alg.name());
        }
    }

    #[test]
    fn compare_edge_cases() {
        assert!(responses_equal("", ""));
        assert!(!responses_equal("abcd", "abc"));
        assert!(!responses_equal("", "a"));
        let good = "8ca523f5e9506fed4657c9700eebdbec";
        assert!(responses_equal(good, &good.to_ascii_uppercase()));
        assert!(!responses_equal(good, "8ca523f5e9506fed4657c9700eebdbed"));
        // Non-ASCII never panics; only ASCII letters fold.
        assert!(responses_equal("\u{e9}a", "\u{e9}A"));
        assert!(!responses_equal("\u{e9}", "\u{c9}"));
    }

    #[test]
    fn trimmed_names_and_junk() {
        assert_eq!(
            Algorithm::parse(" sha-256-SESS "),
            Some(Algorithm::Sha256Sess)
        );
        for junk in [
            "MD5-",
            "SHA256",
            "SHA-512",
            "MD5 sess",
            "MD5,SHA-256",
            "\0",
            "\u{e9}",
            "md5-sess-sess",
        ] {
            assert_eq!(Algorithm::parse(junk), None, "{junk:?}");
        }
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
