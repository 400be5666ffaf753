//! Memory shared by every OpenSIPS process: an anonymous shared mapping made in the main
//! process before it forks its workers, and the structures living in it: a set-associative
//! table of fixed-size entries with one small lock per bucket (and a version word that lets
//! a hit be read without the lock), and rows of atomic counters. Plain data only (no
//! pointers), so any process can read what another wrote.

use std::io;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A fixed-size, zero-filled region shared with every child forked after `map`.
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory; every structure placed in it synchronises its own access.
unsafe impl Send for SharedRegion {}
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Maps `len` bytes shared with future children. Call before fork.
    pub fn map(len: usize) -> io::Result<SharedRegion> {
        let len = len.max(1);
        // SAFETY: an anonymous mapping with no address hint has no preconditions.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedRegion {
            ptr: NonNull::new(p as *mut u8).expect("mmap returned null"),
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Start of the mapping (page-aligned), for structures placed in it by other modules.
    pub fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping what `map` mapped; nothing borrows it past the owner's life.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

/// A lock word in shared memory holding the owner's pid and start time (0 = free). A waiter
/// that finds the owner dead (a worker killed inside the few instructions it holds the lock)
/// takes it over, so a crash can never wedge the other workers. The start time tells a dead
/// owner from a live process that got its pid later (pid reuse).
struct PidLock<'a> {
    word: &'a AtomicU64,
}

/// This process's pid, cached: glibc's getpid is a system call, and the lock takes it on every
/// request. A fork handler clears the cache in the child.
pub fn current_pid() -> u32 {
    static CACHED: AtomicU32 = AtomicU32::new(0);
    static HANDLER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget_in_child() {
        CACHED.store(0, Ordering::Relaxed);
        OWNER.store(0, Ordering::Relaxed);
    }
    HANDLER.call_once(|| {
        // SAFETY: registers a handler that only stores to atomics.
        unsafe { libc::pthread_atfork(None, None, Some(forget_in_child)) };
    });
    match CACHED.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() as u32 };
            CACHED.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// This process's lock word: pid in the low half, start time (low 32 bits) in the high half.
static OWNER: AtomicU64 = AtomicU64::new(0);

fn owner_word() -> u64 {
    match OWNER.load(Ordering::Relaxed) {
        0 => {
            let pid = current_pid();
            let word = u64::from(start_time(pid).unwrap_or(0)) << 32 | u64::from(pid);
            OWNER.store(word, Ordering::Relaxed);
            word
        }
        w => w,
    }
}

/// Low 32 bits of a process's start time (clock ticks after boot, field 22 of
/// /proc/<pid>/stat); None when it cannot be read.
fn start_time(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    let after = stat.rsplit_once(')')?.1;
    // Field 3 (state) is the first after the comm, so start time (22) is the 20th.
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks as u32)
}

/// Whether the owner recorded in a lock word is still the process that took the lock.
fn owner_alive(word: u64) -> bool {
    let pid = word as u32;
    let started = (word >> 32) as u32;
    // SAFETY: signal 0 only checks existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if rc != 0 {
        // ESRCH: gone. EPERM: the pid now belongs to another user, and every worker runs as
        // the same user: not our owner any more.
        return false;
    }
    // Alive under that pid: the same process only if it started when the owner did.
    match start_time(pid) {
        Some(now) => now == started || started == 0,
        None => true,
    }
}

impl<'a> PidLock<'a> {
    /// Returns the lock and whether it was taken over from a dead owner (whatever that
    /// owner was writing may be half-written).
    fn acquire(word: &'a AtomicU64) -> (PidLock<'a>, bool) {
        let me = owner_word();
        let mut spins: u32 = 0;
        loop {
            let cur = word.load(Ordering::Relaxed);
            if cur == 0 {
                if word
                    .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return (PidLock { word }, false);
                }
            } else if spins >= 10_000
                && !owner_alive(cur)
                && word
                    .compare_exchange(cur, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return (PidLock { word }, true);
            }
            spins = spins.saturating_add(1);
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Drop for PidLock<'_> {
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
    }
}

/// Entries per bucket of a SharedTable.
pub const WAYS: usize = 8;

