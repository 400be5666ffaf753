//! The libc calls std does not offer: a non-blocking connect, poll with a millisecond
//! timeout, epoll and timerfd. Every fd is owned by an `OwnedFd` so dropping closes it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A non-blocking, close-on-exec TCP socket with its connect under way: `Ok((s, true))`
/// when connected at once, `Ok((s, false))` when the connect is in progress.
pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<(TcpStream, bool)> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = check(unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: fd is a fresh socket nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a valid sockaddr of `len` bytes.
    let rc = unsafe {
        libc::connect(
            fd,
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    };
    if rc == 0 {
        return Ok((stream, true));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok((stream, false))
    } else {
        Err(e)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The pending error of a socket (SO_ERROR), which also clears it.
pub fn socket_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: err and len are valid for getsockopt to write.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// What a socket is waited on for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

/// Milliseconds for poll/epoll, rounded up so a wait never ends before the deadline.
pub fn ceil_ms(d: Duration) -> libc::c_int {
    let ms = d.as_nanos().div_ceil(1_000_000);
    ms.min(libc::c_int::MAX as u128) as libc::c_int
}

/// poll(2) on one fd; Ok(true) when it is ready (or has an error or hang-up to report).
pub fn poll_one(fd: RawFd, want: Want, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: match want {
            Want::Read => libc::POLLIN,
            Want::Write => libc::POLLOUT,
        },
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if rc >= 0 {
        return Ok(rc > 0);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::Interrupted {
        // EINTR: the caller recomputes its budget and waits again.
        return Ok(false);
    }
    Err(e)
}

pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: plain epoll_create1; the fd is owned at once.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: fresh fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn epoll_events(want: Want) -> u32 {
    (match want {
        Want::Read => libc::EPOLLIN,
        Want::Write => libc::EPOLLOUT,
    }) as u32
}

/// Adds `fd` to the epoll set with `want` (or changes its interest when already there).
pub fn epoll_set(epfd: &OwnedFd, fd: RawFd, want: Want, present: bool) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: epoll_events(want),
        u64: fd as u64,
    };
    let op = if present {
        libc::EPOLL_CTL_MOD
    } else {
        libc::EPOLL_CTL_ADD
    };
    // SAFETY: valid epoll fd and event.
    let rc = unsafe { libc::epoll_ctl(epfd.as_raw_fd(), op, fd, &mut ev) };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // A closed fd leaves the set by itself, and a new socket may get its number back.
    let retry = match e.raw_os_error() {
        Some(libc::EEXIST) => libc::EPOLL_CTL_MOD,
        Some(libc::ENOENT) => libc::EPOLL_CTL_ADD,
        _ => return Err(e),
    };
    // SAFETY: as above.
    check(unsafe { libc::epoll_ctl(epfd.as_raw_fd(), retry, fd, &mut ev) }).map(|_| ())
}

/// Removes `fd` from the epoll set (best effort: closing it would as well).
pub fn epoll_del(epfd: &OwnedFd, fd: RawFd) {
    // SAFETY: valid epoll fd; a null event is allowed for DEL.
    unsafe {
        libc::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
}

/// Adds a timerfd to the epoll set, readable once it fired.
pub fn epoll_add_timer(epfd: &OwnedFd, tfd: &impl AsRawFd) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: tfd.as_raw_fd() as u64,
    };
    // SAFETY: valid fds and event.
    check(unsafe {
        libc::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            tfd.as_raw_fd(),
            &mut ev,
        )
    })
    .map(|_| ())
}
