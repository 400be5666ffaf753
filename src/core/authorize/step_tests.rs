//! The decision driven step by step, as the async script functions drive it: which steps
//! need the SSO, which are decided locally, waits, dropped requests, interleaved requests,
//! and the statistics compared with the blocking driver.

use std::time::{Duration, Instant};

use super::*;
use crate::core::digest::{expected_response, ResponseInput};
use crate::core::sso::call::{SsoAnswer, SsoCall};
use crate::core::stats::ALL;
use crate::core::token::cache::Lookup;
// The fixtures of the single-pass tests: the same engine set-up.
use super::tests::{config, shared, NOW};

const ED_PRIVATE: &str = include_str!("../../../tests/data/jwt/ed-private.pem");
const ED_PUBLIC: &str = include_str!("../../../tests/data/jwt/ed-public.pem");

fn active(user: &str) -> Introspection {
    Introspection {
        active: true,
        user: Some(user.into()),
        exp: Some(NOW as i64 + 600),
        scope: None,
        claims: Default::default(),
    }
}

fn session(token: &str) -> SsoAnswer {
    SsoAnswer::Login(Ok(LoginOutcome::Session {
        access_token: token.into(),
        expires_in: None,
    }))
}

/// A REGISTER for alice with these credential and token headers.
fn req<'a>(creds: &'a [HeaderRef<'a>], tokens: &'a [HeaderRef<'a>]) -> AuthRequest<'a> {
    AuthRequest {
        placement: Placement::Www,
        method: "REGISTER",
        is_register: true,
        realm: "",
        to: Some(b"<sip:alice@example.com>"),
        from: Some(b"<sip:alice@example.com>;tag=1"),
        credential_headers: creds.into(),
        token_headers: tokens.into(),
        body: b"",
        transaction: None,
    }
}

fn header(value: &[u8]) -> [HeaderRef<'_>; 1] {
    [HeaderRef { id: 1, value }]
}

/// Digest credentials of `user` answering a fresh nonce of `a`.
fn digest(a: &Authorizer, user: &str) -> String {
    let nonce = a
        .nonces
        .issue(NOW, &[9; 12], Algorithm::Md5, QopOffer::Auth);
    digest_with(user, &nonce)
}

fn digest_with(user: &str, nonce: &str) -> String {
    let response = expected_response(&ResponseInput {
        algorithm: Algorithm::Md5,
        username: user,
        realm: "example.com",
        password: "pw",
        method: "REGISTER",
        uri: "sip:example.com",
        nonce,
        qop: Some("auth"),
        nc: "00000001",
        cnonce: "abcdef",
        body: b"",
    });
    format!(
        "Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", \
         uri=\"sip:example.com\", response=\"{response}\", algorithm=MD5, qop=auth, \
         nc=00000001, cnonce=\"abcdef\""
    )
}

fn expect_call(step: Step) -> Box<Pending> {
    match step {
        Step::Call(p) => p,
        Step::Done(o) => panic!("expected a call, done: {:?} {}", o.code, o.reason),
        Step::Wait(_) => panic!("expected a call, got a wait"),
    }
}

fn expect_wait(step: Step) -> Box<Pending> {
    match step {
        Step::Wait(p) => p,
        Step::Done(o) => panic!("expected a wait, done: {:?} {}", o.code, o.reason),
        Step::Call(_) => panic!("expected a wait, got a call"),
    }
}

fn expect_done(step: Step) -> Outcome {
    match step {
        Step::Done(o) => o,
        Step::Call(p) => panic!("expected done, got a call: {:?}", p.call()),
        Step::Wait(_) => panic!("expected done, got a wait"),
    }
}

#[test]
fn token_introspect_then_done() {
    let mut a = Authorizer::new(config(), shared());
    let t = header(b"tok1");
    let r = req(&[], &t);
    let p = expect_call(a.start(&r, NOW));
    assert!(matches!(p.call(), Some(SsoCall::Introspect { token }) if token == "tok1"));
    let answer = SsoAnswer::Introspection(Ok(active("alice")));
    let o = expect_done(a.resume(&r, p, Some(answer), NOW));
    assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
    assert_eq!(o.consume_headers[..], [1]);
    assert_eq!(a.stats().get(Stat::SsoRequests), 1);
    assert_eq!(a.stats().get(Stat::TokenAccepted), 1);
    // Stored: the next request is decided by `start` alone.
    let o = expect_done(a.start(&r, NOW + 1));
    assert_eq!(o.code, Code::TokenOk);
    assert!(o.reason.ends_with("(cached)"));
}

#[test]
fn digest_login_then_done_with_a_new_token() {
    let mut a = Authorizer::new(config(), shared());
    let h = digest(&a, "alice");
    let c = header(h.as_bytes());
    let r = req(&c, &[]);
    let p = expect_call(a.start(&r, NOW));
    match p.call() {
        Some(SsoCall::DigestLogin(l)) => assert_eq!(l.username, "alice"),
        other => panic!("{other:?}"),
    }
    let o = expect_done(a.resume(&r, p, Some(session("issued")), NOW));
    assert_eq!(o.code, Code::DigestOk, "{}", o.reason);
    assert_eq!(o.new_token(), Some("issued"));
    assert_eq!(o.realm(), Some("example.com"));
    assert_eq!(a.stats().get(Stat::DigestAccepted), 1);
}

#[test]
fn refused_token_then_the_digest_login_beside_it() {
    let mut a = Authorizer::new(config(), shared());
    let h = digest(&a, "alice");
    let c = header(h.as_bytes());
    let t = [HeaderRef {
        id: 2,
        value: b"revoked",
    }];
    let r = req(&c, &t);
    let p = expect_call(a.start(&r, NOW));
    assert!(matches!(p.call(), Some(SsoCall::Introspect { .. })));
    let deadline = p.deadline();
    let inactive = SsoAnswer::Introspection(Ok(not_active()));
    let p = expect_call(a.resume(&r, p, Some(inactive), NOW));
    assert!(matches!(p.call(), Some(SsoCall::DigestLogin(_))));
    assert_eq!(p.deadline(), deadline, "one budget for the whole call");
    let o = expect_done(a.resume(&r, p, Some(session("issued")), NOW));
    assert_eq!(o.code, Code::DigestOk, "{}", o.reason);
    assert!(o.carried_token);
    assert_eq!(o.bearer_error, Some(BearerError::InvalidToken));
    assert_eq!(o.consume_headers[..], [1, 2]);
    assert_eq!(a.stats().get(Stat::SsoRequests), 2);
}

/// Another process takes the pending mark of `token` and exits without answering.
fn foreign_claim(shared: &SharedState, token: &str, until: u64) {
    let id = TokenId::of(token);
    // SAFETY: the child only touches the shared mapping and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let claimed = shared.tokens.lookup(&id, NOW, until) == Lookup::Claimed;
        unsafe { libc::_exit(if claimed { 0 } else { 1 }) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0, "the other worker must get the mark");
}

#[test]
fn another_workers_check_is_waited_for() {
    let mut cfg = config();
    cfg.http_timeout_ms = 150;
    let shared = shared();
    let mut a = Authorizer::new(cfg, shared.clone());
    foreign_claim(&shared, "busy", NOW + 60);
    let t = header(b"busy");
    let r = req(&[], &t);
    let mut p = expect_wait(a.start(&r, NOW));
    assert_eq!(p.retry_in(), Duration::from_millis(2));
    let mut retries = vec![];
    for _ in 0..5 {
        retries.push(p.retry_in());
        p = expect_wait(a.resume(&r, p, None, NOW));
    }
    assert!(retries.windows(2).all(|w| w[0] <= w[1]), "{retries:?}");
    assert!(p.retry_in() <= Duration::from_millis(20));
    // The other worker's verdict arrives: the next look takes it from the cache.
    shared
        .tokens
        .store_positive(&TokenId::of("busy"), &active("alice"), "{}", NOW, 60);
    let o = expect_done(a.resume(&r, p, None, NOW));
    assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
    assert_eq!(a.stats().get(Stat::SsoRequests), 0);

    // Nobody answers: after the deadline, the timeout outcome, and no SSO call of its own.
    foreign_claim(&shared, "stuck", NOW + 60);
    let t = header(b"stuck");
    let r = req(&[], &t);
    let started = Instant::now();
    let mut step = a.start(&r, NOW);
    let mut looks = 0;
    let o = loop {
        match step {
            Step::Wait(p) => {
                looks += 1;
                std::thread::sleep(p.retry_in());
                step = a.resume(&r, p, None, NOW);
            }
            other => break expect_done(other),
        }
    };
    let took = started.elapsed();
    assert_eq!(o.code, Code::Error, "{}", o.reason);
    assert!(o.reason.contains("timed out"), "{}", o.reason);
    assert!(took >= Duration::from_millis(150) && took < Duration::from_millis(300));
    assert!(looks < 40, "{looks} looks: the waits back off");
    assert_eq!(a.stats().get(Stat::SsoRequests), 0);
}

#[test]
fn a_retransmission_waits_for_its_first_copy() {
    let mut a = Authorizer::new(config(), shared());
    let h = digest(&a, "alice");
    let c = header(h.as_bytes());
    let mut r = req(&c, &[]);
    r.transaction = Some(TransactionId {
        via: b"SIP/2.0/UDP h;branch=z9hG4bK1",
        call_id: b"abc@host",
        cseq: b"1 REGISTER",
        source: [7; 20],
    });
    let first = expect_call(a.start(&r, NOW));
    let again = expect_wait(a.start(&r, NOW));
    let again = expect_wait(a.resume(&r, again, None, NOW));
    let o = expect_done(a.resume(&r, first, Some(session("issued")), NOW));
    assert_eq!(o.code, Code::DigestOk);
    let o = expect_done(a.resume(&r, again, None, NOW));
    assert_eq!(o.code, Code::DigestOk, "{}", o.reason);
    assert!(o.reason.contains("retransmission"), "{}", o.reason);
    assert_eq!(o.new_token(), Some("issued"));
    assert_eq!(a.stats().get(Stat::SsoRequests), 1);
    assert_eq!(a.stats().get(Stat::ReplaysBlocked), 0);
    assert_eq!(a.stats().get(Stat::DigestAccepted), 2);
}

fn ed_jwt(kid: &str) -> String {
    ed_jwt_numbered(kid, 0)
}

/// An EdDSA JWT of alice under `kid`; `n` (its `jti`) makes tokens differ.
fn ed_jwt_numbered(kid: &str, n: u32) -> String {
    use base64::Engine as _;
    let body: String = ED_PRIVATE
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some(kid.into());
    let claims = serde_json::json!({"iss": "https://sso.example.com", "sub": "alice",
                                    "exp": NOW + 600, "iat": NOW, "jti": n});
    let key = jsonwebtoken::EncodingKey::from_ed_der(&der);
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

fn ed_jwks(kid: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = ED_PUBLIC
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let spki = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&spki[spki.len() - 32..]);
    serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid,
                                 "use": "sig", "alg": "EdDSA"}]})
    .to_string()
    .into_bytes()
}

