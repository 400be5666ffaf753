//! The async form, `async(sso_authorize(realm), resume_route)`: the decision's first step
//! runs in the async command; when it names an SSO request, the request is started on the
//! worker's non-blocking client, tm suspends the transaction, and the request's fd joins the
//! worker's hub (async_hub.rs: one epoll fd that stays in the reactor; the command returns
//! ASYNC_NO_FD). Each time the fd is readable, `resume` lets the exchange progress; when it
//! is over, the decision's second step runs on the answer and the resume route gets the
//! code. A wait for another worker's answer is a timerfd instead.
//!
//! A script timeout (`async(..., route, N)`) becomes the request's own deadline when it is
//! shorter than `http_timeout`, so such requests wait in the hub too, ended to the
//! millisecond (tm would count whole seconds, and only on a reactor entry of its own).
//! Where the hub cannot serve (an end-to-end ACK, which tm runs synchronously; no hub in
//! this process), the fd goes to tm instead, as a plain async command does.
//!
//! The job (decision state + exchange) lives on this process's heap, behind tm's
//! `resume_param`: only this worker's reactor resumes it. It is reclaimed as a `Box` at the
//! start of every resume, so a panic or an early return frees its fds and memory.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{c_int, c_void, CStr};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::core::authorize::{Outcome, Pending, Placement, Step};
use crate::core::sso::call::SsoAnswer;
use crate::core::sso::http::nonblocking::InFlight;
use crate::core::sso::http::sys;
use crate::core::sso::timer::OneShotTimer;
use crate::core::sso::SsoError;

use super::async_hub;
use super::bindings::{
    async_ctx, async_status, sip_msg, ASYNC_CHANGE_FD, ASYNC_CONTINUE, ASYNC_DONE, ASYNC_NO_FD,
    ASYNC_NO_IO, ASYNC_SYNC,
};
use super::functions::conclude;
use super::guard::{guarded, EntryError};
use super::log::report_error;
use super::request::{authorization_request, now, on_authorizer, request, str_arg, ERROR};
use super::worker;

/// What the reactor watches for a suspended request.
enum Io {
    /// An SSO exchange in flight: its epoll fd.
    Http(Box<InFlight>),
    /// Waiting for another worker's answer (or the first copy of a retransmission).
    Timer(OneShotTimer),
    /// Waiting for one of the worker's `sso_max_connections` to come free: a timer armed
    /// at the deadline, fired early by `wake_queued` when it is this request's turn.
    Queued(Rc<Waiter>),
}

impl Io {
    fn fd(&self) -> c_int {
        match self {
            Io::Http(f) => f.fd(),
            Io::Timer(t) => t.fd(),
            Io::Queued(w) => w.timer.fd(),
        }
    }
}

/// A request waiting for a free SSO connection.
struct Waiter {
    timer: OneShotTimer,
    /// Given its turn by `wake_queued` (counted in HANDED until it has used it).
    woken: Cell<bool>,
}

impl Drop for Waiter {
    // The turn is used (or lost, if the request ended) once the waiter goes.
    fn drop(&mut self) {
        if self.woken.get() {
            HANDED.with(|h| h.set(h.get().saturating_sub(1)));
        }
    }
}

thread_local! {
    /// Requests of this worker waiting for a free SSO connection, oldest first. Weak: a
    /// request that ended meanwhile (OpenSIPS stopped, reactor timeout) drops out by itself.
    static QUEUE: RefCell<VecDeque<Weak<Waiter>>> = const { RefCell::new(VecDeque::new()) };
    /// Turns given to woken requests that have not started their exchange yet: they are
    /// counted against the free connections so that one free connection wakes one request.
    static HANDED: Cell<usize> = const { Cell::new(0) };
}

