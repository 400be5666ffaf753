//! Replay protection for Digest credentials across all workers of an instance: a (nonce, nc)
//! pair authenticates at most once, `nc` must grow for a nonce used with qop, and a nonce
//! without qop is single-use. State is a bounded shared table; entries die with the nonce.

use sha2::{Digest, Sha256};

use crate::core::shm::{Found, SharedCounters, SharedTable, WAYS};

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
    /// Per bucket: the latest issue time of a nonce that found both its buckets full. Such
    /// a nonce could not be recorded, so it (and any nonce of its buckets issued no later)
    /// is refused for the rest of its life: a request that was not recorded must never be
    /// accepted later, when room has come back.
    burned: SharedCounters,
}

fn key_of(nonce: &str) -> [u8; 16] {
    let d = Sha256::digest(nonce.as_bytes());
    d[..16].try_into().unwrap()
}

impl ReplayGuard {
    /// Room for `slots` nonces in use at once. Call before fork.
    pub fn new(slots: usize) -> std::io::Result<ReplayGuard> {
        let table = SharedTable::new(slots)?;
        let burned = SharedCounters::new(table.capacity() / WAYS)?;
        Ok(ReplayGuard { table, burned })
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn bytes(&self) -> usize {
        self.table.bytes() + self.burned.bytes()
    }

    /// Records one use of `nonce` (issued at `issued`, valid until `expires_at`) with counter
    /// `nc` (None: no qop). Atomic across processes: of two simultaneous identical uses
    /// exactly one succeeds.
    pub fn record(
        &self,
        nonce: &str,
        nc: Option<u32>,
        issued: u64,
        expires_at: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        let key = key_of(nonce);
        let (a, b) = self.table.buckets_for(&key);
        // Read and written only inside `update`, which holds the locks of both buckets.
        self.table.update(key, now, |found| match found {
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
                // `burned` holds issue time + 1 (0: nothing refused yet).
                if issued < self.burned.get(a).max(self.burned.get(b)) {
                    return Err(ReplayError::Full);
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
            Found::Full => {
                self.burned.raise(a, issued.saturating_add(1));
                self.burned.raise(b, issued.saturating_add(1));
                Err(ReplayError::Full)
            }
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
        assert_eq!(g.record("n1", Some(1), 5, 100, 10), Ok(()));
        assert_eq!(
            g.record("n1", Some(1), 5, 100, 11),
            Err(ReplayError::Replayed)
        );
        assert_eq!(g.record("n1", Some(2), 5, 100, 12), Ok(()));
        assert_eq!(
            g.record("n1", Some(2), 5, 100, 12),
            Err(ReplayError::Replayed)
        );
        assert_eq!(
            g.record("n1", Some(1), 5, 100, 12),
            Err(ReplayError::Replayed)
        );
        assert_eq!(g.record("n2", None, 5, 100, 10), Ok(()));
        assert_eq!(g.record("n2", None, 5, 100, 10), Err(ReplayError::Replayed));
        assert_eq!(
            g.record("n2", Some(5), 5, 100, 10),
            Err(ReplayError::Replayed),
            "no switching to qop"
        );
        assert_eq!(
            g.record("n3", Some(0), 5, 100, 10),
            Err(ReplayError::Replayed),
            "nc starts at 1"
        );
        // After the nonce expired, its record is gone (and the nonce itself is stale anyway).
        assert_eq!(g.record("n2", None, 5, 200, 100), Ok(()));
    }

    #[test]
    fn full_table_refuses() {
        let g = ReplayGuard::new(8).unwrap();
        let mut refused = 0;
        for i in 0..64 {
            if g.record(&format!("nonce-{i}"), None, 1, 1000, 1) == Err(ReplayError::Full) {
                refused += 1;
            }
        }
        assert_eq!(refused, 64 - g.capacity());
    }

    /// Issue 14 item 2: a nonce refused because the table was full must stay refused when
    /// room comes back (the captured header must never be accepted later); nonces issued
    /// after the overflow are recorded normally.
    #[test]
    fn nonce_refused_for_lack_of_room_stays_refused() {
        let g = ReplayGuard::new(8).unwrap();
        // Fill the table with nonces issued at 0, living until 301.
        let mut filled = 0;
        for i in 0..10_000 {
            if g.record(&format!("early-{i}"), None, 0, 301, 10).is_ok() {
                filled += 1;
            }
            if filled == g.capacity() {
                break;
            }
        }
        assert_eq!(filled, g.capacity());
        // A nonce issued at 100 (living until 401) finds no room.
        assert_eq!(
            g.record("late", None, 100, 401, 100),
            Err(ReplayError::Full)
        );
        assert_eq!(
            g.record("late", Some(1), 100, 401, 101),
            Err(ReplayError::Full)
        );
        // At 350 the early nonces are gone: the late one, replayed, is still refused...
        for nc in [None, Some(1), Some(2)] {
            assert_eq!(g.record("late", nc, 100, 401, 350), Err(ReplayError::Full));
        }
        // ... and so is anything of its buckets issued up to then; a fresh nonce is fine.
        assert_eq!(g.record("fresh", Some(1), 350, 651, 350), Ok(()));
        assert_eq!(
            g.record("fresh", Some(1), 350, 651, 351),
            Err(ReplayError::Replayed)
        );
        assert_eq!(g.record("fresh", Some(2), 350, 651, 351), Ok(()));
    }
}