/// A bucket's slots: slot i is a 16-byte key (all zero = empty), an expiry time and a
/// plain-data value. Keys and expiry times sit together at the bucket's head, so a lookup
/// scans three cache lines rather than one per slot (a value can be 2 KiB).
#[repr(C)]
struct Slots<V: Copy> {
    keys: [[u8; 16]; WAYS],
    expires: [u64; WAYS],
    values: [V; WAYS],
}

// Slots must have no implicit padding (values are plain data with explicit padding), so the
// shared memory never holds uninitialised bytes; checked by const asserts in the users.
#[repr(C)]
struct Bucket<V: Copy> {
    lock: AtomicU64,
    /// Odd while the lock's holder may be changing the slots, even otherwise, and raised by
    /// every holder: a reader that saw the same even value before and after its reads took a
    /// consistent copy without writing to the bucket (a seqlock, see `SharedTable::peek`).
    version: AtomicU64,
    slots: Slots<V>,
}

/// A bucket's lock, held: the version is odd until the guard drops, and raised to the next
/// even value just before the lock is released.
struct BucketGuard<'a> {
    version: &'a AtomicU64,
    after: u64,
    _lock: PidLock<'a>,
}

impl Drop for BucketGuard<'_> {
    // Runs before the lock field is dropped (released), so the new version is published
    // while the lock is still held.
    fn drop(&mut self) {
        self.version.store(self.after, Ordering::Release);
    }
}

/// A 16-byte key that a writer in another process may be changing, read as two volatile
/// words (a volatile read of the array itself is done byte by byte).
///
/// # Safety
/// `p` must be readable and 8-byte aligned.
pub unsafe fn read_key_racy(p: *const [u8; 16]) -> [u8; 16] {
    let words = p as *const u64;
    let (a, b) = (
        std::ptr::read_volatile(words),
        std::ptr::read_volatile(words.add(1)),
    );
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&a.to_ne_bytes());
    key[8..].copy_from_slice(&b.to_ne_bytes());
    key
}

/// The all-zero key marks an empty slot: a key that hashes to it is stored as all ones.
fn stored_key(key: [u8; 16]) -> [u8; 16] {
    if key == [0; 16] {
        [1; 16]
    } else {
        key
    }
}

/// What `SharedTable::update` found for a key.
pub enum Found<'s, V: Copy> {
    /// A live entry: (value, expires_at), both writable.
    Live(&'s mut V, &'s mut u64),
    /// No live entry; a free or expired slot can take it.
    Vacant(VacantSlot<'s, V>),
    /// No live entry and every slot of the bucket is live.
    Full,
}

pub struct VacantSlot<'s, V: Copy> {
    slots: &'s mut Slots<V>,
    index: usize,
    key: [u8; 16],
}

impl<V: Copy> VacantSlot<'_, V> {
    pub fn insert(self, value: V, expires_at: u64) {
        let i = self.index;
        self.slots.keys[i] = self.key;
        self.slots.expires[i] = expires_at;
        self.slots.values[i] = value;
    }
}

/// A bounded, set-associative key/value table in shared memory. Keys are 16-byte digests
/// (callers hash secrets before they get here); an entry lives until `expires_at`.
pub struct SharedTable<V: Copy> {
    region: SharedRegion,
    buckets: usize,
    /// Empty a bucket whose lock was taken over from a dead owner (a cache, whose entries
    /// may be half-written then); a replay table keeps them (forgetting a used nonce would
    /// let it be replayed, and what a dead owner was inserting had not been accepted yet).
    discard_on_takeover: bool,
    _v: PhantomData<V>,
}

impl<V: Copy> SharedTable<V> {
    /// Room for at least `entries` entries (rounded up to whole buckets). Call before fork.
    pub fn new(entries: usize) -> io::Result<SharedTable<V>> {
        assert!(align_of::<Bucket<V>>() <= 4096);
        let buckets = entries.div_ceil(WAYS).max(1);
        let region = SharedRegion::map(buckets * size_of::<Bucket<V>>())?;
        Ok(SharedTable {
            region,
            buckets,
            discard_on_takeover: false,
            _v: PhantomData,
        })
    }