/// Entries in the queues above, kept beside them so that every sync call can ask "anyone
/// queued?" without a thread-local lookup (in a cdylib each one is a call into the dynamic
/// loader). OpenSIPS workers are single-threaded; with more threads it over-counts for the
/// others, which only costs them a look at their own empty queue.
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Connections came free (an exchange ended, or a sync call returned): as many queued
/// requests as there are free connections get their turn now, oldest first. Nothing polls:
/// a queued request is woken here, or by its own deadline.
pub(super) fn wake_queued() {
    let Ok(free) = worker::with_worker(|w| {
        w.sso
            .settings()
            .max_connections
            .saturating_sub(w.sso.in_flight())
    }) else {
        return;
    };
    let mut free = free.saturating_sub(HANDED.with(Cell::get));
    QUEUE.with(|q| {
        let mut q = q.borrow_mut();
        while free > 0 {
            let Some(waiting) = q.pop_front() else { return };
            QUEUED.fetch_sub(1, Ordering::Relaxed);
            if let Some(w) = waiting.upgrade() {
                if w.timer.arm(Duration::ZERO).is_ok() {
                    w.woken.set(true);
                    HANDED.with(|h| h.set(h.get() + 1));
                    free -= 1;
                }
            }
        }
    })
}

/// Whether any request of this worker waits for a connection (cheap: no worker lock).
pub(super) fn anyone_queued() -> bool {
    QUEUED.load(Ordering::Relaxed) > 0
}

/// Whether an SSO request must queue: every connection is busy, or (for a newcomer, not
/// for a queued request whose turn it is) others wait already: nobody overtakes them.
fn must_queue(its_turn: bool) -> Result<bool, String> {
    let waiting = !its_turn
        && QUEUE.with(|q| {
            let mut q = q.borrow_mut();
            let before = q.len();
            q.retain(|w| w.strong_count() > 0);
            QUEUED.fetch_sub(before - q.len(), Ordering::Relaxed);
            !q.is_empty()
        });
    let busy = worker::with_worker(|w| w.sso.in_flight() >= w.sso.settings().max_connections)?;
    Ok(busy || waiting)
}

struct Job {
    name: &'static CStr,
    placement: Placement,
    /// The realm argument as expanded when the request arrived.
    realm: String,
    /// Taken while a step runs; always there between resumes.
    pending: Option<Box<Pending>>,
    io: Io,
    /// In the hub: the tm context the hub resumes (None: tm watches `io`'s fd itself).
    hub_ctx: Option<*mut c_void>,
}

impl Drop for Job {
    // Out of the hub before the fds close and before tm frees the context.
    fn drop(&mut self) {
        if self.hub_ctx.is_some() {
            async_hub::unwatch(self.io.fd());
        }
    }
}

impl Job {
    /// Swaps the request's io for `io` (the old one's fds close here). In the hub, the new fd
    /// takes the old one's place; Err: the hub refused it (the job is out of the hub then).
    fn replace_io(&mut self, io: Io) -> Result<(), String> {
        if let Some(ctx) = self.hub_ctx {
            async_hub::unwatch(self.io.fd());
            drop(std::mem::replace(&mut self.io, io));
            if let Err(e) = async_hub::watch(self.io.fd(), ctx) {
                self.hub_ctx = None;
                return Err(format!("cannot watch the SSO request: {e}"));
            }
            Ok(())
        } else {
            drop(std::mem::replace(&mut self.io, io));
            Ok(())
        }
    }
}

/// Whether a suspended request can go to the hub rather than hand tm its own fd: an
/// end-to-end ACK has no transaction for tm to suspend.
fn hub_serves(msg: &super::msg::Msg) -> bool {
    msg.method() != b"ACK"
}

/// Where a step leaves the request: decided, or suspended on an fd. Lives for one call.
#[allow(clippy::large_enum_variant)]
enum Next {
    Done(Outcome, bool),
    Suspend(Box<Pending>, Io),
}

