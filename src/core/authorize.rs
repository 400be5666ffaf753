//! The authorization decision of `sso_authorize` / `sso_proxy_authorize` and the content of
//! `sso_challenge` / `sso_proxy_challenge`, independent of OpenSIPS: the FFI layer hands in the
//! request's relevant headers and gets back a code, the headers to add and a reason to log.
//!
//! The decision runs in steps (`step.rs`): `start` decides locally or names the SSO request
//! it needs, `resume` takes the answer; the token and Digest paths live in `token_path.rs`
//! and `digest_path.rs`, the blocking driver `authorize` in `step.rs`.

use std::borrow::Cow;
use std::sync::Arc;
// The tests' clock (the decision's own timing lives in `step.rs`).
#[cfg(test)]
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::cluster::NonceOrigin;
use super::config::{BearerChallenge, Config};
use super::digest::challenge::{self, BearerError, QopOffer};
use super::digest::credentials::{self, Credentials, DigestCredentials};
use super::digest::nonce::{self, Issuer, NonceError, NonceKey};
use super::digest::replay::{ReplayError, ReplayGuard};
use super::digest::retrans::{Fingerprint, RetransKey, RetransTable, Seen, TransactionId};
use super::digest::{self, Algorithm};
use super::identity::{self, Aor};
use super::sso::{DigestLogin, Introspection, LoginOutcome, SsoApi, SsoError};
use super::stats::{Stat, Stats};
use super::text::trim_lws;
use super::token::cache::{Lookup, SharedTokenCache, TokenId, MAX_CLAIMS_JSON};
use super::token::claims::{self, IdentityValueError, SsoVar};
use super::token::jwt::{self, JwksCache, JwtError, JwtPolicy, KeySet};

/// Return codes of sso_authorize / sso_proxy_authorize (OpenSIPS auth's codes, extended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    TokenOk = 1,
    DigestOk = 2,
    UnknownUser = -1,
    WrongCredentials = -2,
    StaleNonce = -3,
    NoCredentials = -4,
    Error = -5,
    InvalidToken = -6,
    IdentityMismatch = -7,
    BadNonce = -8,
}

impl Code {
    pub fn value(self) -> i32 {
        self as i32
    }
    pub fn is_success(self) -> bool {
        self.value() > 0
    }
}

/// Which header carries credentials: `Authorization` (registrar, 401) or
/// `Proxy-Authorization` (proxy, 407).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Www,
    Proxy,
}

/// One header of the request, as the FFI layer found it; `id` lets it name the header back.
#[derive(Debug, Clone, Copy)]
pub struct HeaderRef<'a> {
    pub id: usize,
    pub value: &'a [u8],
}

/// A request's credential or token headers: rarely more than one or two, so they live
/// inline and building a request allocates nothing for them.
pub type HeaderRefs<'a> = SmallVec<[HeaderRef<'a>; 2]>;

/// Header ids an outcome names (used, consumed): inline for the same reason.
pub type HeaderIds = SmallVec<[usize; 2]>;

/// What the decision needs to know about a request.
#[derive(Debug, Clone)]
pub struct AuthRequest<'a> {
    pub placement: Placement,
    pub method: &'a str,
    pub is_register: bool,
    /// The expanded `realm` argument; empty: derived from To/From.
    pub realm: &'a str,
    pub to: Option<&'a [u8]>,
    pub from: Option<&'a [u8]>,
    /// Authorization headers (Placement::Www) or Proxy-Authorization headers (Proxy), in order.
    pub credential_headers: HeaderRefs<'a>,
    /// Headers named like the `token_header` parameter, in order.
    pub token_headers: HeaderRefs<'a>,
    pub body: &'a [u8],
    /// Top Via, Call-ID and CSeq, which a retransmission repeats: its Digest request then
    /// gets the first copy's answer. None: retransmissions are not recognised.
    pub transaction: Option<TransactionId<'a>>,
}

/// Where a token came from (reported to the script and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Bearer,
    Digest,
}

