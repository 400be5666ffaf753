//! The module's own Digest nonces. A nonce says, under an HMAC-SHA256 keyed with the `secret`
//! parameter, when it was issued, by which node, during which start of that node, and for
//! which algorithm and qop offer; so any node sharing the secret can tell a genuine nonce
//! from a forged one, and the issuing node alone accepts it (without shared replay state a
//! node cannot know what another node, or its own previous life, already accepted).
//!
//! Layout (110 lower-case hex digits), every field covered by the MAC:
//! [1-byte format version][8-byte big-endian issue time][12 random bytes][8-byte node tag]
//! [8-byte start tag][1-byte algorithm][1-byte qop offer][first 16 bytes of the HMAC].

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::core::digest::challenge::QopOffer;
use crate::core::digest::Algorithm;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 2;
const TIME_LEN: usize = 8;
const RANDOM_LEN: usize = 12;
const TAG_LEN: usize = 8;
const MAC_LEN: usize = 16;
const SIGNED_LEN: usize = 1 + TIME_LEN + RANDOM_LEN + TAG_LEN + TAG_LEN + 2;
const RAW_LEN: usize = SIGNED_LEN + MAC_LEN;
/// Length of a nonce as text.
pub const NONCE_LEN: usize = RAW_LEN * 2;
/// How far in the future an issue time may lie (clock skew between cluster nodes).
const MAX_SKEW_SECS: u64 = 5;
/// Put in front of the signed bytes, so that this MAC can never be confused with another
/// use of the same secret.
const MAC_LABEL: &[u8] = b"sso_auth digest nonce\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Bad encoding or MAC mismatch: not one of ours.
    Forged,
    /// Genuine, but older than the lifetime (or issued in the future beyond a small skew).
    Expired,
}

/// Who issued a genuine nonce, as seen by the node verifying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// This node during its current start: its replay table has seen every use.
    Here,
    /// Another node sharing the secret.
    OtherNode,
    /// This node before its current start (its replay table then was another one).
    EarlierStart,
}

/// What a genuine, unexpired nonce says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonceInfo {
    pub issued: u64,
    pub algorithm: Algorithm,
    pub qop: QopOffer,
    pub issuer: Issuer,
}

/// The 8-byte tag a `node_id` value stands for in nonces.
pub fn node_tag(node_id: &str) -> [u8; TAG_LEN] {
    let mut h = Sha256::new();
    h.update(b"sso_auth node_id\0");
    h.update(node_id.as_bytes());
    h.finalize()[..TAG_LEN].try_into().unwrap()
}

const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::Md5,
    Algorithm::Md5Sess,
    Algorithm::Sha256,
    Algorithm::Sha256Sess,
    Algorithm::Sha512_256,
    Algorithm::Sha512_256Sess,
];
const QOPS: [QopOffer; 4] = [
    QopOffer::None,
    QopOffer::Auth,
    QopOffer::AuthInt,
    QopOffer::Both,
];

fn code_of<T: PartialEq>(table: &[T], v: &T) -> u8 {
    table
        .iter()
        .position(|x| x == v)
        .expect("every value is listed") as u8
}

