//! One reactor fd per worker for every suspended async request (ASYNC_NO_FD).
//!
//! tm would put each suspended request's fd into the reactor and take it out when it ends,
//! and OpenSIPS's reactor checks its whole fd map on each of those calls: with
//! `open_files_limit` 4096 that was 226,000 instructions per request, more than the rest of
//! the REGISTER. Here a request's fd (its exchange's epoll fd or its timer) joins this
//! process's hub instead, an epoll set that sits in the reactor for good. When the hub is
//! readable, each ready request is resumed through tm as the reactor would have done
//! (`async_script_resume_f` with no fd). A request leaves the hub before its job ends (Job's
//! Drop), so the hub never names a request tm has freed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::core::sso::http::sys::{self, Want};

use super::bindings::{async_status, sso_shim_resume_suspended, sso_shim_watch_fd, ASYNC_CONTINUE};
use super::guard::guarded;
use super::log::{report_error, sso_log, L_ERR};

/// Most requests resumed per readiness of the hub: a burst of SSO answers must not keep the
/// worker from its SIP sockets. The hub stays readable and the reactor comes back to it.
const RESUMES_PER_WAKE: usize = 64;

struct Hub {
    epoll: OwnedFd,
    /// The tm context of the request behind each fd in the set.
    contexts: HashMap<RawFd, usize>,
}

thread_local! {
    /// None: not tried yet in this process; Some(None): the reactor refused it, so this
    /// process hands tm one fd per request instead.
    static HUB: RefCell<Option<Option<Hub>>> = const { RefCell::new(None) };
}

fn open() -> io::Result<Hub> {
    let epoll = sys::epoll_create()?;
    // SAFETY: the callback is a plain extern "C" function of this module; the reactor calls
    // it in this process only, and the fd lives as long as the process (HUB is never reset).
    if unsafe { sso_shim_watch_fd(epoll.as_raw_fd(), Some(hub_ready), std::ptr::null_mut()) } != 0 {
        return Err(io::Error::other("the reactor did not take the fd"));
    }
    Ok(Hub {
        epoll,
        contexts: HashMap::new(),
    })
}

/// Puts `fd` (readable when the request can move on) into the hub on behalf of the tm
/// context `ctx`. Err: no hub in this process (the caller hands tm the fd instead).
pub(super) fn watch(fd: RawFd, ctx: *mut c_void) -> io::Result<()> {
    HUB.with(|h| {
        let mut h = h.borrow_mut();
        let hub = h.get_or_insert_with(|| match open() {
            Ok(hub) => Some(hub),
            Err(e) => {
                sso_log!(
                    L_ERR,
                    "async: no shared reactor fd ({e}); each request hands tm its own fd"
                );
                None
            }
        });
        let hub = hub
            .as_mut()
            .ok_or_else(|| io::Error::other("no hub in this process"))?;
        sys::epoll_set(&hub.epoll, fd, Want::Read, false)?;
        hub.contexts.insert(fd, ctx as usize);
        Ok(())
    })
}

/// Takes `fd` out of the hub, before it closes or its request ends.
pub(super) fn unwatch(fd: RawFd) {
    HUB.with(|h| {
        if let Some(Some(hub)) = h.borrow_mut().as_mut() {
            if hub.contexts.remove(&fd).is_some() {
                sys::epoll_del(&hub.epoll, fd);
            }
        }
    })
}

/// One ready request of the hub, if any: its fd and tm context. Never waits.
fn next_ready() -> Option<(RawFd, *mut c_void)> {
    HUB.with(|h| {
        let mut h = h.borrow_mut();
        let hub = h.as_mut()?.as_mut()?;
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: valid epoll fd, room for one event, no wait.
        let n = unsafe { libc::epoll_wait(hub.epoll.as_raw_fd(), &mut ev, 1, 0) };
        if n != 1 {
            return None;
        }
        let fd = ev.u64 as RawFd;
        match hub.contexts.get(&fd) {
            Some(&ctx) => Some((fd, ctx as *mut c_void)),
            None => {
                // Not a request of ours (cannot happen: a request leaves with its fd).
                sys::epoll_del(&hub.epoll, fd);
                Some((fd, std::ptr::null_mut()))
            }
        }
    })
}

fn resume_ready() {
    for _ in 0..RESUMES_PER_WAKE {
        let Some((fd, ctx)) = next_ready() else {
            return;
        };
        if ctx.is_null() {
            continue;
        }
        // SAFETY: `ctx` is the tm context of a suspended request whose job is alive: a job
        // leaves the hub before it ends, and tm frees the context only after that.
        if unsafe { sso_shim_resume_suspended(ctx) } < 0 {
            // Without tm's resume handler nothing can end the request: stop watching it
            // rather than spin on it.
            sso_log!(L_ERR, "async: tm cannot resume a suspended request");
            unwatch(fd);
        }
    }
}

/// The reactor's callback for the hub fd.
unsafe extern "C" fn hub_ready(_fd: c_int, _param: *mut c_void) -> c_int {
    guarded(c"sso_auth async resume", 0, report_error, || {
        resume_ready();
        Ok(0)
    });
    // Set last: each resume above ran tm code that set async_status for its own request.
    // SAFETY: a plain int of the core's, read by the reactor right after we return.
    unsafe { async_status = ASYNC_CONTINUE };
    0
}