/// Result of one authorization.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub code: Code,
    /// Header ids that carried the credentials that decided.
    pub used_headers: HeaderIds,
    /// Header ids sso_consume_credentials removes: the deciding header, and every header
    /// that carries an SSO token (token headers and Bearer credentials), in message order.
    pub consume_headers: HeaderIds,
    /// What only a Digest login sets (the issued token, the credentials' realm): boxed,
    /// so the outcome of a token check stays small enough to be moved without a memcpy
    /// call. Read and set through `new_token` and `realm`.
    login: Option<Box<LoginParts>>,
    /// Bearer error for the next challenge of this request.
    pub bearer_error: Option<BearerError>,
    /// The authenticated user (token user or Digest username).
    pub user: Option<String>,
    pub source: Option<TokenSource>,
    /// The introspection result behind a token success. After a token success its `user`
    /// has moved to `Outcome::user`, the one place the user is read from.
    /// Boxed: the outcome moves a few times per request, the record stays put.
    pub introspection: Option<Box<Introspection>>,
    /// Short explanation for the log: never a token, password or secret. Empty for a success
    /// when the authorizer was told that nobody will read it (`set_explain_success(false)`).
    pub reason: Cow<'static, str>,
    /// The token issued after a Digest login was already introspected for its claims.
    pub issued_token_checked: bool,
    /// The request carried a token (token header or Bearer credentials), good or bad: with
    /// `bearer_challenge` = when_token, only then does a challenge offer Bearer.
    pub carried_token: bool,
    /// The Digest nonce is ours and valid but was already used (not a retransmission): the
    /// next challenge says `stale=true`, so the client signs again without asking its user.
    pub nonce_reused: bool,
}

// Moves of up to 128 bytes are inlined by the compiler; larger ones call memcpy, and an
// outcome moves several times through every decision.
const _: () = assert!(std::mem::size_of::<Outcome>() <= 128);

/// The parts of an outcome only a Digest login has.
#[derive(Debug, Clone, Default)]
struct LoginParts {
    /// Token the SSO issued after a Digest login, to put into the reply.
    new_token: Option<String>,
    /// The realm of the Digest credentials that decided (the domain of a plain Digest
    /// username under use_domain).
    realm: Option<String>,
}

impl Outcome {
    /// Token the SSO issued after a Digest login, to put into the reply.
    pub fn new_token(&self) -> Option<&str> {
        self.login.as_ref()?.new_token.as_deref()
    }

    pub fn set_new_token(&mut self, token: Option<String>) {
        if token.is_some() || self.login.is_some() {
            self.login.get_or_insert_with(Box::default).new_token = token;
        }
    }

    /// The realm of the Digest credentials that decided.
    pub fn realm(&self) -> Option<&str> {
        self.login.as_ref()?.realm.as_deref()
    }

    pub fn set_realm(&mut self, realm: Option<String>) {
        self.login.get_or_insert_with(Box::default).realm = realm;
    }

    /// This outcome turned into an error (-5) after the decision (a header could not be
    /// written): nothing of the success survives, so nothing later treats the request as
    /// authenticated.
    pub fn failed(self, why: impl Into<Cow<'static, str>>) -> Outcome {
        let mut o = Outcome::new(Code::Error, why);
        o.source = self.source;
        o
    }

    /// An error (-5) decided outside the decision: a driver that cannot finish it (the
    /// async form's reactor timeout).
    pub fn error(why: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome::new(Code::Error, why)
    }

    fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Outcome {
        Outcome {
            code,
            used_headers: HeaderIds::new(),
            consume_headers: HeaderIds::new(),
            login: None,
            bearer_error: None,
            user: None,
            source: None,
            introspection: None,
            reason: reason.into(),
            issued_token_checked: false,
            carried_token: false,
            nonce_reused: false,
        }
    }
}

/// A few hex digits of SHA-256 of a secret value: enough to correlate log lines, useless to
/// an attacker.
pub fn fingerprint(secret: &str) -> String {
    TokenId::of(secret).fingerprint()
}

/// State every worker of the instance shares: made in the main process before fork.
pub struct SharedState {
    pub tokens: SharedTokenCache,
    pub replay: ReplayGuard,
    pub retrans: RetransTable,
    pub stats: Stats,
    /// Random per start of the instance, the same in every worker: nonces carry it, so a
    /// nonce issued before a restart (whose uses the new replay table does not know) is
    /// never accepted after it.
    pub start_tag: [u8; 8],
}

impl SharedState {
    /// Maps the shared tables sized by the configuration. Call before fork.
    pub fn new(cfg: &Config) -> std::io::Result<SharedState> {
        let mut start_tag = [0u8; 8];
        getrandom::getrandom(&mut start_tag)
            .map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
        Ok(SharedState {
            tokens: SharedTokenCache::new(cfg.cache_slots as usize)?,
            replay: ReplayGuard::new(cfg.nonce_slots as usize)?,
            retrans: RetransTable::new(cfg.retransmission_slots as usize)?,
            stats: Stats::new()?,
            start_tag,
        })
    }
}

