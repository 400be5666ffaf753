//! The token path in two steps: a token's verdict through the shared cache (a JWT checked
//! locally, anything else introspected), then the rules on that verdict for this request.
//! Neither step makes an SSO request or waits: each names the request it needs
//! (`SsoCall`) or the wait for another worker's, and `step.rs` drives them.

use std::borrow::Cow;
use std::time::Instant;

use super::step::Deadline;
use super::*;
use crate::core::sso::call::{SsoAnswer, SsoCall};
use crate::core::token::jwt::{JwksCheck, JwksFetchReason};

/// A token's verdict in progress: what the token path holds between its steps. The token
/// is borrowed from the request while the check finishes within the call (a cache hit);
/// a check that must wait or call the SSO owns it (`TokenCheck<'static>`).
pub(super) struct TokenCheck<'t> {
    token: Cow<'t, str>,
    id: TokenId,
    how: How,
    /// This worker holds the cache's pending mark and must store a verdict or release it.
    /// Dropped unanswered, the mark lapses at its claim time (`claim_until`) by itself.
    claimed: bool,
    /// The deadline under which this check is listed in `Authorizer::checking`.
    listed: Option<Instant>,
    at: CheckAt,
}

impl TokenCheck<'_> {
    fn into_owned(self) -> TokenCheck<'static> {
        TokenCheck {
            token: Cow::Owned(self.token.into_owned()),
            id: self.id,
            how: self.how,
            claimed: self.claimed,
            listed: self.listed,
            at: self.at,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// Validated locally (a JWT, with JWT keys configured).
    Jwt,
    Introspect,
}

#[derive(Clone, Copy)]
enum CheckAt {
    /// Waiting for another worker's verdict (its pending mark).
    OtherWorker,
    Introspection,
    Jwks(JwksFetchReason),
    /// Waiting for the JWK Set another request of this worker is fetching.
    JwksFetchElsewhere,
}

/// A token's verdict. Ok((None, _)): not active; the `bool`: it came from a cache.
pub(super) type Verdict = Result<(Option<Box<Introspection>>, bool), SsoError>;

