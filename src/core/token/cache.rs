//! Introspection results shared by every worker of an instance, so the SSO sees one request per
//! token per cache period rather than one per worker.
//!
//! Keyed by SHA-256 of the token (the raw token is never stored): 16 bytes index the table and
//! the other 16 are checked on every hit, so two tokens can only share an entry by a full
//! SHA-256 collision. Positive results live min(cache_ttl, exp - now); negative ones
//! `negative_ttl`. When a worker starts introspecting a token it leaves a "pending" mark, and
//! other workers seeing the same new token wait for its answer instead of asking the SSO too.

use sha2::{Digest, Sha256};

use crate::core::shm::{current_pid, read_key_racy, Found, SharedTable};
use crate::core::sso::Introspection;

/// Longest user name / scope kept in an entry; longer results are not cached.
const MAX_FIELD: usize = 127;

/// Room for the compact JSON of a token's claims: the entry is 2 KiB in all.
pub const MAX_CLAIMS_JSON: usize = 1760;

const POSITIVE: u8 = 1;
const NEGATIVE: u8 = 2;
const PENDING: u8 = 3;

#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    check: [u8; 16],
    state: u8,
    has_exp: u8,
    user_len: u8,
    scope_len: u8,
    /// Pid of the worker asking the SSO (PENDING only).
    owner: u32,
    exp: i64,
    claims_len: u16,
    user: [u8; MAX_FIELD],
    scope: [u8; MAX_FIELD],
    claims: [u8; MAX_CLAIMS_JSON],
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A live positive result, its claims as the compact JSON given to `store_positive`.
    Hit(Box<Introspection>),
    /// The SSO recently said this token is not active.
    NegativeHit,
    /// Nothing known; this caller now owns the pending mark and must `store_*` or `release`.
    Claimed,
    /// Nothing known and the table has no room for a mark: ask the SSO without one.
    Uncached,
    /// Another worker is asking the SSO right now.
    Pending,
}

pub struct SharedTokenCache {
    table: SharedTable<Entry>,
}

/// SHA-256 of a token: computed once per request, it keys the cache and names the token in
/// logs (a short prefix), so the raw token is never stored or printed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenId([u8; 32]);

impl TokenId {
    pub fn of(token: &str) -> TokenId {
        TokenId(Sha256::digest(token.as_bytes()).into())
    }

    /// The whole SHA-256 (the shared store derives its key name from it).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// First 8 hex digits, for log lines.
    pub fn fingerprint(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(8);
        for b in &self.0[..4] {
            text.push(DIGITS[usize::from(b >> 4)] as char);
            text.push(DIGITS[usize::from(b & 0x0f)] as char);
        }
        text
    }

    fn split(&self) -> ([u8; 16], [u8; 16]) {
        (
            self.0[..16].try_into().unwrap(),
            self.0[16..].try_into().unwrap(),
        )
    }
}

fn pid() -> u32 {
    current_pid()
}

