//! The addresses of the SSO URLs' host names, kept in shared memory so that no worker ever
//! waits on DNS. One resolver process (its own OpenSIPS process, not a SIP worker) looks the
//! names up, blocking as long as getaddrinfo takes, and publishes the answers here; every
//! worker reads them without a lock and without a system call.
//!
//! Each host has two copies of its record and a generation counter: the writer fills the copy
//! readers are not using, then bumps the generation. A reader that saw the generation change
//! under it reads again. A writer killed half-way leaves the published copy intact, so a
//! crash of the resolver can never leave workers spinning or reading a torn record.

use std::cell::UnsafeCell;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use crate::core::shm::SharedRegion;
use crate::core::sso::resolve::{literal, Resolve};
use crate::core::sso::SsoError;

/// Host names the table holds: introspect_url, token_url and jwks_url have at most three.
pub const MAX_HOSTS: usize = 4;
/// Addresses kept per name (the first ones getaddrinfo returns, in its preference order).
pub const MAX_ADDRS: usize = 8;
/// Longest error text kept.
const MAX_ERROR: usize = 160;
/// Reads a reader retries while the writer keeps publishing (two publications of one host
/// within one read; the writer publishes at most about once a second).
const READ_TRIES: usize = 100;

/// One host's state as stored: plain data with no implicit padding (checked below).
#[repr(C)]
#[derive(Clone, Copy)]
struct Record {
    /// Unix seconds of the last successful lookup (valid when `count` > 0).
    resolved_at: u64,
    /// Unix seconds of the last failed lookup; 0 when the last lookup succeeded.
    failed_at: u64,
    /// Addresses held; 0: never resolved.
    count: u32,
    error_len: u32,
    /// 4 or 6 per address.
    families: [u8; MAX_ADDRS],
    /// IPv4 addresses use the first 4 bytes.
    octets: [[u8; 16]; MAX_ADDRS],
    error: [u8; MAX_ERROR],
}

const _: () = assert!(
    std::mem::size_of::<Record>() == 8 + 8 + 4 + 4 + MAX_ADDRS + 16 * MAX_ADDRS + MAX_ERROR
);

const EMPTY: Record = Record {
    resolved_at: 0,
    failed_at: 0,
    count: 0,
    error_len: 0,
    families: [0; MAX_ADDRS],
    octets: [[0; 16]; MAX_ADDRS],
    error: [0; MAX_ERROR],
};

#[repr(C)]
struct Slot {
    /// Copy `generation & 1` is the published one.
    generation: AtomicU64,
    /// Written through a raw pointer by the one writer while readers may hold `&Slot`.
    copies: [UnsafeCell<Record>; 2],
}

/// What the table knows about one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// Empty until the first successful lookup; kept when later lookups fail.
    pub addrs: Vec<IpAddr>,
    /// Unix seconds of the last successful lookup (0: never).
    pub resolved_at: u64,
    /// Unix seconds of the last failed lookup, 0 when the last lookup succeeded.
    pub failed_at: u64,
    /// The last failure, while lookups fail.
    pub error: Option<String>,
}

impl Record {
    fn decode(&self) -> HostState {
        let n = (self.count as usize).min(MAX_ADDRS);
        let addrs = (0..n)
            .map(|i| {
                let o = self.octets[i];
                if self.families[i] == 4 {
                    IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
                } else {
                    IpAddr::V6(Ipv6Addr::from(o))
                }
            })
            .collect();
        let error = (self.failed_at != 0).then(|| {
            let len = (self.error_len as usize).min(MAX_ERROR);
            String::from_utf8_lossy(&self.error[..len]).into_owned()
        });
        HostState {
            addrs,
            resolved_at: if n > 0 { self.resolved_at } else { 0 },
            failed_at: self.failed_at,
            error,
        }
    }

