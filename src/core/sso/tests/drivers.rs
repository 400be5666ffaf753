//! The blocking and the non-blocking driver against fake SSOs: faults, deadlines, many
//! exchanges in flight, keep-alive reuse, stale connections, fd hygiene.

use super::*;
use crate::core::sso::call::{SsoAnswer, SsoCall};
use crate::core::sso::resolve::Resolve;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Reads one request (head and Content-Length body); None when the peer closed.
fn read_request(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            if got.len() >= end + 4 + len {
                return Some(got);
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn ok_bytes() -> Vec<u8> {
    let body = r#"{"active":true,"sub":"bob"}"#;
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the fake SSO does with a request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Ok,
    /// Answers after this long.
    Slow(u64),
    /// Reads and never answers (until the client goes).
    Hang,
    SlowHeaders,
    SlowBody,
    /// Closes with RST.
    Reset,
    Status500,
    Redirect302,
    Garbage,
    Oversized,
    /// Answers, then closes the idle connection shortly after.
    OkThenClose,
    /// Closes without answering (a kept-alive connection the server dropped meanwhile).
    CloseUnanswered,
}

fn fault_server(
    pick: impl Fn(usize, usize) -> Fault + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>) {
    raw_server(move |mut s, conn| {
        let mut n = 0;
        while read_request(&mut s).is_some() {
            let fault = pick(conn, n);
            n += 1;
            let w = |s: &mut TcpStream, b: &[u8]| s.write_all(b).is_ok();
            match fault {
                Fault::Ok => {
                    if !w(&mut s, &ok_bytes()) {
                        return;
                    }
                }
                Fault::Slow(ms) => {
                    thread::sleep(Duration::from_millis(ms));
                    if !w(&mut s, &ok_bytes()) {
                        return;
                    }
                }
                Fault::Hang => {
                    let mut buf = [0u8; 64];
                    while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
                    return;
                }
                Fault::SlowHeaders => {
                    let _ = w(&mut s, b"HTTP/1.1 200 OK\r\nContent-");
                    let mut buf = [0u8; 64];
                    while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
                    return;
                }
                Fault::SlowBody => {
                    let _ = w(
                        &mut s,
                        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"act",
                    );
                    let mut buf = [0u8; 64];
                    while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
                    return;
                }
                Fault::Reset => {
                    let l = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    // SAFETY: setsockopt on a socket this thread owns.
                    unsafe {
                        libc::setsockopt(
                            std::os::fd::AsRawFd::as_raw_fd(&s),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            &l as *const libc::linger as *const libc::c_void,
                            std::mem::size_of::<libc::linger>() as libc::socklen_t,
                        );
                    }
                    return;
                }
                Fault::Status500 => {
                    if !w(
                        &mut s,
                        b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops",
                    ) {
                        return;
                    }
                }
                Fault::Redirect302 => {
                    let _ = w(
                        &mut s,
                        b"HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n",
                    );
                }
                Fault::Garbage => {
                    let _ = w(&mut s, b"\x16\x03\x01garbage that is no HTTP\r\n\r\n");
                    return;
                }
                Fault::Oversized => {
                    let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
                    if !w(&mut s, head.as_bytes()) {
                        return;
                    }
                    let chunk = [b'a'; 8192];
                    for _ in 0..100 {
                        if !w(&mut s, &chunk) {
                            return;
                        }
                    }
                    return;
                }
                Fault::OkThenClose => {
                    let _ = w(&mut s, &ok_bytes());
                    thread::sleep(Duration::from_millis(20));
                    return;
                }
                Fault::CloseUnanswered => return,
            }
        }
    })
}

fn client(port: u16, timeout_ms: u64) -> HttpSso {
    let mut s = settings(&format!("http://127.0.0.1:{port}/introspect"));
    s.timeout = Duration::from_millis(timeout_ms);
    HttpSso::new(s).unwrap()
}

fn introspect_call(token: &str) -> SsoCall {
    SsoCall::Introspect {
        token: token.to_string(),
    }
}

/// Waits like OpenSIPS's reactor would: for reading on each `InFlight::fd()`, calling
/// `progress` on the ready ones until all are over. Returns the answers in order.
fn drive(sso: &mut HttpSso, mut fs: Vec<Option<InFlight>>) -> Vec<Option<SsoAnswer>> {
    // SAFETY: plain epoll use on fds owned by the InFlights, which outlive their membership.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    let mut answers: Vec<Option<SsoAnswer>> = fs.iter().map(|_| None).collect();
    let mut left = 0;
    for (i, f) in fs.iter().enumerate() {
        if let Some(f) = f {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            assert_eq!(
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, f.fd(), &mut ev) },
                0
            );
            left += 1;
        }
    }
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let give_up = Instant::now() + Duration::from_secs(10);
    while left > 0 {
        assert!(Instant::now() < give_up, "the reactor got stuck");
        let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 64, 1000) };
        for ev in &evs[..n.max(0) as usize] {
            let i = ev.u64 as usize;
            let f = fs[i].as_mut().unwrap();
            if let Some(a) = sso.progress(f) {
                let fd: RawFd = f.fd();
                unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
                answers[i] = Some(a);
                fs[i] = None;
                left -= 1;
            }
        }
    }
    unsafe { libc::close(ep) };
    answers
}