    /// Like `new`, for a cache: a bucket taken over from a dead lock owner is emptied.
    pub fn new_cache(entries: usize) -> io::Result<SharedTable<V>> {
        let mut t = SharedTable::new(entries)?;
        t.discard_on_takeover = true;
        Ok(t)
    }

    pub fn capacity(&self) -> usize {
        self.buckets * WAYS
    }

    /// Bytes of shared memory the table uses.
    pub fn bytes(&self) -> usize {
        self.region.len()
    }

    /// Start of the mapping, for tests that inspect what is stored.
    #[cfg(test)]
    pub fn base_ptr(&self) -> *const u8 {
        self.region.base()
    }

    /// The two candidate buckets of a key ("two choices": an entry goes to the less loaded
    /// one, which keeps buckets from overflowing long before the table is full).
    fn buckets_of(&self, key: &[u8; 16]) -> (usize, usize) {
        let h1 = u64::from_le_bytes(key[..8].try_into().unwrap());
        let h2 = u64::from_le_bytes(key[8..].try_into().unwrap());
        let n = self.buckets as u64;
        ((h1 % n) as usize, (h2 % n) as usize)
    }

    /// The indexes (0..capacity/WAYS) of the two buckets `update` locks for `key`.
    pub fn buckets_for(&self, key: &[u8; 16]) -> (usize, usize) {
        self.buckets_of(&stored_key(*key))
    }

    fn bucket_ptr(&self, index: usize) -> *mut Bucket<V> {
        assert!(index < self.buckets);
        // SAFETY: index < buckets, and the region holds `buckets` buckets.
        unsafe { (self.region.base() as *mut Bucket<V>).add(index) }
    }