impl SharedTokenCache {
    /// Room for `entries` tokens. Call before fork.
    pub fn new(entries: usize) -> std::io::Result<SharedTokenCache> {
        Ok(SharedTokenCache {
            table: SharedTable::new_cache(entries)?,
        })
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    pub fn bytes(&self) -> usize {
        self.table.bytes()
    }

    /// Looks the token up; on a miss, leaves a pending mark valid until `claim_until`.
    pub fn lookup(&self, token: &TokenId, now: u64, claim_until: u64) -> Lookup {
        self.lookup_into(token, now, claim_until, &mut None)
    }

    /// `lookup`, a hit filling the buffers of `spare` (a record recycled from an earlier
    /// request, taken) rather than new ones.
    pub fn lookup_into(
        &self,
        token: &TokenId,
        now: u64,
        claim_until: u64,
        spare: &mut Option<Box<Introspection>>,
    ) -> Lookup {
        let (key, check) = token.split();
        // A live result is read without the lock; anything else (a miss, a pending mark, an
        // index collision, a writer at work) is decided under it below.
        let mut info = spare.take().unwrap_or_default();
        let mut texts = HitTexts::of(&mut info);
        // SAFETY: `peek` hands over a pointer to an entry in shared memory.
        let head = self.table.peek(key, now, |e| unsafe { texts.copy_from(e) });
        match head {
            Some(h) if h.check == check && h.state == POSITIVE => {
                return Lookup::Hit(texts.into_hit(&h, info));
            }
            Some(h) if h.check == check && h.state == NEGATIVE => {
                *spare = Some(info);
                return Lookup::NegativeHit;
            }
            _ => *spare = Some(info),
        }
        self.table.update(key, now, |found| match found {
            Found::Live(e, expires_at) => {
                if e.check != check {
                    // Index collision with another token: not ours; leave it be.
                    return Lookup::Uncached;
                }
                match e.state {
                    POSITIVE => {
                        let mut info = spare.take().unwrap_or_default();
                        let mut texts = HitTexts::of(&mut info);
                        // SAFETY: `e` is the entry, in shared memory, under its lock.
                        let head = unsafe { texts.copy_from(e) };
                        Lookup::Hit(texts.into_hit(&head, info))
                    }
                    NEGATIVE => Lookup::NegativeHit,
                    _ if e.owner == pid() => {
                        // Our own stale mark (an earlier call of ours gave up): take it again.
                        *expires_at = claim_until;
                        Lookup::Claimed
                    }
                    _ => Lookup::Pending,
                }
            }
            Found::Vacant(slot) => {
                let mut e = blank(check);
                e.state = PENDING;
                e.owner = pid();
                slot.insert(e, claim_until);
                Lookup::Claimed
            }
            Found::Full => Lookup::Uncached,
        })
    }

    /// Stores a positive result for min(now + ttl, exp) with `claims_json` (compact JSON of
    /// the claims to keep); ttl 0 or a result that does not fit only clears the pending mark.
    pub fn store_positive(
        &self,
        token: &TokenId,
        info: &Introspection,
        claims_json: &str,
        now: u64,
        ttl: u64,
    ) {
        let until = match info.exp {
            Some(exp) if exp <= now as i64 => now,
            Some(exp) => (now + ttl).min(exp as u64),
            None => now + ttl,
        };
        let user = info.user.as_deref().unwrap_or("");
        let scope = info.scope.as_deref().unwrap_or("");
        let fits = info.active
            && !user.is_empty()
            && user.len() <= MAX_FIELD
            && scope.len() <= MAX_FIELD
            && claims_json.len() <= MAX_CLAIMS_JSON;
        if ttl == 0 || until <= now || !fits {
            self.release(token, now);
            return;
        }
        let (key, check) = token.split();
        let mut e = blank(check);
        e.state = POSITIVE;
        e.user[..user.len()].copy_from_slice(user.as_bytes());
        e.user_len = user.len() as u8;
        e.scope[..scope.len()].copy_from_slice(scope.as_bytes());
        e.scope_len = scope.len() as u8;
        e.claims[..claims_json.len()].copy_from_slice(claims_json.as_bytes());
        e.claims_len = claims_json.len() as u16;
        if let Some(exp) = info.exp {
            e.has_exp = 1;
            e.exp = exp;
        }
        self.put(key, e, until, now);
    }

    /// Remembers for `ttl` seconds that the token is not active.
    pub fn store_negative(&self, token: &TokenId, now: u64, ttl: u64) {
        if ttl == 0 {
            self.release(token, now);
            return;
        }
        let (key, check) = token.split();
        let mut e = blank(check);
        e.state = NEGATIVE;
        self.put(key, e, now + ttl, now);
    }

    /// Drops this caller's pending mark (the SSO call failed): others may try.
    pub fn release(&self, token: &TokenId, now: u64) {
        let (key, check) = token.split();
        self.table.update(key, now, |found| {
            if let Found::Live(e, expires_at) = found {
                if e.check == check && e.state == PENDING && e.owner == pid() {
                    *expires_at = 0;
                }
            }
        })
    }

    #[cfg(test)]
    fn table_base(&self) -> *const u8 {
        self.table.base_ptr()
    }

    fn put(&self, key: [u8; 16], entry: Entry, until: u64, now: u64) {
        self.table.update(key, now, |found| match found {
            Found::Live(e, expires_at) => {
                if e.check == entry.check || e.state == PENDING {
                    *e = entry;
                    *expires_at = until;
                }
            }
            Found::Vacant(slot) => slot.insert(entry, until),
            Found::Full => {}
        })
    }
}

/// Sets `out` to the `len` bytes at `src`, which a writer in another process may be changing
/// (the lock-free read of a hit). Volatile reads of the aligned 8-byte words that cover
/// them, so each byte is read once, whole words at a time, and the compiler assumes
/// nothing about what it read.
///
/// SAFETY: the 8-byte-aligned words around `src .. src + len` must be readable: true for
/// every field of an entry, which is 8-byte aligned and a whole number of words long.
unsafe fn copy_racy(out: &mut Vec<u8>, src: *const u8, len: usize) {
    let skip = src as usize % 8;
    let first = src.sub(skip) as *const u64;
    let words = (skip + len).div_ceil(8);
    out.clear();
    out.reserve(words * 8);
    let dst = out.as_mut_ptr();
    for i in 0..words {
        let word = std::ptr::read_volatile(first.add(i));
        std::ptr::write_unaligned(dst.add(i * 8) as *mut u64, word);
    }
    out.set_len(words * 8);
    out.copy_within(skip..skip + len, 0);
    out.truncate(len);
}

/// The fixed fields of an entry, read without the lock.
struct HitHead {
    check: [u8; 16],
    state: u8,
    has_exp: u8,
    exp: i64,
}

/// Buffers a lock-free hit copies its texts into: those of the recycled record, so that a
/// hit allocates nothing once they are large enough. Until `SharedTable::peek` confirms the
/// bucket did not change, what they hold may mix two writes; lengths are clamped, so they
/// are always safe to read, merely wrong, and then dropped.
struct HitTexts {
    user: Vec<u8>,
    scope: Vec<u8>,
    claims: Vec<u8>,
}

impl HitTexts {
    fn of(info: &mut Introspection) -> HitTexts {
        let bytes = |s: Option<String>| {
            let mut v = s.unwrap_or_default().into_bytes();
            v.clear();
            v
        };
        HitTexts {
            user: bytes(info.user.take()),
            scope: bytes(info.scope.take()),
            claims: bytes(info.claims.take_json()),
        }
    }