/// Per-process authorization engine: configuration, nonce key, the shared state, and the
/// JWT keys when tokens are validated locally.
pub struct Authorizer {
    cfg: Config,
    nonces: NonceKey,
    retrans_key: RetransKey,
    shared: Arc<SharedState>,
    jwt: Option<LocalJwt>,
    /// Whether successes get a `reason` (a fingerprint and a formatted line). Failures always
    /// do: they are logged at INFO and above.
    explain_success: bool,
    /// The shared store (`cachedb_url`), when this process has one (`cluster_glue.rs`).
    cluster: Option<super::cluster::Cluster>,
    /// Tokens this worker is checking right now, with the deadline of that check: the
    /// cache's pending mark names the process, so under async a second request of this
    /// worker with the same token would take it for its own stale mark (`token_path.rs`).
    checking: Vec<(TokenId, std::time::Instant)>,
    /// The introspection record of an earlier, finished request, kept for its buffers: the
    /// next cache hit copies its entry into them instead of allocating (`recycle`).
    spare: Option<Box<Introspection>>,
}

/// Where this worker's JWT keys come from: the key file read at start-up, or the SSO's JWK
/// Set, fetched on first use and refreshed as `JwksCache` decides.
enum JwtKeys {
    Fixed(Arc<KeySet>),
    Fetched { url: String, cache: JwksCache },
}

struct LocalJwt {
    policy: JwtPolicy,
    keys: JwtKeys,
}

impl LocalJwt {
    fn from_config(cfg: &Config) -> Option<LocalJwt> {
        let keys = if let Some(url) = &cfg.jwks_url {
            JwtKeys::Fetched {
                url: url.clone(),
                // A fetch ends by its request's http_timeout: one that has not answered a
                // second after that was dropped and is not waited for any longer.
                cache: JwksCache::new(cfg.jwks_refresh, jwt::DEFAULT_MIN_REFETCH_INTERVAL)
                    .with_fetch_budget(cfg.http_timeout_ms.div_ceil(1000) + 1),
            }
        } else {
            JwtKeys::Fixed(cfg.jwt_file_keys.clone()?)
        };
        Some(LocalJwt {
            policy: JwtPolicy {
                // checked when the parameter was set
                algorithms: jwt::parse_algorithms(&cfg.jwt_algorithms).unwrap_or_default(),
                issuer: cfg.jwt_issuer.clone(),
                audience: cfg.jwt_audience.clone(),
                leeway: cfg.jwt_leeway,
            },
            keys,
        })
    }
}

impl Authorizer {
    /// `cfg` must have passed `Config::finish` (the secret is set).
    pub fn new(cfg: Config, shared: Arc<SharedState>) -> Authorizer {
        let secret = cfg.secret.clone().unwrap_or_default();
        // Without node_id every start is a node of its own: nonces never cross nodes, even
        // when several nodes were given the same value by mistake or by a cloned image.
        let node = match cfg.node_id.as_deref() {
            Some(id) => nonce::node_tag(id),
            None => shared.start_tag,
        };
        Authorizer {
            nonces: NonceKey::new(&secret, node, shared.start_tag),
            retrans_key: RetransKey::new(&secret),
            jwt: LocalJwt::from_config(&cfg),
            shared,
            cfg,
            explain_success: true,
            cluster: None,
            checking: Vec::new(),
            spare: None,
        }
    }

    /// Takes back a finished request's outcome: its introspection record (with the user
    /// the outcome took from it) becomes the buffers the next cache hit fills.
    pub fn recycle(&mut self, mut outcome: Outcome) {
        if let Some(mut info) = outcome.introspection.take() {
            if info.user.is_none() {
                info.user = outcome.user.take();
            }
            self.spare = Some(info);
        }
    }

    /// Off: a successful outcome comes back with an empty `reason`, which saves hashing and
    /// formatting on the hot path when the caller would not log it anyway.
    pub fn set_explain_success(&mut self, on: bool) {
        self.explain_success = on;
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Seconds a token may be used past its `exp`: jwt_leeway for a JWT validated locally,
    /// none for an introspected token.
    fn exp_grace(&self, token: &str) -> u64 {
        if self.jwt.is_some() && jwt::looks_like_jwt(token) {
            self.cfg.jwt_leeway
        } else {
            0
        }
    }

    /// The identity rules: registrar's form of an AOR under this configuration.
    fn aor_rules(&self) -> identity::AorRules<'_> {
        identity::AorRules {
            use_domain: self.cfg.use_domain,
            case_sensitive: self.cfg.case_sensitive,
            realm_prefix: &self.cfg.realm_prefix,
        }
    }

