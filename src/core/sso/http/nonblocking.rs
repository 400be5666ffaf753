//! The non-blocking driver: one `InFlight` per SSO request, owning an epoll fd that holds
//! the request's socket (with the interest its exchange needs next) and a timerfd armed at
//! the request's deadline. The epoll fd is what OpenSIPS's reactor watches: it turns
//! readable when the exchange can move on or the deadline passed. Dropping an `InFlight`
//! closes every fd it owns and the connection, and frees its slot.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use super::attempt::{Attempt, Step};
use super::conn::Conn;
use super::pool::Slot;
use super::sys::{self, Want};
use super::{io_error, HttpResponse, Origin};
use crate::core::sso::call::Expect;
use crate::core::sso::timer::OneShotTimer;
use crate::core::sso::SsoError;

pub struct InFlight {
    epoll: OwnedFd,
    timer: OneShotTimer,
    deadline: Instant,
    /// What the answer is interpreted as.
    pub(crate) expect: Expect,
    pub(crate) origin: Origin,
    /// The socket in the epoll set, if any, and its interest.
    registered: Option<(RawFd, Want)>,
    /// None once over (the slot and connection are released then, not at drop).
    live: Option<(Attempt, Slot)>,
}

/// What one round of progress came to.
pub enum Round {
    Pending,
    Done(Result<HttpResponse, SsoError>, Option<Conn>),
}

impl InFlight {
    /// Sets up the fds and does what can be done at once. Err: over already (its answer).
    pub(crate) fn start(
        attempt: Attempt,
        slot: Slot,
        deadline: Instant,
        expect: Expect,
        origin: Origin,
    ) -> Result<InFlight, (Result<HttpResponse, SsoError>, Option<Conn>)> {
        let fail = |e: std::io::Error| (Err(io_error("cannot set up the SSO wait", &e)), None);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err((Err(SsoError::Timeout), None));
        }
        let epoll = sys::epoll_create().map_err(fail)?;
        let timer = OneShotTimer::new(left).map_err(fail)?;
        sys::epoll_add_timer(&epoll, &timer).map_err(fail)?;
        let mut f = InFlight {
            epoll,
            timer,
            deadline,
            expect,
            origin,
            registered: None,
            live: Some((attempt, slot)),
        };
        match f.round() {
            Round::Pending => Ok(f),
            Round::Done(result, conn) => Err((result, conn)),
        }
    }

    /// The fd to watch for reading.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn is_over(&self) -> bool {
        self.live.is_none()
    }

    /// Does what can be done now; never waits.
    pub(crate) fn round(&mut self) -> Round {
        let Some((attempt, _)) = self.live.as_mut() else {
            return Round::Done(
                Err(SsoError::Unreachable(
                    "the SSO exchange is already over".to_string(),
                )),
                None,
            );
        };
        if self.timer.fired() || Instant::now() >= self.deadline {
            return self.over(Err(SsoError::Timeout), None);
        }
        let want = match attempt.step() {
            Step::Done(result, conn) => return self.over(result, conn),
            Step::Pending(want) => want,
        };
        let fd = attempt.fd();
        if self.registered != Some((fd, want)) {
            let present = self.registered.is_some_and(|(old, _)| old == fd);
            if let Err(e) = sys::epoll_set(&self.epoll, fd, want, present) {
                return self.over(Err(io_error("cannot wait for the SSO", &e)), None);
            }
            self.registered = Some((fd, want));
        }
        Round::Pending
    }

    fn over(&mut self, result: Result<HttpResponse, SsoError>, conn: Option<Conn>) -> Round {
        // A connection going back to the pool leaves this epoll set first.
        if let (Some(c), Some((fd, _))) = (&conn, self.registered) {
            if c.fd() == fd {
                sys::epoll_del(&self.epoll, fd);
            }
        }
        // Drops the attempt (closing a connection not handed back) and frees the slot.
        self.live = None;
        self.registered = None;
        Round::Done(result, conn)
    }
}
