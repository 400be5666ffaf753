//! The Digest path in two steps: everything decided locally (credentials, nonce, identity,
//! replay), then the SSO's answer to the login, or, for a retransmission of a request whose
//! first copy is still with the SSO, that copy's answer once it is known. Neither step makes
//! an SSO request or waits; `step.rs` drives them.

use std::time::{Duration, Instant};

use super::*;
use crate::core::sso::call::{SsoAnswer, SsoCall};

/// What the request's Digest path decided.
pub(super) enum DigestStep {
    /// None: the request has no Digest credentials for the realm.
    Done(Option<Outcome>),
    Call(DigestPending, Box<SsoCall>),
    /// Look again (`digest_resume` with no answer) for the first copy's answer.
    Wait(DigestPending),
}

/// The Digest path between its steps.
pub(super) struct DigestPending {
    header: usize,
    realm: String,
    user: String,
    /// The request's retransmission entry. With `DigestAt::Login` this request began it and
    /// must finish or abandon it; dropped unanswered, the entry lapses by itself at the
    /// `until` given to `begin` (http_timeout + 2 s), and a retransmission waiting for it
    /// gives up after its own budget and counts as a replay.
    fp: Option<Fingerprint>,
    at: DigestAt,
}

enum DigestAt {
    Login,
    /// A retransmission waiting for the first copy's answer, until then at the latest.
    FirstCopy {
        until: Instant,
    },
}

/// How one local step of the Digest decision ended.
enum Judged {
    Done(Outcome),
    Login(DigestLogin),
    /// A retransmission whose first copy is still with the SSO.
    WaitFirstCopy,
}

/// What the retransmission table says about a request whose (nonce, nc) was already used.
#[allow(clippy::large_enum_variant)] // short-lived, returned by value once
enum FirstCopy {
    Answer(Outcome),
    InFlight,
    /// Not a retransmission (or its answer is not known): a replay.
    Unknown,
}

impl DigestPending {
    fn step(self, o: Outcome) -> DigestStep {
        DigestStep::Done(Some(self.decorate(o)))
    }

    fn decorate(self, mut o: Outcome) -> Outcome {
        o.used_headers.push(self.header);
        o.source = Some(TokenSource::Digest);
        o.set_realm(Some(self.realm));
        o
    }
}

impl Authorizer {
    /// How long a retransmission waits for its first copy's answer: that copy's SSO request
    /// has http_timeout from its own start, which was earlier.
    fn first_copy_budget(&self) -> Duration {
        Duration::from_millis(self.cfg.http_timeout_ms + 200)
    }

    /// First step of the Digest path.
    pub(super) fn digest_start(&mut self, req: &AuthRequest, now: u64) -> DigestStep {
        if req.credential_headers.is_empty() {
            return DigestStep::Done(None);
        }
        // The AOR is parsed once, for the realm (when not given) and for the identity check.
        let aor = Self::request_aor(req);
        let realm = if req.realm.is_empty() {
            // As effective_realm: the header the AOR comes from is the one the realm is taken from.
            match aor.as_ref().ok().and_then(|a| self.realm_of(a)) {
                Some(r) => r,
                None => return DigestStep::Done(None),
            }
        } else {
            req.realm.to_string()
        };
        let Some((header, value, creds)) = req.credential_headers.iter().find_map(|h| {
            match credentials::parse_authorization(h.value) {
                Ok(Credentials::Digest(d)) if d.realm == realm => Some((h.id, h.value, d)),
                _ => None,
            }
        }) else {
            return DigestStep::Done(None);
        };
        let fp = req
            .transaction
            .map(|t| self.retrans_key.fingerprint(&t, value));
        let judged = self.judge_digest(req, &creds, &realm, aor, fp.as_ref(), now);
        let mut p = DigestPending {
            header,
            realm,
            user: creds.username.clone(),
            fp,
            at: DigestAt::Login,
        };
        match judged {
            Judged::Done(o) => p.step(o),
            Judged::Login(login) => DigestStep::Call(p, Box::new(SsoCall::DigestLogin(login))),
            Judged::WaitFirstCopy => {
                p.at = DigestAt::FirstCopy {
                    until: Instant::now() + self.first_copy_budget(),
                };
                DigestStep::Wait(p)
            }
        }
    }

    /// Next step: the login's answer, or None after a wait for the first copy.
    pub(super) fn digest_resume(
        &mut self,
        p: DigestPending,
        answer: Option<SsoAnswer>,
        now: u64,
    ) -> DigestStep {
        match p.at {
            DigestAt::FirstCopy { until } => {
                let fp = p.fp.as_ref().expect("only a retransmission waits");
                match self.first_copy(fp, &p.user, now) {
                    FirstCopy::Answer(o) => p.step(o),
                    FirstCopy::InFlight if Instant::now() < until => DigestStep::Wait(p),
                    FirstCopy::InFlight | FirstCopy::Unknown => {
                        let o = self.replayed();
                        p.step(o)
                    }
                }
            }
            DigestAt::Login => {
                let answer = match answer {
                    Some(SsoAnswer::Login(a)) => a,
                    // No answer, or one to another request: the driver could not make it.
                    _ => Err(SsoError::Unreachable("no answer to the SSO request".into())),
                };
                let o = self.login_outcome(p.fp.as_ref(), &p.user, answer, now);
                p.step(o)
            }
        }
    }