    /// The realm to use: the argument, else the To (REGISTER) or From host without
    /// realm_prefix.
    pub fn effective_realm(
        &self,
        req_realm: &str,
        is_register: bool,
        to: Option<&[u8]>,
        from: Option<&[u8]>,
    ) -> Option<String> {
        if !req_realm.is_empty() {
            return Some(req_realm.to_string());
        }
        let header = if is_register { to } else { from }?;
        let aor = identity::parse_aor(header).ok()?;
        self.realm_of(&aor)
    }

    /// The realm an AOR implies: its host without realm_prefix; None when that is empty.
    fn realm_of(&self, aor: &Aor) -> Option<String> {
        let host: &str = &aor.host;
        let host = match host.strip_prefix(self.cfg.realm_prefix.as_str()) {
            Some(rest) if !self.cfg.realm_prefix.is_empty() && !rest.is_empty() => rest,
            _ => host,
        };
        if host.is_empty() {
            None
        } else {
            Some(host.to_string())
        }
    }

    fn request_aor<'a>(req: &AuthRequest<'a>) -> Result<Aor<'a>, &'static str> {
        let (name, header) = if req.is_register {
            ("To", req.to)
        } else {
            ("From", req.from)
        };
        let value = header.ok_or(if name == "To" {
            "no To header"
        } else {
            "no From header"
        })?;
        identity::parse_aor(value).map_err(|_| {
            if name == "To" {
                "malformed To header"
            } else {
                "malformed From header"
            }
        })
    }

    fn judge_token(
        &self,
        req: &AuthRequest,
        info: &Introspection,
        now: u64,
        id: &TokenId,
        grace: u64,
        cached: bool,
    ) -> Outcome {
        // Only failures (and successes when explained) name the token: hex it on demand.
        let fp = || id.fingerprint();
        let invalid = |why: String| {
            let mut o = Outcome::new(Code::InvalidToken, why);
            o.bearer_error = Some(BearerError::InvalidToken);
            o
        };
        if !info.active {
            return invalid(format!("token #{} is not active", fp()));
        }
        if let Some(exp) = info.exp {
            if expired(exp, now, grace) {
                return invalid(format!("token #{} expired", fp()));
            }
        }
        // A local cache hit passed the claim rules when it was stored: only the scope rule
        // (no JSON parse) runs again.
        let policy = if cached {
            token_scope(&self.cfg, info)
        } else {
            token_policy(&self.cfg, info)
        };
        if let Err((why, error)) = policy {
            let mut o = invalid(format!("token #{} {why}", fp()));
            o.bearer_error = Some(error);
            return o;
        }
        let Some(user) = info.user.as_deref() else {
            return Outcome::new(
                Code::Error,
                format!("introspection of token #{} names no username or sub", fp()),
            );
        };
        let aor = match Self::request_aor(req) {
            Ok(a) => a,
            Err(why) => return Outcome::new(Code::Error, why),
        };
        if !identity::token_user_matches(user, &aor, &self.aor_rules()) {
            let mut o = Outcome::new(
                Code::IdentityMismatch,
                format!(
                    "token #{} belongs to {user:?}, not to the request's AOR {}@{} as registrar stores it",
                    fp(),
                    aor.user,
                    aor.host
                ),
            );
            o.bearer_error = Some(BearerError::InvalidRequest);
            return o;
        }
        let reason = if self.explain_success {
            Cow::Owned(format!("token #{} accepted for {user:?}", fp()))
        } else {
            Cow::Borrowed("")
        };
        // The caller moves the user in with the introspection (`token_outcome`).
        Outcome::new(Code::TokenOk, reason)
    }

    /// Header lines (with CRLF) of a challenge: one Digest challenge per algorithm, then the
    /// Bearer challenge when token checks are on and `bearer_challenge` allows it. `last` is this request's authorization
    /// outcome, if any (stale flag, Bearer error).
    pub fn challenge(
        &self,
        spec: &ChallengeSpec,
        last: Option<&Outcome>,
        now: u64,
        random: &[u8; 12],
    ) -> Result<Vec<String>, String> {
        let realm = self
            .effective_realm(spec.realm, spec.is_register, spec.to, spec.from)
            .ok_or_else(|| {
                "no realm: empty realm argument and no usable To/From host".to_string()
            })?;
        let proxy = spec.placement == Placement::Proxy;
        // Expired, issued elsewhere, or ours and already used: the client may sign again
        // with the same password. A forged nonce never gets it.
        let stale = last.is_some_and(|o| o.code == Code::StaleNonce || o.nonce_reused);
        let mut lines = Vec::with_capacity(spec.algorithms.len() + 1);
        for alg in &spec.algorithms {
            // One nonce per algorithm: each is bound to its algorithm and the qop offer.
            let nonce = self.nonces.issue(now, random, *alg, spec.qop);
            lines.push(
                challenge::digest_challenge(proxy, &realm, &nonce, spec.qop, *alg, stale)
                    .ok_or_else(|| format!("realm {realm:?} cannot be sent in a header"))?,
            );
        }
        let offer_bearer = self.cfg.token_checks()
            && match self.cfg.bearer_challenge {
                BearerChallenge::Always => true,
                BearerChallenge::WhenToken => last.is_some_and(|o| o.carried_token),
                BearerChallenge::Never => false,
            };
        if offer_bearer {
            let error = last.and_then(|o| o.bearer_error);
            // bearer_scope is what is advertised; without it, an insufficient_scope error
            // names the scope that was missing (RFC 6750 3.1).
            let required = (error == Some(BearerError::InsufficientScope))
                .then(|| self.cfg.required_scope.join(" "));
            let scope = self.cfg.bearer_scope.as_deref().or(required.as_deref());
            lines.push(
                challenge::bearer_challenge(
                    proxy,
                    &realm,
                    self.cfg.authz_server.as_deref(),
                    scope,
                    error,
                )
                .ok_or_else(|| "Bearer challenge values cannot be sent in a header".to_string())?,
            );
        }
        self.shared.stats.inc(Stat::ChallengesSent);
        Ok(lines)
    }
}

