//! State shared by several OpenSIPS nodes through a store (OpenSIPS cachedb, e.g. Redis):
//! a cluster-wide replay guard and a second level of the token cache.
//!
//! The store is an addition, never a dependency: with it down or slow, the replay guard
//! still refuses every replay (nonces it cannot vouch for get -3, stale) and tokens fall back
//! to the local cache and introspection. No request waits for a store known to be down
//! ([`health`]); one call found slower than `cachedb_timeout` marks it down for the node.

pub mod entry;
pub mod health;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use self::entry::{Cached, EntryError, Keys};
use self::health::{Change, Deferred, Gate, Health};
use self::store::{Store, StoreFailed};
use super::sso::Introspection;
use super::stats::{Stat, Stats};

/// Something worth one log line; the FFI layer decides the level and writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The store stopped answering (or answered too slowly): logged once per outage.
    WentDown { slow: bool },
    /// The store answers again after this many seconds.
    CameBack(u64),
    /// A token entry failed its MAC check (written without the secret).
    ForgedEntry,
}

/// Where a nonce was issued, as far as this node can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceOrigin {
    /// By this node: its local replay table has seen every use of it.
    Here,
    /// By another node sharing the secret.
    Elsewhere,
    /// Cannot be told apart (nonces that do not name their node).
    Unknown,
}

/// What the store says about one use of (nonce, nc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use anywhere in the cluster.
    First,
    /// Already used (on this node or another).
    Used,
    /// The store cannot tell now (down, failed, or skipped while down).
    Unavailable,
}

/// The replay decision in shared mode, after the node's own table accepted the use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    Accept,
    /// Used before: -8.
    Replayed,
    /// The store cannot vouch for a nonce the local table may not have seen: -3.
    AskFresh,
}

/// Decides with the store's answer and the nonce's origin. Fails closed: only a first use
/// the store confirmed, or a nonce whose every use this node's table saw, passes.
pub fn replay_verdict(claim: Claim, origin: NonceOrigin) -> ReplayVerdict {
    match (claim, origin) {
        (Claim::First, _) => ReplayVerdict::Accept,
        (Claim::Used, _) => ReplayVerdict::Replayed,
        (Claim::Unavailable, NonceOrigin::Here) => ReplayVerdict::Accept,
        (Claim::Unavailable, _) => ReplayVerdict::AskFresh,
    }
}

/// One process's view of the store: its connection, the key material and the node-wide
/// health.
pub struct Cluster {
    keys: Keys,
    store: Box<dyn Store>,
    health: Arc<Health>,
    timeout: Duration,
    note: fn(Note),
}

impl Cluster {
    /// `secret` is the nonce secret (the same on every node); `timeout_ms` the longest a
    /// store call may take before the store counts as down.
    pub fn new(
        secret: &[u8],
        timeout_ms: u64,
        store: Box<dyn Store>,
        health: Arc<Health>,
        note: fn(Note),
    ) -> Cluster {
        Cluster {
            keys: Keys::new(secret),
            store,
            health,
            timeout: Duration::from_millis(timeout_ms),
            note,
        }
    }

    /// One store call through the health gate; None when skipped or failed.
    fn call<T>(
        &mut self,
        stats: &Stats,
        now: u64,
        f: impl FnOnce(&mut dyn Store) -> Result<T, StoreFailed>,
    ) -> Option<T> {
        if self.health.gate(now) == Gate::Skip {
            return None;
        }
        let started = Instant::now();
        let result = f(&mut *self.store);
        let slow = started.elapsed() > self.timeout;
        let ok = result.is_ok() && !slow;
        if !ok {
            stats.inc(Stat::CachedbErrors);
        }
        match self.health.report(ok, now) {
            Some(Change::WentDown) => (self.note)(Note::WentDown { slow }),
            Some(Change::CameBack(secs)) => (self.note)(Note::CameBack(secs)),
            None => {}
        }
        if ok && self.health.has_backlog() {
            self.flush_backlog(stats, now);
        }
        // A slow answer is still a true answer: use it, but the next requests will not wait.
        result.ok()
    }

