//! Whether the shared store is usable, as every process of the node sees it (two words in
//! shared memory, mapped before fork).
//!
//! Up: every request may use the store. A failed or too slow call turns it Down; the process
//! that makes that transition is the only one told to log it. While Down, no request waits
//! for the store: calls are skipped, except one probe per `RETRY_SECS` for the whole node,
//! made by whichever request comes first after that time. A probe that answers in time turns
//! it Up again, and the process that does so logs the recovery with the outage's length.
//!
//! The same memory holds the node's backlog of replay claims it could not make: a Digest
//! answer accepted during an outage (only for a nonce whose every use this node's table saw)
//! is queued here, and the first process to use the store again writes the claims there, so
//! that after the outage no other node accepts the same (nonce, nc). A full backlog refuses
//! (-3) rather than forget a claim.

use std::sync::atomic::Ordering;

use crate::core::shm::SharedCounters;

/// Seconds between two probes of a store that is down.
pub const RETRY_SECS: u64 = 2;

const DOWN_SINCE: usize = 0;
const NEXT_PROBE: usize = 1;
/// Backlog positions: reserved so far, and written to the store so far (both only grow).
const RESERVED: usize = 2;
const FLUSHED: usize = 3;
/// 0 = nobody is writing the backlog to the store, else the pid doing it.
const FLUSHING: usize = 4;
const SLOTS_AT: usize = 8;
/// Words per backlog slot: key tag (2), claim end of life, nc word (0 = not written yet,
/// 1 = no qop, n + 2 = nc n).
const SLOT_WORDS: usize = 4;
/// Claims a node can keep through one outage (32 KiB per 1024).
pub const BACKLOG_SLOTS: usize = 4096;

/// One claim waiting for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    pub tag: [u8; 16],
    pub nc: Option<u32>,
    /// Unix seconds after which the claim no longer matters.
    pub until: u64,
}

/// What a caller should do before a store call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The store is up: call it.
    Call,
    /// The store is down and this caller makes the node's next probe: call it.
    Probe,
    /// The store is down: do not call it.
    Skip,
}

/// A state change the caller logs (once per outage and node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The store just went down.
    WentDown,
    /// The store is back after an outage of this many seconds.
    CameBack(u64),
}

pub struct Health {
    /// [DOWN_SINCE]: unix seconds the outage began + 1 (0 = up); [NEXT_PROBE]: unix seconds.
    words: SharedCounters,
}

impl Health {
    /// Call before fork.
    pub fn new() -> std::io::Result<Health> {
        Ok(Health {
            words: SharedCounters::new(SLOTS_AT + BACKLOG_SLOTS * SLOT_WORDS)?,
        })
    }

    fn slot(&self, position: u64, field: usize) -> &std::sync::atomic::AtomicU64 {
        let index = (position % BACKLOG_SLOTS as u64) as usize;
        self.words.cell(SLOTS_AT + index * SLOT_WORDS + field)
    }

    /// Queues a claim for when the store is back; false when the backlog is full.
    pub fn defer(&self, claim: Deferred) -> bool {
        let reserved = self.words.cell(RESERVED);
        let flushed = self.words.cell(FLUSHED);
        let position = loop {
            let at = reserved.load(Ordering::Acquire);
            // The slot `at` reuses was written to the store already when this holds.
            if at - flushed.load(Ordering::Acquire) >= BACKLOG_SLOTS as u64 {
                return false;
            }
            if reserved
                .compare_exchange(at, at + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break at;
            }
        };
        let tag = claim.tag;
        self.slot(position, 0).store(
            u64::from_be_bytes(tag[..8].try_into().unwrap()),
            Ordering::Relaxed,
        );
        self.slot(position, 1).store(
            u64::from_be_bytes(tag[8..].try_into().unwrap()),
            Ordering::Relaxed,
        );
        self.slot(position, 2).store(claim.until, Ordering::Relaxed);
        let nc_word = claim.nc.map_or(1, |n| u64::from(n) + 2);
        // Written last: the slot is complete once this is seen.
        self.slot(position, 3).store(nc_word, Ordering::Release);
        true
    }

    /// Whether claims wait in the backlog (a cheap check before `flush`).
    pub fn has_backlog(&self) -> bool {
        self.words.cell(RESERVED).load(Ordering::Acquire)
            > self.words.cell(FLUSHED).load(Ordering::Acquire)
    }