pub struct NonceKey {
    /// HMAC state with the key and the label already absorbed: cloned per nonce instead of
    /// redoing the key schedule every time.
    keyed: HmacSha256,
    node: [u8; TAG_LEN],
    start: [u8; TAG_LEN],
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl NonceKey {
    /// `secret` must be at least 32 bytes (checked by the configuration layer). `node` is
    /// this node's tag ([`node_tag`] of `node_id`), `start` identifies this start of the
    /// node (random per start, the same in every worker).
    pub fn new(secret: &[u8], node: [u8; TAG_LEN], start: [u8; TAG_LEN]) -> NonceKey {
        let mut keyed = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        keyed.update(MAC_LABEL);
        NonceKey { keyed, node, start }
    }

    fn tag(&self, signed: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(signed);
        mac.finalize().into_bytes()[..MAC_LEN].try_into().unwrap()
    }

    /// A fresh nonce for `now` (unix seconds) with the given random bytes, valid only for
    /// answers with `algorithm` and a qop `qop` allows; header-safe text.
    pub fn issue(
        &self,
        now: u64,
        random: &[u8; RANDOM_LEN],
        algorithm: Algorithm,
        qop: QopOffer,
    ) -> String {
        let mut raw = [0u8; RAW_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            raw[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&[VERSION]);
        put(&now.to_be_bytes());
        put(random);
        put(&self.node);
        put(&self.start);
        put(&[code_of(&ALGORITHMS, &algorithm), code_of(&QOPS, &qop)]);
        let tag = self.tag(&raw[..SIGNED_LEN]);
        raw[SIGNED_LEN..].copy_from_slice(&tag);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(NONCE_LEN);
        for b in raw {
            text.push(HEX[(b >> 4) as usize] as char);
            text.push(HEX[(b & 15) as usize] as char);
        }
        text
    }

    /// Verifies the MAC (constant time) first, then the age; says who issued it (the caller
    /// decides whether a nonce of another node or start may be used: only with a shared
    /// replay store).
    pub fn verify(
        &self,
        nonce: &str,
        now: u64,
        lifetime_secs: u64,
    ) -> Result<NonceInfo, NonceError> {
        let text = nonce.as_bytes();
        if text.len() != NONCE_LEN {
            return Err(NonceError::Forged);
        }
        let mut raw = [0u8; RAW_LEN];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(NonceError::Forged)?;
            let lo = hex_value(pair[1]).ok_or(NonceError::Forged)?;
            raw[i] = hi << 4 | lo;
        }
        let (signed, tag) = raw.split_at(SIGNED_LEN);
        let mut mac = self.keyed.clone();
        mac.update(signed);
        mac.verify_truncated_left(tag)
            .map_err(|_| NonceError::Forged)?;
        // Genuine from here on: the fields are what a holder of the secret wrote.
        if signed[0] != VERSION {
            return Err(NonceError::Forged);
        }
        let issued = u64::from_be_bytes(signed[1..1 + TIME_LEN].try_into().unwrap());
        let mut at = 1 + TIME_LEN + RANDOM_LEN;
        let node = &signed[at..at + TAG_LEN];
        at += TAG_LEN;
        let start = &signed[at..at + TAG_LEN];
        at += TAG_LEN;
        let algorithm = *ALGORITHMS
            .get(signed[at] as usize)
            .ok_or(NonceError::Forged)?;
        let qop = *QOPS
            .get(signed[at + 1] as usize)
            .ok_or(NonceError::Forged)?;
        let issuer = if node != self.node {
            Issuer::OtherNode
        } else if start != self.start {
            Issuer::EarlierStart
        } else {
            Issuer::Here
        };
        // Saturating: a `now` near u64::MAX (broken clock, hostile test) must not overflow.
        if issued > now.saturating_add(MAX_SKEW_SECS) || now.saturating_sub(issued) > lifetime_secs
        {
            return Err(NonceError::Expired);
        }
        Ok(NonceInfo {
            issued,
            algorithm,
            qop,
            issuer,
        })
    }
}

/// Whether an answer's qop (None: no qop) is one the nonce's challenge offered.
pub fn qop_allowed(offer: QopOffer, answer: Option<&str>) -> bool {
    matches!(
        (offer, answer),
        (QopOffer::None, None)
            | (QopOffer::Auth, Some("auth"))
            | (QopOffer::AuthInt, Some("auth-int"))
            | (QopOffer::Both, Some("auth" | "auth-int"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NODE: [u8; 8] = [0xa1; 8];
    const START: [u8; 8] = [0x5a; 8];

    fn key() -> NonceKey {
        NonceKey::new(KEY, NODE, START)
    }

    fn md5(k: &NonceKey, now: u64, random: &[u8; 12]) -> String {
        k.issue(now, random, Algorithm::Md5, QopOffer::Auth)
    }

    fn issued(r: Result<NonceInfo, NonceError>) -> Result<u64, NonceError> {
        r.map(|i| i.issued)
    }

    #[test]
    fn round_trip() {
        let k = key();
        let n = md5(&k, 1000, &[7; 12]);
        assert_eq!(n.len(), NONCE_LEN);
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            k.verify(&n, 1000, 300),
            Ok(NonceInfo {
                issued: 1000,
                algorithm: Algorithm::Md5,
                qop: QopOffer::Auth,
                issuer: Issuer::Here,
            })
        );
        assert_eq!(
            issued(k.verify(&n, 1300, 300)),
            Ok(1000),
            "valid up to the lifetime"
        );
        assert_eq!(k.verify(&n, 1301, 300), Err(NonceError::Expired));
        assert_eq!(
            k.verify(&n, 990, 300),
            Err(NonceError::Expired),
            "from the future beyond skew"
        );
        assert_eq!(
            issued(k.verify(&n, 996, 300)),
            Ok(1000),
            "small skew accepted"
        );
        assert_ne!(n, md5(&k, 1000, &[8; 12]));
    }

    #[test]
    fn algorithm_and_qop_are_bound() {
        let k = key();
        for alg in ALGORITHMS {
            for qop in QOPS {
                let n = k.issue(1000, &[1; 12], alg, qop);
                let info = k.verify(&n, 1000, 300).unwrap();
                assert_eq!((info.algorithm, info.qop), (alg, qop));
            }
        }
        // The same time and randomness for two algorithms give two different nonces.
        assert_ne!(
            k.issue(1000, &[1; 12], Algorithm::Md5, QopOffer::Auth),
            k.issue(1000, &[1; 12], Algorithm::Sha256, QopOffer::Auth)
        );
        // Rewriting the algorithm or qop byte (a downgrade in transit) breaks the MAC.
        let n = k.issue(1000, &[1; 12], Algorithm::Sha256, QopOffer::Auth);
        let alg_at = 2 * (SIGNED_LEN - 2);
        for (at, byte) in [(alg_at, "00"), (alg_at + 2, "00")] {
            let mut t = n.clone();
            t.replace_range(at..at + 2, byte);
            assert_eq!(k.verify(&t, 1000, 300), Err(NonceError::Forged));
        }
        assert!(qop_allowed(QopOffer::None, None));
        assert!(!qop_allowed(QopOffer::None, Some("auth")));
        assert!(!qop_allowed(QopOffer::Auth, None));
        assert!(!qop_allowed(QopOffer::Auth, Some("auth-int")));
        assert!(!qop_allowed(QopOffer::AuthInt, Some("auth")));
        assert!(qop_allowed(QopOffer::Both, Some("auth-int")));
        assert!(qop_allowed(QopOffer::Both, Some("auth")));
        assert!(!qop_allowed(QopOffer::Both, None));
    }

    #[test]
    fn other_nodes_and_earlier_starts_are_told_apart_from_forgeries() {
        let here = key();
        let n = md5(&here, 1000, &[2; 12]);
        // Another node with the same secret: genuine, not ours.
        let issuer = |k: &NonceKey, now| k.verify(&n, now, 300).map(|i| i.issuer);
        let other = NonceKey::new(KEY, node_tag("sip-b"), START);
        assert_eq!(issuer(&other, 1000), Ok(Issuer::OtherNode));
        // This node after a restart: genuine, from an earlier life.
        let restarted = NonceKey::new(KEY, NODE, [0x5b; 8]);
        assert_eq!(issuer(&restarted, 1000), Ok(Issuer::EarlierStart));
        assert_eq!(issuer(&here, 1000), Ok(Issuer::Here));
        // Expiry applies whoever issued it.
        assert_eq!(issuer(&other, 1301), Err(NonceError::Expired));
        // Another secret: forged, whatever the node.
        let stranger = NonceKey::new(b"another-key-another-key-another!!", NODE, START);
        assert_eq!(stranger.verify(&n, 1000, 300), Err(NonceError::Forged));
        // The node tag is a function of node_id only.
        assert_eq!(node_tag("sip-a"), node_tag("sip-a"));
        assert_ne!(node_tag("sip-a"), node_tag("sip-b"));
    }

    #[test]
    fn tampering_and_other_keys_are_forged() {
        let k = key();
        let n = md5(&k, 1000, &[1; 12]);
        for i in 0..n.len() {
            let mut b = n.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let t = String::from_utf8(b).unwrap();
            assert_eq!(k.verify(&t, 1000, 300), Err(NonceError::Forged), "byte {i}");
        }
        // Re-signing a shifted time is impossible without the key.
        let mut b = n.into_bytes();
        b[14] = b'f';
        assert_eq!(
            k.verify(&String::from_utf8(b).unwrap(), 1000, 300),
            Err(NonceError::Forged)
        );
    }

    #[test]
    fn garbage_is_forged() {
        let k = key();
        for g in [
            "",
            "abc",
            &"g".repeat(NONCE_LEN),
            &"A".repeat(NONCE_LEN),
            &"0".repeat(NONCE_LEN + 2),
            &"0".repeat(72),
            "é".repeat(NONCE_LEN / 2).as_str(),
        ] {
            assert_eq!(k.verify(g, 1000, 300), Err(NonceError::Forged), "{g:?}");
        }
    }

    #[test]
    fn expiry_boundaries() {
        let k = key();
        let n = md5(&k, 5000, &[3; 12]);
        assert_eq!(
            issued(k.verify(&n, 5000, 0)),
            Ok(5000),
            "lifetime 0: its own second"
        );
        assert_eq!(k.verify(&n, 5001, 0), Err(NonceError::Expired));
        assert_eq!(
            issued(k.verify(&n, 4995, 60)),
            Ok(5000),
            "exactly the allowed skew"
        );
        assert_eq!(k.verify(&n, 4994, 60), Err(NonceError::Expired));
        assert_eq!(issued(k.verify(&n, 5060, 60)), Ok(5000));
        assert_eq!(k.verify(&n, 5061, 60), Err(NonceError::Expired));
        assert_eq!(issued(k.verify(&n, u64::MAX, u64::MAX)), Ok(5000));
        assert_eq!(k.verify(&n, u64::MAX, 60), Err(NonceError::Expired));
        assert_eq!(k.verify(&n, 0, 60), Err(NonceError::Expired));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let k = key();
        let late = md5(&k, u64::MAX, &[0; 12]);
        assert_eq!(issued(k.verify(&late, u64::MAX, 0)), Ok(u64::MAX));
        assert_eq!(issued(k.verify(&late, u64::MAX - 5, 10)), Ok(u64::MAX));
        assert_eq!(k.verify(&late, 0, u64::MAX), Err(NonceError::Expired));
        let early = md5(&k, 0, &[0xff; 12]);
        assert_eq!(issued(k.verify(&early, 0, 0)), Ok(0));
        assert_eq!(k.verify(&early, u64::MAX, 300), Err(NonceError::Expired));
    }

    #[test]
    fn layout_and_uniqueness() {
        let k = key();
        let n = md5(&k, 0x0102_0304_0506_0708, &[0xab; 12]);
        assert!(n.starts_with("020102030405060708abababababababababababab"));
        assert!(n[42..].starts_with(&"a1".repeat(8)), "node tag in clear");
        assert!(n[58..].starts_with(&"5a".repeat(8)), "start tag in clear");
        assert!(n[74..].starts_with("0001"), "MD5, qop auth");
        // Same inputs, same nonce (deterministic); any change in time or randomness shows.
        assert_eq!(n, md5(&k, 0x0102_0304_0506_0708, &[0xab; 12]));
        assert_ne!(n, md5(&k, 0x0102_0304_0506_0709, &[0xab; 12]));
        // An empty or short key still works (the configuration layer enforces the length).
        let weak = NonceKey::new(b"", NODE, START);
        let w = md5(&weak, 7, &[1; 12]);
        assert_eq!(issued(weak.verify(&w, 7, 1)), Ok(7));
        assert_eq!(k.verify(&w, 7, 1), Err(NonceError::Forged));
    }

    #[test]
    fn mac_is_checked_before_anything_else() {
        // A forged nonce must read as Forged whatever its claimed time or issuer, so a
        // client learns nothing from Expired / OtherNode / Forged without the key.
        let k = key();
        let mut b = md5(&k, 1000, &[9; 12]).into_bytes();
        b[NONCE_LEN - 1] = if b[NONCE_LEN - 1] == b'0' { b'1' } else { b'0' };
        let t = String::from_utf8(b).unwrap();
        assert_eq!(k.verify(&t, 1_000_000, 300), Err(NonceError::Forged));
        let other = NonceKey::new(KEY, [0; 8], [0; 8]);
        assert_eq!(other.verify(&t, 1000, 300), Err(NonceError::Forged));
    }

    #[test]
    fn never_panics_on_noise() {
        let k = key();
        let mut seed = 0xdead_beefu32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        let alphabet = b"0123456789abcdefABCDEFxyz \x00\xc3\xa9";
        for _ in 0..20_000 {
            let len = if next() % 2 == 0 {
                NONCE_LEN
            } else {
                (next() % 130) as usize
            };
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[next() as usize % alphabet.len()])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            assert!(k.verify(&text, 1000, 300).is_err());
        }
    }
}
