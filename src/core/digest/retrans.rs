//! What the module answered to a Digest request, kept for the UDP retransmissions of that
//! request (same top Via, Call-ID, CSeq and credentials): they get the same answer instead of
//! a replay refusal, for as long as a client retransmits (64*T1 = 32 s, RFC 3261 17.1.2.2).
//! A retransmission that arrives while the first copy still waits for the SSO waits for its
//! answer.
//!
//! Nothing readable is stored: an entry is found by an HMAC of the request's identity and
//! credentials under the module secret, and the token it holds is encrypted and authenticated
//! with a key derived the same way (HMAC-SHA256 in counter mode as the key stream). Only the
//! retransmitted request itself can find and open its entry.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::core::shm::{Found, SharedTable};

type HmacSha256 = Hmac<Sha256>;

/// How long an answer is kept: a UDP client retransmits a non-INVITE request for 64*T1.
pub const WINDOW_SECS: u64 = 32;
/// Longest token remembered; a longer one is not kept (its retransmissions are challenged
/// with stale=true, so the client signs again without asking its user).
pub const MAX_TOKEN_LEN: usize = 1536;

const PENDING: u8 = 1;
const DONE: u8 = 2;

/// One remembered answer, as stored in shared memory.
#[repr(C)]
#[derive(Clone, Copy)]
struct Remembered {
    state: u8,
    /// The return code (i8 range: -8..2).
    code: i8,
    token_len: u16,
    _pad: [u8; 4],
    tag: [u8; 16],
    sealed: [u8; MAX_TOKEN_LEN],
}

// No implicit padding inside a slot (16-byte key + 8-byte expiry + this, a multiple of 8).
const _: () = assert!(std::mem::size_of::<Remembered>() == 24 + MAX_TOKEN_LEN);
const _: () = assert!(std::mem::size_of::<Remembered>() % 8 == 0);

/// The parts of a request that a retransmission repeats byte for byte, and where it came
/// from: a copy sent from another address is not a retransmission (its answer would go to
/// that address).
#[derive(Debug, Clone, Copy)]
pub struct TransactionId<'a> {
    pub via: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: &'a [u8],
    /// Transport, address family, source address (zero-padded) and port, as the FFI layer
    /// encodes them.
    pub source: [u8; 20],
}

/// Derives lookup ids and sealing keys from the module secret.
pub struct RetransKey {
    keyed: HmacSha256,
}

/// A request's entry id and the key that seals its token: both derived, never stored together
/// with anything that could rebuild them.
pub struct Fingerprint {
    id: [u8; 16],
    seal: [u8; 32],
}

impl RetransKey {
    pub fn new(secret: &[u8]) -> RetransKey {
        RetransKey {
            keyed: HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"),
        }
    }

    /// Fingerprint of a request: its transaction identity plus the credentials that decided.
    pub fn fingerprint(&self, t: &TransactionId, credentials: &[u8]) -> Fingerprint {
        let derive = |label: &[u8]| {
            let mut mac = self.keyed.clone();
            mac.update(label);
            for part in [&t.source[..], t.via, t.call_id, t.cseq, credentials] {
                mac.update(&(part.len() as u32).to_be_bytes());
                mac.update(part);
            }
            let out: [u8; 32] = mac.finalize().into_bytes().into();
            out
        };
        let id = derive(b"sso_auth retransmission id\0");
        let seal = derive(b"sso_auth retransmission seal\0");
        Fingerprint {
            id: id[..16].try_into().unwrap(),
            seal,
        }
    }
}

impl Fingerprint {
    fn stream_xor(&self, data: &mut [u8]) {
        for (i, chunk) in data.chunks_mut(32).enumerate() {
            let mut mac = HmacSha256::new_from_slice(&self.seal).expect("any key length");
            mac.update(b"stream");
            mac.update(&(i as u32).to_be_bytes());
            let block = mac.finalize().into_bytes();
            for (b, k) in chunk.iter_mut().zip(block.iter()) {
                *b ^= k;
            }
        }
    }

    fn tag_mac(&self, code: i8, sealed: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.seal).expect("any key length");
        mac.update(b"tag");
        mac.update(&[code as u8]);
        mac.update(&(sealed.len() as u16).to_be_bytes());
        mac.update(sealed);
        mac
    }
}