    fn lock(&self, index: usize) -> BucketGuard<'_> {
        // SAFETY: the lock and version words live in the shared region for the table's
        // lifetime.
        let (lock, taken_over) =
            PidLock::acquire(unsafe { &*std::ptr::addr_of!((*self.bucket_ptr(index)).lock) });
        let version = unsafe { &*std::ptr::addr_of!((*self.bucket_ptr(index)).version) };
        // Odd before any slot changes (a dead owner may have left it odd already); the fence
        // keeps the slot writes after it for a reader that syncs with its acquire fence.
        let odd = version.load(Ordering::Relaxed) | 1;
        version.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let guard = BucketGuard {
            version,
            after: odd.wrapping_add(1),
            _lock: lock,
        };
        if taken_over && self.discard_on_takeover {
            // SAFETY: the lock just acquired gives exclusive access to this bucket's slots.
            let slots = unsafe { &mut *std::ptr::addr_of_mut!((*self.bucket_ptr(index)).slots) };
            slots.keys = [[0; 16]; WAYS];
            slots.expires = [0; WAYS];
        }
        guard
    }

    /// The lock word of a bucket, for tests that play a dead owner.
    #[cfg(test)]
    pub fn lock_word(&self, index: usize) -> &AtomicU64 {
        // SAFETY: as in `lock`.
        unsafe { &*std::ptr::addr_of!((*self.bucket_ptr(index)).lock) }
    }

    /// Runs `f` on the key's entry under the locks of its buckets: read, change, insert or
    /// refuse. The all-zero key is reserved for empty slots and is remapped.
    pub fn update<R>(&self, key: [u8; 16], now: u64, f: impl FnOnce(Found<'_, V>) -> R) -> R {
        let key = stored_key(key);
        let (a, b) = self.buckets_of(&key);
        let scan = |slots: &Slots<V>| -> (Option<usize>, Option<usize>, usize) {
            let (mut hit, mut free, mut free_count) = (None, None, 0);
            for i in 0..WAYS {
                if slots.keys[i] != [0; 16] && slots.expires[i] > now {
                    if slots.keys[i] == key {
                        hit = Some(i);
                    }
                } else {
                    free_count += 1;
                    free.get_or_insert(i);
                }
            }
            (hit, free, free_count)
        };
        // Locks are taken lower index first, so two processes never wait on each other.
        // A live entry is changed under the locks taken so far: one found in the lower of
        // its two buckets (about half of all hits) costs one lock and one scan. Otherwise
        // the second bucket is locked and scanned too, once: a hit there, or an insert,
        // which chooses between both. No bucket is locked or scanned twice.
        let (first, second) = (a.min(b), a.max(b));
        let _lock_first = self.lock(first);
        // SAFETY: each bucket's slots are accessed only while this process holds that
        // bucket's lock (the guards drop at the end of this function); the slots are plain
        // data, and `first` and `second` are distinct buckets when both are taken.
        let slots_first = unsafe { &mut *std::ptr::addr_of_mut!((*self.bucket_ptr(first)).slots) };
        let scan_first = scan(slots_first);
        if let Some(i) = scan_first.0 {
            return f(Found::Live(
                &mut slots_first.values[i],
                &mut slots_first.expires[i],
            ));
        }
        let _lock_second = (second != first).then(|| self.lock(second));
        let mut slots_second: Option<&mut Slots<V>> = (second != first)
            .then(|| unsafe { &mut *std::ptr::addr_of_mut!((*self.bucket_ptr(second)).slots) });
        let scan_second = slots_second.as_deref().map_or((None, None, 0), scan);
        if let (Some(i), Some(slots)) = (scan_second.0, slots_second.as_deref_mut()) {
            return f(Found::Live(&mut slots.values[i], &mut slots.expires[i]));
        }
        // No live entry: the key's own first bucket `a` gets it unless `b` has more room.
        let ((_, free_a, count_a), (_, free_b, count_b)) = if first == a {
            (scan_first, scan_second)
        } else {
            (scan_second, scan_first)
        };
        let (slots_a, slots_b) = if first == a {
            (Some(slots_first), slots_second)
        } else {
            (slots_second, Some(slots_first))
        };
        let (slots, index) = match (free_a, free_b) {
            (Some(i), Some(_)) if count_a >= count_b => (slots_a.expect("a has a free slot"), i),
            (_, Some(i)) => (slots_b.expect("bucket b exists when it has a free slot"), i),
            (Some(i), None) => (slots_a.expect("a has a free slot"), i),
            (None, None) => return f(Found::Full),
        };
        f(Found::Vacant(VacantSlot { slots, index, key }))
    }

    /// Reads the key's live entry without taking a lock or writing to shared memory, so
    /// workers reading the same entry at once do not pull its bucket's cache line from each
    /// other or wait on its lock. `copy` gets the entry's value where it lives; a writer in
    /// another process may be changing it meanwhile, so `copy` must read it with volatile
    /// reads, accept any bytes without panicking, and trust nothing it copied before this
    /// returns. Its result is returned only if the bucket did not change during the read.
    /// None: no live entry was seen, or a writer was at work; `update` then decides under
    /// the lock.
    pub fn peek<R>(&self, key: [u8; 16], now: u64, copy: impl FnOnce(*const V) -> R) -> Option<R> {
        let key = stored_key(key);
        let (a, b) = self.buckets_of(&key);
        let (first, second) = (a.min(b), a.max(b));
        let buckets = [first, second];
        for &index in &buckets[..if first == second { 1 } else { 2 }] {
            let bucket = self.bucket_ptr(index);
            // SAFETY: the version word lives in the shared region for the table's lifetime.
            let version = unsafe { &*std::ptr::addr_of!((*bucket).version) };
            let before = version.load(Ordering::Acquire);
            if before & 1 == 1 {
                return None;
            }
            // SAFETY: in bounds of the bucket; volatile reads of plain data that another
            // process may be writing, checked against the version below before use.
            let slots = unsafe { std::ptr::addr_of!((*bucket).slots) };
            let keys = unsafe { std::ptr::addr_of!((*slots).keys) } as *const [u8; 16];
            let expires = unsafe { std::ptr::addr_of!((*slots).expires) } as *const u64;
            let values = unsafe { std::ptr::addr_of!((*slots).values) } as *const V;
            for i in 0..WAYS {
                if unsafe { read_key_racy(keys.add(i)) } != key {
                    continue;
                }
                if unsafe { std::ptr::read_volatile(expires.add(i)) } <= now {
                    return None;
                }
                let copied = copy(unsafe { values.add(i) });
                fence(Ordering::Acquire);
                return (version.load(Ordering::Relaxed) == before).then_some(copied);
            }
            // Not in this bucket, unless a writer was putting it there while we looked.
            fence(Ordering::Acquire);
            if version.load(Ordering::Relaxed) != before {
                return None;
            }
        }
        None
    }

    /// Evicts the key's entry if present.
    pub fn remove(&self, key: [u8; 16], now: u64) {
        self.update(key, now, |found| {
            if let Found::Live(_, expires_at) = found {
                *expires_at = 0;
            }
        })
    }
}