fn jwt_config(jwks: bool) -> Config {
    let mut c = config();
    if jwks {
        c.set_str("jwks_url", "https://sso.example.com/jwks")
            .unwrap();
    } else {
        c.jwt_file_keys = Some(Arc::new(
            KeySet::from_file_contents(ED_PUBLIC.as_bytes()).unwrap(),
        ));
    }
    c.set_str("jwt_issuer", "https://sso.example.com").unwrap();
    c
}

#[test]
fn a_due_jwk_set_is_fetched_then_the_token_validates() {
    let mut a = Authorizer::new(jwt_config(true), shared());
    let token = ed_jwt("k1");
    let t = header(token.as_bytes());
    let r = req(&[], &t);
    let p = expect_call(a.start(&r, NOW));
    assert!(
        matches!(p.call(), Some(SsoCall::FetchJwks { url }) if url == "https://sso.example.com/jwks")
    );
    let o = expect_done(a.resume(&r, p, Some(SsoAnswer::Jwks(Ok(ed_jwks("k1")))), NOW));
    assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
    assert_eq!(a.stats().get(Stat::SsoRequests), 1);
    // The set is fresh now: the next request with the token needs no call.
    let o = expect_done(a.start(&r, NOW + 1));
    assert_eq!(o.code, Code::TokenOk);
    // A failed fetch is an SSO error, counted once.
    let mut b = Authorizer::new(jwt_config(true), shared());
    let p = expect_call(b.start(&r, NOW));
    let o = expect_done(b.resume(&r, p, Some(SsoAnswer::Jwks(Err(SsoError::Timeout))), NOW));
    assert_eq!(o.code, Code::Error, "{}", o.reason);
    assert_eq!(b.stats().get(Stat::SsoTimeouts), 1);
}