/// A value of `$sso(name)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarValue {
    Text(String),
    Int(i64),
}

/// Why `sso_append_rpid` / `sso_append_pai` / `sso_is_rpid_user_e164` found no identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertError {
    /// Nothing authorized this request, or its token carries no such claim.
    NoIdentity(String),
    /// The claim holds something that must not go on the wire.
    Unusable(String),
}

impl Authorizer {
    /// The token behind a successful authorization: the request's own token, or for a Digest
    /// login the token the SSO just issued, whose claims are looked up on first use (through
    /// the shared cache, so the client's next request with it is a cache hit).
    pub fn identity<'o>(
        &mut self,
        outcome: &'o mut Outcome,
        sso: &mut dyn SsoApi,
        now: u64,
    ) -> Option<&'o Introspection> {
        if !outcome.code.is_success() {
            return None;
        }
        if outcome.introspection.is_none() && !outcome.issued_token_checked {
            outcome.issued_token_checked = true;
            if let Some(token) = outcome.new_token().map(str::to_string) {
                let grace = self.exp_grace(&token);
                if let (Ok((Some(info), _)), _) = self.check_token_blocking(token, sso, now) {
                    if usable(&info, now, grace) {
                        outcome.introspection = Some(info);
                    }
                }
            }
        }
        outcome.introspection.as_deref()
    }

    /// `$sso(name)`: None (an empty variable) when nothing authorized the request or the
    /// token has no such value.
    pub fn variable(
        &mut self,
        outcome: &mut Outcome,
        var: &SsoVar,
        sso: &mut dyn SsoApi,
        now: u64,
    ) -> Option<VarValue> {
        if !outcome.code.is_success() {
            return None;
        }
        match var {
            SsoVar::User => return outcome.user.clone().map(VarValue::Text),
            SsoVar::TokenSource => {
                return outcome.source.map(|s| {
                    VarValue::Text(
                        match s {
                            TokenSource::Header => "header",
                            TokenSource::Bearer => "bearer",
                            TokenSource::Digest => "digest",
                        }
                        .to_string(),
                    )
                })
            }
            _ => {}
        }
        let info = self.identity(outcome, sso, now)?;
        match var {
            SsoVar::Exp => info.exp.map(VarValue::Int),
            SsoVar::ExpiresIn => info.exp.map(|e| VarValue::Int((e - now as i64).max(0))),
            SsoVar::Scope => info.scope.clone().map(VarValue::Text),
            SsoVar::Claim(name) => info
                .claims
                .get(name)
                .and_then(claims::claim_text)
                .map(VarValue::Text),
            SsoVar::User | SsoVar::TokenSource => None,
        }
    }

    /// `sso_is_user_in`: `who` is the URI the check is about (None for "Credentials"); it must
    /// belong to the authenticated user, whose token claims must list `group`.
    pub fn is_user_in(
        &mut self,
        outcome: &mut Outcome,
        who: Option<&Aor>,
        group: &str,
        sso: &mut dyn SsoApi,
        now: u64,
    ) -> Result<(), String> {
        if !outcome.code.is_success() {
            return Err("the request was not authorized by sso_auth".into());
        }
        let user = outcome.user.clone().unwrap_or_default();
        if let Some(aor) = who {
            let matches = match outcome.source {
                Some(TokenSource::Digest) => identity::digest_user_matches(
                    &user,
                    outcome.realm().unwrap_or(""),
                    aor,
                    &self.aor_rules(),
                ),
                _ => identity::token_user_matches(&user, aor, &self.aor_rules()),
            };
            if !matches {
                return Err(format!(
                    "{}@{} is not the authenticated user {user:?}",
                    aor.user, aor.host
                ));
            }
        }
        let info = self
            .identity(outcome, sso, now)
            .ok_or("no token claims for this request")?;
        if claims::is_member(&info.claims, &self.cfg.group_claims, group) {
            Ok(())
        } else {
            Err(format!("{user:?} is not in group {group:?}"))
        }
    }

    /// The asserted identity (a name-addr URI in angle brackets) built from `rpid_claim`;
    /// `host` completes a bare number or name.
    pub fn asserted_identity(
        &mut self,
        outcome: &mut Outcome,
        host: &str,
        sso: &mut dyn SsoApi,
        now: u64,
    ) -> Result<String, AssertError> {
        if !outcome.code.is_success() {
            return Err(AssertError::NoIdentity(
                "the request was not authorized by sso_auth".into(),
            ));
        }
        let info = self
            .identity(outcome, sso, now)
            .ok_or_else(|| AssertError::NoIdentity("no token claims for this request".into()))?;
        let claim_name = &self.cfg.rpid_claim;
        let value = info
            .claims
            .get(claim_name)
            .filter(|v| !v.is_null())
            .ok_or_else(|| {
                AssertError::NoIdentity(format!("the token has no {claim_name:?} claim"))
            })?;
        claims::asserted_uri(value, host).map_err(|e| {
            AssertError::Unusable(match e {
                IdentityValueError::Unusable => {
                    format!("claim {claim_name:?} is empty or not text")
                }
                IdentityValueError::Unsafe => {
                    format!("claim {claim_name:?} holds bytes not allowed in a SIP URI")
                }
            })
        })
    }

    /// With bind_register_to_token: the longest registration (seconds) a REGISTER accepted
    /// by a token may get, i.e. the token's remaining life.
    pub fn register_limit(&self, outcome: &Outcome, now: u64) -> Option<u64> {
        if !self.cfg.bind_register_to_token || outcome.code != Code::TokenOk {
            return None;
        }
        // A token without `exp` is trusted for cache_ttl at a time: so is its registration
        // (at least 1 s: 0 would read as a de-registration).
        match outcome.introspection.as_ref()?.exp {
            Some(exp) => Some((exp.saturating_sub(now as i64)).max(1) as u64),
            None => Some(self.cfg.cache_ttl.max(1)),
        }
    }
}