/// Drives steps until one needs the reactor: a call that could not even start (no slot,
/// deadline gone, refused at once) is answered at once and the decision goes on.
/// `its_turn`: the first call is a queued request's, woken for a free connection.
fn advance(
    mut step: Step,
    req: &crate::core::authorize::AuthRequest,
    now: u64,
    mut its_turn: bool,
) -> Result<Next, String> {
    let mut sso_used = false;
    loop {
        step = match step {
            Step::Done(outcome) => return Ok(Next::Done(outcome, sso_used)),
            Step::Call(pending) => {
                let call = pending
                    .call()
                    .cloned()
                    .ok_or("the decision asked for an SSO call without naming it")?;
                sso_used = true;
                let left = pending.deadline().saturating_duration_since(Instant::now());
                let queue = !left.is_zero() && must_queue(its_turn)?;
                its_turn = false;
                if queue {
                    // Armed at the deadline: the request's turn comes from wake_queued.
                    if let Ok(timer) = OneShotTimer::new(left) {
                        let waiter = Rc::new(Waiter {
                            timer,
                            woken: Cell::new(false),
                        });
                        QUEUE.with(|q| q.borrow_mut().push_back(Rc::downgrade(&waiter)));
                        QUEUED.fetch_add(1, Ordering::Relaxed);
                        return Ok(Next::Suspend(pending, Io::Queued(waiter)));
                    }
                }
                let started = worker::with_worker(|w| w.sso.start(&call, pending.deadline()))?;
                match started {
                    Ok(flight) => return Ok(Next::Suspend(pending, Io::Http(Box::new(flight)))),
                    Err(answer) => worker::with_worker(|w| {
                        w.authorizer.resume(req, pending, Some(answer), now)
                    })?,
                }
            }
            Step::Wait(pending) => {
                let left = pending.deadline().saturating_duration_since(Instant::now());
                let after = pending.retry_in().min(left);
                match OneShotTimer::new(after) {
                    Ok(timer) => return Ok(Next::Suspend(pending, Io::Timer(timer))),
                    // No fd for the timer: look again at once rather than wait blind.
                    Err(_) => {
                        worker::with_worker(|w| w.authorizer.resume(req, pending, None, now))?
                    }
                }
            }
        }
    }
}

/// Sets a variable of the core's that tm reads right after the call returns.
fn set_async_status(value: c_int) {
    // SAFETY: a plain int of the core's, read by tm on this same thread after we return.
    unsafe { async_status = value }
}

/// The async command: `wa_sso_authorize` / `wa_sso_proxy_authorize`.
pub(super) fn start(
    name: &'static CStr,
    placement: Placement,
    ptr: *mut sip_msg,
    ctx: *mut async_ctx,
    realm: *mut c_void,
) -> c_int {
    // Until a job is handed over, tm runs the resume route at once with our return code.
    set_async_status(ASYNC_NO_IO);
    guarded(name, ERROR, report_error, || {
        let mut msg = request(ptr)?;
        let realm = str_arg("realm", realm)?.unwrap_or("");
        let (cfg, req, kept) = authorization_request(&msg, placement, realm)?;
        let now = now();
        // SAFETY: when not null, tm hands a valid context for this call, with timeout_s set
        // to the script's async timeout (0: none).
        let script_timeout_s = if ctx.is_null() {
            0
        } else {
            unsafe { (*ctx).timeout_s }
        };
        let first = on_authorizer(|w| match script_timeout_s {
            0 => w.authorizer.start(&req, now),
            s => w
                .authorizer
                .start_within(&req, now, Duration::from_secs(s.into())),
        })?;
        match advance(first, &req, now, false).map_err(|e| EntryError::new(ERROR, e))? {
            Next::Done(outcome, sso_used) => {
                let code = conclude(&mut msg, cfg, &kept, outcome, now)?;
                set_async_status(if sso_used { ASYNC_SYNC } else { ASYNC_NO_IO });
                Ok(code)
            }
            Next::Suspend(pending, io) => {
                if ctx.is_null() {
                    return Err(EntryError::new(
                        ERROR,
                        "async command called without a context",
                    ));
                }
                let fd = io.fd();
                let mut job = Box::new(Job {
                    name,
                    placement,
                    realm: realm.to_string(),
                    pending: Some(pending),
                    io,
                    hub_ctx: None,
                });
                if hub_serves(&msg) && async_hub::watch(fd, ctx as *mut c_void).is_ok() {
                    job.hub_ctx = Some(ctx as *mut c_void);
                }
                let in_hub = job.hub_ctx.is_some();
                // SAFETY: tm hands a valid, writable context for this call; it keeps the
                // pointers until it calls `resume` or `timeout` in this same process.
                unsafe {
                    let ctx = &mut *ctx;
                    ctx.resume_f = resume as *mut c_void;
                    #[cfg(sso_abi = "400")]
                    {
                        ctx.resume_f_name = c"sso_auth_resume".as_ptr() as *mut _;
                    }
                    ctx.resume_param = Box::into_raw(job) as *mut c_void;
                    ctx.timeout_f = timeout as *mut c_void;
                    // A safety net only, for an fd tm watches: the exchange's own timer
                    // fires by the request's deadline, to the millisecond; the reactor
                    // counts whole seconds.
                    ctx.timeout_s = (cfg.http_timeout_ms.div_ceil(1000) + 2) as u32;
                }
                set_async_status(if in_hub { ASYNC_NO_FD } else { fd });
                Ok(1)
            }
        }
    })
}

