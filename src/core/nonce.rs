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
    /// HMAC state with the key already absorbed: cloned per nonce instead of redoing the
    /// key schedule (two SHA-256 blocks) every time.
    keyed: HmacSha256,
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
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    fn mac(&self, signed: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(NONCE_LEN);
        for b in raw {
            text.push(HEX[(b >> 4) as usize] as char);
            text.push(HEX[(b & 15) as usize] as char);
        }
        text
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
        let mut time = [0u8; TIME_LEN];
        time.copy_from_slice(&signed[..TIME_LEN]);
        let issued = u64::from_be_bytes(time);
        // Saturating: a `now` near u64::MAX (broken clock, hostile test) must not overflow.
        if issued > now.saturating_add(MAX_SKEW_SECS) || now.saturating_sub(issued) > lifetime_secs
        {
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

    #[test]
    fn expiry_boundaries() {
        let k = NonceKey::new(KEY);
        let n = k.issue(5000, &[3; 12]);
        assert_eq!(
            k.verify(&n, 5000, 0),
            Ok(5000),
            "lifetime 0: valid in its own second"
        );
        assert_eq!(k.verify(&n, 5001, 0), Err(NonceError::Expired));
        assert_eq!(k.verify(&n, 4995, 60), Ok(5000), "exactly the allowed skew");
        assert_eq!(k.verify(&n, 4994, 60), Err(NonceError::Expired));
        assert_eq!(k.verify(&n, 5060, 60), Ok(5000));
        assert_eq!(k.verify(&n, 5061, 60), Err(NonceError::Expired));
        assert_eq!(k.verify(&n, u64::MAX, u64::MAX), Ok(5000));
        assert_eq!(k.verify(&n, u64::MAX, 60), Err(NonceError::Expired));
        assert_eq!(k.verify(&n, 0, 60), Err(NonceError::Expired));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let k = NonceKey::new(KEY);
        let late = k.issue(u64::MAX, &[0; 12]);
        assert_eq!(k.verify(&late, u64::MAX, 0), Ok(u64::MAX));
        assert_eq!(k.verify(&late, u64::MAX - 5, 10), Ok(u64::MAX));
        assert_eq!(k.verify(&late, 0, u64::MAX), Err(NonceError::Expired));
        let early = k.issue(0, &[0xff; 12]);
        assert_eq!(k.verify(&early, 0, 0), Ok(0));
        assert_eq!(k.verify(&early, u64::MAX, 300), Err(NonceError::Expired));
    }

    #[test]
    fn layout_and_uniqueness() {
        let k = NonceKey::new(KEY);
        let n = k.issue(0x0102_0304_0506_0708, &[0xab; 12]);
        assert!(n.starts_with("0102030405060708abababababababababababab"));
        assert!(n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        // Same inputs, same nonce (deterministic); any change in time or randomness shows.
        assert_eq!(n, k.issue(0x0102_0304_0506_0708, &[0xab; 12]));
        assert_ne!(n, k.issue(0x0102_0304_0506_0709, &[0xab; 12]));
        // An empty or short key still works (the configuration layer enforces the length).
        let weak = NonceKey::new(b"");
        let w = weak.issue(7, &[1; 12]);
        assert_eq!(weak.verify(&w, 7, 1), Ok(7));
        assert_eq!(k.verify(&w, 7, 1), Err(NonceError::Forged));
    }

    #[test]
    fn mac_is_checked_before_age() {
        // A forged nonce must read as Forged whatever its claimed time, so a client cannot
        // learn anything from Expired vs Forged without the key.
        let k = NonceKey::new(KEY);
        let mut b = k.issue(1000, &[9; 12]).into_bytes();
        b[NONCE_LEN - 1] = if b[NONCE_LEN - 1] == b'0' { b'1' } else { b'0' };
        let t = String::from_utf8(b).unwrap();
        assert_eq!(k.verify(&t, 1_000_000, 300), Err(NonceError::Forged));
    }

    #[test]
    fn never_panics_on_noise() {
        let k = NonceKey::new(KEY);
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
                (next() % 100) as usize
            };
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[next() as usize % alphabet.len()])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            assert!(k.verify(&text, 1000, 300).is_err());
        }
    }
}