/// What `sso_challenge` / `sso_proxy_challenge` was asked for.
pub struct ChallengeSpec<'a> {
    pub placement: Placement,
    pub realm: &'a str,
    pub is_register: bool,
    pub to: Option<&'a [u8]>,
    pub from: Option<&'a [u8]>,
    pub qop: QopOffer,
    pub algorithms: Vec<Algorithm>,
}

/// Parses the optional qop / algorithms arguments of the challenge functions.
pub fn challenge_options(
    qop: Option<&str>,
    algorithms: Option<&str>,
) -> Result<(QopOffer, Vec<Algorithm>), String> {
    let qop = match qop {
        None => QopOffer::Auth,
        Some(s) => QopOffer::parse(s).ok_or_else(|| format!("bad qop argument {s:?}"))?,
    };
    let algorithms = match algorithms {
        None => vec![Algorithm::Md5],
        Some(s) if s.trim().is_empty() => vec![Algorithm::Md5],
        Some(s) => challenge::parse_algorithms(s)
            .ok_or_else(|| format!("bad algorithms argument {s:?}"))?,
    };
    // A -sess algorithm needs a cnonce, which only comes with qop (as OpenSIPS auth does).
    let qop = if qop == QopOffer::None && algorithms.iter().any(|a| a.is_session()) {
        QopOffer::Auth
    } else {
        qop
    };
    Ok((qop, algorithms))
}