    /// Writes the claims of uses accepted while the store was down (any process of the node
    /// may do it, the first to find the store answering again).
    fn flush_backlog(&mut self, stats: &Stats, now: u64) {
        let (store, timeout) = (&mut self.store, self.timeout);
        let mut failed = false;
        let mut batch = 0;
        self.health
            .flush(crate::core::shm::current_pid(), &mut |claim: &Deferred| {
                if claim.until <= now {
                    return true; // the nonce is dead everywhere: nothing to claim
                }
                // Bounds what one request waits for; the next store call goes on.
                batch += 1;
                if batch > FLUSH_BATCH {
                    return false;
                }
                let key = Keys::replay_key_of(&claim.tag, claim.nc);
                let started = Instant::now();
                let ttl = (claim.until - now).min(u64::from(u32::MAX)) as u32;
                let ok = store.add(&key, 1, ttl).is_ok() && started.elapsed() <= timeout;
                failed = !ok;
                ok
            });
        if failed {
            stats.inc(Stat::CachedbErrors);
            if self.health.report(false, now) == Some(Change::WentDown) {
                (self.note)(Note::WentDown { slow: false });
            }
        }
    }

    /// The replay decision in shared mode, after this node's table accepted (nonce, nc):
    /// the store's claim, else (store unavailable) the nonce's origin. A use accepted without
    /// the store is queued for it; with the queue full the client is asked for a fresh nonce.
    #[allow(clippy::too_many_arguments)]
    pub fn decide_replay(
        &mut self,
        stats: &Stats,
        nonce: &str,
        nc: Option<u32>,
        ttl: u64,
        now: u64,
        origin: NonceOrigin,
    ) -> ReplayVerdict {
        let claim = self.claim(stats, nonce, nc, ttl, now);
        let verdict = replay_verdict(claim, origin);
        if verdict == ReplayVerdict::Accept && claim == Claim::Unavailable {
            let queued = self.health.defer(Deferred {
                tag: self.keys.replay_tag(nonce),
                nc,
                until: now + ttl,
            });
            if !queued {
                return ReplayVerdict::AskFresh;
            }
        }
        verdict
    }

    /// Claims one use of (nonce, nc) for `ttl` seconds.
    pub fn claim(
        &mut self,
        stats: &Stats,
        nonce: &str,
        nc: Option<u32>,
        ttl: u64,
        now: u64,
    ) -> Claim {
        let key = self.keys.replay_key(nonce, nc);
        let ttl = ttl.clamp(1, u64::from(u32::MAX)) as u32;
        match self.call(stats, now, |s| s.add(&key, 1, ttl)) {
            Some(1) => Claim::First,
            // Anything else, a planted or wrapped counter included, is not a first use.
            Some(_) => Claim::Used,
            None => Claim::Unavailable,
        }
    }

    /// The stored verdict on a token, when there is a genuine, live one.
    pub fn lookup_token(
        &mut self,
        stats: &Stats,
        token_sha256: &[u8; 32],
        now: u64,
    ) -> Option<Cached> {
        let key = self.keys.token_key(token_sha256);
        let value = self.call(stats, now, |s| s.get(&key))??;
        match self.keys.decode(&key, &value, now) {
            Ok(found) => Some(found),
            Err(EntryError::BadMac) | Err(EntryError::Malformed) => {
                stats.inc(Stat::CachedbBadEntries);
                (self.note)(Note::ForgedEntry);
                None
            }
            Err(EntryError::Expired) => None,
        }
    }

    /// Stores a positive verdict until `until` (unix seconds).
    pub fn remember_positive(
        &mut self,
        stats: &Stats,
        token_sha256: &[u8; 32],
        info: &Introspection,
        claims_json: &str,
        until: u64,
        now: u64,
    ) {
        if until <= now {
            return;
        }
        let key = self.keys.token_key(token_sha256);
        if let Some(value) = self.keys.encode_positive(&key, info, claims_json, until) {
            let ttl = (until - now).min(u64::from(u32::MAX)) as u32;
            self.call(stats, now, |s| s.set(&key, &value, ttl));
        }
    }

