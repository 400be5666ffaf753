//! The module's own Digest nonces: issue time + random bytes + HMAC-SHA256 over both, keyed
//! with the `secret` parameter, so every node sharing the secret can verify them.
//! Layout (72 lower-case hex digits): [8-byte big-endian issue time][12 random bytes]
//! [first 16 bytes of HMAC-SHA256(key, time || random)].

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const TIME_LEN: usize = 8;
const RANDOM_LEN: usize = 12;
const MAC_LEN: usize = 16;
const RAW_LEN: usize = TIME_LEN + RANDOM_LEN + MAC_LEN;
/// Length of a nonce as text.
pub const NONCE_LEN: usize = RAW_LEN * 2;
/// How far in the future an issue time may lie (clock skew between cluster nodes).
const MAX_SKEW_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Bad encoding or MAC mismatch: not one of ours.
    Forged,
    /// Ours, but older than the lifetime (or issued in the future beyond a small skew).
    Expired,
}

pub struct NonceKey {
    key: Vec<u8>,
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl NonceKey {
    /// `secret` must be at least 32 bytes (checked by the configuration layer).
    pub fn new(secret: &[u8]) -> NonceKey {
        NonceKey {
            key: secret.to_vec(),
        }
    }

    fn mac(&self, signed: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(signed);
        mac
    }

    /// A fresh nonce for `now` (unix seconds) with the given random bytes; header-safe text.
    pub fn issue(&self, now: u64, random: &[u8; 12]) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[..TIME_LEN].copy_from_slice(&now.to_be_bytes());
        raw[TIME_LEN..TIME_LEN + RANDOM_LEN].copy_from_slice(random);
        let tag = self
            .mac(&raw[..TIME_LEN + RANDOM_LEN])
            .finalize()
            .into_bytes();
        raw[TIME_LEN + RANDOM_LEN..].copy_from_slice(&tag[..MAC_LEN]);
        raw.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Verifies MAC (constant time) then age: Ok(issue_time) when valid at `now`.
    pub fn verify(&self, nonce: &str, now: u64, lifetime_secs: u64) -> Result<u64, NonceError> {
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
        let (signed, tag) = raw.split_at(TIME_LEN + RANDOM_LEN);
        self.mac(signed)
            .verify_truncated_left(tag)
            .map_err(|_| NonceError::Forged)?;
        let issued = u64::from_be_bytes(signed[..TIME_LEN].try_into().unwrap());
        if issued > now + MAX_SKEW_SECS || now.saturating_sub(issued) > lifetime_secs {
            return Err(NonceError::Expired);
        }
        Ok(issued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip() {
        let k = NonceKey::new(KEY);
        let n = k.issue(1000, &[7; 12]);
        assert_eq!(n.len(), NONCE_LEN);
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(k.verify(&n, 1000, 300), Ok(1000));
        assert_eq!(
            k.verify(&n, 1300, 300),
            Ok(1000),
            "valid up to the lifetime"
        );
        assert_eq!(k.verify(&n, 1301, 300), Err(NonceError::Expired));
        assert_eq!(
            k.verify(&n, 990, 300),
            Err(NonceError::Expired),
            "from the future beyond skew"
        );
        assert_eq!(k.verify(&n, 996, 300), Ok(1000), "small skew accepted");
        assert_ne!(n, k.issue(1000, &[8; 12]));
    }

    #[test]
    fn tampering_and_other_keys_are_forged() {
        let k = NonceKey::new(KEY);
        let n = k.issue(1000, &[1; 12]);
        for i in 0..n.len() {
            let mut b = n.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let t = String::from_utf8(b).unwrap();
            assert_eq!(k.verify(&t, 1000, 300), Err(NonceError::Forged), "byte {i}");
        }
        let other = NonceKey::new(b"another-key-another-key-another!!");
        assert_eq!(other.verify(&n, 1000, 300), Err(NonceError::Forged));
        // Re-signing a shifted time is impossible without the key: moving the clock forward
        // in the time field breaks the MAC.
        let mut b = n.into_bytes();
        b[14] = b'f';
        assert_eq!(
            k.verify(&String::from_utf8(b).unwrap(), 1000, 300),
            Err(NonceError::Forged)
        );
    }

    #[test]
    fn garbage_is_forged() {
        let k = NonceKey::new(KEY);
        for g in [
            "",
            "abc",
            &"g".repeat(NONCE_LEN),
            &"A".repeat(NONCE_LEN),
            &"0".repeat(NONCE_LEN + 2),
            "é".repeat(36).as_str(),
        ] {
            assert_eq!(k.verify(g, 1000, 300), Err(NonceError::Forged), "{g:?}");
        }
    }
}