    fn set_addrs(&mut self, addrs: &[IpAddr]) {
        self.count = addrs.len().min(MAX_ADDRS) as u32;
        self.families = [0; MAX_ADDRS];
        self.octets = [[0; 16]; MAX_ADDRS];
        for (i, a) in addrs.iter().take(MAX_ADDRS).enumerate() {
            match a {
                IpAddr::V4(v4) => {
                    self.families[i] = 4;
                    self.octets[i][..4].copy_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    self.families[i] = 6;
                    self.octets[i] = v6.octets();
                }
            }
        }
    }

    fn set_error(&mut self, text: &str) {
        // Cut at a character boundary so the stored text stays UTF-8.
        let mut end = text.len().min(MAX_ERROR);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        self.error = [0; MAX_ERROR];
        self.error[..end].copy_from_slice(&text.as_bytes()[..end]);
        self.error_len = end as u32;
    }
}

/// A host name as compared: ASCII lowercase, without a trailing dot.
fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The distinct host names (not IP literals) of `urls`, in order, at most MAX_HOSTS.
/// URLs that do not parse are skipped (the configuration checks them).
pub fn host_names<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in urls {
        let Ok(parsed) = url::Url::parse(u) else {
            continue;
        };
        let Some(url::Host::Domain(name)) = parsed.host() else {
            continue;
        };
        let name = normalize(name);
        if literal(&name, 0).is_none() && !out.contains(&name) && out.len() < MAX_HOSTS {
            out.push(name);
        }
    }
    out
}

/// The table: one slot per host name, in shared memory mapped before fork.
pub struct AddressTable {
    region: SharedRegion,
    names: Vec<String>,
}

impl AddressTable {
    /// Maps the table for `names` (at most MAX_HOSTS). Call before fork.
    pub fn new(names: Vec<String>) -> io::Result<AddressTable> {
        if names.len() > MAX_HOSTS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("at most {MAX_HOSTS} SSO host names"),
            ));
        }
        let names: Vec<String> = names.iter().map(|n| normalize(n)).collect();
        let region = SharedRegion::map(names.len().max(1) * std::mem::size_of::<Slot>())?;
        // A fresh mapping is zero-filled: generation 0 and two never-resolved records.
        Ok(AddressTable { region, names })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Bytes of shared memory the table uses.
    pub fn bytes(&self) -> usize {
        self.region.len()
    }

    fn slot(&self, index: usize) -> &Slot {
        assert!(index < self.names.len());
        // SAFETY: in range of the mapping, which is page-aligned and lives as long as
        // `self`; Slot is an atomic plus plain data, valid when zero-filled.
        unsafe { &*(self.region.base() as *const Slot).add(index) }
    }

    fn index_of(&self, host: &str) -> Option<usize> {
        let host = normalize(host);
        self.names.iter().position(|n| *n == host)
    }

    /// The published record of host `index`; None only if the writer republished it over
    /// and over during READ_TRIES reads.
    fn load(&self, index: usize) -> Option<Record> {
        let slot = self.slot(index);
        for _ in 0..READ_TRIES {
            let generation = slot.generation.load(Ordering::Acquire);
            let copy = slot.copies[(generation & 1) as usize].get();
            // SAFETY: a plain-data read of shared memory; the writer may overwrite this copy
            // concurrently only after bumping the generation twice, which the check below
            // detects, and then the value read is thrown away.
            let record = unsafe { std::ptr::read_volatile(copy) };
            fence(Ordering::Acquire);
            if slot.generation.load(Ordering::Relaxed) == generation {
                return Some(record);
            }
            std::hint::spin_loop();
        }
        None
    }

    /// What the table holds for `host`, or None for a name it does not track.
    pub fn state(&self, host: &str) -> Option<HostState> {
        let index = self.index_of(host)?;
        Some(self.load(index).unwrap_or(EMPTY).decode())
    }

    /// Publishes a new record for host `index`. Only one process (the resolver) writes.
    fn publish(&self, index: usize, change: impl FnOnce(&mut Record)) {
        let slot = self.slot(index);
        let generation = slot.generation.load(Ordering::Relaxed);
        // SAFETY: the published copy, which only this process (the writer) ever changes.
        let mut next = unsafe { *slot.copies[(generation & 1) as usize].get() };
        change(&mut next);
        let target = slot.copies[((generation + 1) & 1) as usize].get();
        // Orders the write below after the previous publication's generation store, as seen
        // by a reader whose read of this copy races it (see `load`).
        fence(Ordering::Release);
        // SAFETY: the unpublished copy; readers only use what they read from it after
        // checking the generation did not move, and only this process writes.
        unsafe { std::ptr::write_volatile(target, next) };
        slot.generation.store(generation + 1, Ordering::Release);
    }

    /// A handle workers resolve through.
    pub fn reader(self: &Arc<Self>) -> AddressReader {
        AddressReader {
            table: self.clone(),
        }
    }
}