#[test]
fn a_second_jwt_waits_for_the_jwk_set_fetch_in_flight() {
    let (t1, t2) = (ed_jwt_numbered("k1", 1), ed_jwt_numbered("k1", 2));
    let (h1, h2) = (header(t1.as_bytes()), header(t2.as_bytes()));
    let (r1, r2) = (req(&[], &h1), req(&[], &h2));
    let jwks = || Some(SsoAnswer::Jwks(Ok(ed_jwks("k1"))));
    let mut a = Authorizer::new(jwt_config(true), shared());
    let p1 = expect_call(a.start(&r1, NOW));
    // Another JWT before the set arrives (async): a wait, neither a second fetch nor -5.
    let p2 = expect_wait(a.start(&r2, NOW));
    let o1 = expect_done(a.resume(&r1, p1, jwks(), NOW));
    assert_eq!(o1.code, Code::TokenOk, "{}", o1.reason);
    let o2 = expect_done(a.resume(&r2, p2, None, NOW));
    assert_eq!(o2.code, Code::TokenOk, "{}", o2.reason);
    assert_eq!(a.stats().get(Stat::SsoRequests), 1);
    // The fetch fails: the waiter gets the failure (-5) at its next look.
    let mut b = Authorizer::new(jwt_config(true), shared());
    let p1 = expect_call(b.start(&r1, NOW));
    let p2 = expect_wait(b.start(&r2, NOW));
    let failed = Some(SsoAnswer::Jwks(Err(SsoError::Timeout)));
    assert_eq!(
        expect_done(b.resume(&r1, p1, failed, NOW)).code,
        Code::Error
    );
    assert_eq!(expect_done(b.resume(&r2, p2, None, NOW)).code, Code::Error);
    // The fetching request is dropped unanswered: the waiter ends by its own deadline.
    let mut cfg = jwt_config(true);
    cfg.http_timeout_ms = 50;
    let mut c = Authorizer::new(cfg, shared());
    let p1 = expect_call(c.start(&r1, NOW));
    let p2 = expect_wait(c.start(&r2, NOW));
    drop(p1);
    std::thread::sleep(Duration::from_millis(60));
    let o = expect_done(c.resume(&r2, p2, None, NOW));
    assert_eq!(o.code, Code::Error, "{}", o.reason);
    assert!(o.reason.contains("JWK Set fetch in flight"), "{}", o.reason);
    // Past the fetch's budget (http_timeout 50 ms, rounded up, plus 1 s: 2 s) the fetch is
    // lost: the next JWT fetches the set again, inside the 15 s rate limit.
    let p3 = expect_call(c.start(&r2, NOW + 2));
    let o3 = expect_done(c.resume(&r2, p3, jwks(), NOW + 2));
    assert_eq!(o3.code, Code::TokenOk, "{}", o3.reason);
    // A sync call meanwhile: the worker blocks, so the async fetch cannot finish; the call
    // fetches the set itself rather than sit out its deadline.
    struct ServesJwks;
    impl SsoApi for ServesJwks {
        fn introspect(&mut self, _token: &str) -> Result<Introspection, SsoError> {
            Err(SsoError::NotConfigured)
        }
        fn digest_login(&mut self, _req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
            Err(SsoError::NotConfigured)
        }
        fn fetch_jwks(&mut self, _url: &str) -> Result<Vec<u8>, SsoError> {
            Ok(ed_jwks("k1"))
        }
    }
    let mut d = Authorizer::new(jwt_config(true), shared());
    let _in_flight = expect_call(d.start(&r1, NOW));
    let o = d.authorize(&r2, &mut ServesJwks, NOW);
    assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
    assert_eq!(d.stats().get(Stat::SsoRequests), 1);
}