/// Why a request's tokens were refused before any check: (reason, Bearer error).
type TokenRefusal = (&'static str, BearerError);

/// The token of a request, from the token headers and Bearer credentials. A request has one
/// token: empty token headers count as absent, the same token sent twice (X-SSO-Token and
/// Bearer) is one token, but two different tokens, or any malformed one, refuse the request
/// (-6) rather than pick one of them (RFC 6750 3.1: more than one method is invalid_request).
/// Returns (header id of the first, source, token or why not).
/// A token header's value is borrowed; Bearer credentials are parsed into their own copy.
fn find_token<'a>(
    req: &AuthRequest<'a>,
) -> Option<(usize, TokenSource, Result<Cow<'a, str>, TokenRefusal>)> {
    let mut first: Option<(usize, TokenSource, Cow<'a, str>)> = None;
    let candidates = req
        .token_headers
        .iter()
        .filter(|h| !trim_lws(h.value).is_empty())
        .map(|h| (h, TokenSource::Header))
        .chain(
            // Only a value that starts with "Bearer" can parse as Bearer credentials (the
            // parser trims spaces and tabs and refuses every other control byte), so the
            // Digest header of a login is not parsed here and again by the Digest path.
            req.credential_headers
                .iter()
                .filter(|h| starts_with_bearer(h.value))
                .map(|h| (h, TokenSource::Bearer)),
        );
    for (h, source) in candidates {
        let parsed = match source {
            TokenSource::Header => credentials::parse_token_header(h.value)
                .map(Cow::Borrowed)
                .map_err(|e| match e {
                    credentials::ParseError::TooLong => "token too long",
                    credentials::ParseError::Malformed(w) => w,
                }),
            _ => match credentials::parse_authorization(h.value) {
                Ok(Credentials::Bearer(t)) => Ok(Cow::Owned(t)),
                Ok(_) => continue,
                Err(_) => Err("malformed Bearer credentials"),
            },
        };
        let token = match parsed {
            Ok(t) => t,
            Err(why) => return Some((h.id, source, Err((why, BearerError::InvalidToken)))),
        };
        match &first {
            None => first = Some((h.id, source, token)),
            Some((_, _, seen)) if *seen == token => {}
            Some((id, src, _)) => {
                return Some((
                    *id,
                    *src,
                    Err((
                        "more than one token in the request",
                        BearerError::InvalidRequest,
                    )),
                ))
            }
        }
    }
    first.map(|(id, source, token)| (id, source, Ok(token)))
}

/// What sso_consume_credentials removes: `used` and every token-carrying header.
fn consume_headers(req: &AuthRequest, used: &[usize]) -> HeaderIds {
    let mut ids: HeaderIds = used
        .iter()
        .copied()
        .chain(req.token_headers.iter().map(|h| h.id))
        .chain(
            req.credential_headers
                .iter()
                .filter(|h| starts_with_bearer(h.value))
                .map(|h| h.id),
        )
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn starts_with_bearer(value: &[u8]) -> bool {
    let v = value.trim_ascii_start();
    v.len() >= 6 && v[..6].eq_ignore_ascii_case(b"bearer")
}

/// Active, not expired (`grace`: seconds of clock skew allowed past `exp`) and naming a
/// user: worth remembering as positive.
fn usable(info: &Introspection, now: u64, grace: u64) -> bool {
    info.active && info.user.is_some() && info.exp.is_none_or(|e| !expired(e, now, grace))
}

/// One rule for `exp` on every path: past `exp` + `grace` (jwt_leeway for a JWT checked
/// locally, 0 for an introspected token, whose activity the SSO decides).
fn expired(exp: i64, now: u64, grace: u64) -> bool {
    exp.saturating_add(i64::try_from(grace).unwrap_or(i64::MAX)) <= now as i64
}

/// Values of `token_type` (RFC 7662) or `typ` (Keycloak) naming a token that is not an
/// access token: refresh tokens, ID tokens and the like never authenticate SIP.
const NOT_ACCESS_TOKENS: &[&str] = &[
    "refresh_token",
    "refresh",
    "urn:ietf:params:oauth:token-type:refresh_token",
    "id_token",
    "urn:ietf:params:oauth:token-type:id_token",
    "id",
    "offline",
    "logout",
];

/// The audience, token kind and scope rules (issue 14 item 7). Err: why, and the Bearer
/// error the next challenge reports.
fn token_policy(cfg: &Config, info: &Introspection) -> Result<(), (String, BearerError)> {
    token_kind_and_audience(cfg, info)?;
    token_scope(cfg, info)
}

/// The rules that read the claims (parsing their JSON). A verdict enters the shared cache
/// as positive only when it passes them (`token_path.rs`, `check_answer`), so a cache hit skips them.
fn token_kind_and_audience(
    cfg: &Config,
    info: &Introspection,
) -> Result<(), (String, BearerError)> {
    for name in ["token_type", "typ"] {
        match info.claims.get(name) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(kind)) => {
                if NOT_ACCESS_TOKENS
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(kind))
                {
                    return Err((
                        format!("is not an access token ({name} {kind:?})"),
                        BearerError::InvalidToken,
                    ));
                }
            }
            Some(_) => {
                return Err((
                    format!("has a {name} that is not text"),
                    BearerError::InvalidToken,
                ))
            }
        }
    }
    if let Some(want) = cfg.audience.as_deref() {
        let ok = match info.claims.get("aud") {
            Some(serde_json::Value::String(aud)) => aud == want,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        };
        if !ok {
            return Err((
                format!("was not issued for audience {want:?}"),
                BearerError::InvalidToken,
            ));
        }
    }
    Ok(())
}