    /// SAFETY: `e` must point at an entry in the table's shared memory.
    unsafe fn copy_from(&mut self, e: *const Entry) -> HitHead {
        use std::ptr::{addr_of, read_volatile};
        let head = HitHead {
            check: read_key_racy(addr_of!((*e).check)),
            state: read_volatile(addr_of!((*e).state)),
            has_exp: read_volatile(addr_of!((*e).has_exp)),
            exp: read_volatile(addr_of!((*e).exp)),
        };
        // Only a positive result has text to copy.
        if head.state == POSITIVE {
            let user_len = usize::from(read_volatile(addr_of!((*e).user_len))).min(MAX_FIELD);
            let scope_len = usize::from(read_volatile(addr_of!((*e).scope_len))).min(MAX_FIELD);
            let claims_len =
                usize::from(read_volatile(addr_of!((*e).claims_len))).min(MAX_CLAIMS_JSON);
            copy_racy(&mut self.user, addr_of!((*e).user) as *const u8, user_len);
            copy_racy(
                &mut self.scope,
                addr_of!((*e).scope) as *const u8,
                scope_len,
            );
            copy_racy(
                &mut self.claims,
                addr_of!((*e).claims) as *const u8,
                claims_len,
            );
        }
        head
    }

    /// The positive result these texts were copied with, in `info` (the record they were
    /// taken from, or a new one): every field is set, nothing of an earlier token stays.
    fn into_hit(self, head: &HitHead, mut info: Box<Introspection>) -> Box<Introspection> {
        info.active = true;
        info.user = Some(into_text(self.user));
        info.exp = (head.has_exp == 1).then_some(head.exp);
        info.scope = (!self.scope.is_empty()).then(|| into_text(self.scope));
        info.claims.set_json(into_text(self.claims));
        info
    }
}

/// Stored text as a String in its own buffer (a damaged entry still reads, with
/// replacement characters).
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn blank(check: [u8; 16]) -> Entry {
    Entry {
        check,
        state: 0,
        has_exp: 0,
        user_len: 0,
        scope_len: 0,
        owner: 0,
        exp: 0,
        claims_len: 0,
        user: [0; MAX_FIELD],
        scope: [0; MAX_FIELD],
        claims: [0; MAX_CLAIMS_JSON],
    }
}

// No implicit padding: 16 + 4 + 4 + 8 + 2 + 2 * 127 + 1760 bytes, every byte written.
const _: () = assert!(std::mem::size_of::<Entry>() == 2048);
// `copy_racy` reads whole aligned words around each field.
const _: () = assert!(std::mem::align_of::<Entry>() == 8);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::token::claims::ClaimSet;
    use std::sync::atomic::Ordering;

