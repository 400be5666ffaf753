//! Whether the shared store is usable, as every process of the node sees it (two words in
//! shared memory, mapped before fork).
//!
//! Up: every request may use the store. A failed or too slow call turns it Down; the process
//! that makes that transition is the only one told to log it. While Down, no request waits
//! for the store: calls are skipped, except one probe per `RETRY_SECS` for the whole node,
//! made by whichever request comes first after that time. A probe that answers in time turns
//! it Up again, and the process that does so logs the recovery with the outage's length.

use std::sync::atomic::Ordering;

use crate::core::shm::SharedCounters;

/// Seconds between two probes of a store that is down.
pub const RETRY_SECS: u64 = 2;

const DOWN_SINCE: usize = 0;
const NEXT_PROBE: usize = 1;

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
            words: SharedCounters::new(2)?,
        })
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