    /// Writes queued claims with `write` (false: the store failed; stop there) unless another
    /// process is at it. Returns how many were written.
    pub fn flush(&self, me: u32, write: &mut dyn FnMut(&Deferred) -> bool) -> usize {
        let lock = self.words.cell(FLUSHING);
        if lock
            .compare_exchange(0, u64::from(me), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return 0;
        }
        let flushed = self.words.cell(FLUSHED);
        let end = self.words.cell(RESERVED).load(Ordering::Acquire);
        let mut at = flushed.load(Ordering::Acquire);
        let mut written = 0;
        while at < end {
            let nc_word = self.slot(at, 3).load(Ordering::Acquire);
            if nc_word == 0 {
                break; // reserved, not written yet: the next flush takes it
            }
            let mut tag = [0u8; 16];
            tag[..8].copy_from_slice(&self.slot(at, 0).load(Ordering::Relaxed).to_be_bytes());
            tag[8..].copy_from_slice(&self.slot(at, 1).load(Ordering::Relaxed).to_be_bytes());
            let claim = Deferred {
                tag,
                nc: (nc_word >= 2).then(|| (nc_word - 2) as u32),
                until: self.slot(at, 2).load(Ordering::Relaxed),
            };
            if !write(&claim) {
                break;
            }
            self.slot(at, 3).store(0, Ordering::Relaxed);
            at += 1;
            written += 1;
            flushed.store(at, Ordering::Release);
        }
        lock.store(0, Ordering::Release);
        written
    }

    pub fn is_down(&self) -> bool {
        self.words.cell(DOWN_SINCE).load(Ordering::Acquire) != 0
    }

    /// Decides whether this caller may use the store at `now` (unix seconds).
    pub fn gate(&self, now: u64) -> Gate {
        if !self.is_down() {
            return Gate::Call;
        }
        let next = self.words.cell(NEXT_PROBE);
        let due = next.load(Ordering::Acquire);
        if now < due {
            return Gate::Skip;
        }
        // Exactly one caller moves the probe time forward; it makes the probe.
        match next.compare_exchange(due, now + RETRY_SECS, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Gate::Probe,
            Err(_) => Gate::Skip,
        }
    }

    /// Reports how a call went (`ok`: answered within the time allowed).
    pub fn report(&self, ok: bool, now: u64) -> Option<Change> {
        let since = self.words.cell(DOWN_SINCE);
        if ok {
            let was = since.load(Ordering::Acquire);
            if was == 0 {
                return None;
            }
            return since
                .compare_exchange(was, 0, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Change::CameBack(now.saturating_sub(was - 1)));
        }
        self.words
            .cell(NEXT_PROBE)
            .store(now + RETRY_SECS, Ordering::Release);
        since
            .compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Change::WentDown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_is_reported_once_and_probed_sparingly() {
        let h = Health::new().unwrap();
        assert_eq!(h.gate(100), Gate::Call);
        assert_eq!(h.report(true, 100), None);
        assert_eq!(h.report(false, 100), Some(Change::WentDown));
        assert_eq!(h.report(false, 100), None, "one report per outage");
        assert!(h.is_down());
        assert_eq!(h.gate(100), Gate::Skip);
        assert_eq!(h.gate(101), Gate::Skip);
        assert_eq!(h.gate(102), Gate::Probe);
        assert_eq!(h.gate(102), Gate::Skip, "one probe per interval");
        assert_eq!(h.report(false, 102), None, "a failed probe stays silent");
        assert_eq!(h.gate(103), Gate::Skip);
        assert_eq!(h.gate(104), Gate::Probe);
        assert_eq!(h.report(true, 104), Some(Change::CameBack(4)));
        assert_eq!(h.report(true, 104), None);
        assert_eq!(h.gate(104), Gate::Call);
        assert_eq!(h.report(false, 200), Some(Change::WentDown), "a new outage");
    }

    #[test]
    fn backlog_keeps_every_claim_until_written() {
        let h = Health::new().unwrap();
        let claim = |i: u32| Deferred {
            tag: [i as u8; 16],
            nc: if i % 2 == 0 { Some(i) } else { None },
            until: 1000 + u64::from(i),
        };
        assert!(!h.has_backlog());
        for i in 0..10 {
            assert!(h.defer(claim(i)));
        }
        assert!(h.has_backlog());
        // The store fails after 3: the rest stays queued.
        let mut seen = Vec::new();
        let n = h.flush(1, &mut |c| {
            if seen.len() == 3 {
                return false;
            }
            seen.push(*c);
            true
        });
        assert_eq!(n, 3);
        assert_eq!(seen, vec![claim(0), claim(1), claim(2)]);
        let mut rest = Vec::new();
        assert_eq!(
            h.flush(1, &mut |c| {
                rest.push(*c);
                true
            }),
            7
        );
        assert_eq!(rest[0], claim(3));
        assert!(!h.has_backlog());
        // Full: refuses rather than overwrite an unwritten claim; room again once written.
        for i in 0..BACKLOG_SLOTS as u32 {
            assert!(h.defer(claim(i)));
        }
        assert!(!h.defer(claim(1)));
        assert_eq!(h.flush(1, &mut |_| true), BACKLOG_SLOTS);
        assert!(h.defer(claim(1)));
    }

    #[test]
    fn shared_with_forked_children() {
        let h = Health::new().unwrap();
        // SAFETY: the child only touches the shared words and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = if h.report(false, 50) == Some(Change::WentDown) {
                0
            } else {
                1
            };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0);
        assert!(h.is_down(), "the child's report is seen by the parent");
        assert_eq!(h.report(false, 51), None);
    }
}