/// tm's resume function: the job's fd is readable.
unsafe extern "C" fn resume(_fd: c_int, ptr: *mut sip_msg, param: *mut c_void) -> c_int {
    // tm's default is ASYNC_DONE: a failure below ends the job (its Box is dropped on the way
    // out) and the resume route runs with -5.
    set_async_status(ASYNC_DONE);
    if param.is_null() {
        return ERROR;
    }
    // SAFETY: `param` is the Box handed to tm in `start`, resumed only once at a time.
    let job = unsafe { Box::from_raw(param as *mut Job) };
    guarded(job.name, ERROR, report_error, move || resume_job(job, ptr))
}

fn resume_job(mut job: Box<Job>, ptr: *mut sip_msg) -> Result<c_int, EntryError> {
    wait_for_fd(&job);
    let answer: Option<SsoAnswer> = match &mut job.io {
        Io::Http(flight) => {
            let progressed = worker::with_worker(|w| w.sso.progress(flight))
                .map_err(|e| EntryError::new(ERROR, e))?;
            match progressed {
                Some(answer) => {
                    // Its connection is free (or closed): the next queued request may go.
                    wake_queued();
                    Some(answer)
                }
                None => {
                    // Not over yet: same fd, same job.
                    set_async_status(ASYNC_CONTINUE);
                    let _ = Box::into_raw(job);
                    return Ok(0);
                }
            }
        }
        Io::Timer(timer) => {
            timer.fired();
            None
        }
        Io::Queued(waiter) => {
            waiter.timer.fired();
            return retry_queued(job, ptr);
        }
    };
    finish_step(job, ptr, Continue::Resume(answer))
}

/// Waits until the fd tm holds for the job is readable, by the job's deadline. A job tm
/// cannot put into its reactor (an end-to-end ACK, an fd the reactor refused) is run by tm
/// calling `resume` in a loop until it is done; without this wait each call returns at once
/// and the worker spins on the CPU for the whole SSO round trip. So that loop blocks as the
/// sync call does, by the same deadline (the fd of an exchange or a timer is readable by
/// then). From the reactor the fd is readable already: one poll that returns at once. The
/// hub's jobs never reach tm's loop.
fn wait_for_fd(job: &Job) {
    if job.hub_ctx.is_some() {
        return;
    }
    let Some(deadline) = job.pending.as_ref().map(|p| p.deadline()) else {
        return;
    };
    // The margin: the timers are armed at the deadline itself.
    let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100);
    // Not ready in time, or poll failed: the step below ends the job by its deadline anyway.
    let _ = sys::poll_one(job.io.fd(), sys::Want::Read, sys::ceil_ms(left));
}

/// A queued request's turn (or its periodic look): the same SSO request is started again;
/// past its deadline it ends as a timeout.
fn retry_queued(mut job: Box<Job>, ptr: *mut sip_msg) -> Result<c_int, EntryError> {
    let pending = job
        .pending
        .take()
        .ok_or_else(|| EntryError::new(ERROR, "async job resumed without its decision state"))?;
    if Instant::now() >= pending.deadline() {
        let answer = pending.call().map(|c| c.failed(SsoError::Timeout));
        job.pending = Some(pending);
        return finish_step(job, ptr, Continue::Resume(answer));
    }
    job.pending = Some(pending);
    finish_step(job, ptr, Continue::StartAgain)
}

