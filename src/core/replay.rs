//! Replay protection for Digest credentials across all workers of an instance: a (nonce, nc)
//! pair authenticates at most once, `nc` must grow for a nonce used with qop, and a nonce
//! without qop is single-use. State is a bounded shared table; entries die with the nonce.

use sha2::{Digest, Sha256};

use super::shm::{Found, SharedTable};

/// What the table remembers of one nonce.
#[repr(C)]
#[derive(Clone, Copy)]
struct NonceUse {
    /// Highest nc accepted so far (0 for a nonce used without qop).
    last_nc: u32,
    /// Explicit padding: slots hold no uninitialised bytes.
    _pad: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// This nonce (and nc) was already used.
    Replayed,
    /// No room to remember the nonce: refuse rather than risk accepting a replay.
    Full,
}

pub struct ReplayGuard {
    table: SharedTable<NonceUse>,
}

fn key_of(nonce: &str) -> [u8; 16] {
    let d = Sha256::digest(nonce.as_bytes());
    d[..16].try_into().unwrap()
}

impl ReplayGuard {
    /// Room for `slots` nonces in use at once. Call before fork.
    pub fn new(slots: usize) -> std::io::Result<ReplayGuard> {
        Ok(ReplayGuard {
            table: SharedTable::new(slots)?,
        })
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn bytes(&self) -> usize {
        self.table.bytes()
    }

    /// Records one use of `nonce` (valid until `expires_at`) with counter `nc` (None: no qop).
    /// Atomic across processes: of two simultaneous identical uses exactly one succeeds.
    pub fn record(
        &self,
        nonce: &str,
        nc: Option<u32>,
        expires_at: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        self.table.update(key_of(nonce), now, |found| match found {
            Found::Live(seen, _) => match nc {
                Some(n) if seen.last_nc != 0 && n > seen.last_nc => {
                    seen.last_nc = n;
                    Ok(())
                }
                _ => Err(ReplayError::Replayed),
            },
            Found::Vacant(slot) => {
                if nc == Some(0) {
                    return Err(ReplayError::Replayed);
                }
                slot.insert(
                    NonceUse {
                        last_nc: nc.unwrap_or(0),
                        _pad: 0,
                    },
                    expires_at,
                );
                Ok(())
            }
            Found::Full => Err(ReplayError::Full),
        })
    }
}

// No implicit padding inside a table slot (16-byte key + 8-byte expiry + this).
const _: () = assert!(std::mem::size_of::<NonceUse>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nc_must_grow_and_no_qop_is_single_use() {
        let g = ReplayGuard::new(64).unwrap();
        assert_eq!(g.record("n1", Some(1), 100, 10), Ok(()));
        assert_eq!(g.record("n1", Some(1), 100, 11), Err(ReplayError::Replayed));
        assert_eq!(g.record("n1", Some(2), 100, 12), Ok(()));
        assert_eq!(g.record("n1", Some(2), 100, 12), Err(ReplayError::Replayed));
        assert_eq!(g.record("n1", Some(1), 100, 12), Err(ReplayError::Replayed));
        assert_eq!(g.record("n2", None, 100, 10), Ok(()));
        assert_eq!(g.record("n2", None, 100, 10), Err(ReplayError::Replayed));
        assert_eq!(
            g.record("n2", Some(5), 100, 10),
            Err(ReplayError::Replayed),
            "no switching to qop"
        );
        assert_eq!(
            g.record("n3", Some(0), 100, 10),
            Err(ReplayError::Replayed),
            "nc starts at 1"
        );
        // After the nonce expired, its record is gone (and the nonce itself is stale anyway).
        assert_eq!(g.record("n2", None, 200, 100), Ok(()));
    }

    #[test]
    fn full_table_refuses() {
        let g = ReplayGuard::new(8).unwrap();
        let mut refused = 0;
        for i in 0..64 {
            if g.record(&format!("nonce-{i}"), None, 1000, 1) == Err(ReplayError::Full) {
                refused += 1;
            }
        }
        assert_eq!(refused, 64 - g.capacity());
    }
}