    // The retransmission fingerprint joined the inputs; bundling them would only move them.
    #[allow(clippy::too_many_arguments)]
    fn judge_digest(
        &mut self,
        req: &AuthRequest,
        creds: &DigestCredentials,
        realm: &str,
        aor: Result<Aor, &'static str>,
        fp: Option<&Fingerprint>,
        now: u64,
    ) -> Judged {
        let done = |code, why: &'static str| Judged::Done(Outcome::new(code, why));
        let algorithm = match creds.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(name) => match Algorithm::parse(name) {
                Some(a) => a,
                None => {
                    return done(
                        Code::NoCredentials,
                        "Digest credentials with an unknown algorithm",
                    )
                }
            },
        };
        if let Some(qop) = creds.qop.as_deref() {
            if qop != "auth" && qop != "auth-int" {
                return done(
                    Code::NoCredentials,
                    "Digest credentials with an unknown qop",
                );
            }
        }
        let info = match self.nonces.verify(&creds.nonce, now, self.cfg.nonce_expire) {
            Ok(info) => info,
            Err(NonceError::Forged) => {
                return done(
                    Code::BadNonce,
                    "nonce not issued by this service (forged or corrupted)",
                )
            }
            Err(NonceError::Expired) => return done(Code::StaleNonce, "nonce expired"),
        };
        // The nonce names the algorithm and qop its challenge offered: an answer with others
        // was altered on the way (a downgrade) or is not an answer to it.
        if info.algorithm != algorithm || !nonce::qop_allowed(info.qop, creds.qop.as_deref()) {
            return done(
                Code::BadNonce,
                "Digest answer uses another algorithm or qop than its nonce was issued for",
            );
        }
        // A nonce of another node or of an earlier start of this one: this node's replay
        // table has not seen its uses. Only the shared store (cachedb_url) can tell whether
        // it was used; without one, the client is asked to sign a local nonce (stale=true).
        let origin = match (info.issuer, self.cluster.is_some()) {
            (Issuer::Here, _) => NonceOrigin::Here,
            (_, true) => NonceOrigin::Elsewhere,
            (Issuer::OtherNode, false) => {
                return done(
                    Code::StaleNonce,
                    "nonce issued by another node (or, without node_id, before this start)",
                )
            }
            (Issuer::EarlierStart, false) => {
                return done(
                    Code::StaleNonce,
                    "nonce issued before this node's last start",
                )
            }
        };
        let issued = info.issued;
        let aor = match aor {
            Ok(a) => a,
            Err(why) => return done(Code::Error, why),
        };
        if !identity::digest_user_matches(&creds.username, realm, &aor, &self.aor_rules()) {
            return Judged::Done(Outcome::new(
                Code::IdentityMismatch,
                format!(
                    "Digest username {:?} is not the request's AOR {}@{} as registrar stores it",
                    creds.username, aor.user, aor.host
                ),
            ));
        }
        if self.cfg.token_url.is_none() {
            return done(
                Code::Error,
                "Digest credentials received but token_url is not set",
            );
        }
        // Reserve (nonce, nc) before asking the SSO: of two identical requests racing in two
        // workers, only one reaches the SSO.
        let nc = match creds.nc.as_deref().map(|h| u32::from_str_radix(h, 16)) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return done(Code::NoCredentials, "Digest credentials with a bad nc"),
        };
        match self.shared.replay.record(
            &creds.nonce,
            nc,
            issued,
            issued.saturating_add(self.cfg.nonce_expire + 1),
            now,
        ) {
            Ok(()) => {
                // Shared mode: the store decides whether this is the first use cluster-wide.
                if let Some(refused) = self.cluster_replay_check(&creds.nonce, nc, now, origin) {
                    return Judged::Done(refused);
                }
                if let Some(fp) = fp {
                    // Retransmissions of this request wait for its answer meanwhile.
                    let until = now + self.cfg.http_timeout_ms.div_ceil(1000) + 2;
                    self.shared.retrans.begin(fp, now, until);
                }
            }
            Err(ReplayError::Replayed) => {
                return match fp.map(|fp| self.first_copy(fp, &creds.username, now)) {
                    Some(FirstCopy::Answer(o)) => Judged::Done(o),
                    Some(FirstCopy::InFlight) => Judged::WaitFirstCopy,
                    Some(FirstCopy::Unknown) | None => Judged::Done(self.replayed()),
                }
            }
            Err(ReplayError::Full) => {
                return done(
                    Code::StaleNonce,
                    "replay table full: asking the client to retry with a fresh nonce",
                )
            }
        }
        let body_hash = match creds.qop.as_deref() {
            Some("auth-int") => Some(digest::hash_hex(algorithm, req.body)),
            _ => None,
        };
        Judged::Login(DigestLogin {
            username: creds.username.clone(),
            realm: realm.to_string(),
            nonce: creds.nonce.clone(),
            uri: creds.uri.clone(),
            response: creds.response.clone(),
            algorithm: algorithm.name().to_string(),
            method: req.method.to_string(),
            qop: creds.qop.clone(),
            nc: creds.nc.clone(),
            cnonce: creds.cnonce.clone(),
            opaque: creds.opaque.clone(),
            body_hash,
        })
    }

    /// A used (nonce, nc) that is not a retransmission with a known answer.
    fn replayed(&self) -> Outcome {
        self.shared.stats.inc(Stat::ReplaysBlocked);
        let mut o = Outcome::new(
            Code::BadNonce,
            "nonce reused (replayed credentials or nc not increasing)",
        );
        o.nonce_reused = true;
        o
    }

    /// The login's answer: into the retransmission entry (so retransmissions get it too),
    /// then the outcome.
    fn login_outcome(
        &self,
        fp: Option<&Fingerprint>,
        user: &str,
        answer: Result<LoginOutcome, SsoError>,
        now: u64,
    ) -> Outcome {
        if let Some(fp) = fp {
            let retrans = &self.shared.retrans;
            match &answer {
                Ok(LoginOutcome::Session { access_token, .. }) => {
                    retrans.finish(fp, Code::DigestOk as i8, Some(access_token), now)
                }
                Ok(LoginOutcome::InvalidGrant) => {
                    retrans.finish(fp, Code::WrongCredentials as i8, None, now)
                }
                Ok(LoginOutcome::UnknownUser) => {
                    retrans.finish(fp, Code::UnknownUser as i8, None, now)
                }
                Err(_) => retrans.abandon(fp, now),
            }
        }
        match answer {
            Ok(LoginOutcome::Session { access_token, .. }) => {
                let reason = if self.explain_success {
                    Cow::Owned(format!(
                        "Digest login of {user:?} accepted; SSO issued token #{}",
                        fingerprint(&access_token)
                    ))
                } else {
                    Cow::Borrowed("")
                };
                let mut o = Outcome::new(Code::DigestOk, reason);
                o.set_new_token(Some(access_token));
                o.user = Some(user.to_string());
                o
            }
            Ok(LoginOutcome::InvalidGrant) => Outcome::new(
                Code::WrongCredentials,
                format!("SSO rejected the Digest response of {user:?}"),
            ),
            Ok(LoginOutcome::UnknownUser) => Outcome::new(
                Code::UnknownUser,
                format!("SSO does not know user {user:?}"),
            ),
            Err(e) => Outcome::new(
                Code::Error,
                format!("Digest login of {user:?} failed: {}", describe(&e)),
            ),
        }
    }

    /// One look at the first copy of a request whose (nonce, nc) was already used.
    fn first_copy(&self, fp: &Fingerprint, user: &str, now: u64) -> FirstCopy {
        match self.shared.retrans.lookup(fp, now) {
            Seen::Unknown => FirstCopy::Unknown,
            Seen::Pending => FirstCopy::InFlight,
            Seen::Done(code, token) => {
                let code = match code {
                    2 => Code::DigestOk,
                    -1 => Code::UnknownUser,
                    _ => Code::WrongCredentials,
                };
                let mut o = Outcome::new(
                    code,
                    "retransmission of a Digest request: the first copy's answer again",
                );
                if code == Code::DigestOk {
                    o.set_new_token(token);
                    o.user = Some(user.to_string());
                }
                FirstCopy::Answer(o)
            }
        }
    }

    /// The first copy's answer, waiting (sleeping) while that copy is still with the SSO:
    /// the blocking form of the wait `digest_resume` makes, for tests. None: not a
    /// retransmission, or its answer did not come in time.
    #[cfg(test)]
    pub(super) fn retransmitted(&self, fp: &Fingerprint, user: &str, now: u64) -> Option<Outcome> {
        let until = Instant::now() + self.first_copy_budget();
        let mut backoff = step::Backoff::default();
        loop {
            match self.first_copy(fp, user, now) {
                FirstCopy::Answer(o) => return Some(o),
                FirstCopy::InFlight if Instant::now() < until => {
                    std::thread::sleep(backoff.next(until))
                }
                FirstCopy::InFlight | FirstCopy::Unknown => return None,
            }
        }
    }
}

impl DigestPending {
    /// For a wait: when it is over at the latest.
    pub(super) fn wait_until(&self) -> Instant {
        match self.at {
            DigestAt::FirstCopy { until } => until,
            DigestAt::Login => Instant::now(),
        }
    }
}
