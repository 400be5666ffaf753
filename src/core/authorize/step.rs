//! One decision, two steps: `start` decides what it can locally or names the SSO request
//! (or the wait) it needs; `resume` takes the answer and goes on. The blocking script
//! functions drive them with `authorize`, the async ones with a non-blocking client and a
//! timer; both run the same code, so side effects (replay records, cache marks,
//! retransmission entries, statistics) happen once per request whichever drives it.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::digest_path::{DigestPending, DigestStep};
use super::token_path::{Check, TokenPending, TokenStep, Verdict};
use super::*;
use crate::core::sso::call::{SsoAnswer, SsoCall};

/// What a step decided.
// `Done` stays inline on purpose: it is the step of every cache hit, which must not
// allocate; the rarer Call and Wait box their state.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    Done(Outcome),
    /// Make `pending.call()` (by `pending.deadline()`), then `resume` with its answer.
    /// Boxed, like `Wait`'s: a decision state is large, and a step that ends at once (a
    /// cache hit) should not move one around.
    Call(Box<Pending>),
    /// Another worker (or this request's first copy) is asking the SSO: `resume` with no
    /// answer after `pending.retry_in()`.
    Wait(Box<Pending>),
}

/// A decision between its steps. It owns all it needs (nothing borrowed from the request:
/// the caller rebuilds the same `AuthRequest` from the same message to resume) and holds
/// its own deadline, so calls interleaved in one worker each keep their budget.
///
/// Dropping it without resuming (the request was abandoned) leaves nothing stuck: the
/// token cache's pending mark lapses at its claim time (http_timeout + 2 s, and this
/// worker's next lookup of the token takes it over at once), a retransmission entry at
/// the `until` it was begun with (the same span). Replay records stay, as they would after
/// a finished call: the nonce use happened.
pub struct Pending {
    deadline: Instant,
    /// Unclamped wait interval of this wait (the next one backs off from it).
    backoff: Backoff,
    retry_in: Duration,
    call: Option<SsoCall>,
    recheck: bool,
    at: At,
}

// Moved a few times per request, never stored in bulk: boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
enum At {
    Token(TokenPending),
    Digest {
        pending: DigestPending,
        /// The token path's outcome, when the request carried a token that failed.
        token_outcome: Option<Outcome>,
    },
}

impl Pending {
    /// The SSO request to make: Some for `Step::Call`.
    pub fn call(&self) -> Option<&SsoCall> {
        self.call.as_ref()
    }

    /// End of this script call's budget (http_timeout from `start`): every SSO request is
    /// over by then. A wait's end is decided by `resume` (a retransmission waits for its
    /// first copy's answer for http_timeout + 200 ms, as that copy's request may have begun
    /// before this call).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// For `Step::Wait`: when to look again.
    pub fn retry_in(&self) -> Duration {
        self.retry_in
    }
}

// Pending crosses to whatever runs the async request (a timer, the reactor).
const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Pending>()
};

/// First look again after 2 ms, then ever later up to 20 ms: a short wait stays short,
/// a long one costs few wake-ups.
const FIRST_RETRY: Duration = Duration::from_millis(2);
const MAX_RETRY: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Default)]
pub(super) struct Backoff(Option<Duration>);

impl Backoff {
    /// The next interval, never past `until`.
    pub(super) fn next(&mut self, until: Instant) -> Duration {
        let next = match self.0 {
            None => FIRST_RETRY,
            Some(d) => (d * 2).min(MAX_RETRY),
        };
        self.0 = Some(next);
        next.min(until.saturating_duration_since(Instant::now()))
    }
}

/// When a decision must be over: its budget (`http_timeout`, or the caller's shorter one)
/// counted from the first moment a step needs to know. A decision that ends at once (a
/// cache hit, no credentials, a refused nonce) never reads the monotonic clock; one that
/// calls or waits reads it within microseconds of its start.
pub(super) struct Deadline {
    budget: Duration,
    at: Cell<Option<Instant>>,
}