#[test]
fn a_caller_budget_shorter_than_http_timeout_is_the_deadline() {
    let h = header(b"new-token");
    let r = req(&[], &h);
    let mut cfg = config();
    cfg.http_timeout_ms = 4000;
    let mut a = Authorizer::new(cfg, shared());
    let t0 = Instant::now();
    let p = expect_call(a.start_within(&r, NOW, Duration::from_millis(50)));
    assert!(p.deadline() <= t0 + Duration::from_millis(60));
    // A longer budget does not extend http_timeout (another token: the first one's
    // check is still pending, so a second request for it would wait).
    let h2 = header(b"other-new-token");
    let r2 = req(&[], &h2);
    let p = expect_call(a.start_within(&r2, NOW, Duration::from_secs(60)));
    assert!(p.deadline() <= Instant::now() + Duration::from_millis(4000));
    assert!(p.deadline() > t0 + Duration::from_millis(3000));
}

#[test]
fn what_needs_no_sso_is_done_at_start() {
    let shared = shared();
    let mut a = Authorizer::new(config(), shared.clone());
    let done = |a: &mut Authorizer, r: &AuthRequest| expect_done(a.start(r, NOW)).code;
    // no credentials
    assert_eq!(done(&mut a, &req(&[], &[])), Code::NoCredentials);
    // cache hits, positive and negative
    let pos = TokenId::of("known-good");
    assert_eq!(shared.tokens.lookup(&pos, NOW, NOW + 5), Lookup::Claimed);
    shared
        .tokens
        .store_positive(&pos, &active("alice"), "{}", NOW, 60);
    let neg = TokenId::of("known-bad");
    shared.tokens.lookup(&neg, NOW, NOW + 5);
    shared.tokens.store_negative(&neg, NOW, 60);
    assert_eq!(
        done(&mut a, &req(&[], &header(b"known-good"))),
        Code::TokenOk
    );
    assert_eq!(
        done(&mut a, &req(&[], &header(b"known-bad"))),
        Code::InvalidToken
    );
    // malformed token
    assert_eq!(
        done(&mut a, &req(&[], &header(b"two words"))),
        Code::InvalidToken
    );
    // forged and stale nonces
    let forged = digest_with("alice", "bm90LW91cnM");
    assert_eq!(
        done(&mut a, &req(&header(forged.as_bytes()), &[])),
        Code::BadNonce
    );
    let old = a
        .nonces
        .issue(NOW - 100_000, &[1; 12], Algorithm::Md5, QopOffer::Auth);
    let stale = digest_with("alice", &old);
    assert_eq!(
        done(&mut a, &req(&header(stale.as_bytes()), &[])),
        Code::StaleNonce
    );
    // nonce of another node
    let mut cfg = config();
    cfg.node_id = Some("elsewhere".into());
    let other = Authorizer::new(cfg, shared.clone());
    let h = digest(&other, "alice");
    assert_eq!(
        done(&mut a, &req(&header(h.as_bytes()), &[])),
        Code::StaleNonce
    );
    // identity mismatch
    let h = digest(&a, "bob");
    assert_eq!(
        done(&mut a, &req(&header(h.as_bytes()), &[])),
        Code::IdentityMismatch
    );
    // misconfiguration: no token_url
    let mut cfg = config();
    cfg.token_url = None;
    let mut unset = Authorizer::new(cfg, shared.clone());
    let h = digest(&unset, "alice");
    assert_eq!(
        done(&mut unset, &req(&header(h.as_bytes()), &[])),
        Code::Error
    );
    // a replay: the first use goes to the SSO, the second is refused at start
    let h = digest(&a, "alice");
    let c = header(h.as_bytes());
    let p = expect_call(a.start(&req(&c, &[]), NOW));
    expect_done(a.resume(&req(&c, &[]), p, Some(session("t")), NOW));
    assert_eq!(done(&mut a, &req(&c, &[])), Code::BadNonce);
    // a JWT with file keys
    let mut j = Authorizer::new(jwt_config(false), shared.clone());
    let token = ed_jwt("any");
    assert_eq!(
        done(&mut j, &req(&[], &header(token.as_bytes()))),
        Code::TokenOk
    );
    assert_eq!(
        a.stats().get(Stat::SsoRequests),
        1,
        "only the replay's first use"
    );
}