/// One call through the non-blocking driver.
fn async_one(sso: &mut HttpSso, call: &SsoCall, deadline: Instant) -> SsoAnswer {
    match sso.start(call, deadline) {
        Err(a) => a,
        Ok(f) => drive(sso, vec![Some(f)]).pop().unwrap().unwrap(),
    }
}

fn introspection(a: SsoAnswer) -> Result<Introspection, SsoError> {
    match a {
        SsoAnswer::Introspection(r) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn fifty_in_flight_finish_in_about_one_server_delay() {
    let (port, conns) = fault_server(|_, _| Fault::Slow(300));
    let mut s = settings(&format!("http://127.0.0.1:{port}/introspect"));
    s.timeout = Duration::from_secs(3);
    s.max_connections = 64;
    let mut sso = HttpSso::new(s).unwrap();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(3);
    let fs: Vec<_> = (0..50)
        .map(|i| {
            Some(
                sso.start(&introspect_call(&format!("t{i}")), deadline)
                    .unwrap(),
            )
        })
        .collect();
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "start must not wait"
    );
    assert_eq!(sso.in_flight(), 50);
    let answers = drive(&mut sso, fs);
    let took = t.elapsed();
    for a in answers {
        assert!(introspection(a.unwrap()).unwrap().active);
    }
    assert!(took < Duration::from_millis(600), "{took:?}");
    assert_eq!(sso.in_flight(), 0);
    assert_eq!(conns.load(Ordering::SeqCst), 50);
    assert_eq!(sso.idle_connections(), 50, "all kept for reuse");
}

#[test]
fn past_the_limit_start_fails_at_once() {
    let (port, _) = fault_server(|_, _| Fault::Slow(200));
    let mut s = settings(&format!("http://127.0.0.1:{port}/introspect"));
    s.max_connections = 2;
    let mut sso = HttpSso::new(s).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let a = sso.start(&introspect_call("a"), deadline).unwrap();
    let b = sso.start(&introspect_call("b"), deadline).unwrap();
    let t = Instant::now();
    match sso.start(&introspect_call("c"), deadline) {
        Err(SsoAnswer::Introspection(Err(SsoError::Unreachable(m)))) => {
            assert_eq!(m, "all 2 SSO connections busy")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // the blocking driver counts against the same limit
    assert!(matches!(sso.introspect("d"), Err(SsoError::Unreachable(m)) if m.contains("busy")));
    assert!(t.elapsed() < Duration::from_millis(20));
    assert_eq!(sso.in_flight(), 2);
    drop(a);
    assert_eq!(sso.in_flight(), 1, "an abandoned exchange frees its slot");
    let answers = drive(&mut sso, vec![Some(b)]);
    assert!(introspection(answers.into_iter().next().unwrap().unwrap()).is_ok());
    assert_eq!(sso.in_flight(), 0);
}

#[test]
fn deadline_is_exact_in_both_drivers() {
    let (port, _) = fault_server(|_, _| Fault::Hang);
    let mut sso = client(port, 5000);
    for budget in [50u64, 200] {
        let t = Instant::now();
        sso.set_deadline(Some(t + Duration::from_millis(budget)));
        assert_eq!(sso.introspect("t"), Err(SsoError::Timeout));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(budget) && took < Duration::from_millis(budget + 20),
            "blocking {budget}: {took:?}"
        );
        sso.set_deadline(None);
        let t = Instant::now();
        let a = async_one(
            &mut sso,
            &introspect_call("t"),
            t + Duration::from_millis(budget),
        );
        let took = t.elapsed();
        assert_eq!(introspection(a), Err(SsoError::Timeout));
        assert!(
            took >= Duration::from_millis(budget) && took < Duration::from_millis(budget + 20),
            "async {budget}: {took:?}"
        );
    }
    // the configured timeout caps a later deadline
    let mut sso = client(port, 100);
    let t = Instant::now();
    let a = async_one(&mut sso, &introspect_call("t"), t + Duration::from_secs(5));
    assert_eq!(introspection(a), Err(SsoError::Timeout));
    assert!(
        t.elapsed() < Duration::from_millis(120),
        "{:?}",
        t.elapsed()
    );
    // a deadline already over: answered at once, nothing sent
    let past = Instant::now();
    assert!(matches!(
        sso.start(&introspect_call("t"), past),
        Err(SsoAnswer::Introspection(Err(SsoError::Timeout)))
    ));
}

/// Each fault, blocking then non-blocking: the same answer.
#[test]
fn every_fault_in_both_drivers() {
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    type Good = fn(&Result<Introspection, SsoError>) -> bool;
    let cases: Vec<(Fault, Good)> = vec![
        (Fault::Hang, |r| *r == Err(SsoError::Timeout)),
        (Fault::SlowHeaders, |r| *r == Err(SsoError::Timeout)),
        (Fault::SlowBody, |r| *r == Err(SsoError::Timeout)),
        (Fault::Reset, |r| matches!(r, Err(SsoError::Unreachable(_)))),
        (Fault::Status500, |r| *r == Err(SsoError::Status(500))),
        (Fault::Redirect302, |r| *r == Err(SsoError::Status(302))),
        (Fault::Garbage, |r| {
            matches!(r, Err(SsoError::Unreachable(_)))
        }),
        (Fault::Oversized, |r| *r == Err(SsoError::TooLarge)),
        (Fault::CloseUnanswered, |r| {
            matches!(r, Err(SsoError::Unreachable(_)))
        }),
        (Fault::Ok, |r| r.as_ref().is_ok_and(|i| i.active)),
    ];
    for (fault, good) in cases {
        let (port, _) = fault_server(move |_, _| fault);
        for blocking in [true, false] {
            let mut sso = client(port, 150);
            let t = Instant::now();
            let r = if blocking {
                sso.introspect("SECRETTOKEN")
            } else {
                introspection(async_one(
                    &mut sso,
                    &introspect_call("SECRETTOKEN"),
                    t + Duration::from_millis(150),
                ))
            };
            assert!(good(&r), "{fault:?} blocking={blocking}: {r:?}");
            assert!(
                t.elapsed() < Duration::from_millis(170),
                "{fault:?}: {:?}",
                t.elapsed()
            );
            if let Err(SsoError::Unreachable(m)) = &r {
                assert!(!m.contains("SECRETTOKEN") && !m.contains("s:e/c%"), "{m}");
            }
        }
    }
    for blocking in [true, false] {
        let mut sso = client(refused, 150);
        let r = if blocking {
            sso.introspect("t")
        } else {
            introspection(async_one(
                &mut sso,
                &introspect_call("t"),
                Instant::now() + Duration::from_millis(150),
            ))
        };
        assert!(
            matches!(&r, Err(SsoError::Unreachable(m)) if m.contains("refused") && !m.contains("127.0.0.1")),
            "{r:?}"
        );
    }
}

/// Resolves one name to one address (a stand-in for the shared-memory resolver).
struct OneName(&'static str, SocketAddr);

impl Resolve for OneName {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsoError> {
        if host == self.0 {
            Ok(vec![SocketAddr::new(self.1.ip(), port)])
        } else {
            Err(SsoError::Unreachable(format!(
                "no address known for host {host:?}"
            )))
        }
    }
}

#[test]
fn tls_faults_in_both_drivers() {
    let srv = http_server(Some(tls_server_config()), |_| {
        response(200, r#"{"active":true,"sub":"bob"}"#)
    });
    let ca = TempFile::new("drivers_ca", TEST_CA);
    let other = TempFile::new("drivers_other", OTHER_CA);
    let run = |url: String, ca: &TempFile, blocking: bool, resolver: Option<OneName>| {
        let mut s = settings(&url);
        s.tls_ca_file = Some(ca.path());
        s.timeout = Duration::from_secs(1);
        let mut sso = HttpSso::new(s).unwrap();
        if let Some(r) = resolver {
            sso.set_resolver(Box::new(r));
        }
        if blocking {
            sso.introspect("t")
        } else {
            introspection(async_one(
                &mut sso,
                &introspect_call("t"),
                Instant::now() + Duration::from_secs(1),
            ))
        }
    };
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    for blocking in [true, false] {
        // trusted, by IP and by a name the certificate carries
        let r = run(srv.url("https", "/introspect"), &ca, blocking, None);
        assert_eq!(r.unwrap().user.as_deref(), Some("bob"));
        let url = format!("https://localhost:{}/introspect", srv.port);
        let r = run(url, &ca, blocking, Some(OneName("localhost", local)));
        assert_eq!(
            r.unwrap().user.as_deref(),
            Some("bob"),
            "blocking={blocking}"
        );
        // untrusted CA
        let r = run(srv.url("https", "/introspect"), &other, blocking, None);
        assert!(
            matches!(&r, Err(SsoError::Unreachable(m)) if m.contains("certificate")),
            "{r:?}"
        );
        // a name the certificate does not carry
        let url = format!("https://wrong.example:{}/introspect", srv.port);
        let r = run(url, &ca, blocking, Some(OneName("wrong.example", local)));
        assert!(
            matches!(&r, Err(SsoError::Unreachable(m)) if m.contains("certificate")),
            "{r:?}"
        );
        // a name nobody resolves: at once, no thread, no wait
        let t = Instant::now();
        let url = format!("https://nowhere.example:{}/introspect", srv.port);
        let r = run(url, &ca, blocking, None);
        assert!(matches!(r, Err(SsoError::Unreachable(_))));
        assert!(t.elapsed() < Duration::from_millis(50));
    }
    assert_eq!(
        srv.seen().len(),
        4,
        "only the trusted exchanges got through"
    );
}

#[test]
fn keep_alive_reuse_across_both_drivers() {
    let (port, conns) = fault_server(|_, _| Fault::Ok);
    let mut sso = client(port, 1000);
    for i in 0..20 {
        if i % 2 == 0 {
            assert!(sso.introspect("t").unwrap().active);
        } else {
            let a = async_one(
                &mut sso,
                &introspect_call("t"),
                Instant::now() + Duration::from_secs(1),
            );
            assert!(introspection(a).unwrap().active);
        }
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "20 exchanges, 1 TCP connection"
    );
    assert_eq!(sso.idle_connections(), 1);

    // over TLS too
    let srv = http_server(Some(tls_server_config()), |_| {
        response(200, r#"{"active":true}"#)
    });
    let ca = TempFile::new("drivers_ka", TEST_CA);
    let mut s = settings(&srv.url("https", "/introspect"));
    s.tls_ca_file = Some(ca.path());
    let mut sso = HttpSso::new(s).unwrap();
    for _ in 0..5 {
        assert!(sso.introspect("t").unwrap().active);
        let a = async_one(
            &mut sso,
            &introspect_call("t"),
            Instant::now() + Duration::from_secs(1),
        );
        assert!(introspection(a).unwrap().active);
    }
    assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
}

#[test]
fn server_closing_a_kept_alive_connection() {
    for blocking in [true, false] {
        // closed while idle: the pool sees it and opens a new one
        let (port, conns) = fault_server(|_, _| Fault::OkThenClose);
        let mut sso = client(port, 1000);
        let one = |sso: &mut HttpSso| {
            if blocking {
                sso.introspect("t")
            } else {
                introspection(async_one(
                    sso,
                    &introspect_call("t"),
                    Instant::now() + Duration::from_secs(1),
                ))
            }
        };
        assert!(one(&mut sso).unwrap().active);
        thread::sleep(Duration::from_millis(60));
        assert!(one(&mut sso).unwrap().active);
        assert_eq!(conns.load(Ordering::SeqCst), 2);

        // closed as the next request arrives (the race the pool cannot see): sent once more
        // on a fresh connection, since nothing of an answer came
        let (port, conns) = fault_server(|_, n| {
            if n == 0 {
                Fault::Ok
            } else {
                Fault::CloseUnanswered
            }
        });
        let mut sso = client(port, 1000);
        for _ in 0..3 {
            assert!(one(&mut sso).unwrap().active, "blocking={blocking}");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 2000 exchanges, faults and abandoned ones mixed in: the process holds no more fds after
/// than before. Runs in a child process of its own, where no other test opens fds.
#[test]
fn fds_back_to_baseline_after_2000_exchanges() {
    const CHILD: &str = "SSO_AUTH_FD_TEST_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "core::sso::tests::drivers::fds_back_to_baseline_after_2000_exchanges",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        eprintln!(
            "{}",
            text.lines()
                .filter(|l| l.contains("fds:"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        return;
    }
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pick = |conn: usize, n: usize| match (conn * 7 + n) % 10 {
        0 => Fault::Reset,
        1 => Fault::Status500,
        2 => Fault::Garbage,
        3 => Fault::CloseUnanswered,
        _ => Fault::Ok,
    };
    let (port, _) = fault_server(pick);
    let (slow_port, _) = fault_server(|_, _| Fault::Slow(30));
    let baseline = fd_count();
    let mut peak = baseline;
    {
        let mut sso = client(port, 1000);
        let mut slow = client(slow_port, 1000);
        let mut dead = client(refused, 1000);
        let mut held = Vec::new();
        for i in 0..2000 {
            let deadline = Instant::now() + Duration::from_secs(1);
            match i % 8 {
                0 => {
                    let _ = dead.introspect("t");
                }
                1 => {
                    // abandoned mid-flight, some right away, some later
                    if let Ok(f) = slow.start(&introspect_call("t"), deadline) {
                        if i % 16 == 1 {
                            drop(f);
                        } else {
                            held.push(f);
                        }
                    }
                }
                2 | 3 => {
                    let _ = async_one(&mut sso, &introspect_call("t"), deadline);
                }
                _ => {
                    let _ = sso.introspect("t");
                }
            }
            if held.len() >= 20 {
                peak = peak.max(fd_count());
                held.clear();
            }
        }
        peak = peak.max(fd_count());
        drop(held);
        assert_eq!(slow.in_flight(), 0);
        assert_eq!(sso.in_flight(), 0);
    }
    // the fake servers' threads end as their peers go
    let t = Instant::now();
    while fd_count() > baseline && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    let end = fd_count();
    eprintln!("fds: baseline {baseline}, peak {peak}, after {end}");
    assert_eq!(end, baseline);
}