impl Deadline {
    fn after(budget: Duration) -> Deadline {
        Deadline {
            budget,
            at: Cell::new(None),
        }
    }

    /// A deadline already fixed (a decision resumed).
    fn fixed(at: Instant) -> Deadline {
        Deadline {
            budget: Duration::ZERO,
            at: Cell::new(Some(at)),
        }
    }

    pub(super) fn get(&self) -> Instant {
        if let Some(at) = self.at.get() {
            return at;
        }
        let at = Instant::now() + self.budget;
        self.at.set(Some(at));
        at
    }
}

/// What the next step carries over.
struct Ctx {
    deadline: Deadline,
    backoff: Backoff,
    recheck: bool,
}

impl Ctx {
    fn call(self, at: At, call: Box<SsoCall>) -> Step {
        Step::Call(Box::new(Pending {
            deadline: self.deadline.get(),
            backoff: Backoff::default(),
            retry_in: Duration::ZERO,
            call: Some(*call),
            recheck: self.recheck,
            at,
        }))
    }

    fn wait(mut self, at: At, until: Instant) -> Step {
        let retry_in = self.backoff.next(until);
        Step::Wait(Box::new(Pending {
            deadline: self.deadline.get(),
            backoff: self.backoff,
            retry_in,
            call: None,
            recheck: self.recheck,
            at,
        }))
    }
}

impl Authorizer {
    /// Step 1 of `sso_authorize`: the outcome when nothing needs the SSO (a cache hit, a
    /// JWT checked with keys at hand, no or refused credentials, a replay, ...), else the
    /// request or the wait that comes first. `now` is unix seconds.
    pub fn start(&mut self, req: &AuthRequest, now: u64) -> Step {
        self.start_as(req, now, false, None)
    }

    /// `start` with a budget of the caller's (the async statement's script timeout) that
    /// ends the whole decision earlier than `http_timeout` would.
    pub fn start_within(&mut self, req: &AuthRequest, now: u64, budget: Duration) -> Step {
        self.start_as(req, now, false, Some(budget))
    }

    /// Step 1 of the token-only check `recheck_token` makes. `Done` with a non-success
    /// code when the token does not authorize the request (or there is none).
    pub fn recheck_start(&mut self, req: &AuthRequest, now: u64) -> Step {
        self.start_as(req, now, true, None)
    }

    fn start_as(
        &mut self,
        req: &AuthRequest,
        now: u64,
        recheck: bool,
        budget: Option<Duration>,
    ) -> Step {
        let ctx = Ctx {
            deadline: self.call_deadline_within(budget),
            backoff: Backoff::default(),
            recheck,
        };
        let ts = self.token_start(req, now, &ctx.deadline);
        self.after_token(req, ts, ctx, now)
    }

    /// Step 2: the answer to `pending.call()`, or None after a wait. May name another
    /// request (a refused token, then the Digest login beside it; a JWK Set fetched, then
    /// a refetch for an unknown key) or another wait.
    pub fn resume(
        &mut self,
        req: &AuthRequest,
        pending: Box<Pending>,
        answer: Option<SsoAnswer>,
        now: u64,
    ) -> Step {
        let Pending {
            deadline,
            backoff,
            call,
            recheck,
            at,
            ..
        } = *pending;
        // After a call the answer is what counts (a missing one reads as a failed call);
        // after a wait there is none to take.
        let answer = match &call {
            Some(_) => {
                if let Some(a) = &answer {
                    self.count_answer(a);
                }
                answer
            }
            None => None,
        };
        let ctx = Ctx {
            deadline: Deadline::fixed(deadline),
            backoff: if call.is_some() {
                Backoff::default()
            } else {
                backoff
            },
            recheck,
        };
        match at {
            At::Token(p) => {
                let ts = self.token_resume(req, p, answer, now, &ctx.deadline);
                self.after_token(req, ts, ctx, now)
            }
            At::Digest {
                pending,
                token_outcome,
            } => {
                let ds = self.digest_resume(pending, answer, now);
                self.after_digest(req, ds, token_outcome, ctx)
            }
        }
    }