#[test]
fn a_dropped_pending_leaves_no_stuck_claim() {
    let mut cfg = config();
    cfg.http_timeout_ms = 100;
    let claim_secs = cfg.http_timeout_ms / 1000 + 2;
    let shared = shared();
    let cfg2 = cfg.clone();
    let mut a = Authorizer::new(cfg, shared.clone());
    let t = header(b"dropped");
    let r = req(&[], &t);
    drop(expect_call(a.start(&r, NOW)));
    let id = TokenId::of("dropped");
    // Other workers see the mark until its claim time, and may take it after.
    let look = |at: u64| {
        // SAFETY: the child only reads the shared mapping and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match shared.tokens.lookup(&id, at, at + 5) {
                Lookup::Pending => 0,
                Lookup::Claimed => 1,
                _ => 2,
            };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WEXITSTATUS(status)
    };
    assert_eq!(
        look(NOW + claim_secs - 1),
        0,
        "still pending within the claim time"
    );
    assert_eq!(look(NOW + claim_secs), 1, "free at the claim time");
    // This worker: a new request with the same token waits out the abandoned check's
    // budget (not the claim time), then checks the token itself.
    let mut a2 = Authorizer::new(cfg2, shared.clone());
    let t2 = header(b"dropped-too");
    let r2 = req(&[], &t2);
    drop(expect_call(a2.start(&r2, NOW)));
    let started = Instant::now();
    let mut step = a2.start(&r2, NOW);
    assert!(
        matches!(step, Step::Wait(_)),
        "the abandoned check is still in its budget"
    );
    let p = loop {
        match step {
            Step::Wait(p) => {
                std::thread::sleep(p.retry_in());
                step = a2.resume(&r2, p, None, NOW);
            }
            other => break expect_call(other),
        }
    };
    assert!(started.elapsed() < Duration::from_millis(200));
    let o = expect_done(a2.resume(
        &r2,
        p,
        Some(SsoAnswer::Introspection(Ok(active("alice")))),
        NOW,
    ));
    assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
}