/// The workers' resolver: IP literals directly, names from the table, never waiting.
#[derive(Clone)]
pub struct AddressReader {
    table: Arc<AddressTable>,
}

impl Resolve for AddressReader {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsoError> {
        if let Some(addr) = literal(host, port) {
            return Ok(vec![addr]);
        }
        let Some(state) = self.table.state(host) else {
            return Err(SsoError::Unreachable(format!(
                "SSO host {host} is not the host of a configured SSO URL"
            )));
        };
        if state.addrs.is_empty() {
            let mut text = format!("SSO host {host} not resolved yet");
            if let Some(e) = state.error {
                let _ = write!(text, " (last lookup: {e})");
            }
            return Err(SsoError::Unreachable(text));
        }
        Ok(state
            .addrs
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// How loud a line of the refresh loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteLevel {
    Info,
    Warn,
}

/// What one pass of the refresh loop did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Lines to log: only changes (first resolution, new addresses, first failure after
    /// success, recovery), never one per refresh.
    pub notes: Vec<(NoteLevel, String)>,
    /// Lookups that failed in this pass (the `dns_failures` statistic).
    pub failures: u64,
    /// Seconds until the next pass is due.
    pub wait: u64,
}

/// The resolver process's loop, without the process: which names are due, the lookups, the
/// table updates and what to log. Time and the lookup are passed in (tests inject both).
pub struct Refresher {
    table: Arc<AddressTable>,
    every: u64,
    /// Per host: when its next lookup is due (0: at once).
    due: Vec<u64>,
    /// Per host: whether the last lookup failed (to log changes only).
    failing: Vec<bool>,
}

/// Retry interval while a name has never resolved.
const UNRESOLVED_RETRY: u64 = 1;

fn show(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Refresher {
    /// Every name is due at once; then every `every` seconds (at least 1).
    pub fn new(table: Arc<AddressTable>, every: u64) -> Refresher {
        let n = table.names().len();
        Refresher {
            table,
            every: every.max(1),
            due: vec![0; n],
            failing: vec![false; n],
        }
    }

    /// Looks up every name due at `now` (unix seconds) and publishes the answers.
    pub fn pass(
        &mut self,
        now: u64,
        lookup: &mut dyn FnMut(&str) -> io::Result<Vec<IpAddr>>,
    ) -> Pass {
        let mut pass = Pass::default();
        for i in 0..self.due.len() {
            // A clock stepped back must not postpone lookups for longer than one interval.
            let longest = now.saturating_add(self.every);
            if self.due[i] > longest {
                self.due[i] = longest;
            }
            if self.due[i] > now {
                continue;
            }
            let name = self.table.names()[i].clone();
            let before = self.table.load(i).unwrap_or(EMPTY).decode();
            let answer = lookup(&name).and_then(|mut addrs| {
                let mut seen = Vec::with_capacity(addrs.len());
                addrs.retain(|a| {
                    let new = !seen.contains(a);
                    seen.push(*a);
                    new
                });
                addrs.truncate(MAX_ADDRS);
                if addrs.is_empty() {
                    Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"))
                } else {
                    Ok(addrs)
                }
            });
            match answer {
                Ok(addrs) => {
                    self.table.publish(i, |r| {
                        r.set_addrs(&addrs);
                        r.resolved_at = now;
                        r.failed_at = 0;
                        r.set_error("");
                    });
                    let text = if before.addrs.is_empty() {
                        Some(format!("SSO host {name} resolved: {}", show(&addrs)))
                    } else if self.failing[i] {
                        Some(format!("SSO host {name} resolves again: {}", show(&addrs)))
                    } else if before.addrs != addrs {
                        Some(format!("SSO host {name} now resolves to {}", show(&addrs)))
                    } else {
                        None
                    };
                    pass.notes.extend(text.map(|t| (NoteLevel::Info, t)));
                    self.failing[i] = false;
                    self.due[i] = now.saturating_add(self.every);
                }
                Err(e) => {
                    pass.failures += 1;
                    let error = e.to_string();
                    self.table.publish(i, |r| {
                        r.failed_at = now.max(1);
                        r.set_error(&error);
                    });
                    if !self.failing[i] {
                        let what = if before.addrs.is_empty() {
                            "requests to it fail until it resolves".to_string()
                        } else {
                            format!(
                                "keeping its addresses from {} s ago ({})",
                                now.saturating_sub(before.resolved_at),
                                show(&before.addrs)
                            )
                        };
                        pass.notes.push((
                            NoteLevel::Warn,
                            format!("cannot resolve SSO host {name}: {error}; {what}"),
                        ));
                    }
                    self.failing[i] = true;
                    let retry = if before.addrs.is_empty() {
                        UNRESOLVED_RETRY
                    } else {
                        self.every
                    };
                    self.due[i] = now.saturating_add(retry);
                }
            }
        }
        pass.wait = self
            .due
            .iter()
            .map(|d| d.saturating_sub(now))
            .min()
            .unwrap_or(self.every);
        pass
    }
}

/// The system resolver (getaddrinfo), blocking: only for the resolver process.
pub fn system_lookup(name: &str) -> io::Result<Vec<IpAddr>> {
    use std::net::ToSocketAddrs;
    Ok((name, 0u16).to_socket_addrs()?.map(|a| a.ip()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table(names: &[&str]) -> Arc<AddressTable> {
        Arc::new(AddressTable::new(names.iter().map(|s| s.to_string()).collect()).unwrap())
    }

    /// A lookup answering from a map; names not in it fail like NXDOMAIN.
    fn answers<'a>(
        map: &'a HashMap<&'a str, Vec<IpAddr>>,
    ) -> impl FnMut(&str) -> io::Result<Vec<IpAddr>> + 'a {
        move |name| {
            map.get(name).cloned().ok_or_else(|| {
                io::Error::other(format!("failed to lookup address information: {name}"))
            })
        }
    }

    #[test]
    fn host_names_skip_literals_and_duplicates() {
        let names = host_names([
            "https://SSO.example.com/introspect",
            "https://sso.example.com./token",
            "http://127.0.0.1:8080/x",
            "http://[::1]:8080/x",
            "https://keys.example.net/jwks",
        ]);
        assert_eq!(names, ["sso.example.com", "keys.example.net"]);
    }

    #[test]
    fn a_name_not_resolved_yet_fails_at_once_and_literals_always_work() {
        let t = table(&["sso.example.com"]);
        let r = t.reader();
        match r.resolve("sso.example.com", 443) {
            Err(SsoError::Unreachable(m)) => {
                assert_eq!(m, "SSO host sso.example.com not resolved yet")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.resolve("192.0.2.1", 80).unwrap(),
            vec!["192.0.2.1:80".parse().unwrap()]
        );
        assert_eq!(
            r.resolve("[2001:db8::1]", 443).unwrap(),
            vec!["[2001:db8::1]:443".parse().unwrap()]
        );
        assert!(r.resolve("other.example.com", 443).is_err());
    }

    #[test]
    fn first_pass_resolves_then_waits_the_interval() {
        let t = table(&["sso.example.com", "keys.example.net"]);
        let map = HashMap::from([
            (
                "sso.example.com",
                vec![ip("192.0.2.10"), ip("2001:db8::10")],
            ),
            ("keys.example.net", vec![ip("192.0.2.20")]),
        ]);
        let mut lookup = answers(&map);
        let mut f = Refresher::new(t.clone(), 30);
        let p = f.pass(1000, &mut lookup);
        assert_eq!(p.failures, 0);
        assert_eq!(p.wait, 30);
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes.iter().all(|(l, _)| *l == NoteLevel::Info));
        assert_eq!(
            t.reader().resolve("SSO.example.com", 8443).unwrap(),
            vec![
                "192.0.2.10:8443".parse().unwrap(),
                "[2001:db8::10]:8443".parse().unwrap()
            ]
        );
        let s = t.state("keys.example.net").unwrap();
        assert_eq!((s.resolved_at, s.failed_at, s.error), (1000, 0, None));

        // Nothing due before the interval: no lookup at all.
        let mut calls = 0;
        let p = f.pass(1010, &mut |_: &str| {
            calls += 1;
            Ok(vec![ip("192.0.2.99")])
        });
        assert_eq!((calls, p.wait), (0, 20));
        // Due again: the same answer logs nothing; a new one is logged once.
        let p = f.pass(1030, &mut lookup);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        let p = f.pass(1060, &mut |_: &str| Ok(vec![ip("192.0.2.30")]));
        assert_eq!(p.notes.len(), 2);
        assert!(p.notes[0].1.contains("now resolves to 192.0.2.30"));
        assert_eq!(
            t.state("sso.example.com").unwrap().addrs,
            [ip("192.0.2.30")]
        );
    }

    #[test]
    fn a_failed_refresh_keeps_the_old_addresses_and_logs_once() {
        let t = table(&["sso.example.com"]);
        let mut f = Refresher::new(t.clone(), 30);
        f.pass(0, &mut |_: &str| Ok(vec![ip("192.0.2.10")]));
        let mut fail = |_: &str| -> io::Result<Vec<IpAddr>> { Err(io::Error::other("SERVFAIL")) };
        let p = f.pass(30, &mut fail);
        assert_eq!(p.failures, 1);
        assert_eq!(
            p.wait, 30,
            "a name with addresses retries at the normal interval"
        );
        assert_eq!(p.notes.len(), 1);
        assert_eq!(p.notes[0].0, NoteLevel::Warn);
        assert!(
            p.notes[0].1.contains("SERVFAIL") && p.notes[0].1.contains("keeping"),
            "{}",
            p.notes[0].1
        );
        // Still served from the last good answer.
        assert_eq!(
            t.reader().resolve("sso.example.com", 443).unwrap(),
            vec!["192.0.2.10:443".parse().unwrap()]
        );
        let s = t.state("sso.example.com").unwrap();
        assert_eq!((s.resolved_at, s.failed_at), (0, 30));
        assert_eq!(s.error.as_deref(), Some("SERVFAIL"));
        // Failing again: counted, not logged.
        let p = f.pass(60, &mut fail);
        assert_eq!((p.failures, p.notes.len()), (1, 0));
        // Recovery is logged once.
        let p = f.pass(90, &mut |_: &str| Ok(vec![ip("192.0.2.10")]));
        assert_eq!(p.notes.len(), 1);
        assert!(p.notes[0].1.contains("resolves again"));
        assert_eq!(t.state("sso.example.com").unwrap().error, None);
    }

    #[test]
    fn a_name_that_never_resolves_is_retried_every_second() {
        let t = table(&["nowhere.invalid", "sso.example.com"]);
        let mut f = Refresher::new(t.clone(), 30);
        let map = HashMap::from([("sso.example.com", vec![ip("192.0.2.10")])]);
        let mut lookup = answers(&map);
        let mut warned = 0;
        for now in 0..5 {
            let p = f.pass(now, &mut lookup);
            assert_eq!(p.failures, 1, "at {now}");
            assert_eq!(p.wait, 1);
            warned += p
                .notes
                .iter()
                .filter(|(l, _)| *l == NoteLevel::Warn)
                .count();
        }
        assert_eq!(warned, 1, "the failure is logged once");
        match t.reader().resolve("nowhere.invalid", 443) {
            Err(SsoError::Unreachable(m)) => {
                assert!(
                    m.starts_with("SSO host nowhere.invalid not resolved yet"),
                    "{m}"
                );
                assert!(m.contains("nowhere.invalid"));
            }
            other => panic!("{other:?}"),
        }
        assert!(t.reader().resolve("sso.example.com", 443).is_ok());
        // An empty answer is a failure too.
        let p = f.pass(5, &mut |_: &str| Ok(vec![]));
        assert_eq!(p.failures, 1);
    }

    #[test]
    fn at_most_eight_addresses_without_duplicates() {
        let t = table(&["big.example.com"]);
        let mut f = Refresher::new(t.clone(), 30);
        let mut many: Vec<IpAddr> = (1..=12).map(|i| ip(&format!("192.0.2.{i}"))).collect();
        many.insert(1, ip("192.0.2.1"));
        f.pass(0, &mut |_: &str| Ok(many.clone()));
        let got = t.state("big.example.com").unwrap().addrs;
        let want: Vec<IpAddr> = (1..=8).map(|i| ip(&format!("192.0.2.{i}"))).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_stepped_back_clock_does_not_stall_refreshes() {
        let t = table(&["sso.example.com"]);
        let mut f = Refresher::new(t, 30);
        f.pass(1_000_000, &mut |_: &str| Ok(vec![ip("192.0.2.1")]));
        let p = f.pass(10, &mut |_: &str| Ok(vec![ip("192.0.2.1")]));
        assert_eq!(p.wait, 30);
    }

    #[test]
    fn long_error_texts_are_cut_on_a_character_boundary() {
        let t = table(&["sso.example.com"]);
        let long = "é".repeat(200);
        t.publish(0, |r| {
            r.failed_at = 5;
            r.set_error(&long);
        });
        let e = t.state("sso.example.com").unwrap().error.unwrap();
        assert!(e.len() <= MAX_ERROR && e.chars().all(|c| c == 'é'));
    }

    /// Readers in another thread never see a torn record while the writer republishes.
    #[test]
    fn concurrent_readers_see_whole_records() {
        let t = table(&["sso.example.com"]);
        let sets: Vec<Vec<IpAddr>> = (0..4u8)
            .map(|k| {
                (0..=k)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(10, k, i, k)))
                    .collect()
            })
            .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (t, sets, stop) = (t.clone(), sets.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut seen = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let s = t.state("sso.example.com").unwrap();
                        if !s.addrs.is_empty() {
                            assert!(sets.contains(&s.addrs), "torn record {:?}", s.addrs);
                            assert_eq!(s.resolved_at, s.addrs.len() as u64);
                            seen += 1;
                        }
                    }
                    seen
                })
            })
            .collect();
        for round in 0..200_000usize {
            let set = &sets[round % sets.len()];
            t.publish(0, |r| {
                r.set_addrs(set);
                r.resolved_at = set.len() as u64;
            });
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }

    /// A child process (as a worker is) reads what the parent publishes after the fork.
    #[test]
    fn a_forked_reader_sees_later_publications() {
        let t = table(&["sso.example.com"]);
        // SAFETY: the child only reads the shared mapping and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let mut ok = false;
            for _ in 0..2000 {
                if t.state("sso.example.com").unwrap().addrs == [ip("192.0.2.77")] {
                    ok = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut f = Refresher::new(t, 30);
        f.pass(0, &mut |_: &str| Ok(vec![ip("192.0.2.77")]));
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(status, 0);
    }

    #[test]
    fn the_system_lookup_resolves_localhost() {
        let addrs = system_lookup("localhost").unwrap();
        assert!(addrs.iter().all(|a| a.is_loopback()), "{addrs:?}");
    }
}
