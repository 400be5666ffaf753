//! Module statistics, counted in shared memory by every worker and read by OpenSIPS's
//! statistics engine (`get_statistics sso_auth:`) as function-backed values.

use super::shm::StripedCounters;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    TokenAccepted,
    TokenRejected,
    DigestAccepted,
    DigestRejected,
    ChallengesSent,
    SsoRequests,
    SsoErrors,
    SsoTimeouts,
    CacheHits,
    CacheMisses,
    ReplaysBlocked,
    CachedbErrors,
    CrossNodeReplaysBlocked,
    CachedbHits,
    CachedbBadEntries,
    /// Lookups of an SSO host name by the resolver process that failed.
    DnsFailures,
}

/// Every statistic with its exported name, in export order.
pub const ALL: [(Stat, &str); 16] = [
    (Stat::TokenAccepted, "token_accepted"),
    (Stat::TokenRejected, "token_rejected"),
    (Stat::DigestAccepted, "digest_accepted"),
    (Stat::DigestRejected, "digest_rejected"),
    (Stat::ChallengesSent, "challenges_sent"),
    (Stat::SsoRequests, "sso_requests"),
    (Stat::SsoErrors, "sso_errors"),
    (Stat::SsoTimeouts, "sso_timeouts"),
    (Stat::CacheHits, "cache_hits"),
    (Stat::CacheMisses, "cache_misses"),
    (Stat::ReplaysBlocked, "replays_blocked"),
    (Stat::CachedbErrors, "cachedb_errors"),
    (Stat::CrossNodeReplaysBlocked, "cross_node_replays_blocked"),
    (Stat::CachedbHits, "cachedb_hits"),
    (Stat::CachedbBadEntries, "cachedb_bad_entries"),
    (Stat::DnsFailures, "dns_failures"),
];

pub struct Stats {
    counters: StripedCounters,
}

impl Stats {
    /// Call before fork.
    pub fn new() -> std::io::Result<Stats> {
        Ok(Stats {
            counters: StripedCounters::new(ALL.len())?,
        })
    }

    pub fn inc(&self, stat: Stat) {
        self.counters.add(stat as usize, 1);
    }

    pub fn add(&self, stat: Stat, n: u64) {
        self.counters.add(stat as usize, n);
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.counters.get(stat as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_enum_order() {
        for (i, (stat, _)) in ALL.iter().enumerate() {
            assert_eq!(*stat as usize, i);
        }
        let s = Stats::new().unwrap();
        s.inc(Stat::CacheHits);
        s.inc(Stat::CacheHits);
        assert_eq!(s.get(Stat::CacheHits), 2);
        assert_eq!(s.get(Stat::CacheMisses), 0);
    }
}