#[test]
fn interleaved_pendings_keep_their_own_deadlines() {
    let mut a = Authorizer::new(config(), shared());
    let (ta, tb) = (header(b"tok-a"), header(b"tok-b"));
    let (ra, rb) = (req(&[], &ta), req(&[], &tb));
    let pa = expect_call(a.start(&ra, NOW));
    std::thread::sleep(Duration::from_millis(30));
    let pb = expect_call(a.start(&rb, NOW));
    assert!(pb.deadline() >= pa.deadline() + Duration::from_millis(30));
    let ib = SsoAnswer::Introspection(Ok(active("bob")));
    let ob = expect_done(a.resume(&rb, pb, Some(ib), NOW));
    assert_eq!(ob.code, Code::IdentityMismatch, "{}", ob.reason);
    let ia = SsoAnswer::Introspection(Ok(active("alice")));
    let oa = expect_done(a.resume(&ra, pa, Some(ia), NOW));
    assert_eq!(oa.code, Code::TokenOk, "{}", oa.reason);
    // The same token twice at once: the second waits for the first, no second call.
    let p1 = expect_call(a.start(&req(&[], &header(b"tok-c")), NOW));
    let tc = header(b"tok-c");
    let rc = req(&[], &tc);
    let p2 = expect_wait(a.start(&rc, NOW));
    let ic = SsoAnswer::Introspection(Ok(active("alice")));
    assert_eq!(
        expect_done(a.resume(&rc, p1, Some(ic), NOW)).code,
        Code::TokenOk
    );
    assert_eq!(
        expect_done(a.resume(&rc, p2, None, NOW)).code,
        Code::TokenOk
    );
    assert_eq!(a.stats().get(Stat::SsoRequests), 3);
}

/// An SSO double for the blocking driver.
struct Scripted;

impl SsoApi for Scripted {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError> {
        match token {
            "good" => Ok(active("alice")),
            "slow" => Err(SsoError::Timeout),
            _ => Ok(not_active()),
        }
    }
    fn digest_login(&mut self, _req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        Ok(LoginOutcome::Session {
            access_token: "issued".into(),
            expires_in: None,
        })
    }
}