    fn active(user: &str, exp: Option<i64>) -> Introspection {
        Introspection {
            active: true,
            user: Some(user.into()),
            exp,
            scope: Some("sip".into()),
            claims: Default::default(),
        }
    }

    #[test]
    fn hits_read_without_the_lock_never_mix_two_results() {
        // One writer keeps replacing a token's result (alice with her claims, then bob with
        // his) while readers look it up without the lock: every hit must be one whole
        // result, never alice's name with bob's claims or a cut text.
        let c = std::sync::Arc::new(SharedTokenCache::new(64).unwrap());
        let token = TokenId::of("shared-token");
        let long = |who: &str| format!(r#"{{"sub":"{who}","pad":"{}"}}"#, who.repeat(200));
        c.store_positive(&token, &active("alice", None), &long("alice"), 100, 3600);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let who = if n % 2 == 0 { "bob" } else { "alice" };
                    c.store_positive(&token, &active(who, None), &long(who), 100, 3600);
                    n += 1;
                }
                n
            })
        };
        let mut hits = 0;
        let mut spare = None;
        while hits < 200_000 {
            match c.lookup_into(&token, 101, 106, &mut spare) {
                Lookup::Hit(info) => {
                    let user = info.user.clone().expect("a hit has a user");
                    assert!(user == "alice" || user == "bob", "{user:?}");
                    assert_eq!(info.claims.get("sub"), Some(&serde_json::json!(user)));
                    assert_eq!(
                        info.claims.get("pad"),
                        Some(&serde_json::json!(user.repeat(200)))
                    );
                    hits += 1;
                    spare = Some(info);
                }
                other => panic!("a stored token must be found: {other:?}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0, "the writer ran");
    }

    #[test]
    fn fingerprint_is_the_first_hex_digits_of_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea ...
        assert_eq!(TokenId::of("abc").fingerprint(), "ba7816bf");
        assert_eq!(TokenId::of("").fingerprint(), "e3b0c442");
    }

    #[test]
    fn miss_claim_store_hit() {
        let c = SharedTokenCache::new(64).unwrap();
        assert_eq!(c.lookup(&TokenId::of("t1"), 100, 105), Lookup::Claimed);
        c.store_positive(
            &TokenId::of("t1"),
            &active("alice", Some(1000)),
            r#"{"groups":["g"]}"#,
            100,
            60,
        );
        match c.lookup(&TokenId::of("t1"), 120, 125) {
            Lookup::Hit(i) => {
                assert_eq!(i.user.as_deref(), Some("alice"));
                assert_eq!(i.exp, Some(1000));
                assert_eq!(i.scope.as_deref(), Some("sip"));
                assert_eq!(i.claims.get("groups"), Some(&serde_json::json!(["g"])));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.lookup(&TokenId::of("t1"), 160, 165),
            Lookup::Claimed,
            "ttl over"
        );
    }

    #[test]
    fn a_hit_into_a_recycled_record_keeps_nothing_of_the_earlier_token() {
        let c = SharedTokenCache::new(64).unwrap();
        let id = TokenId::of("bob-token");
        c.lookup(&id, 100, 105);
        let mut bob = active("bob", None);
        bob.scope = None;
        c.store_positive(&id, &bob, r#"{"groups":["b"]}"#, 100, 60);
        let fresh = c.lookup(&id, 110, 115);
        // The record of an earlier request: another user, a scope, exp, parsed claims.
        let mut earlier = active("alice-with-a-longer-name", Some(1000));
        earlier.claims = ClaimSet::from_json(r#"{"groups":["a"],"extra":1}"#);
        assert!(
            earlier.claims.get("extra").is_some(),
            "parsed before recycling"
        );
        let mut spare = Some(Box::new(earlier));
        let hit = c.lookup_into(&id, 110, 115, &mut spare);
        assert!(spare.is_none(), "the hit took the spare");
        assert_eq!(hit, fresh);
        let Lookup::Hit(info) = hit else {
            panic!("{hit:?}")
        };
        assert_eq!(info.user.as_deref(), Some("bob"));
        assert_eq!((info.exp, info.scope.as_deref()), (None, None));
        assert_eq!(info.claims.get("groups"), Some(&serde_json::json!(["b"])));
        assert_eq!(info.claims.get("extra"), None);
        // Anything but a hit leaves the spare for the next one.
        let mut spare = Some(Box::new(active("carol", None)));
        assert_eq!(
            c.lookup_into(&TokenId::of("new"), 110, 115, &mut spare),
            Lookup::Claimed
        );
        assert!(spare.is_some());
    }

    #[test]
    fn lifetime_never_passes_exp() {
        let c = SharedTokenCache::new(64).unwrap();
        c.lookup(&TokenId::of("t"), 100, 105);
        c.store_positive(&TokenId::of("t"), &active("bob", Some(110)), "{}", 100, 60);
        assert!(matches!(
            c.lookup(&TokenId::of("t"), 109, 115),
            Lookup::Hit(_)
        ));
        assert!(!matches!(
            c.lookup(&TokenId::of("t"), 110, 115),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn negative_and_off() {
        let c = SharedTokenCache::new(64).unwrap();
        c.lookup(&TokenId::of("bad"), 100, 105);
        c.store_negative(&TokenId::of("bad"), 100, 5);
        assert_eq!(c.lookup(&TokenId::of("bad"), 104, 110), Lookup::NegativeHit);
        assert_eq!(c.lookup(&TokenId::of("bad"), 105, 110), Lookup::Claimed);
        c.store_positive(&TokenId::of("bad"), &active("x", None), "{}", 105, 0);
        assert_eq!(
            c.lookup(&TokenId::of("bad"), 106, 110),
            Lookup::Claimed,
            "ttl 0 caches nothing"
        );
    }

    #[test]
    fn another_process_sees_pending_then_the_result() {
        let c = SharedTokenCache::new(64).unwrap();
        assert_eq!(c.lookup(&TokenId::of("shared"), 100, 110), Lookup::Claimed);
        // SAFETY: the child only reads the shared mapping and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = c.lookup(&TokenId::of("shared"), 101, 111) == Lookup::Pending;
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "child must see the pending mark");
        c.store_positive(
            &TokenId::of("shared"),
            &active("carol", None),
            "{}",
            102,
            60,
        );
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = matches!(c.lookup(&TokenId::of("shared"), 103, 113), Lookup::Hit(_));
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0, "child must see the stored result");
    }

    #[test]
    fn claims_too_large_are_not_cached() {
        let c = SharedTokenCache::new(64).unwrap();
        let id = TokenId::of("big");
        assert_eq!(c.lookup(&id, 100, 105), Lookup::Claimed);
        let big = format!("{{\"x\":\"{}\"}}", "y".repeat(MAX_CLAIMS_JSON));
        c.store_positive(&id, &active("alice", None), &big, 100, 60);
        assert_eq!(
            c.lookup(&id, 101, 106),
            Lookup::Claimed,
            "mark released, nothing kept"
        );
    }

    #[test]
    fn release_lets_others_claim() {
        let c = SharedTokenCache::new(64).unwrap();
        assert_eq!(c.lookup(&TokenId::of("r"), 100, 110), Lookup::Claimed);
        c.release(&TokenId::of("r"), 101);
        assert_eq!(c.lookup(&TokenId::of("r"), 102, 112), Lookup::Claimed);
    }

    #[test]
    fn raw_token_is_not_in_memory() {
        let c = SharedTokenCache::new(8).unwrap();
        let token = "very-secret-token-value-0123456789";
        c.lookup(&TokenId::of(token), 1, 2);
        c.store_positive(&TokenId::of(token), &active("alice", None), "{}", 1, 60);
        // SAFETY: reading the table's own mapping as bytes.
        let bytes = unsafe { std::slice::from_raw_parts(c.table_base(), c.bytes()) };
        assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
    }
}