    /// Decides one request, blocking: the steps driven with `sso` and sleeps. `now` is
    /// unix seconds.
    pub fn authorize(&mut self, req: &AuthRequest, sso: &mut dyn SsoApi, now: u64) -> Outcome {
        let step = self.start(req, now);
        self.drive(req, step, sso, now)
    }

    /// The request's token checked again (through the shared cache), for identity functions
    /// running where this worker's own authorization of the request is not at hand: a failure
    /// route, which tm runs on a copy of the request, possibly in another worker. Only the
    /// token path: a Digest login cannot be repeated. Leaves the accept/reject statistics
    /// alone.
    pub fn recheck_token(
        &mut self,
        req: &AuthRequest,
        sso: &mut dyn SsoApi,
        now: u64,
    ) -> Option<Outcome> {
        let step = self.recheck_start(req, now);
        Some(self.drive(req, step, sso, now)).filter(|o| o.code.is_success())
    }

    fn drive(
        &mut self,
        req: &AuthRequest,
        mut step: Step,
        sso: &mut dyn SsoApi,
        now: u64,
    ) -> Outcome {
        loop {
            step = match step {
                Step::Done(o) => return o,
                Step::Call(p) => {
                    let answer = perform(&p, sso);
                    self.resume(req, p, Some(answer), now)
                }
                Step::Wait(mut p) => {
                    if self.own_fetch_instead_of_wait(&mut p) {
                        let answer = perform(&p, sso);
                        self.resume(req, p, Some(answer), now)
                    } else {
                        std::thread::sleep(p.retry_in());
                        self.resume(req, p, None, now)
                    }
                }
            }
        }
    }

    /// The blocking driver's side of `own_fetch_instead`: a wait for this worker's own JWK
    /// Set fetch turns into a call (true); any other wait is left as it is.
    fn own_fetch_instead_of_wait(&self, p: &mut Pending) -> bool {
        let At::Token(tp) = &mut p.at else {
            return false;
        };
        let Some(fetch) = self.own_fetch_for_request(tp) else {
            return false;
        };
        p.call = Some(fetch);
        p.backoff = Backoff::default();
        p.retry_in = Duration::ZERO;
        true
    }

    /// A token's verdict, blocking (the issued token's claims for `identity`).
    pub(super) fn check_token_blocking(
        &mut self,
        token: String,
        sso: &mut dyn SsoApi,
        now: u64,
    ) -> (Verdict, Option<String>) {
        let deadline = self.call_deadline_within(None);
        let mut backoff = Backoff::default();
        let mut check = self.check_start(Cow::Owned(token), now, &deadline);
        loop {
            check = match check {
                Check::Verdict(_, verdict, why) => return (verdict, why),
                Check::Call(tc, call) => {
                    sso.set_deadline(Some(deadline.get()));
                    let answer = call.perform(sso);
                    self.count_answer(&answer);
                    backoff = Backoff::default();
                    self.check_resume(tc, Some(answer), now, &deadline)
                }
                Check::Wait(mut tc) => match self.own_fetch_instead(&mut tc) {
                    Some(fetch) => Check::Call(tc, Box::new(fetch)),
                    None => {
                        std::thread::sleep(backoff.next(deadline.get()));
                        self.check_resume(tc, None, now, &deadline)
                    }
                },
            }
        }
    }

    /// The budget of one script-function call: http_timeout for everything it does (name
    /// resolution, connections, waiting for another worker, a Digest login after a failed
    /// token check), or less when the caller's own budget is shorter.
    fn call_deadline_within(&self, budget: Option<Duration>) -> Deadline {
        let http = Duration::from_millis(self.cfg.http_timeout_ms);
        Deadline::after(budget.map_or(http, |b| b.min(http)))
    }