#[test]
fn step_driven_statistics_equal_the_blocking_drivers() {
    let run = |stepwise: bool| {
        let mut a = Authorizer::new(config(), shared());
        let h = digest(&a, "alice");
        let replay = h.clone();
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (vec![], b"good".to_vec()),
            (vec![], b"good".to_vec()),
            (vec![], b"bad".to_vec()),
            (vec![], b"slow".to_vec()),
            (h.into_bytes(), b"bad".to_vec()),
            (replay.into_bytes(), vec![]),
            (vec![], vec![]),
        ];
        for (creds, token) in &cases {
            let c = [HeaderRef {
                id: 1,
                value: creds,
            }];
            let t = [HeaderRef {
                id: 2,
                value: token,
            }];
            let r = req(
                if creds.is_empty() { &[] } else { &c },
                if token.is_empty() { &[] } else { &t },
            );
            if stepwise {
                let mut step = a.start(&r, NOW);
                loop {
                    step = match step {
                        Step::Done(_) => break,
                        Step::Call(p) => {
                            let answer = p.call().unwrap().perform(&mut Scripted);
                            a.resume(&r, p, Some(answer), NOW)
                        }
                        Step::Wait(p) => a.resume(&r, p, None, NOW),
                    }
                }
            } else {
                a.authorize(&r, &mut Scripted, NOW);
            }
        }
        ALL.iter()
            .map(|(s, name)| (*name, a.stats().get(*s)))
            .collect::<Vec<_>>()
    };
    let blocking = run(false);
    assert_eq!(run(true), blocking);
    let get = |name| blocking.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(get("sso_requests"), 4);
    assert_eq!(get("sso_timeouts"), 1);
    assert_eq!(get("token_accepted"), 2);
    assert_eq!(get("digest_accepted"), 1);
    assert_eq!(get("replays_blocked"), 1);
}

#[test]
fn recheck_is_the_token_path_alone() {
    let mut a = Authorizer::new(config(), shared());
    let h = digest(&a, "alice");
    let c = header(h.as_bytes());
    let t = [HeaderRef {
        id: 2,
        value: b"recheck-me",
    }];
    let r = req(&c, &t);
    let p = expect_call(a.recheck_start(&r, NOW));
    assert!(matches!(p.call(), Some(SsoCall::Introspect { .. })));
    let o = expect_done(a.resume(
        &r,
        p,
        Some(SsoAnswer::Introspection(Ok(active("alice")))),
        NOW,
    ));
    assert_eq!(o.code, Code::TokenOk);
    // Refused: no Digest login follows, and only the SSO request is counted.
    let t = [HeaderRef {
        id: 2,
        value: b"nope",
    }];
    let r = req(&c, &t);
    let p = expect_call(a.recheck_start(&r, NOW));
    let o = expect_done(a.resume(&r, p, Some(SsoAnswer::Introspection(Ok(not_active()))), NOW));
    assert_eq!(o.code, Code::InvalidToken);
    assert_eq!(
        expect_done(a.recheck_start(&req(&c, &[]), NOW)).code,
        Code::NoCredentials
    );
    assert_eq!(a.stats().get(Stat::SsoRequests), 2);
    assert_eq!(
        a.stats().get(Stat::TokenAccepted) + a.stats().get(Stat::TokenRejected),
        0
    );
}

#[test]
fn a_recycled_outcome_lends_its_buffers_to_the_next_hit_only() {
    let mut a = Authorizer::new(config(), shared());
    for (token, user) in [("alice-token", "alice"), ("carol-token", "carol")] {
        let h = header(token.as_bytes());
        let r = req(&[], &h);
        let p = expect_call(a.start(&r, NOW));
        let answer = SsoAnswer::Introspection(Ok(active(user)));
        expect_done(a.resume(&r, p, Some(answer), NOW));
    }
    let alice_header = header(b"alice-token");
    let alice = req(&[], &alice_header);
    let o = expect_done(a.start(&alice, NOW + 1));
    assert_eq!((o.code, o.user.as_deref()), (Code::TokenOk, Some("alice")));
    a.recycle(o);
    // Carol's token on alice's REGISTER, read into alice's recycled record: still refused.
    let carol_header = header(b"carol-token");
    let o = expect_done(a.start(&req(&[], &carol_header), NOW + 1));
    assert_eq!(o.code, Code::IdentityMismatch, "{}", o.reason);
    assert!(o.user.is_none() && o.introspection.is_none());
    a.recycle(o);
    let o = expect_done(a.start(&alice, NOW + 2));
    assert_eq!((o.code, o.user.as_deref()), (Code::TokenOk, Some("alice")));
    let info = o
        .introspection
        .as_ref()
        .expect("a token success keeps its record");
    assert_eq!(info.user, None, "the user moved to the outcome");
}

#[test]
fn a_lazily_read_deadline_is_still_http_timeout_from_the_start() {
    let h = header(b"slow-token");
    let r = req(&[], &h);
    let mut a = Authorizer::new(config(), shared());
    let before = Instant::now();
    let p = expect_call(a.start(&r, NOW));
    let http = Duration::from_millis(config().http_timeout_ms);
    assert!(p.deadline() >= before + http);
    assert!(p.deadline() <= Instant::now() + http);
}