/// Rows of counters for the module's statistics. Every worker adds in the row its pid picks
/// (consecutive worker pids get rows of their own), and a reader sums the rows: workers
/// counting the same event at once do not pull one cache line from each other.
pub struct StripedCounters {
    region: SharedRegion,
    count: usize,
    /// Counters per row, rounded up to whole cache lines.
    row: usize,
}

const STRIPES: usize = 64;

impl StripedCounters {
    /// Call before fork.
    pub fn new(count: usize) -> io::Result<StripedCounters> {
        let row = count.div_ceil(8).max(1) * 8;
        Ok(StripedCounters {
            region: SharedRegion::map(STRIPES * row * size_of::<AtomicU64>())?,
            count,
            row,
        })
    }

    fn cell(&self, stripe: usize, index: usize) -> &AtomicU64 {
        assert!(
            index < self.count && stripe < STRIPES,
            "counter index out of range"
        );
        // SAFETY: in range, aligned (the mapping is page-aligned), zero-initialised atomics.
        unsafe { &*(self.region.base() as *const AtomicU64).add(stripe * self.row + index) }
    }

    pub fn add(&self, index: usize, n: u64) {
        let stripe = current_pid() as usize % STRIPES;
        self.cell(stripe, index).fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, index: usize) -> u64 {
        (0..STRIPES).fold(0u64, |sum, s| {
            sum.wrapping_add(self.cell(s, index).load(Ordering::Relaxed))
        })
    }

    /// Bytes of shared memory the counters use.
    pub fn bytes(&self) -> usize {
        self.region.len()
    }
}

/// A row of counters in shared memory: every process adds, anyone reads the sum.
pub struct SharedCounters {
    region: SharedRegion,
    count: usize,
}

impl SharedCounters {
    /// Call before fork.
    pub fn new(count: usize) -> io::Result<SharedCounters> {
        Ok(SharedCounters {
            region: SharedRegion::map(count * size_of::<AtomicU64>())?,
            count,
        })
    }