    /// One SSO answer handed in: counted once, whoever made the request.
    fn count_answer(&self, answer: &SsoAnswer) {
        let stats = &self.shared.stats;
        stats.inc(Stat::SsoRequests);
        match answer.error() {
            Some(SsoError::Timeout) => {
                stats.inc(Stat::SsoErrors);
                stats.inc(Stat::SsoTimeouts)
            }
            Some(SsoError::NotConfigured) | None => {}
            Some(_) => stats.inc(Stat::SsoErrors),
        }
    }

    fn after_token(&mut self, req: &AuthRequest, ts: TokenStep, ctx: Ctx, now: u64) -> Step {
        match ts {
            TokenStep::Call(p, call) => ctx.call(At::Token(p), call),
            TokenStep::Wait(p) => {
                let until = ctx.deadline.get();
                ctx.wait(At::Token(p), until)
            }
            TokenStep::Done(t) if ctx.recheck => {
                Step::Done(t.unwrap_or_else(|| {
                    Outcome::new(Code::NoCredentials, "no token in the request")
                }))
            }
            TokenStep::Done(Some(t)) if t.code.is_success() => self.finish(req, t),
            TokenStep::Done(t) => {
                // No valid token: regular SIP authentication decides when Digest
                // credentials are there.
                let ds = self.digest_start(req, now);
                self.after_digest(req, ds, t, ctx)
            }
        }
    }

    fn after_digest(
        &mut self,
        req: &AuthRequest,
        ds: DigestStep,
        token_outcome: Option<Outcome>,
        ctx: Ctx,
    ) -> Step {
        let d = match ds {
            DigestStep::Call(pending, call) => {
                let at = At::Digest {
                    pending,
                    token_outcome,
                };
                return ctx.call(at, call);
            }
            DigestStep::Wait(pending) => {
                let until = pending.wait_until();
                let at = At::Digest {
                    pending,
                    token_outcome,
                };
                return ctx.wait(at, until);
            }
            DigestStep::Done(d) => d,
        };
        let carried_token = token_outcome.is_some();
        let mut o = match d {
            Some(mut d) => {
                if d.bearer_error.is_none() {
                    d.bearer_error = token_outcome.as_ref().and_then(|t| t.bearer_error);
                }
                d
            }
            None => token_outcome.unwrap_or_else(|| {
                Outcome::new(
                    Code::NoCredentials,
                    "no token and no Digest credentials for the realm",
                )
            }),
        };
        o.carried_token = carried_token;
        self.finish(req, o)
    }

    /// The end of a decision: the headers sso_consume_credentials removes, and the
    /// accepted / rejected statistics.
    fn finish(&self, req: &AuthRequest, mut o: Outcome) -> Step {
        o.consume_headers = consume_headers(req, &o.used_headers);
        let stats = &self.shared.stats;
        match (o.code, o.source) {
            (Code::TokenOk, _) => stats.inc(Stat::TokenAccepted),
            (Code::DigestOk, _) => stats.inc(Stat::DigestAccepted),
            (Code::NoCredentials, None) => {}
            (_, Some(TokenSource::Digest)) => stats.inc(Stat::DigestRejected),
            (_, Some(_)) => stats.inc(Stat::TokenRejected),
            (_, None) => {}
        }
        Step::Done(o)
    }
}

/// Makes a pending call with a blocking client, bounded by the pending's deadline.
fn perform(p: &Pending, sso: &mut dyn SsoApi) -> SsoAnswer {
    sso.set_deadline(Some(p.deadline()));
    match p.call() {
        Some(call) => call.perform(sso),
        // A Call step always names its request; never reached.
        None => SsoAnswer::Introspection(Err(SsoError::Unreachable("no SSO request named".into()))),
    }
}