    /// Stores that a token is not active, for `ttl` seconds.
    pub fn remember_negative(
        &mut self,
        stats: &Stats,
        token_sha256: &[u8; 32],
        ttl: u64,
        now: u64,
    ) {
        if ttl == 0 {
            return;
        }
        let key = self.keys.token_key(token_sha256);
        let value = self.keys.encode_negative(&key, now + ttl);
        let ttl = ttl.min(u64::from(u32::MAX)) as u32;
        self.call(stats, now, |s| s.set(&key, &value, ttl));
    }
}

/// Most queued claims one store call writes after an outage (each is one store round trip).
const FLUSH_BATCH: usize = 64;

/// Lifetimes the local cache should give a verdict: (positive, negative) seconds.
pub type LocalTtls = (u64, u64);

/// The second level of the token cache, around one introspection (`verify`): the store first;
/// on a miss `verify`, whose verdict then goes to the store too. Returns the verdict and how
/// long the local cache may keep it (no longer than the store entry has left, so a token is
/// never trusted past `cache_ttl` after its introspection, whichever node made it).
/// The blocking form of `store_lookup` / `store_remember`.
#[allow(clippy::too_many_arguments)]
pub fn through_store<E>(
    mut cluster: Option<&mut Cluster>,
    stats: &Stats,
    token_sha256: &[u8; 32],
    cache_ttl: u64,
    negative_ttl: u64,
    claims_json: impl Fn(&Introspection) -> String,
    now: u64,
    verify: &mut dyn FnMut() -> Result<Introspection, E>,
) -> (Result<Introspection, E>, LocalTtls) {
    if let Some(found) = store_lookup(
        cluster.as_deref_mut(),
        stats,
        token_sha256,
        cache_ttl,
        negative_ttl,
        now,
    ) {
        return (Ok(found.0), found.1);
    }
    let answer = verify();
    let ttls = store_remember(
        cluster,
        stats,
        token_sha256,
        cache_ttl,
        negative_ttl,
        claims_json,
        now,
        &answer,
    );
    (answer, ttls)
}

/// Before an introspection: the store's verdict on the token, if it has one, and the local
/// lifetimes that go with it. None: ask the SSO, then `store_remember` its answer.
pub fn store_lookup(
    cluster: Option<&mut Cluster>,
    stats: &Stats,
    token_sha256: &[u8; 32],
    cache_ttl: u64,
    negative_ttl: u64,
    now: u64,
) -> Option<(Introspection, LocalTtls)> {
    let cluster = cluster.filter(|_| cache_ttl > 0)?;
    match cluster.lookup_token(stats, token_sha256, now)? {
        Cached::Positive { info, until } => {
            stats.inc(Stat::CachedbHits);
            let left = until - now;
            Some((info, (left.min(cache_ttl), negative_ttl)))
        }
        Cached::Negative { until } => {
            stats.inc(Stat::CachedbHits);
            let left = until - now;
            Some((inactive(), (cache_ttl, left.min(negative_ttl))))
        }
    }
}

/// After an introspection the store did not know: its verdict goes to the store (an error
/// does not). Returns the local lifetimes.
#[allow(clippy::too_many_arguments)]
pub fn store_remember<E>(
    cluster: Option<&mut Cluster>,
    stats: &Stats,
    token_sha256: &[u8; 32],
    cache_ttl: u64,
    negative_ttl: u64,
    claims_json: impl Fn(&Introspection) -> String,
    now: u64,
    answer: &Result<Introspection, E>,
) -> LocalTtls {
    let (Some(cluster), Ok(info)) = (cluster.filter(|_| cache_ttl > 0), answer) else {
        return (cache_ttl, negative_ttl);
    };
    let live = info.active && info.user.is_some() && info.exp.is_none_or(|e| e > now as i64);
    if live {
        let until = match info.exp {
            Some(exp) => (now + cache_ttl).min(exp as u64),
            None => now + cache_ttl,
        };
        cluster.remember_positive(stats, token_sha256, info, &claims_json(info), until, now);
    } else {
        cluster.remember_negative(stats, token_sha256, negative_ttl, now);
    }
    (cache_ttl, negative_ttl)
}

fn inactive() -> Introspection {
    Introspection {
        active: false,
        user: None,
        exp: None,
        scope: None,
        claims: Default::default(),
    }
}

#[cfg(test)]
mod tests;