/// Second step of the decision on `answer`, then either the end of the job or a new fd.
/// The job keeps its allocation across a change of fd: tm holds its address.
/// How a resumed job goes on: the decision's next step on an answer (None after a wait),
/// or the same SSO request started again (a queued request's turn).
enum Continue {
    Resume(Option<SsoAnswer>),
    StartAgain,
}

fn finish_step(mut job: Box<Job>, ptr: *mut sip_msg, input: Continue) -> Result<c_int, EntryError> {
    let pending = job
        .pending
        .take()
        .ok_or_else(|| EntryError::new(ERROR, "async job resumed without its decision state"))?;
    let mut msg = request(ptr)?;
    // A copy: `req` borrows it while the job itself may change (its io).
    let realm = job.realm.clone();
    let (cfg, req, kept) = authorization_request(&msg, job.placement, &realm)?;
    let now = now();
    let (step, its_turn) = match input {
        Continue::Resume(answer) => (
            worker::with_worker(|w| w.authorizer.resume(&req, pending, answer, now))
                .map_err(|e| EntryError::new(ERROR, e))?,
            false,
        ),
        Continue::StartAgain => (Step::Call(pending), true),
    };
    match advance(step, &req, now, its_turn).map_err(|e| EntryError::new(ERROR, e))? {
        Next::Done(outcome, _) => {
            // The old fd closes with the job, at the end of this function; tm takes it out
            // of the reactor after we return (it tolerates an fd already closed).
            set_async_status(ASYNC_DONE);
            conclude(&mut msg, cfg, &kept, outcome, now)
        }
        Next::Suspend(pending, io) => {
            // The new fd exists before the old one closes, so their numbers differ, as
            // ASYNC_CHANGE_FD requires.
            let fd = io.fd();
            job.pending = Some(pending);
            let in_hub = job.hub_ctx.is_some();
            if let Err(e) = job.replace_io(io) {
                // Out of the hub and tm holds no fd of ours: end the request here.
                set_async_status(ASYNC_DONE);
                let answer = job.pending.take().and_then(|p| {
                    let failed = p.call().map(|c| c.failed(SsoError::Unreachable(e.clone())));
                    worker::with_worker(|w| w.authorizer.resume(&req, p, failed, now)).ok()
                });
                let outcome = match answer {
                    Some(Step::Done(o)) => o,
                    _ => Outcome::error(e),
                };
                return conclude(&mut msg, cfg, &kept, outcome, now);
            }
            let _ = Box::into_raw(job);
            if in_hub {
                // Same request, another fd in the hub: tm keeps waiting.
                set_async_status(ASYNC_CONTINUE);
                Ok(0)
            } else {
                set_async_status(ASYNC_CHANGE_FD);
                Ok(fd)
            }
        }
    }
}

/// tm's timeout function (the script's async timeout, or our safety net of
/// http_timeout + 2 s): the request ends with the SSO's timeout.
unsafe extern "C" fn timeout(_fd: c_int, ptr: *mut sip_msg, param: *mut c_void) -> c_int {
    set_async_status(ASYNC_DONE);
    if param.is_null() {
        return ERROR;
    }
    // SAFETY: as in `resume`.
    let job = unsafe { Box::from_raw(param as *mut Job) };
    guarded(job.name, ERROR, report_error, move || {
        let mut job = job;
        let placement = job.placement;
        let realm = std::mem::take(&mut job.realm);
        let pending = job.pending.take();
        drop(job);
        // An exchange may have ended with it: its connection is free for a queued request.
        wake_queued();
        let pending = pending.ok_or_else(|| EntryError::new(ERROR, "async job without state"))?;
        let answer = pending.call().map(|c| c.failed(SsoError::Timeout));
        let mut msg = request(ptr)?;
        let (cfg, req, kept) = authorization_request(&msg, placement, &realm)?;
        let now = now();
        let outcome =
            worker::with_worker(|w| match w.authorizer.resume(&req, pending, answer, now) {
                Step::Done(o) => o,
                // No time left for another round trip: what was named is abandoned.
                _ => Outcome::error("the async timeout passed before the SSO answered"),
            })
            .map_err(|e| EntryError::new(ERROR, e))?;
        conclude(&mut msg, cfg, &kept, outcome, now)
    })
}