/// The scope rule: reads only the `scope` field, cheap enough for every request.
fn token_scope(cfg: &Config, info: &Introspection) -> Result<(), (String, BearerError)> {
    if !cfg.required_scope.is_empty() {
        let held = info.scope.as_deref().unwrap_or("");
        if let Some(missing) = cfg
            .required_scope
            .iter()
            .find(|need| !held.split(' ').any(|have| have == need.as_str()))
        {
            return Err((
                format!("lacks the required scope {missing:?}"),
                BearerError::InsufficientScope,
            ));
        }
    }
    Ok(())
}

/// What a refused JWT counts as: a token that is not active.
fn not_active() -> Introspection {
    Introspection {
        active: false,
        user: None,
        exp: None,
        scope: None,
        claims: Default::default(),
    }
}

/// The claims the shared cache keeps for a token: all of them when they fit, else only those
/// the configuration names (group claims, rpid_claim). Too large even then: the result is not
/// cached and the token is checked again on its next use.
fn claims_to_cache(cfg: &Config, info: &Introspection) -> String {
    let all = info.claims.to_json();
    if all.len() <= MAX_CLAIMS_JSON {
        return all;
    }
    let mut names: Vec<&str> = cfg.group_claims.iter().map(String::as_str).collect();
    names.push(&cfg.rpid_claim);
    // Kept for the script's $sso(claim.*); the rules on them ran before the entry was stored.
    names.extend(["aud", "token_type", "typ"]);
    info.claims.to_json_only(&names)
}

fn describe(e: &SsoError) -> String {
    match e {
        SsoError::NotConfigured => "SSO URL not configured".to_string(),
        SsoError::Unreachable(m) => format!("SSO unreachable: {m}"),
        SsoError::Timeout => "SSO timed out".to_string(),
        SsoError::Status(s) => format!("SSO answered HTTP {s}"),
        SsoError::Malformed(w) => format!("malformed SSO answer: {w}"),
        SsoError::TooLarge => "SSO answer larger than 64 KiB".to_string(),
    }
}

/// Successes without a reason (`set_explain_success(false)`), and the Bearer scan that skips
/// other schemes.
#[cfg(test)]
mod tests;

/// The same decisions driven step by step.
#[cfg(test)]
mod step_tests;

/// The shared store's hooks (replay claim, second-level token cache).
mod cluster_glue;

/// The two steps of a decision (`start`, `resume`) and the blocking drivers.
mod step;
pub use step::{Pending, Step};

/// The token path's steps: a token's verdict through the shared cache, then its rules.
mod token_path;

/// The Digest path's steps: local checks and the replay record, then the SSO's login.
mod digest_path;
