//! Key names and token-cache entries in the shared store.
//!
//! Both are derived from `secret` through two sub-keys (domain-separated from the nonce MAC):
//! * key names are HMAC(names key, nonce or token hash), so the store never holds a nonce or a
//!   token hash one could test guesses against, and clusters with different secrets sharing a
//!   store never meet;
//! * every token entry ends in HMAC(entries key, key name || body), checked in constant time
//!   before anything in it is believed: an entry written by anyone without the secret, or
//!   copied from another key, is ignored. The body carries its own end of life, so an old
//!   genuine entry written back after its time is ignored too.
//!
//! Entry body, then base64 (the value is text for every cachedb backend):
//! `[1 version][1 kind][8 until][1 has_exp][8 exp][2 len][user][2 len][scope][2 len][claims]`
//! followed by the 32-byte MAC. Integers are big-endian.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::core::sso::Introspection;
use crate::core::token::cache::MAX_CLAIMS_JSON;
use crate::core::token::claims::ClaimSet;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const POSITIVE: u8 = 1;
const NEGATIVE: u8 = 2;
const MAC_LEN: usize = 32;
const FIXED: usize = 1 + 1 + 8 + 1 + 8 + 2 + 2 + 2;
/// Longest user name / scope kept (as the local cache does).
const MAX_FIELD: usize = 127;
/// Longest value the store may hand back that is worth decoding.
pub const MAX_VALUE: usize = (FIXED + 2 * MAX_FIELD + MAX_CLAIMS_JSON + MAC_LEN) * 4 / 3 + 4;

/// Common prefix of every key the module writes.
pub const PREFIX: &str = "sso_auth:";

/// The two sub-keys, derived once per process from `secret`.
#[derive(Clone)]
pub struct Keys {
    names: HmacSha256,
    entries: HmacSha256,
}

fn derive(secret: &[u8], label: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    m.update(label);
    let sub = m.finalize().into_bytes();
    HmacSha256::new_from_slice(&sub).expect("HMAC takes keys of any length")
}

fn hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// A token verdict read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// Active; stays usable until `until` (unix seconds).
    Positive { info: Introspection, until: u64 },
    /// Not active, until `until`.
    Negative { until: u64 },
}

/// Why a stored value was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryError {
    /// Not base64, too short, an unknown version: nothing this module wrote.
    Malformed,
    /// The MAC does not match: written without the secret, or moved from another key.
    BadMac,
    /// Genuine but past its end of life.
    Expired,
}

impl Keys {
    pub fn new(secret: &[u8]) -> Keys {
        Keys {
            names: derive(secret, b"sso_auth cluster key names v1"),
            entries: derive(secret, b"sso_auth cluster entries v1"),
        }
    }

    fn tag(&self, kind: &str, what: &[u8]) -> [u8; 16] {
        let mut m = self.names.clone();
        m.update(kind.as_bytes());
        m.update(b"\0");
        m.update(what);
        m.finalize().into_bytes()[..16].try_into().unwrap()
    }

    fn name(kind: &str, tag: &[u8; 16], tail: Option<&str>) -> String {
        let mut key = String::with_capacity(PREFIX.len() + 3 + 32 + 10);
        key.push_str(PREFIX);
        key.push_str(kind);
        key.push(':');
        hex(tag, &mut key);
        if let Some(t) = tail {
            key.push(':');
            key.push_str(t);
        }
        key
    }

    /// What names a nonce in the store (the nonce itself never goes there).
    pub fn replay_tag(&self, nonce: &str) -> [u8; 16] {
        self.tag("n", nonce.as_bytes())
    }

    /// The counter that claims one use of a nonce (by its tag) with nc; nc None (no qop) is
    /// its own name.
    pub fn replay_key_of(tag: &[u8; 16], nc: Option<u32>) -> String {
        let tail = match nc {
            Some(n) => format!("{n:08x}"),
            None => "-".to_string(),
        };
        Self::name("n", tag, Some(&tail))
    }