    /// One counter itself, for callers that need more than add/get (compare-exchange).
    pub fn cell(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.count, "counter index out of range");
        // SAFETY: in range, aligned (the mapping is page-aligned), zero-initialised atomics.
        unsafe { &*(self.region.base() as *const AtomicU64).add(index) }
    }

    pub fn add(&self, index: usize, n: u64) {
        self.cell(index).fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, index: usize) -> u64 {
        self.cell(index).load(Ordering::Relaxed)
    }

    /// Bytes of shared memory the counters use.
    pub fn bytes(&self) -> usize {
        self.region.len()
    }

    /// Raises the counter to `v` if it is lower.
    pub fn raise(&self, index: usize, v: u64) {
        self.cell(index).fetch_max(v, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Val {
        n: u32,
    }

    fn key(i: u8) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[0] = i;
        k[15] = 0xAA;
        k
    }

    fn get(t: &SharedTable<Val>, k: [u8; 16], now: u64) -> Option<u32> {
        t.update(k, now, |f| match f {
            Found::Live(v, _) => Some(v.n),
            _ => None,
        })
    }

    /// Stores `n` under `k` (which must be vacant) until `until`.
    fn put(t: &SharedTable<Val>, k: [u8; 16], n: u32, now: u64, until: u64) {
        t.update(k, now, |f| match f {
            Found::Vacant(v) => v.insert(Val { n }, until),
            _ => panic!("expected vacant"),
        });
    }

    fn peek_n(t: &SharedTable<Val>, k: [u8; 16], now: u64) -> Option<u32> {
        // SAFETY (test): the pointer is the entry's value in the table's memory.
        t.peek(k, now, |v| unsafe { std::ptr::read_volatile(v) }.n)
    }

    #[test]
    fn peek_reads_a_live_entry_only() {
        let t: SharedTable<Val> = SharedTable::new(64).unwrap();
        put(&t, key(1), 7, 100, 110);
        assert_eq!(peek_n(&t, key(1), 105), Some(7));
        assert_eq!(peek_n(&t, key(1), 110), None, "expired at expires_at");
        assert_eq!(peek_n(&t, key(2), 105), None, "never stored");
        // The all-zero key is stored remapped, and found again under its own name.
        put(&t, [0; 16], 9, 100, 200);
        assert_eq!(peek_n(&t, [0; 16], 105), Some(9));
    }

    #[test]
    fn peek_gives_up_while_the_bucket_is_being_written() {
        let t: SharedTable<Val> = SharedTable::new(64).unwrap();
        put(&t, key(1), 7, 100, 200);
        // Inside `update` this process holds the bucket's lock: its version is odd.
        let seen_inside = t.update(key(1), 100, |_| peek_n(&t, key(1), 105));
        assert_eq!(seen_inside, None);
        assert_eq!(
            peek_n(&t, key(1), 105),
            Some(7),
            "readable again after the write"
        );
    }

    #[test]
    fn peek_drops_a_copy_taken_while_a_writer_changed_the_bucket() {
        let t: SharedTable<Val> = SharedTable::new(64).unwrap();
        put(&t, key(1), 7, 100, 200);
        // A write that lands between the reader's copy and its check of the version.
        let got = t.peek(key(1), 105, |v| {
            let n = unsafe { std::ptr::read_volatile(v) }.n;
            t.update(key(1), 105, |f| {
                if let Found::Live(v, _) = f {
                    v.n = 8
                }
            });
            n
        });
        assert_eq!(got, None, "the copy of 7 is stale");
        assert_eq!(peek_n(&t, key(1), 105), Some(8));
    }

    #[test]
    fn striped_counters_sum_every_row() {
        let c = StripedCounters::new(3).unwrap();
        c.add(0, 2);
        c.add(2, 5);
        // Another process's row, written directly.
        c.cell((current_pid() as usize + 1) % STRIPES, 2)
            .fetch_add(4, Ordering::Relaxed);
        assert_eq!((c.get(0), c.get(1), c.get(2)), (2, 0, 9));
        assert_eq!(c.bytes(), STRIPES * 8 * 8);
    }

    #[test]
    fn insert_find_expire() {
        let t: SharedTable<Val> = SharedTable::new(64).unwrap();
        t.update(key(1), 100, |f| match f {
            Found::Vacant(v) => v.insert(Val { n: 7 }, 110),
            _ => panic!("expected vacant"),
        });
        assert_eq!(get(&t, key(1), 105), Some(7));
        assert_eq!(get(&t, key(1), 110), None, "expired at expires_at");
        t.update(key(1), 105, |f| {
            if let Found::Vacant(v) = f {
                v.insert(Val { n: 8 }, 200)
            }
        });
        t.remove(key(1), 106);
        assert_eq!(get(&t, key(1), 107), None);
    }

    #[test]
    fn full_bucket_is_reported_not_overwritten() {
        let t: SharedTable<Val> = SharedTable::new(WAYS).unwrap();
        assert_eq!(t.capacity(), WAYS);
        for i in 1..=WAYS as u8 {
            t.update(key(i), 0, |f| match f {
                Found::Vacant(v) => v.insert(Val { n: i as u32 }, 1000),
                _ => panic!("room expected"),
            });
        }
        let full = t.update(key(99), 0, |f| matches!(f, Found::Full));
        assert!(full);
        // After expiry the slots are reusable.
        let vacant = t.update(key(99), 1000, |f| matches!(f, Found::Vacant(_)));
        assert!(vacant);
    }

    #[test]
    fn two_choices_fill_the_table_before_refusing() {
        let t: SharedTable<Val> = SharedTable::new(65536).unwrap();
        let mut refused = 0;
        let total = t.capacity() * 9 / 10;
        for i in 0..total as u64 {
            // Spread keys like digests do.
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            k[8..].copy_from_slice(
                &i.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
                    .rotate_left(17)
                    .to_le_bytes(),
            );
            t.update(k, 0, |f| match f {
                Found::Vacant(v) => v.insert(Val { n: 1 }, 100),
                Found::Full => refused += 1,
                Found::Live(..) => {}
            });
        }
        // With one bucket per key, ~2% of inserts already fail at 75% load; with two
        // choices, 90% load is reached with next to no refusals.
        assert!(refused * 1000 < total, "{refused} of {total} refused");
    }

    #[test]
    fn children_share_the_table_and_counters() {
        let t: SharedTable<Val> = SharedTable::new(128).unwrap();
        let c = SharedCounters::new(4).unwrap();
        let mut pids = Vec::new();
        for child in 0..4u8 {
            // SAFETY: the child only touches the shared mapping and exits with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                for round in 0..250u32 {
                    t.update(key(child + 1), 1, |f| match f {
                        Found::Live(v, _) => v.n += 1,
                        Found::Vacant(v) => v.insert(Val { n: 1 }, 1_000),
                        Found::Full => {}
                    });
                    c.add((round % 4) as usize, 1);
                }
                unsafe { libc::_exit(0) };
            }
            pids.push(pid);
        }
        for pid in pids {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(status, 0);
        }
        for child in 0..4u8 {
            assert_eq!(get(&t, key(child + 1), 2), Some(250));
        }
        assert_eq!((0..4).map(|i| c.get(i)).sum::<u64>(), 1000);
    }

    #[test]
    fn cached_pid_follows_fork() {
        let parent = current_pid();
        // SAFETY: the child only compares pids and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = current_pid() == unsafe { libc::getpid() as u32 } && current_pid() != parent;
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0);
        assert_eq!(current_pid(), parent);
    }

    #[test]
    fn dead_owner_does_not_wedge_the_lock() {
        let word = AtomicU64::new(0);
        // A pid far above pid_max on Linux: never alive.
        word.store(0x7fff_fff0, Ordering::Relaxed);
        let (lock, taken_over) = PidLock::acquire(&word);
        assert!(taken_over);
        assert_eq!(word.load(Ordering::Relaxed), owner_word());
        assert_eq!(owner_word() as u32, current_pid());
        drop(lock);
        assert_eq!(word.load(Ordering::Relaxed), 0);
        let (lock, taken_over) = PidLock::acquire(&word);
        assert!(!taken_over);
        drop(lock);
    }

    /// Also-look-at of issue 14: the owner's pid is alive but belongs to a process started
    /// later (pid reuse): the lock is taken over instead of wedging forever.
    #[test]
    fn reused_pid_does_not_wedge_the_lock() {
        let mine = owner_word();
        assert_ne!(mine >> 32, 0, "start time read from /proc");
        for pid in [1u64, u64::from(current_pid())] {
            let word = AtomicU64::new(0);
            // That pid, with a start time it never had.
            let stale = (start_time(pid as u32).unwrap().wrapping_add(7) as u64) << 32 | pid;
            word.store(stale, Ordering::Relaxed);
            assert!(!owner_alive(stale));
            let (lock, taken_over) = PidLock::acquire(&word);
            assert!(taken_over, "pid {pid}");
            drop(lock);
        }
        assert!(owner_alive(mine), "a live owner is never taken over");
    }

    /// A cache bucket taken over from a dead owner is emptied (its entry may be half
    /// written); a replay table keeps what it has.
    #[test]
    fn takeover_empties_cache_buckets_only() {
        for (cache, survives) in [(true, false), (false, true)] {
            let t: SharedTable<Val> = if cache {
                SharedTable::new_cache(WAYS).unwrap()
            } else {
                SharedTable::new(WAYS).unwrap()
            };
            t.update(key(1), 0, |f| match f {
                Found::Vacant(v) => v.insert(Val { n: 5 }, 1000),
                _ => panic!("room expected"),
            });
            t.lock_word(0).store(0x7fff_fff0, Ordering::Relaxed);
            assert_eq!(get(&t, key(1), 1).is_some(), survives, "cache {cache}");
            assert_eq!(t.lock_word(0).load(Ordering::Relaxed), 0, "released");
        }
    }
}
