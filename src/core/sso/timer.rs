//! A one-shot timer as a file descriptor (Linux timerfd): readable once it has fired, so an
//! event loop that only watches fds for reading (OpenSIPS's reactor) can wait on it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub struct OneShotTimer {
    fd: OwnedFd,
}

impl OneShotTimer {
    /// A timer that fires once, `after` from now (at least 1 µs: zero would disarm it).
    /// Monotonic clock: a change of the wall clock moves no deadline.
    pub fn new(after: Duration) -> io::Result<OneShotTimer> {
        // SAFETY: plain syscall; the fd is owned below.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new fd nobody else owns.
        let timer = OneShotTimer {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        };
        timer.arm(after)?;
        Ok(timer)
    }

    /// Sets the timer to fire once, `after` from now.
    pub fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: valid fd and spec; the old value is not wanted.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether it fired; clears the readable state.
    pub fn fired(&self) -> bool {
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into `count` from a non-blocking timerfd.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut count as *mut u64 as *mut libc::c_void,
                8,
            )
        };
        n == 8 && count > 0
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsRawFd for OneShotTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn readable(fd: RawFd, wait_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, wait_ms) == 1 }
    }

    #[test]
    fn fires_once_after_its_delay() {
        let t0 = Instant::now();
        let t = OneShotTimer::new(Duration::from_millis(30)).unwrap();
        assert!(!readable(t.fd(), 0));
        assert!(!t.fired());
        assert!(readable(t.fd(), 1000));
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        assert!(t.fired());
        assert!(!readable(t.fd(), 50), "one-shot: not readable again");
    }
}
