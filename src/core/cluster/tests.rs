//! The cluster logic against an in-memory store shared by two "nodes".

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::store::memory::MemoryStore;
use super::*;
use crate::core::token::claims::ClaimSet;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

static DOWN_NOTES: AtomicUsize = AtomicUsize::new(0);
static BACK_NOTES: AtomicUsize = AtomicUsize::new(0);

fn count_note(n: Note) {
    match n {
        Note::WentDown { .. } => DOWN_NOTES.fetch_add(1, Ordering::SeqCst),
        Note::CameBack(_) => BACK_NOTES.fetch_add(1, Ordering::SeqCst),
        Note::ForgedEntry => 0,
    };
}

fn ignore(_: Note) {}

fn node(store: &MemoryStore, note: fn(Note)) -> Cluster {
    Cluster::new(
        SECRET,
        200,
        Box::new(store.clone()),
        Arc::new(Health::new().unwrap()),
        note,
    )
}

fn alice() -> Introspection {
    Introspection {
        active: true,
        user: Some("alice".into()),
        exp: Some(10_000),
        scope: None,
        claims: ClaimSet::from_json(r#"{"username":"alice"}"#),
    }
}

#[test]
fn each_nonce_and_nc_is_claimed_once_across_nodes() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (node(&store, ignore), node(&store, ignore));
    let stats = Stats::new().unwrap();
    assert_eq!(a.claim(&stats, "n1", Some(1), 300, 10), Claim::First);
    assert_eq!(b.claim(&stats, "n1", Some(1), 300, 11), Claim::Used);
    assert_eq!(b.claim(&stats, "n1", Some(2), 300, 11), Claim::First);
    assert_eq!(a.claim(&stats, "n1", Some(2), 300, 12), Claim::Used);
    assert_eq!(a.claim(&stats, "n2", None, 300, 12), Claim::First);
    assert_eq!(b.claim(&stats, "n2", None, 300, 12), Claim::Used);
    // The TTL handed to the store is the one asked for.
    let ttls: Vec<u32> = store.state().values.values().map(|v| v.1).collect();
    assert!(ttls.iter().all(|t| *t == 300), "{ttls:?}");
    assert_eq!(stats.get(Stat::CachedbErrors), 0);
}

#[test]
fn verdicts_fail_closed() {
    use NonceOrigin::*;
    assert_eq!(replay_verdict(Claim::First, Unknown), ReplayVerdict::Accept);
    assert_eq!(replay_verdict(Claim::Used, Here), ReplayVerdict::Replayed);
    assert_eq!(
        replay_verdict(Claim::Unavailable, Here),
        ReplayVerdict::Accept
    );
    assert_eq!(
        replay_verdict(Claim::Unavailable, Elsewhere),
        ReplayVerdict::AskFresh
    );
    assert_eq!(
        replay_verdict(Claim::Unavailable, Unknown),
        ReplayVerdict::AskFresh
    );
}

#[test]
fn a_down_store_is_logged_once_skipped_and_recovered() {
    let store = MemoryStore::default();
    let mut a = node(&store, count_note);
    let stats = Stats::new().unwrap();
    store.state().down = true;
    let before = (
        DOWN_NOTES.load(Ordering::SeqCst),
        BACK_NOTES.load(Ordering::SeqCst),
    );
    assert_eq!(a.claim(&stats, "n", Some(1), 300, 100), Claim::Unavailable);
    let calls = store.state().calls;
    for _ in 0..50 {
        assert_eq!(a.claim(&stats, "n", Some(1), 300, 100), Claim::Unavailable);
        assert!(a.lookup_token(&stats, &[1; 32], 100).is_none());
    }
    assert_eq!(store.state().calls, calls, "no call while down");
    assert_eq!(stats.get(Stat::CachedbErrors), 1);
    assert_eq!(
        DOWN_NOTES.load(Ordering::SeqCst) - before.0,
        1,
        "logged once"
    );
    // Still down at the probe: no new note.
    assert_eq!(
        a.claim(&stats, "n", Some(1), 300, 100 + health::RETRY_SECS),
        Claim::Unavailable
    );
    assert_eq!(DOWN_NOTES.load(Ordering::SeqCst) - before.0, 1);
    store.state().down = false;
    let t = 100 + 2 * health::RETRY_SECS;
    assert_eq!(a.claim(&stats, "n", Some(1), 300, t), Claim::First);
    assert_eq!(BACK_NOTES.load(Ordering::SeqCst) - before.1, 1);
    assert_eq!(a.claim(&stats, "n", Some(1), 300, t), Claim::Used);
}