    /// The counter that claims one use of (nonce, nc).
    pub fn replay_key(&self, nonce: &str, nc: Option<u32>) -> String {
        Self::replay_key_of(&self.replay_tag(nonce), nc)
    }

    /// Where the verdict on a token lives, from the token's SHA-256.
    pub fn token_key(&self, token_sha256: &[u8; 32]) -> String {
        Self::name("t", &self.tag("t", token_sha256), None)
    }

    fn mac(&self, key: &str, body: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.entries.clone();
        m.update(&(key.len() as u32).to_be_bytes());
        m.update(key.as_bytes());
        m.update(body);
        m.finalize().into_bytes().into()
    }

    /// The stored form of a positive verdict; None when it does not fit an entry (the local
    /// cache has the same limits).
    pub fn encode_positive(
        &self,
        key: &str,
        info: &Introspection,
        claims_json: &str,
        until: u64,
    ) -> Option<Vec<u8>> {
        let user = info.user.as_deref().unwrap_or("");
        let scope = info.scope.as_deref().unwrap_or("");
        if !info.active
            || user.is_empty()
            || user.len() > MAX_FIELD
            || scope.len() > MAX_FIELD
            || claims_json.len() > MAX_CLAIMS_JSON
        {
            return None;
        }
        let mut body = Vec::with_capacity(FIXED + user.len() + scope.len() + claims_json.len());
        body.push(VERSION);
        body.push(POSITIVE);
        body.extend_from_slice(&until.to_be_bytes());
        body.push(u8::from(info.exp.is_some()));
        body.extend_from_slice(&info.exp.unwrap_or(0).to_be_bytes());
        for field in [user, scope, claims_json] {
            body.extend_from_slice(&(field.len() as u16).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        Some(self.seal(key, body))
    }

    pub fn encode_negative(&self, key: &str, until: u64) -> Vec<u8> {
        let mut body = Vec::with_capacity(FIXED);
        body.push(VERSION);
        body.push(NEGATIVE);
        body.extend_from_slice(&until.to_be_bytes());
        body.extend_from_slice(&[0; 1 + 8 + 2 + 2 + 2]);
        self.seal(key, body)
    }

    fn seal(&self, key: &str, mut body: Vec<u8>) -> Vec<u8> {
        let mac = self.mac(key, &body);
        body.extend_from_slice(&mac);
        STANDARD_NO_PAD.encode(&body).into_bytes()
    }

    /// Reads a value found at `key`: the MAC first (constant time), then the content.
    pub fn decode(&self, key: &str, value: &[u8], now: u64) -> Result<Cached, EntryError> {
        if value.len() > MAX_VALUE {
            return Err(EntryError::Malformed);
        }
        let raw = STANDARD_NO_PAD
            .decode(value)
            .map_err(|_| EntryError::Malformed)?;
        if raw.len() < FIXED + MAC_LEN {
            return Err(EntryError::Malformed);
        }
        let (body, tag) = raw.split_at(raw.len() - MAC_LEN);
        let want = self.mac(key, body);
        if !bool::from(want.ct_eq(tag)) {
            return Err(EntryError::BadMac);
        }
        // From here on the bytes are our own; still parsed defensively.
        let mut r = Reader(body);
        if r.byte()? != VERSION {
            return Err(EntryError::Malformed);
        }
        let kind = r.byte()?;
        let until = r.u64()?;
        if until <= now {
            return Err(EntryError::Expired);
        }
        let has_exp = r.byte()? == 1;
        let exp = r.u64()? as i64;
        let user = r.text()?;
        let scope = r.text()?;
        let claims = r.text()?;
        match kind {
            NEGATIVE => Ok(Cached::Negative { until }),
            POSITIVE if !user.is_empty() => Ok(Cached::Positive {
                info: Introspection {
                    active: true,
                    user: Some(user),
                    exp: has_exp.then_some(exp),
                    scope: (!scope.is_empty()).then_some(scope),
                    claims: ClaimSet::from_json(&claims),
                },
                until,
            }),
            _ => Err(EntryError::Malformed),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], EntryError> {
        if self.0.len() < n {
            return Err(EntryError::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, EntryError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn text(&mut self) -> Result<String, EntryError> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| EntryError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn info() -> Introspection {
        Introspection {
            active: true,
            user: Some("alice".into()),
            exp: Some(5000),
            scope: Some("sip".into()),
            claims: ClaimSet::from_json(r#"{"groups":["a"],"username":"alice"}"#),
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let k = Keys::new(SECRET);
        let key = k.token_key(&[7; 32]);
        let v = k
            .encode_positive(&key, &info(), &info().claims.to_json(), 1100)
            .unwrap();
        match k.decode(&key, &v, 1000).unwrap() {
            Cached::Positive { info: got, until } => {
                assert_eq!(until, 1100);
                assert_eq!(got.user.as_deref(), Some("alice"));
                assert_eq!(got.exp, Some(5000));
                assert_eq!(got.scope.as_deref(), Some("sip"));
                assert_eq!(got.claims.to_json(), info().claims.to_json());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(k.decode(&key, &v, 1100), Err(EntryError::Expired));
        let n = k.encode_negative(&key, 1010);
        assert_eq!(
            k.decode(&key, &n, 1000),
            Ok(Cached::Negative { until: 1010 })
        );
    }

    #[test]
    fn forged_moved_and_foreign_entries_are_refused() {
        let k = Keys::new(SECRET);
        let key = k.token_key(&[1; 32]);
        let other_key = k.token_key(&[2; 32]);
        let v = k.encode_positive(&key, &info(), "{}", 2000).unwrap();
        // Copied under another token's key.
        assert_eq!(k.decode(&other_key, &v, 1000), Err(EntryError::BadMac));
        // Made with another secret.
        let stranger = Keys::new(b"another-secret-another-secret-another");
        let forged = stranger.encode_positive(&key, &info(), "{}", 2000).unwrap();
        assert_eq!(k.decode(&key, &forged, 1000), Err(EntryError::BadMac));
        // Any flipped bit.
        let raw = STANDARD_NO_PAD.decode(&v).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x40;
            let text = STANDARD_NO_PAD.encode(&bad).into_bytes();
            assert_eq!(
                k.decode(&key, &text, 1000),
                Err(EntryError::BadMac),
                "byte {i}"
            );
        }
        // Plain text an attacker might plant.
        for junk in [
            &b""[..],
            b"1",
            b"{\"active\":true,\"username\":\"alice\"}",
            &[b'A'; 5000],
        ] {
            assert!(k.decode(&key, junk, 1000).is_err());
        }
    }

    #[test]
    fn names_depend_on_secret_and_never_show_the_input() {
        let k = Keys::new(SECRET);
        let a = k.replay_key("abcdef", Some(1));
        assert!(a.starts_with("sso_auth:n:") && a.ends_with(":00000001"));
        assert!(!a.contains("abcdef"));
        assert_ne!(a, k.replay_key("abcdef", Some(2)));
        assert_ne!(a, k.replay_key("abcdef", None));
        assert!(k.replay_key("abcdef", None).ends_with(":-"));
        assert_ne!(
            a,
            Keys::new(b"another-secret-another-secret-another").replay_key("abcdef", Some(1))
        );
        let t = k.token_key(&[9; 32]);
        assert!(t.starts_with("sso_auth:t:") && t.len() == "sso_auth:t:".len() + 32);
    }

    #[test]
    fn oversized_results_are_not_encoded() {
        let k = Keys::new(SECRET);
        let mut big = info();
        big.user = Some("u".repeat(200));
        assert!(k.encode_positive("x", &big, "{}", 10).is_none());
        let mut inactive = info();
        inactive.active = false;
        assert!(k.encode_positive("x", &inactive, "{}", 10).is_none());
        let long_claims = "x".repeat(MAX_CLAIMS_JSON + 1);
        assert!(k.encode_positive("x", &info(), &long_claims, 10).is_none());
    }
}
