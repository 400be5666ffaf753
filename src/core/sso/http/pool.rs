//! Per-process state both drivers share: idle keep-alive connections by origin, and the
//! count of exchanges in flight against `max_connections`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::conn::Conn;
use super::Origin;

/// An idle connection older than this is closed rather than reused: servers commonly drop
/// idle keep-alive connections after a minute or so.
const MAX_IDLE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Pool {
    idle: HashMap<Origin, Vec<Conn>>,
    /// Idle connections kept per origin.
    keep: usize,
}

impl Pool {
    pub fn new(keep: usize) -> Pool {
        Pool {
            idle: HashMap::new(),
            keep,
        }
    }

    /// The most recently used idle connection to `origin` that still looks alive.
    pub fn take(&mut self, origin: &Origin) -> Option<Conn> {
        let list = self.idle.get_mut(origin)?;
        while let Some(mut conn) = list.pop() {
            if conn.idle_since.elapsed() < MAX_IDLE && conn.idle_usable() {
                conn.reused = true;
                return Some(conn);
            }
            // dropped: closed
        }
        None
    }

    pub fn put(&mut self, origin: &Origin, mut conn: Conn) {
        let list = self.idle.entry(origin.clone()).or_default();
        if list.len() >= self.keep {
            return;
        }
        conn.idle_since = std::time::Instant::now();
        list.push(conn);
    }

    /// Idle connections held (tests).
    pub fn idle(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }
}

/// Exchanges in flight in this process; a `Slot` is one of them until dropped.
#[derive(Clone, Default)]
pub struct Slots {
    busy: Arc<AtomicUsize>,
}

pub struct Slot {
    busy: Arc<AtomicUsize>,
}

impl Slots {
    /// A slot if fewer than `max` are taken.
    pub fn take(&self, max: usize) -> Option<Slot> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot {
            busy: self.busy.clone(),
        })
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