#[test]
fn a_slow_store_counts_as_down() {
    let store = MemoryStore::default();
    let mut a = Cluster::new(
        SECRET,
        20,
        Box::new(store.clone()),
        Arc::new(Health::new().unwrap()),
        ignore,
    );
    let stats = Stats::new().unwrap();
    store.state().delay = Duration::from_millis(40);
    // The slow answer is used ...
    assert_eq!(a.claim(&stats, "n", Some(1), 300, 10), Claim::First);
    // ... but nobody waits for the store afterwards.
    let t0 = std::time::Instant::now();
    assert_eq!(a.claim(&stats, "n", Some(2), 300, 10), Claim::Unavailable);
    assert!(t0.elapsed() < Duration::from_millis(20));
    assert_eq!(stats.get(Stat::CachedbErrors), 1);
}

#[test]
fn second_level_serves_other_nodes_without_introspection() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (node(&store, ignore), node(&store, ignore));
    let stats = Stats::new().unwrap();
    let id = [5u8; 32];
    let asked = std::cell::Cell::new(0);
    let mut introspect = || -> Result<Introspection, ()> {
        asked.set(asked.get() + 1);
        Ok(alice())
    };
    let claims = |i: &Introspection| i.claims.to_json();
    let (got, ttls) = through_store(
        Some(&mut a),
        &stats,
        &id,
        60,
        5,
        claims,
        1000,
        &mut introspect,
    );
    assert_eq!(got.unwrap().user.as_deref(), Some("alice"));
    assert_eq!(ttls, (60, 5));
    let (got, ttls) = through_store(
        Some(&mut b),
        &stats,
        &id,
        60,
        5,
        claims,
        1030,
        &mut introspect,
    );
    assert_eq!(got.unwrap().claims.to_json(), alice().claims.to_json());
    assert_eq!(ttls.0, 30, "the local copy ends with the store entry");
    assert_eq!(asked.get(), 1);
    assert_eq!(stats.get(Stat::CachedbHits), 1);
    // After the entry's end the token is introspected again.
    let (_got, _) = through_store(
        Some(&mut b),
        &stats,
        &id,
        60,
        5,
        claims,
        1060,
        &mut introspect,
    );
    assert_eq!(asked.get(), 2);
}

#[test]
fn positive_entries_end_at_exp_and_negatives_are_brief() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (node(&store, ignore), node(&store, ignore));
    let stats = Stats::new().unwrap();
    let claims = |i: &Introspection| i.claims.to_json();
    let mut soon = || -> Result<Introspection, ()> {
        let mut i = alice();
        i.exp = Some(1010);
        Ok(i)
    };
    let _ = through_store(
        Some(&mut a),
        &stats,
        &[1; 32],
        60,
        5,
        claims,
        1000,
        &mut soon,
    );
    let ttl = store.state().values.values().next().unwrap().1;
    assert_eq!(ttl, 10, "min(cache_ttl, exp - now)");
    let mut dead = || -> Result<Introspection, ()> { Ok(inactive()) };
    let _ = through_store(
        Some(&mut a),
        &stats,
        &[2; 32],
        60,
        5,
        claims,
        1000,
        &mut dead,
    );
    let mut never = || -> Result<Introspection, ()> { panic!("must come from the store") };
    let (got, ttls) = through_store(
        Some(&mut b),
        &stats,
        &[2; 32],
        60,
        5,
        claims,
        1002,
        &mut never,
    );
    assert!(!got.unwrap().active);
    assert_eq!(ttls.1, 3);
    // Errors are not stored.
    let mut failing = || -> Result<Introspection, ()> { Err(()) };
    let _ = through_store(
        Some(&mut a),
        &stats,
        &[3; 32],
        60,
        5,
        claims,
        1000,
        &mut failing,
    );
    assert_eq!(store.state().values.len(), 2);
}

