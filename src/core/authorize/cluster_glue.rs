//! Where the shared store (`cachedb_url`) meets the decision: the cluster-wide replay claim on
//! the Digest path, and the second level of the token cache around an introspection. The
//! logic itself lives in `core::cluster`; this file only wires it to the Authorizer.

use std::borrow::Cow;

use super::*;
use crate::core::cluster::{self, Cluster, NonceOrigin, ReplayVerdict};

impl Authorizer {
    /// Gives this process's store connection to the engine (after fork).
    pub fn set_cluster(&mut self, cluster: Cluster) {
        self.cluster = Some(cluster);
    }

    pub fn has_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// After the node's own replay table accepted (nonce, nc): in shared mode, the store's
    /// claim decides. None: accept.
    /// `origin`: where the nonce was issued, as its MAC says (`Here`: this node during this
    /// start, so its local table saw every use; `Elsewhere`: another node or an earlier
    /// start, which only the store can vouch for).
    pub(super) fn cluster_replay_check(
        &mut self,
        nonce: &str,
        nc: Option<u32>,
        now: u64,
        origin: NonceOrigin,
    ) -> Option<Outcome> {
        let cluster = self.cluster.as_mut()?;
        let stats = &self.shared.stats;
        // The claim outlives the nonce everywhere: lifetime plus the clock skew nonces allow.
        let ttl = self.cfg.nonce_expire + CLAIM_SKEW_SECS;
        match cluster.decide_replay(stats, nonce, nc, ttl, now, origin) {
            ReplayVerdict::Accept => None,
            ReplayVerdict::Replayed => {
                stats.inc(Stat::ReplaysBlocked);
                stats.inc(Stat::CrossNodeReplaysBlocked);
                Some(Outcome::new(
                    Code::BadNonce,
                    "nonce reused on another node (replayed credentials or nc not increasing)",
                ))
            }
            ReplayVerdict::AskFresh => Some(Outcome::new(
                Code::StaleNonce,
                Cow::Borrowed(
                    "shared store unavailable: asking for a fresh nonce this node can vouch for",
                ),
            )),
        }
    }

    /// Before an introspection the local cache missed: the store's verdict, when there is a
    /// store and it has one, with the lifetimes the local cache may give it.
    pub(super) fn store_lookup(
        &mut self,
        id: &TokenId,
        now: u64,
    ) -> Option<(Introspection, cluster::LocalTtls)> {
        cluster::store_lookup(
            self.cluster.as_mut(),
            &self.shared.stats,
            id.bytes(),
            self.cfg.cache_ttl,
            self.cfg.negative_cache_ttl,
            now,
        )
    }

    /// After that introspection: its verdict to the store too. Returns the local lifetimes.
    pub(super) fn store_remember(
        &mut self,
        id: &TokenId,
        now: u64,
        answer: &Result<Introspection, SsoError>,
    ) -> cluster::LocalTtls {
        let cfg = &self.cfg;
        cluster::store_remember(
            self.cluster.as_mut(),
            &self.shared.stats,
            id.bytes(),
            cfg.cache_ttl,
            cfg.negative_cache_ttl,
            |info| claims_to_cache(cfg, info),
            now,
            answer,
        )
    }
}

/// Seconds a replay claim outlives `nonce_expire` (nodes' clocks may differ by this much).
const CLAIM_SKEW_SECS: u64 = 10;