/// What one step of a token's verdict decided.
pub(super) enum Check<'t> {
    /// The `String`: why a JWT was refused (for the log).
    Verdict(TokenCheck<'t>, Verdict, Option<String>),
    /// Boxed, like every request a step names: the verdict is the common case, and it
    /// should not move an SsoCall's room around.
    Call(TokenCheck<'static>, Box<SsoCall>),
    /// Look again (`check_resume` with no answer), by the deadline at the latest.
    Wait(TokenCheck<'static>),
}

/// What the request's token path decided.
pub(super) enum TokenStep {
    /// None: the request carries no token (or token checks are off).
    Done(Option<Outcome>),
    Call(TokenPending, Box<SsoCall>),
    Wait(TokenPending),
}

/// The request's token path between its steps.
pub(super) struct TokenPending {
    header: usize,
    source: TokenSource,
    check: TokenCheck<'static>,
}

impl Authorizer {
    /// Seconds a pending mark holds: the call's budget and a margin, whole seconds.
    fn claim_until(&self, now: u64) -> u64 {
        now + self.cfg.http_timeout_ms / 1000 + 2
    }

    /// Whether another request of this worker is checking the token. A listed check past
    /// its deadline no longer counts (its Pending was dropped, or its answer is lost) and
    /// is forgotten here, so the list only holds checks in progress.
    fn checked_elsewhere(&mut self, id: &TokenId) -> bool {
        let now = Instant::now();
        self.checking.retain(|(_, until)| *until > now);
        self.checking.iter().any(|(listed, _)| listed == id)
    }

    /// For blocking drivers: a wait for this worker's own JWK Set fetch becomes a fetch of
    /// the caller's own (the call returned, `tc` now waiting for its answer), since that
    /// fetch belongs to a suspended async request, which cannot progress while the worker
    /// blocks. None for any other check.
    pub(super) fn own_fetch_instead(&self, tc: &mut TokenCheck<'static>) -> Option<SsoCall> {
        let url = match (tc.at, self.jwt.as_ref().map(|local| &local.keys)) {
            (CheckAt::JwksFetchElsewhere, Some(JwtKeys::Fetched { url, .. })) => url.clone(),
            _ => return None,
        };
        tc.at = CheckAt::Jwks(JwksFetchReason::Due);
        Some(SsoCall::FetchJwks { url })
    }

    /// `own_fetch_instead` for a request's token path.
    pub(super) fn own_fetch_for_request(&self, p: &mut TokenPending) -> Option<SsoCall> {
        self.own_fetch_instead(&mut p.check)
    }

    /// First step of a token's verdict.
    pub(super) fn check_start<'t>(
        &mut self,
        token: Cow<'t, str>,
        now: u64,
        deadline: &Deadline,
    ) -> Check<'t> {
        let how = if self.jwt.is_some() && jwt::looks_like_jwt(&token) {
            How::Jwt
        } else {
            How::Introspect
        };
        let tc = TokenCheck {
            id: TokenId::of(&token),
            token,
            how,
            claimed: false,
            listed: None,
            at: CheckAt::OtherWorker,
        };
        if how == How::Introspect && self.cfg.introspect_url.is_none() {
            let why = Some("not a JWT, and introspect_url is not set".to_string());
            return Check::Verdict(tc, Ok((None, false)), why);
        }
        self.check_look(tc, now, deadline)
    }

    /// Next step: the answer to the request `Check::Call` named, or None after a wait.
    pub(super) fn check_resume(
        &mut self,
        mut tc: TokenCheck<'static>,
        answer: Option<SsoAnswer>,
        now: u64,
        deadline: &Deadline,
    ) -> Check<'static> {
        match (tc.at, answer) {
            (CheckAt::OtherWorker, _) => self.check_look(tc, now, deadline),
            (CheckAt::JwksFetchElsewhere, _) => self.check_own(tc, now, deadline),
            (CheckAt::Introspection, Some(SsoAnswer::Introspection(answer))) => {
                let ttls = self.store_remember(&tc.id, now, &answer);
                self.check_answer(tc, answer, ttls, now, None)
            }
            (CheckAt::Jwks(reason), Some(SsoAnswer::Jwks(body))) => {
                let local = self.jwt.as_mut().expect("a JWK Set fetch has JWT keys");
                let JwtKeys::Fetched { url, cache } = &mut local.keys else {
                    unreachable!("only fetched keys ask for a fetch")
                };
                match cache.fetched(&tc.token, &local.policy, now, reason, body) {
                    JwksCheck::Verdict(v) => self.check_jwt_verdict(tc, v, now),
                    JwksCheck::Fetch(reason) => {
                        let call = Box::new(SsoCall::FetchJwks { url: url.clone() });
                        tc.at = CheckAt::Jwks(reason);
                        Check::Call(tc, call)
                    }
                    // Not expected right after `fetched` (it ends the fetch in flight), but
                    // should another be in flight, this request waits for it like any other.
                    JwksCheck::Wait => {
                        tc.at = CheckAt::JwksFetchElsewhere;
                        Check::Wait(tc)
                    }
                }
            }
            // No answer, or one to another request: the driver could not make the call.
            (_, _) => {
                let e = SsoError::Unreachable("no answer to the SSO request".into());
                let ttls = (self.cfg.cache_ttl, self.cfg.negative_cache_ttl);
                self.check_answer(tc, Err(e), ttls, now, None)
            }
        }
    }

    /// Looks into the local cache: a verdict, a wait for the worker holding the pending
    /// mark, or this worker's own check (now holding the mark when there was room).
    fn check_look<'t>(
        &mut self,
        mut tc: TokenCheck<'t>,
        now: u64,
        deadline: &Deadline,
    ) -> Check<'t> {
        let looked = if self.cfg.cache_ttl == 0 {
            Lookup::Uncached
        } else {
            let claim_until = self.claim_until(now);
            self.shared
                .tokens
                .lookup_into(&tc.id, now, claim_until, &mut self.spare)
        };
        // The mark is ours, but another request of this worker (async) is checking the
        // token: wait for it like any other worker would.
        let looked = match looked {
            Lookup::Claimed if self.checked_elsewhere(&tc.id) => Lookup::Pending,
            other => other,
        };
        match looked {
            Lookup::Hit(info) => {
                self.shared.stats.inc(Stat::CacheHits);
                Check::Verdict(tc, Ok((Some(info), true)), None)
            }
            Lookup::NegativeHit => {
                self.shared.stats.inc(Stat::CacheHits);
                Check::Verdict(tc, Ok((None, true)), None)
            }
            // Another worker is asking the SSO: wait for its answer within this call's own
            // budget only, never asking the SSO ourselves while the mark is there.
            Lookup::Pending if Instant::now() >= deadline.get() => {
                Check::Verdict(tc, Err(SsoError::Timeout), None)
            }
            Lookup::Pending => {
                tc.at = CheckAt::OtherWorker;
                Check::Wait(tc.into_owned())
            }
            Lookup::Uncached | Lookup::Claimed => {
                self.shared.stats.inc(Stat::CacheMisses);
                tc.claimed = matches!(looked, Lookup::Claimed);
                if tc.claimed {
                    let until = deadline.get();
                    self.checking.push((tc.id, until));
                    tc.listed = Some(until);
                }
                self.check_own(tc, now, deadline)
            }
        }
    }

    /// This worker's own check of a token the local cache does not know.
    fn check_own<'t>(
        &mut self,
        mut tc: TokenCheck<'t>,
        now: u64,
        deadline: &Deadline,
    ) -> Check<'t> {
        match tc.how {
            How::Jwt => {
                let local = self.jwt.as_mut().expect("How::Jwt has JWT keys");
                let verdict = match &mut local.keys {
                    JwtKeys::Fixed(keys) => jwt::validate(&tc.token, keys, &local.policy, now),
                    JwtKeys::Fetched { url, cache } => {
                        match cache.check(&tc.token, &local.policy, now) {
                            JwksCheck::Verdict(v) => v,
                            JwksCheck::Fetch(reason) => {
                                let call = Box::new(SsoCall::FetchJwks { url: url.clone() });
                                tc.at = CheckAt::Jwks(reason);
                                return Check::Call(tc.into_owned(), call);
                            }
                            // No keys yet and this worker's fetch is in flight (another
                            // async request asked for it): wait for it, within this
                            // request's own budget.
                            JwksCheck::Wait if Instant::now() < deadline.get() => {
                                tc.at = CheckAt::JwksFetchElsewhere;
                                return Check::Wait(tc.into_owned());
                            }
                            JwksCheck::Wait => {
                                let ttls = (self.cfg.cache_ttl, self.cfg.negative_cache_ttl);
                                let e = SsoError::Unreachable(
                                    "the JWK Set fetch in flight did not finish in time".into(),
                                );
                                return self.check_answer(tc, Err(e), ttls, now, None);
                            }
                        }
                    }
                };
                self.check_jwt_verdict(tc, verdict, now)
            }
            How::Introspect => match self.store_lookup(&tc.id, now) {
                Some((info, ttls)) => self.check_answer(tc, Ok(info), ttls, now, None),
                None => {
                    let call = Box::new(SsoCall::Introspect {
                        token: tc.token.to_string(),
                    });
                    tc.at = CheckAt::Introspection;
                    Check::Call(tc.into_owned(), call)
                }
            },
        }
    }

    /// A JWT's local verdict as an introspection result: refused is not active (and why);
    /// no keys at all is our side's failure, like an SSO error.
    fn check_jwt_verdict<'t>(
        &mut self,
        tc: TokenCheck<'t>,
        verdict: Result<Introspection, JwtError>,
        now: u64,
    ) -> Check<'t> {
        let mut why = None;
        let answer = match verdict {
            Ok(info) => Ok(info),
            Err(JwtError::NoKeys(m)) => Err(SsoError::Unreachable(format!(
                "no JWT keys to check the token with: {m}"
            ))),
            Err(e) => {
                why = Some(e.to_string());
                Ok(not_active())
            }
        };
        // A JWT never goes through the shared store: every node checks it locally.
        let ttls = (self.cfg.cache_ttl, self.cfg.negative_cache_ttl);
        self.check_answer(tc, answer, ttls, now, why)
    }

    /// This worker's own verdict (SSO, store or JWT keys) into the local cache, or the
    /// pending mark released when there is none, so a waiter may try.
    fn check_answer<'t>(
        &mut self,
        tc: TokenCheck<'t>,
        answer: Result<Introspection, SsoError>,
        (ttl, negative_ttl): (u64, u64),
        now: u64,
        why: Option<String>,
    ) -> Check<'t> {
        if let Some(until) = tc.listed {
            self.checking
                .retain(|(id, u)| !(*id == tc.id && *u == until));
        }
        let cache = &self.shared.tokens;
        let grace = self.exp_grace(&tc.token);
        match &answer {
            Ok(info)
                if usable(info, now, grace) && token_kind_and_audience(&self.cfg, info).is_ok() =>
            {
                cache.store_positive(&tc.id, info, &claims_to_cache(&self.cfg, info), now, ttl)
            }
            Ok(_) => cache.store_negative(&tc.id, now, negative_ttl),
            Err(_) if tc.claimed => cache.release(&tc.id, now),
            Err(_) => {}
        }
        Check::Verdict(tc, answer.map(|i| (Some(Box::new(i)), false)), why)
    }

    /// First step of the request's token path.
    pub(super) fn token_start(
        &mut self,
        req: &AuthRequest,
        now: u64,
        deadline: &Deadline,
    ) -> TokenStep {
        if !self.cfg.token_checks() {
            return TokenStep::Done(None);
        }
        let Some((header, source, parsed)) = find_token(req) else {
            return TokenStep::Done(None);
        };
        let token = match parsed {
            Ok(t) => t,
            Err((why, error)) => {
                let mut o = Outcome::new(Code::InvalidToken, format!("token refused ({why})"));
                o.bearer_error = Some(error);
                o.used_headers.push(header);
                o.source = Some(source);
                return TokenStep::Done(Some(o));
            }
        };
        let check = self.check_start(token, now, deadline);
        self.token_next(req, header, source, check, now)
    }

    pub(super) fn token_resume(
        &mut self,
        req: &AuthRequest,
        p: TokenPending,
        answer: Option<SsoAnswer>,
        now: u64,
        deadline: &Deadline,
    ) -> TokenStep {
        let check = self.check_resume(p.check, answer, now, deadline);
        self.token_next(req, p.header, p.source, check, now)
    }

    fn token_next(
        &mut self,
        req: &AuthRequest,
        header: usize,
        source: TokenSource,
        check: Check<'_>,
        now: u64,
    ) -> TokenStep {
        let (tc, verdict, why) = match check {
            Check::Call(check, call) => {
                return TokenStep::Call(
                    TokenPending {
                        header,
                        source,
                        check,
                    },
                    call,
                )
            }
            Check::Wait(check) => {
                return TokenStep::Wait(TokenPending {
                    header,
                    source,
                    check,
                })
            }
            Check::Verdict(tc, verdict, why) => (tc, verdict, why),
        };
        let mut o = self.token_outcome(req, &tc, verdict, why, now);
        o.used_headers.push(header);
        o.source = Some(source);
        TokenStep::Done(Some(o))
    }

    /// The request's outcome from its token's verdict.
    fn token_outcome(
        &self,
        req: &AuthRequest,
        tc: &TokenCheck<'_>,
        verdict: Verdict,
        why: Option<String>,
        now: u64,
    ) -> Outcome {
        let id = &tc.id;
        let (mut info, cached) = match verdict {
            Ok((Some(info), cached)) if why.is_none() => (info, cached),
            Ok(_) => {
                let fp = id.fingerprint();
                let reason = match why {
                    Some(w) => format!("token #{fp} refused: {w}"),
                    None => format!("token #{fp} is not active (cached)"),
                };
                let mut o = Outcome::new(Code::InvalidToken, reason);
                o.bearer_error = Some(BearerError::InvalidToken);
                return o;
            }
            Err(e) => {
                return Outcome::new(
                    Code::Error,
                    format!(
                        "introspection of token #{} failed: {}",
                        id.fingerprint(),
                        describe(&e)
                    ),
                )
            }
        };
        let grace = self.exp_grace(&tc.token);
        let mut o = self.judge_token(req, &info, now, id, grace, cached);
        if o.code.is_success() {
            o.user = info.user.take();
            o.introspection = Some(info);
            if cached && self.explain_success {
                o.reason.to_mut().push_str(" (cached)");
            }
        }
        o
    }
}