#[test]
fn a_planted_entry_never_authenticates() {
    let store = MemoryStore::default();
    let mut a = node(&store, ignore);
    let stats = Stats::new().unwrap();
    let id = [8u8; 32];
    let key = Keys::new(SECRET).token_key(&id);
    // What an attacker with write access to the store (but not the secret) can write.
    let stranger = Keys::new(b"not-the-secret-not-the-secret-not-the");
    let planted = stranger
        .encode_positive(&key, &alice(), "{}", 5000)
        .unwrap();
    for value in [planted, br#"{"active":true,"username":"alice"}"#.to_vec()] {
        store.state().values.insert(key.clone(), (value, 100));
        let mut refuse = || -> Result<Introspection, ()> { Ok(inactive()) };
        let (got, _) = through_store(
            Some(&mut a),
            &stats,
            &id,
            60,
            5,
            |i| i.claims.to_json(),
            1000,
            &mut refuse,
        );
        assert!(
            !got.unwrap().active,
            "the SSO decided, not the planted entry"
        );
    }
    assert_eq!(stats.get(Stat::CachedbBadEntries), 2);
    assert_eq!(stats.get(Stat::CachedbHits), 0);
}

#[test]
fn no_store_or_cache_off_is_plain_introspection() {
    let stats = Stats::new().unwrap();
    let mut n = 0;
    let mut f = || -> Result<Introspection, ()> {
        n += 1;
        Ok(alice())
    };
    let (r, t) = through_store(None, &stats, &[0; 32], 60, 5, |_| String::new(), 1, &mut f);
    assert!(r.is_ok() && t == (60, 5));
    let store = MemoryStore::default();
    let mut a = node(&store, ignore);
    let _ = through_store(
        Some(&mut a),
        &stats,
        &[0; 32],
        0,
        5,
        |_| String::new(),
        1,
        &mut f,
    );
    assert_eq!(store.state().calls, 0, "cache_ttl 0: no store either");
    assert_eq!(n, 2);
}

#[test]
fn uses_accepted_during_an_outage_are_claimed_when_the_store_returns() {
    let store = MemoryStore::default();
    let (mut a, mut b) = (node(&store, ignore), node(&store, ignore));
    let stats = Stats::new().unwrap();
    store.state().down = true;
    // Node a's own nonce: its table saw every use, so it may accept without the store.
    use NonceOrigin::*;
    assert_eq!(
        a.decide_replay(&stats, "mine", Some(1), 300, 100, Here),
        ReplayVerdict::Accept
    );
    assert_eq!(
        b.decide_replay(&stats, "mine", Some(1), 300, 100, Elsewhere),
        ReplayVerdict::AskFresh,
        "the other node cannot vouch for it"
    );
    store.state().down = false;
    // The first successful call of node a (any process) writes the queued claim ...
    let t = 100 + health::RETRY_SECS;
    assert_eq!(
        a.decide_replay(&stats, "other", Some(1), 300, t, Here),
        ReplayVerdict::Accept
    );
    // ... so after the outage the use made during it is refused on the other node too.
    assert_eq!(
        b.decide_replay(&stats, "mine", Some(1), 300, t + 2, Elsewhere),
        ReplayVerdict::Replayed
    );
    assert_eq!(
        b.decide_replay(&stats, "mine", Some(2), 300, t + 2, Elsewhere),
        ReplayVerdict::Accept
    );
}

#[test]
fn a_full_backlog_asks_for_a_fresh_nonce() {
    let store = MemoryStore::default();
    let mut a = node(&store, ignore);
    let stats = Stats::new().unwrap();
    store.state().down = true;
    for i in 0..health::BACKLOG_SLOTS {
        let nonce = format!("n{i}");
        assert_eq!(
            a.decide_replay(&stats, &nonce, None, 300, 100, NonceOrigin::Here),
            ReplayVerdict::Accept
        );
    }
    assert_eq!(
        a.decide_replay(&stats, "one-more", None, 300, 100, NonceOrigin::Here),
        ReplayVerdict::AskFresh
    );
}