/// What the table knows about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never seen, expired, or its entry does not open with this fingerprint.
    Unknown,
    /// The first copy is still being decided (waiting for the SSO).
    Pending,
    /// Decided: the code, and the token when the answer carried one.
    Done(i8, Option<String>),
}

pub struct RetransTable {
    table: SharedTable<Remembered>,
}

impl RetransTable {
    /// Room for `slots` remembered answers. Call before fork.
    pub fn new(slots: usize) -> std::io::Result<RetransTable> {
        Ok(RetransTable {
            table: SharedTable::new(slots)?,
        })
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn bytes(&self) -> usize {
        self.table.bytes()
    }

    /// Marks the request as being decided until `until`. False when there is no room (its
    /// retransmissions are then treated as replays).
    pub fn begin(&self, fp: &Fingerprint, now: u64, until: u64) -> bool {
        let pending = Remembered {
            state: PENDING,
            code: 0,
            token_len: 0,
            _pad: [0; 4],
            tag: [0; 16],
            sealed: [0; MAX_TOKEN_LEN],
        };
        self.table.update(fp.id, now, |found| match found {
            Found::Live(v, exp) => {
                *v = pending;
                *exp = until;
                true
            }
            Found::Vacant(slot) => {
                slot.insert(pending, until);
                true
            }
            Found::Full => false,
        })
    }

    /// Stores the answer for `WINDOW_SECS`. A token too long to keep drops the entry.
    pub fn finish(&self, fp: &Fingerprint, code: i8, token: Option<&str>, now: u64) {
        let bytes = token.map(str::as_bytes).unwrap_or_default();
        if bytes.len() > MAX_TOKEN_LEN {
            self.table.remove(fp.id, now);
            return;
        }
        let mut sealed = [0u8; MAX_TOKEN_LEN];
        sealed[..bytes.len()].copy_from_slice(bytes);
        fp.stream_xor(&mut sealed[..bytes.len()]);
        let tag: [u8; 32] = fp
            .tag_mac(code, &sealed[..bytes.len()])
            .finalize()
            .into_bytes()
            .into();
        let done = Remembered {
            state: DONE,
            code,
            token_len: bytes.len() as u16,
            _pad: [0; 4],
            tag: tag[..16].try_into().unwrap(),
            sealed,
        };
        let until = now + WINDOW_SECS;
        self.table.update(fp.id, now, |found| match found {
            Found::Live(v, exp) => {
                *v = done;
                *exp = until;
            }
            Found::Vacant(slot) => slot.insert(done, until),
            Found::Full => {}
        })
    }

    /// Forgets the request (its first copy ended without an answer worth repeating).
    pub fn abandon(&self, fp: &Fingerprint, now: u64) {
        self.table.remove(fp.id, now)
    }

    pub fn lookup(&self, fp: &Fingerprint, now: u64) -> Seen {
        let entry = self.table.update(fp.id, now, |found| match found {
            Found::Live(v, _) => Some(*v),
            _ => None,
        });
        let Some(e) = entry else {
            return Seen::Unknown;
        };
        match e.state {
            PENDING => Seen::Pending,
            DONE => {
                let len = (e.token_len as usize).min(MAX_TOKEN_LEN);
                let mut data = e.sealed;
                let opened = &mut data[..len];
                if fp
                    .tag_mac(e.code, opened)
                    .verify_truncated_left(&e.tag)
                    .is_err()
                {
                    return Seen::Unknown;
                }
                if len == 0 {
                    return Seen::Done(e.code, None);
                }
                fp.stream_xor(opened);
                match std::str::from_utf8(opened) {
                    Ok(t) => Seen::Done(e.code, Some(t.to_string())),
                    Err(_) => Seen::Unknown,
                }
            }
            _ => Seen::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tid<'a>(branch: &'a [u8], cseq: &'a [u8]) -> TransactionId<'a> {
        TransactionId {
            via: branch,
            call_id: b"call-1@host",
            cseq,
            source: [1; 20],
        }
    }

    #[test]
    fn same_request_same_answer_other_requests_nothing() {
        let k = RetransKey::new(SECRET);
        let t = RetransTable::new(64).unwrap();
        let fp = k.fingerprint(
            &tid(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"2 REGISTER"),
            b"Digest a",
        );
        assert_eq!(t.lookup(&fp, 100), Seen::Unknown);
        assert!(t.begin(&fp, 100, 103));
        assert_eq!(t.lookup(&fp, 101), Seen::Pending);
        t.finish(&fp, 2, Some("tok-123"), 101);
        assert_eq!(t.lookup(&fp, 102), Seen::Done(2, Some("tok-123".into())));
        assert_eq!(
            t.lookup(&fp, 101 + WINDOW_SECS),
            Seen::Unknown,
            "kept for the window only"
        );

        t.finish(&fp, 2, Some("tok-123"), 200);
        for other in [
            k.fingerprint(
                &tid(b"SIP/2.0/UDP h;branch=z9hG4bK2", b"2 REGISTER"),
                b"Digest a",
            ),
            k.fingerprint(
                &tid(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"3 REGISTER"),
                b"Digest a",
            ),
            k.fingerprint(
                &tid(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"2 REGISTER"),
                b"Digest b",
            ),
            RetransKey::new(b"another-secret-another-secret-!!").fingerprint(
                &tid(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"2 REGISTER"),
                b"Digest a",
            ),
        ] {
            assert_eq!(t.lookup(&other, 201), Seen::Unknown);
        }
        // Field boundaries count: moving bytes between fields is another request.
        let a = k.fingerprint(
            &TransactionId {
                via: b"ab",
                call_id: b"c",
                cseq: b"1",
                source: [0; 20],
            },
            b"x",
        );
        let b = k.fingerprint(
            &TransactionId {
                via: b"a",
                call_id: b"bc",
                cseq: b"1",
                source: [0; 20],
            },
            b"x",
        );
        assert_ne!(a.id, b.id);
        // The same datagram from another address or port is another request.
        let mut moved = tid(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"2 REGISTER");
        moved.source[19] ^= 1;
        t.finish(&fp, 2, Some("tok-123"), 300);
        assert_eq!(t.lookup(&fp, 301), Seen::Done(2, Some("tok-123".into())));
        assert_eq!(
            t.lookup(&k.fingerprint(&moved, b"Digest a"), 301),
            Seen::Unknown
        );
    }

    #[test]
    fn failures_and_abandon() {
        let k = RetransKey::new(SECRET);
        let t = RetransTable::new(64).unwrap();
        let fp = k.fingerprint(&tid(b"v", b"1 INVITE"), b"Digest c");
        t.begin(&fp, 10, 13);
        t.finish(&fp, -2, None, 11);
        assert_eq!(t.lookup(&fp, 12), Seen::Done(-2, None));
        t.begin(&fp, 20, 23);
        t.abandon(&fp, 21);
        assert_eq!(t.lookup(&fp, 21), Seen::Unknown);
        // A pending mark dies on its own when its worker never finishes.
        t.begin(&fp, 30, 33);
        assert_eq!(t.lookup(&fp, 33), Seen::Unknown);
        // A token too long to keep is not kept.
        let long = "t".repeat(MAX_TOKEN_LEN + 1);
        t.begin(&fp, 40, 43);
        t.finish(&fp, 2, Some(&long), 41);
        assert_eq!(t.lookup(&fp, 41), Seen::Unknown);
        let longest = "u".repeat(MAX_TOKEN_LEN);
        t.finish(&fp, 2, Some(&longest), 41);
        assert_eq!(t.lookup(&fp, 41), Seen::Done(2, Some(longest)));
    }

    #[test]
    fn the_token_is_not_in_shared_memory() {
        let k = RetransKey::new(SECRET);
        let t = RetransTable::new(64).unwrap();
        let token = "very-secret-session-token-value";
        let fp = k.fingerprint(&tid(b"v", b"1 REGISTER"), b"Digest response=\"abc\"");
        t.finish(&fp, 2, Some(token), 1);
        // SAFETY: the table's mapping is `bytes()` long and lives as long as `t`.
        let mem = unsafe { std::slice::from_raw_parts(t.table.base_ptr(), t.bytes()) };
        assert!(!mem.windows(token.len()).any(|w| w == token.as_bytes()));
        assert!(!mem.windows(8).any(|w| w == &token.as_bytes()[..8]));
        // Tampering with the stored bytes is noticed.
        assert_eq!(t.lookup(&fp, 2), Seen::Done(2, Some(token.into())));
        t.table.update(fp.id, 2, |found| {
            if let Found::Live(v, _) = found {
                v.sealed[0] ^= 1;
            }
        });
        assert_eq!(t.lookup(&fp, 2), Seen::Unknown);
    }
}
