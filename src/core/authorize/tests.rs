//! Decision tests with a scripted SSO: every return code, both token placements, fallbacks.

use super::*;
use crate::core::digest::{expected_response, ResponseInput};
use crate::core::token::claims::ClaimSet;

/// An SSO double: answers from fixed tables and counts calls.
#[derive(Default)]
struct FakeSso {
    introspections: usize,
    logins: usize,
    /// token -> answer
    tokens: Vec<(String, Result<Introspection, SsoError>)>,
    login_answer: Option<Result<LoginOutcome, SsoError>>,
    last_login: Option<DigestLogin>,
}

impl SsoApi for FakeSso {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError> {
        self.introspections += 1;
        self.tokens
            .iter()
            .find(|(t, _)| t == token)
            .map(|(_, a)| a.clone())
            .unwrap_or(Ok(inactive()))
    }
    fn digest_login(&mut self, req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        self.logins += 1;
        self.last_login = Some(req.clone());
        self.login_answer.clone().unwrap_or(Err(SsoError::Timeout))
    }
}

fn active(user: &str, exp: Option<i64>) -> Introspection {
    Introspection {
        active: true,
        user: Some(user.into()),
        exp,
        scope: Some("sip".into()),
        claims: Default::default(),
    }
}

fn inactive() -> Introspection {
    Introspection {
        active: false,
        user: None,
        exp: None,
        scope: None,
        claims: Default::default(),
    }
}

pub(super) const NOW: u64 = 1_700_000_000;

pub(super) fn shared() -> std::sync::Arc<SharedState> {
    let c = Config {
        cache_slots: 256,
        nonce_slots: 256,
        ..Default::default()
    };
    std::sync::Arc::new(SharedState::new(&c).unwrap())
}

pub(super) fn config() -> Config {
    let mut c = Config::default();
    c.set_str("introspect_url", "http://127.0.0.1:1/introspect")
        .unwrap();
    c.set_str("token_url", "http://127.0.0.1:1/token").unwrap();
    c.set_str("secret", "0123456789abcdef0123456789abcdef")
        .unwrap();
    c.finish(|| unreachable!()).unwrap();
    c
}

fn register<'a>(
    to: &'a [u8],
    creds: Vec<HeaderRef<'a>>,
    tokens: Vec<HeaderRef<'a>>,
) -> AuthRequest<'a> {
    AuthRequest {
        placement: Placement::Www,
        method: "REGISTER",
        is_register: true,
        realm: "",
        to: Some(to),
        from: Some(b"<sip:someone@example.com>;tag=1"),
        credential_headers: creds.into(),
        token_headers: tokens.into(),
        body: b"",
        transaction: None,
    }
}

/// The qop offer a challenge answered with `qop` made.
fn offer_for(qop: Option<&str>) -> QopOffer {
    match qop {
        None => QopOffer::None,
        Some("auth-int") => QopOffer::AuthInt,
        Some(_) => QopOffer::Auth,
    }
}

fn digest_header(
    a: &Authorizer,
    user: &str,
    realm: &str,
    nonce: Option<String>,
    qop: Option<&str>,
    alg: Algorithm,
    body: &[u8],
) -> String {
    let nonce = nonce.unwrap_or_else(|| a.nonces.issue(NOW, &[5; 12], alg, offer_for(qop)));
    let response = expected_response(&ResponseInput {
        algorithm: alg,
        username: user,
        realm,
        password: "pw",
        method: "REGISTER",
        uri: "sip:example.com",
        nonce: &nonce,
        qop,
        nc: "00000001",
        cnonce: "abcdef",
        body,
    });
    let mut h = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"{response}\", algorithm={}",
        alg.name()
    );
    if let Some(q) = qop {
        h.push_str(&format!(", qop={q}, nc=00000001, cnonce=\"abcdef\""));
    }
    h
}

#[test]
fn no_credentials_is_minus_4() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::NoCredentials);
    assert_eq!(o.code.value(), -4);
    assert_eq!(sso.introspections + sso.logins, 0);
}

#[test]
fn token_header_accepted_then_cached() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![("tok1".into(), Ok(active("alice", Some(NOW as i64 + 600))))],
        ..Default::default()
    };
    let t = [HeaderRef {
        id: 7,
        value: b" tok1 ",
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::TokenOk);
    assert_eq!(o.used_headers[..], [7]);
    assert_eq!(o.source, Some(TokenSource::Header));
    assert!(
        !o.reason.contains("tok1"),
        "a token must never reach the log"
    );
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW + 1,
    );
    assert_eq!(o.code, Code::TokenOk);
    assert_eq!(sso.introspections, 1, "second use served from the cache");
}

#[test]
fn bearer_credential_accepted() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![
            ("tok2".into(), Ok(active("alice", None))),
            ("tok3".into(), Ok(active("alice@example.com", None))),
        ],
        ..Default::default()
    };
    let c = [HeaderRef {
        id: 3,
        value: b"Bearer tok2",
    }];
    let o = a.authorize(
        &register(b"sip:alice@EXAMPLE.com;tag=x", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::TokenOk);
    assert_eq!(o.source, Some(TokenSource::Bearer));
    // A token user with a domain matches only under use_domain (issue 14 item 5: with
    // use_domain=0 registrar files the AOR under the user part alone).
    let c = [HeaderRef {
        id: 3,
        value: b"Bearer tok3",
    }];
    let req = register(b"sip:alice@EXAMPLE.com;tag=x", c.to_vec(), vec![]);
    assert_eq!(
        a.authorize(&req, &mut sso, NOW).code,
        Code::IdentityMismatch
    );
    let mut cfg = config();
    cfg.use_domain = true;
    let mut with_domain = Authorizer::new(cfg, shared());
    assert_eq!(
        with_domain.authorize(&req, &mut sso, NOW).code,
        Code::TokenOk
    );
}

#[test]
fn token_of_another_user_is_minus_7() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![("tb".into(), Ok(active("bob", None)))],
        ..Default::default()
    };
    let t = [HeaderRef {
        id: 1,
        value: b"tb",
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::IdentityMismatch);
    assert_eq!(o.bearer_error, Some(BearerError::InvalidRequest));
}

#[test]
fn inactive_expired_and_malformed_tokens_are_minus_6() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![
            ("old".into(), Ok(active("alice", Some(NOW as i64 - 1)))),
            ("off".into(), Ok(inactive())),
        ],
        ..Default::default()
    };
    for tok in [&b"old"[..], b"off", b"bad token", b"x\x01y"] {
        let t = [HeaderRef { id: 1, value: tok }];
        let o = a.authorize(
            &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
            &mut sso,
            NOW,
        );
        assert_eq!(
            o.code,
            Code::InvalidToken,
            "{:?}",
            String::from_utf8_lossy(tok)
        );
        assert_eq!(o.bearer_error, Some(BearerError::InvalidToken));
    }
    assert_eq!(
        sso.introspections, 2,
        "malformed tokens never reach the SSO"
    );
}

#[test]
fn sso_failure_on_token_is_minus_5() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![("t".into(), Err(SsoError::Timeout))],
        ..Default::default()
    };
    let t = [HeaderRef { id: 1, value: b"t" }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::Error);
    let mut sso = FakeSso {
        tokens: vec![(
            "t".into(),
            Ok(Introspection {
                user: None,
                ..active("x", None)
            }),
        )],
        ..Default::default()
    };
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::Error, "active token without a user");
}

#[test]
fn token_checks_off_without_introspect_url() {
    let mut c = config();
    c.introspect_url = None;
    let mut a = Authorizer::new(c, shared());
    let mut sso = FakeSso::default();
    let t = [HeaderRef {
        id: 1,
        value: b"tok",
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::NoCredentials);
    assert_eq!(sso.introspections, 0);
}

#[test]
fn digest_login_gives_new_token() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        login_answer: Some(Ok(LoginOutcome::Session {
            access_token: "newtok".into(),
            expires_in: Some(60),
        })),
        ..Default::default()
    };
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        None,
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 9,
        value: h.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW + 1,
    );
    assert_eq!(o.code, Code::DigestOk, "{}", o.reason);
    assert_eq!(o.new_token(), Some("newtok"));
    assert_eq!(o.used_headers[..], [9]);
    assert!(!o.reason.contains("newtok"));
    let login = sso.last_login.unwrap();
    assert_eq!(login.realm, "example.com");
    assert_eq!(login.method, "REGISTER");
    assert_eq!(login.algorithm, "MD5");
    assert_eq!(login.qop.as_deref(), Some("auth"));
    assert_eq!(login.nc.as_deref(), Some("00000001"));
    assert_eq!(login.body_hash, None);
}

#[test]
fn digest_sso_answers_map_to_codes() {
    for (answer, code) in [
        (Ok(LoginOutcome::InvalidGrant), Code::WrongCredentials),
        (Ok(LoginOutcome::UnknownUser), Code::UnknownUser),
        (Err(SsoError::Status(500)), Code::Error),
        (Err(SsoError::Malformed("x")), Code::Error),
        (Err(SsoError::Unreachable("refused".into())), Code::Error),
    ] {
        let mut a = Authorizer::new(config(), shared());
        let mut sso = FakeSso {
            login_answer: Some(answer),
            ..Default::default()
        };
        let h = digest_header(&a, "alice", "example.com", None, None, Algorithm::Md5, b"");
        let c = [HeaderRef {
            id: 1,
            value: h.as_bytes(),
        }];
        let o = a.authorize(
            &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
            &mut sso,
            NOW,
        );
        assert_eq!(o.code, code);
    }
}

#[test]
fn auth_int_sends_body_hash() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        login_answer: Some(Ok(LoginOutcome::Session {
            access_token: "t".into(),
            expires_in: None,
        })),
        ..Default::default()
    };
    let body = b"v=0\r\n";
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        None,
        Some("auth-int"),
        Algorithm::Sha256,
        body,
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let mut req = register(b"<sip:alice@example.com>", c.to_vec(), vec![]);
    req.body = body;
    let o = a.authorize(&req, &mut sso, NOW);
    assert_eq!(o.code, Code::DigestOk);
    let login = sso.last_login.unwrap();
    assert_eq!(login.algorithm, "SHA-256");
    assert_eq!(
        login.body_hash,
        Some(digest::hash_hex(Algorithm::Sha256, body))
    );
}

#[test]
fn forged_and_stale_nonces() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    let good = a
        .nonces
        .issue(NOW, &[1; 12], Algorithm::Md5, QopOffer::None);
    let mut forged = good.clone().into_bytes();
    forged[20] = if forged[20] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        Some(forged),
        None,
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::BadNonce);
    assert_eq!(sso.logins, 0, "a forged nonce never reaches the SSO");

    let h = digest_header(
        &a,
        "alice",
        "example.com",
        Some(good),
        None,
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW + 301,
    );
    assert_eq!(o.code, Code::StaleNonce);
    assert_eq!(sso.logins, 0);
    // A challenge after a stale nonce says so.
    let spec = ChallengeSpec {
        placement: Placement::Www,
        realm: "",
        is_register: true,
        to: Some(b"<sip:alice@example.com>"),
        from: None,
        qop: QopOffer::Auth,
        algorithms: vec![Algorithm::Md5],
    };
    let lines = a.challenge(&spec, Some(&o), NOW + 301, &[2; 12]).unwrap();
    assert!(lines[0].contains("stale=true"), "{}", lines[0]);
}

#[test]
fn digest_user_must_be_the_aor() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    let h = digest_header(&a, "bob", "example.com", None, None, Algorithm::Md5, b"");
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::IdentityMismatch);
    assert_eq!(sso.logins, 0);
}

#[test]
fn credentials_for_another_realm_do_not_count() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    let h = digest_header(&a, "alice", "other.net", None, None, Algorithm::Md5, b"");
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::NoCredentials);
}

#[test]
fn rejected_token_with_digest_beside_it_lets_digest_decide() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        login_answer: Some(Ok(LoginOutcome::Session {
            access_token: "fresh".into(),
            expires_in: None,
        })),
        ..Default::default()
    };
    let h = digest_header(&a, "alice", "example.com", None, None, Algorithm::Md5, b"");
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let t = [HeaderRef {
        id: 2,
        value: b"stale-token",
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), t.to_vec()),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::DigestOk);
    assert_eq!(o.used_headers[..], [1]);
}

#[test]
fn digest_without_token_url_is_minus_5() {
    let mut c = config();
    c.token_url = None;
    let mut a = Authorizer::new(c, shared());
    let mut sso = FakeSso::default();
    let h = digest_header(&a, "alice", "example.com", None, None, Algorithm::Md5, b"");
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::Error);
}

#[test]
fn challenge_lines() {
    let mut c = config();
    c.set_str("authz_server", "https://sso.example.com/")
        .unwrap();
    c.set_str("bearer_scope", "sip").unwrap();
    let a = Authorizer::new(c, shared());
    let (qop, algs) = challenge_options(Some("auth,auth-int"), Some("SHA-256,MD5")).unwrap();
    let spec = ChallengeSpec {
        placement: Placement::Proxy,
        realm: "r.example",
        is_register: false,
        to: None,
        from: None,
        qop,
        algorithms: algs,
    };
    // A -7 comes from a token: with the default bearer_challenge (when_token) the Bearer
    // challenge is there.
    let mismatch = Outcome {
        bearer_error: Some(BearerError::InvalidRequest),
        carried_token: true,
        ..Outcome::new(Code::IdentityMismatch, "")
    };
    let lines = a.challenge(&spec, Some(&mismatch), NOW, &[0; 12]).unwrap();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("Proxy-Authenticate: Digest ") && lines[0].contains("SHA-256"));
    assert!(lines[1].contains("algorithm=MD5"));
    assert!(
        lines[2].starts_with("Proxy-Authenticate: Bearer ") && lines[2].contains("invalid_request")
    );
    assert!(lines
        .iter()
        .all(|l| l.ends_with("\r\n") && !l.contains("stale")));
    assert!(challenge_options(Some("bogus"), None).is_err());
    assert!(challenge_options(None, Some("MD4")).is_err());
}

#[test]
fn realm_from_to_host_without_prefix() {
    let mut c = config();
    c.set_str("realm_prefix", "sip.").unwrap();
    let a = Authorizer::new(c, shared());
    assert_eq!(
        a.effective_realm("", true, Some(b"<sip:a@sip.example.com>"), None)
            .as_deref(),
        Some("example.com")
    );
    assert_eq!(
        a.effective_realm("", false, None, Some(b"sip:a@other.org;tag=1"))
            .as_deref(),
        Some("other.org")
    );
    assert_eq!(
        a.effective_realm("given", true, None, None).as_deref(),
        Some("given")
    );
    assert_eq!(a.effective_realm("", true, None, None), None);
}

#[test]
fn replayed_digest_is_minus_8_and_nc_plus_one_passes() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        login_answer: Some(Ok(LoginOutcome::Session {
            access_token: "t".into(),
            expires_in: None,
        })),
        ..Default::default()
    };
    let nonce = a
        .nonces
        .issue(NOW, &[3; 12], Algorithm::Md5, QopOffer::Auth);
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        Some(nonce.clone()),
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let first = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(first.code, Code::DigestOk);
    let again = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(again.code, Code::BadNonce);
    assert_eq!(sso.logins, 1, "the replay never reaches the SSO");
    let next = h.replace("nc=00000001", "nc=00000002");
    let c = [HeaderRef {
        id: 1,
        value: next.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::DigestOk, "{}", o.reason);
    assert_eq!(a.stats().get(Stat::ReplaysBlocked), 1);
    assert_eq!(a.stats().get(Stat::DigestAccepted), 2);
}

#[test]
fn negative_results_are_cached_briefly() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    let t = [HeaderRef {
        id: 1,
        value: b"unknown-token",
    }];
    for _ in 0..5 {
        let o = a.authorize(
            &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
            &mut sso,
            NOW,
        );
        assert_eq!(o.code, Code::InvalidToken);
    }
    assert_eq!(
        sso.introspections, 1,
        "a flood of one bad token is one SSO call"
    );
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW + 5,
    );
    assert_eq!(o.code, Code::InvalidToken);
    assert_eq!(sso.introspections, 2, "negative_cache_ttl is over");
}

#[test]
fn sso_errors_are_counted() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![("t".into(), Err(SsoError::Timeout))],
        ..Default::default()
    };
    let t = [HeaderRef { id: 1, value: b"t" }];
    a.authorize(
        &register(b"<sip:alice@example.com>", vec![], t.to_vec()),
        &mut sso,
        NOW,
    );
    assert_eq!(a.stats().get(Stat::SsoRequests), 1);
    assert_eq!(a.stats().get(Stat::SsoTimeouts), 1);
    assert_eq!(a.stats().get(Stat::SsoErrors), 1);
    assert_eq!(a.stats().get(Stat::TokenRejected), 1);
}

// ---- local JWT validation ----

// Test-only Ed25519 key pair (tests/data/jwt, shared with jwt.rs); it protects nothing.
const TEST_ED_PRIVATE: &str = include_str!("../../../tests/data/jwt/ed-private.pem");
const TEST_ED_PUBLIC: &str = include_str!("../../../tests/data/jwt/ed-public.pem");

/// The DER inside a one-block PEM text.
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn ed_jwt(claims: serde_json::Value, kid: Option<&str>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = kid.map(String::from);
    let key = jsonwebtoken::EncodingKey::from_ed_der(&pem_der(TEST_ED_PRIVATE));
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn ed_jwks(kid: &str) -> Vec<u8> {
    use base64::Engine as _;
    let spki = pem_der(TEST_ED_PUBLIC);
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&spki[spki.len() - 32..]);
    serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid,
                                 "use": "sig", "alg": "EdDSA"}]})
    .to_string()
    .into_bytes()
}

/// An SSO that also serves a JWK Set and counts its fetches.
#[derive(Default)]
struct JwksSso {
    inner: FakeSso,
    jwks: Vec<u8>,
    fetches: usize,
}

impl SsoApi for JwksSso {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError> {
        self.inner.introspect(token)
    }
    fn digest_login(&mut self, req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        self.inner.digest_login(req)
    }
    fn fetch_jwks(&mut self, _url: &str) -> Result<Vec<u8>, SsoError> {
        self.fetches += 1;
        Ok(self.jwks.clone())
    }
}

fn jwt_config(file_keys: bool) -> Config {
    let mut c = config();
    if file_keys {
        c.jwt_file_keys = Some(std::sync::Arc::new(
            KeySet::from_file_contents(TEST_ED_PUBLIC.as_bytes()).unwrap(),
        ));
        c.jwt_key_file = Some("/test/key.pem".into());
    } else {
        c.set_str("jwks_url", "https://sso.example.com/jwks")
            .unwrap();
    }
    c.set_str("jwt_issuer", "https://sso.example.com").unwrap();
    c
}

fn alice_claims(exp: u64) -> serde_json::Value {
    serde_json::json!({"iss": "https://sso.example.com", "sub": "uid-1",
                       "preferred_username": "alice", "exp": exp, "iat": NOW,
                       "groups": ["staff"], "phone_number": "+14255550101"})
}

#[test]
fn jwt_is_validated_locally_and_cached() {
    let mut a = Authorizer::new(jwt_config(true), shared());
    let mut sso = FakeSso::default();
    let token = ed_jwt(alice_claims(NOW + 600), None);
    for round in 0..2 {
        let req = register(
            b"<sip:alice@example.com>",
            vec![],
            vec![HeaderRef {
                id: 0,
                value: token.as_bytes(),
            }],
        );
        let mut o = a.authorize(&req, &mut sso, NOW);
        assert_eq!(o.code, Code::TokenOk, "round {round}: {}", o.reason);
        assert_eq!(o.reason.ends_with("(cached)"), round == 1);
        assert_eq!(
            a.variable(&mut o, &SsoVar::Claim("phone_number".into()), &mut sso, NOW),
            Some(VarValue::Text("+14255550101".into()))
        );
    }
    assert_eq!(sso.introspections, 0, "a JWT needs no introspection");
}

#[test]
fn refused_jwts_are_minus_6_and_opaque_tokens_are_introspected() {
    let mut a = Authorizer::new(jwt_config(true), shared());
    let mut sso = FakeSso::default();
    sso.tokens
        .push(("opaque-token".into(), Ok(active("alice", None))));
    let expired = ed_jwt(alice_claims(NOW - 600), None);
    let mut wrong_iss = alice_claims(NOW + 600);
    wrong_iss["iss"] = "https://evil.example.com".into();
    let wrong_iss = ed_jwt(wrong_iss, None);
    let mut tampered = ed_jwt(alice_claims(NOW + 600), None);
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    for (what, token) in [
        ("expired", expired),
        ("iss", wrong_iss),
        ("signature", tampered),
    ] {
        let req = register(
            b"<sip:alice@example.com>",
            vec![],
            vec![HeaderRef {
                id: 0,
                value: token.as_bytes(),
            }],
        );
        let o = a.authorize(&req, &mut sso, NOW);
        assert_eq!(o.code, Code::InvalidToken, "{what}: {}", o.reason);
        assert!(o.reason.contains("refused"), "{what}: {}", o.reason);
        assert!(
            !o.reason.contains(&token),
            "the log line must not hold the token"
        );
    }
    assert_eq!(sso.introspections, 0);
    let req = register(
        b"<sip:alice@example.com>",
        vec![],
        vec![HeaderRef {
            id: 0,
            value: b"opaque-token",
        }],
    );
    assert_eq!(a.authorize(&req, &mut sso, NOW).code, Code::TokenOk);
    assert_eq!(
        sso.introspections, 1,
        "a token that is not a JWT is introspected"
    );
}

#[test]
fn jwks_is_fetched_once_and_again_for_an_unknown_kid() {
    let mut a = Authorizer::new(jwt_config(false), shared());
    let mut sso = JwksSso {
        jwks: ed_jwks("k1"),
        ..Default::default()
    };
    let good = ed_jwt(alice_claims(NOW + 600), Some("k1"));
    let req = register(
        b"<sip:alice@example.com>",
        vec![],
        vec![HeaderRef {
            id: 0,
            value: good.as_bytes(),
        }],
    );
    assert_eq!(a.authorize(&req, &mut sso, NOW).code, Code::TokenOk);
    assert_eq!(sso.fetches, 1);
    // a new kid (key rotation): one refetch, then refused while the set lacks it
    let rotated = ed_jwt(alice_claims(NOW + 600), Some("k2"));
    let req = register(
        b"<sip:alice@example.com>",
        vec![],
        vec![HeaderRef {
            id: 0,
            value: rotated.as_bytes(),
        }],
    );
    let o = a.authorize(&req, &mut sso, NOW + 20);
    assert_eq!(o.code, Code::InvalidToken, "{}", o.reason);
    assert_eq!(sso.fetches, 2);
    // the SSO now publishes k2: after the negative cache and the refetch interval it passes
    sso.jwks = ed_jwks("k2");
    let o = a.authorize(&req, &mut sso, NOW + 40);
    assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
    assert_eq!(sso.fetches, 3);
    assert_eq!(sso.inner.introspections, 0);
}

#[test]
fn no_jwks_is_an_sso_error() {
    let mut a = Authorizer::new(jwt_config(false), shared());
    let mut sso = FakeSso::default(); // fetch_jwks: NotConfigured
    let token = ed_jwt(alice_claims(NOW + 600), Some("k1"));
    let req = register(
        b"<sip:alice@example.com>",
        vec![],
        vec![HeaderRef {
            id: 0,
            value: token.as_bytes(),
        }],
    );
    let o = a.authorize(&req, &mut sso, NOW);
    assert_eq!(o.code, Code::Error, "{}", o.reason);
}

// ---- identity for the script ----

fn with_claims(user: &str, exp: i64, claims: serde_json::Value) -> Introspection {
    let mut i = active(user, Some(exp));
    i.claims = match claims {
        serde_json::Value::Object(m) => m.into(),
        _ => unreachable!(),
    };
    i
}

#[test]
fn variables_groups_and_asserted_identity_of_a_token() {
    let mut c = config();
    c.set_int("bind_register_to_token", 1).unwrap();
    let mut a = Authorizer::new(c, shared());
    let mut sso = FakeSso::default();
    sso.tokens.push((
        "t".into(),
        Ok(with_claims(
            "alice",
            NOW as i64 + 100,
            serde_json::json!({"groups": ["staff"], "scope": "sip voip",
                               "phone_number": "+1 425 555 0101"}),
        )),
    ));
    let req = register(
        b"<sip:alice@example.com>",
        vec![],
        vec![HeaderRef { id: 0, value: b"t" }],
    );
    let mut o = a.authorize(&req, &mut sso, NOW);
    assert_eq!(o.code, Code::TokenOk);
    let var = |a: &mut Authorizer, o: &mut Outcome, name: &str| {
        a.variable(
            o,
            &SsoVar::parse(name).unwrap(),
            &mut FakeSso::default(),
            NOW + 10,
        )
    };
    assert_eq!(
        var(&mut a, &mut o, "user"),
        Some(VarValue::Text("alice".into()))
    );
    assert_eq!(
        var(&mut a, &mut o, "token_source"),
        Some(VarValue::Text("header".into()))
    );
    assert_eq!(var(&mut a, &mut o, "expires_in"), Some(VarValue::Int(90)));
    assert_eq!(var(&mut a, &mut o, "claim.nothing"), None);
    let alice = identity::parse_aor(b"<sip:alice@example.com>").unwrap();
    let bob = identity::parse_aor(b"<sip:bob@example.com>").unwrap();
    assert!(a.is_user_in(&mut o, None, "staff", &mut sso, NOW).is_ok());
    assert!(a.is_user_in(&mut o, None, "voip", &mut sso, NOW).is_ok());
    assert!(a
        .is_user_in(&mut o, Some(&alice), "staff", &mut sso, NOW)
        .is_ok());
    assert!(a
        .is_user_in(&mut o, Some(&bob), "staff", &mut sso, NOW)
        .is_err());
    assert!(a.is_user_in(&mut o, None, "admins", &mut sso, NOW).is_err());
    assert_eq!(
        a.asserted_identity(&mut o, "example.com", &mut sso, NOW),
        Ok("<sip:+14255550101@example.com;user=phone>".into())
    );
    assert_eq!(a.register_limit(&o, NOW + 30), Some(70));
}

#[test]
fn a_failed_authorization_exposes_nothing() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    let req = register(
        b"<sip:alice@example.com>",
        vec![],
        vec![HeaderRef {
            id: 0,
            value: b"unknown",
        }],
    );
    let mut o = a.authorize(&req, &mut sso, NOW);
    assert_eq!(o.code, Code::InvalidToken);
    assert_eq!(a.variable(&mut o, &SsoVar::User, &mut sso, NOW), None);
    assert!(a.is_user_in(&mut o, None, "staff", &mut sso, NOW).is_err());
    assert!(matches!(
        a.asserted_identity(&mut o, "example.com", &mut sso, NOW),
        Err(AssertError::NoIdentity(_))
    ));
    assert_eq!(a.register_limit(&o, NOW), None);
}

#[test]
fn claims_of_a_digest_login_come_from_the_issued_token_once() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    sso.tokens.push((
        "issued".into(),
        Ok(with_claims(
            "alice",
            NOW as i64 + 3600,
            serde_json::json!({"groups": ["staff"]}),
        )),
    ));
    let mut o = Outcome::new(Code::DigestOk, "test");
    o.set_new_token(Some("issued".into()));
    o.user = Some("alice".into());
    o.source = Some(TokenSource::Digest);
    assert!(a.is_user_in(&mut o, None, "staff", &mut sso, NOW).is_ok());
    assert!(a.is_user_in(&mut o, None, "staff", &mut sso, NOW).is_ok());
    assert_eq!(
        sso.introspections, 1,
        "the issued token is introspected once"
    );
    assert_eq!(
        a.variable(&mut o, &SsoVar::TokenSource, &mut sso, NOW),
        Some(VarValue::Text("digest".into()))
    );
    assert_eq!(
        a.register_limit(&o, NOW),
        None,
        "Digest logins are not capped"
    );
}

// ---- success reasons and Bearer lookup (the per-request cost work) ----

/// A REGISTER of alice with the given credential and token headers.
fn alice_register<'a>(creds: Vec<HeaderRef<'a>>, tokens: Vec<HeaderRef<'a>>) -> AuthRequest<'a> {
    register(b"<sip:alice@example.com>", creds, tokens)
}

struct OneUser;

impl SsoApi for OneUser {
    fn introspect(&mut self, token: &str) -> Result<Introspection, SsoError> {
        let user = if token.starts_with("bob") {
            "bob"
        } else {
            "alice"
        };
        Ok(Introspection {
            active: true,
            user: Some(user.into()),
            exp: None,
            scope: None,
            claims: Default::default(),
        })
    }
    fn digest_login(&mut self, _: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        Err(SsoError::Timeout)
    }
}

fn token(value: &'static [u8]) -> Vec<HeaderRef<'static>> {
    vec![HeaderRef { id: 0, value }]
}

#[test]
fn success_reason_only_when_asked() {
    let mut a = Authorizer::new(config(), shared());
    let o = a.authorize(
        &alice_register(vec![], token(b"alice-1")),
        &mut OneUser,
        100,
    );
    assert_eq!(o.code, Code::TokenOk);
    let fp = fingerprint("alice-1");
    assert_eq!(o.reason, format!("token #{fp} accepted for \"alice\""));
    let o = a.authorize(
        &alice_register(vec![], token(b"alice-1")),
        &mut OneUser,
        100,
    );
    assert_eq!(
        o.reason,
        format!("token #{fp} accepted for \"alice\" (cached)")
    );

    a.set_explain_success(false);
    let o = a.authorize(
        &alice_register(vec![], token(b"alice-1")),
        &mut OneUser,
        100,
    );
    assert_eq!(o.code, Code::TokenOk);
    assert_eq!(o.user.as_deref(), Some("alice"));
    assert!(o.reason.is_empty());
    // Failures keep their reason whatever the setting.
    let o = a.authorize(&alice_register(vec![], token(b"bob-1")), &mut OneUser, 100);
    assert_eq!(o.code, Code::IdentityMismatch);
    let fp = fingerprint("bob-1");
    assert!(o
        .reason
        .starts_with(&format!("token #{fp} belongs to \"bob\"")));
    let o = a.authorize(&alice_register(vec![], vec![]), &mut OneUser, 100);
    assert_eq!(o.code, Code::NoCredentials);
    assert!(!o.reason.is_empty());
}

#[test]
fn bearer_found_behind_other_schemes() {
    let mut a = Authorizer::new(config(), shared());
    let creds = vec![
        HeaderRef {
            id: 0,
            value: b"Digest username=\"alice\", realm=\"other.org\"",
        },
        HeaderRef {
            id: 1,
            value: b"Basic YWxpY2U6cHc=",
        },
        HeaderRef {
            id: 2,
            value: b" \tbearer alice-2",
        },
    ];
    let o = a.authorize(&alice_register(creds, vec![]), &mut OneUser, 100);
    assert_eq!(o.code, Code::TokenOk);
    assert_eq!(o.source, Some(TokenSource::Bearer));
    assert_eq!(o.used_headers[..], [2]);

    let creds = vec![
        HeaderRef {
            id: 0,
            value: b"Basic YWxpY2U6cHc=",
        },
        HeaderRef {
            id: 1,
            value: b"Bearer",
        },
    ];
    let o = a.authorize(&alice_register(creds, vec![]), &mut OneUser, 100);
    assert_eq!(o.code, Code::InvalidToken);
    assert_eq!(o.used_headers[..], [1]);
    assert!(o.reason.contains("malformed Bearer"));
}

// ---- shared store (cachedb_url): two nodes, one store ----------------------------------

mod cluster_nodes {
    use super::*;
    use crate::core::cluster::health::Health;
    use crate::core::cluster::store::memory::MemoryStore;
    use crate::core::cluster::{Cluster, Note};

    fn no_log(_: Note) {}

    /// A node: its own shared tables (its own replay table and cache), the common store.
    fn node(store: &MemoryStore) -> Authorizer {
        let cfg = config();
        let mut a = Authorizer::new(cfg.clone(), shared());
        a.set_cluster(Cluster::new(
            cfg.secret.as_deref().unwrap(),
            cfg.cachedb_timeout_ms,
            Box::new(store.clone()),
            std::sync::Arc::new(Health::new().unwrap()),
            no_log,
        ));
        a
    }

    fn login_sso() -> FakeSso {
        FakeSso {
            login_answer: Some(Ok(LoginOutcome::Session {
                access_token: "t".into(),
                expires_in: None,
            })),
            ..Default::default()
        }
    }

    fn send(a: &mut Authorizer, sso: &mut FakeSso, header: &str) -> Outcome {
        let c = [HeaderRef {
            id: 1,
            value: header.as_bytes(),
        }];
        a.authorize(
            &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
            sso,
            NOW,
        )
    }

    #[test]
    fn a_replay_on_the_other_node_is_refused_and_the_next_nc_accepted() {
        let store = MemoryStore::default();
        let (mut a, mut b) = (node(&store), node(&store));
        let mut sso = login_sso();
        let nonce = a
            .nonces
            .issue(NOW, &[4; 12], Algorithm::Md5, QopOffer::Auth);
        let h = digest_header(
            &a,
            "alice",
            "example.com",
            Some(nonce),
            Some("auth"),
            Algorithm::Md5,
            b"",
        );
        assert_eq!(send(&mut a, &mut sso, &h).code, Code::DigestOk);
        let replay = send(&mut b, &mut sso, &h);
        assert_eq!(replay.code, Code::BadNonce, "{}", replay.reason);
        assert_eq!(sso.logins, 1, "the replay never reaches the SSO");
        assert_eq!(b.stats().get(Stat::CrossNodeReplaysBlocked), 1);
        assert_eq!(b.stats().get(Stat::ReplaysBlocked), 1);
        let next = h.replace("nc=00000001", "nc=00000002");
        assert_eq!(send(&mut b, &mut sso, &next).code, Code::DigestOk);
        assert_eq!(send(&mut a, &mut sso, &next).code, Code::BadNonce);
    }

    #[test]
    fn with_the_store_down_no_replay_passes_and_the_client_is_asked_to_retry() {
        let store = MemoryStore::default();
        let (mut a, mut b) = (node(&store), node(&store));
        let mut sso = login_sso();
        let h = digest_header(
            &a,
            "alice",
            "example.com",
            None,
            Some("auth"),
            Algorithm::Md5,
            b"",
        );
        assert_eq!(send(&mut a, &mut sso, &h).code, Code::DigestOk);
        store.state().down = true;
        let o = send(&mut b, &mut sso, &h);
        assert_eq!(o.code, Code::StaleNonce, "{}", o.reason);
        assert_eq!(
            send(&mut a, &mut sso, &h).code,
            Code::BadNonce,
            "local table"
        );
        assert_eq!(sso.logins, 1);
        assert_eq!(b.stats().get(Stat::CachedbErrors), 1);
    }

    #[test]
    fn a_token_introspected_on_one_node_is_not_introspected_on_the_other() {
        let store = MemoryStore::default();
        let (mut a, mut b) = (node(&store), node(&store));
        let answer = || FakeSso {
            tokens: vec![("tok-1".into(), Ok(active("alice", Some(NOW as i64 + 600))))],
            ..Default::default()
        };
        let (mut sso_a, mut sso_b) = (answer(), answer());
        let t = [HeaderRef {
            id: 1,
            value: b"tok-1",
        }];
        let req = register(b"<sip:alice@example.com>", vec![], t.to_vec());
        assert_eq!(a.authorize(&req, &mut sso_a, NOW).code, Code::TokenOk);
        let o = b.authorize(&req, &mut sso_b, NOW + 1);
        assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
        assert_eq!((sso_a.introspections, sso_b.introspections), (1, 0));
        assert_eq!(b.stats().get(Stat::CachedbHits), 1);
        // With the store down, the token still works through introspection.
        store.state().down = true;
        let mut c = node(&store);
        let mut sso_c = answer();
        assert_eq!(c.authorize(&req, &mut sso_c, NOW + 2).code, Code::TokenOk);
        assert_eq!(sso_c.introspections, 1);
    }
}

#[test]
fn bearer_challenge_modes() {
    let spec = || ChallengeSpec {
        placement: Placement::Www,
        realm: "example.com",
        is_register: true,
        to: None,
        from: None,
        qop: QopOffer::Auth,
        algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
    };
    let no_creds = Outcome::new(Code::NoCredentials, "");
    let bad_token = Outcome {
        bearer_error: Some(BearerError::InvalidToken),
        carried_token: true,
        ..Outcome::new(Code::InvalidToken, "")
    };
    let bearer_lines = |mode: &str, last: Option<&Outcome>| {
        let mut c = config();
        c.set_str("bearer_challenge", mode).unwrap();
        let a = Authorizer::new(c, shared());
        let lines = a.challenge(&spec(), last, NOW, &[0; 12]).unwrap();
        assert!(lines[..2].iter().all(|l| l.contains(": Digest ")));
        lines
            .iter()
            .filter(|l| l.starts_with("WWW-Authenticate: Bearer "))
            .count()
    };
    // Default: Bearer only for a request that carried a token.
    assert_eq!(bearer_lines("when_token", None), 0);
    assert_eq!(bearer_lines("when_token", Some(&no_creds)), 0);
    assert_eq!(bearer_lines("when_token", Some(&bad_token)), 1);
    assert_eq!(bearer_lines("always", None), 1);
    assert_eq!(bearer_lines("always", Some(&no_creds)), 1);
    assert_eq!(bearer_lines("never", Some(&bad_token)), 0);

    // carried_token is set by authorize for a bad token, also with Digest beside it.
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso::default();
    let o = a.authorize(&alice_register(vec![], token(b"nope")), &mut sso, NOW);
    assert_eq!(o.code, Code::InvalidToken);
    assert!(o.carried_token);
    let o = a.authorize(&alice_register(vec![], vec![]), &mut sso, NOW);
    assert!(!o.carried_token);
}

#[test]
fn reused_nonce_is_challenged_stale_and_forged_is_not() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        login_answer: Some(Ok(LoginOutcome::Session {
            access_token: "t".into(),
            expires_in: None,
        })),
        ..Default::default()
    };
    let nonce = a
        .nonces
        .issue(NOW, &[4; 12], Algorithm::Md5, QopOffer::Auth);
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        Some(nonce.clone()),
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let req = register(b"<sip:alice@example.com>", c.to_vec(), vec![]);
    assert_eq!(a.authorize(&req, &mut sso, NOW).code, Code::DigestOk);
    let again = a.authorize(&req, &mut sso, NOW);
    assert_eq!(again.code, Code::BadNonce);
    assert!(again.nonce_reused);
    let spec = ChallengeSpec {
        placement: Placement::Www,
        realm: "",
        is_register: true,
        to: Some(b"<sip:alice@example.com>"),
        from: None,
        qop: QopOffer::Auth,
        algorithms: vec![Algorithm::Md5],
    };
    let lines = a.challenge(&spec, Some(&again), NOW, &[2; 12]).unwrap();
    assert!(lines[0].contains("stale=true"), "{}", lines[0]);

    let mut forged = nonce.into_bytes();
    forged[30] = if forged[30] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        Some(forged),
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::BadNonce);
    assert!(!o.nonce_reused);
    let lines = a.challenge(&spec, Some(&o), NOW, &[3; 12]).unwrap();
    assert!(!lines[0].contains("stale"), "{}", lines[0]);
}

#[test]
fn retransmission_gets_the_same_answer_and_a_replay_does_not() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        login_answer: Some(Ok(LoginOutcome::Session {
            access_token: "tok-first".into(),
            expires_in: None,
        })),
        ..Default::default()
    };
    let nonce = a
        .nonces
        .issue(NOW, &[6; 12], Algorithm::Md5, QopOffer::Auth);
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        Some(nonce),
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let with = |via: &'static [u8], cseq: &'static [u8]| {
        let mut r = register(b"<sip:alice@example.com>", c.to_vec(), vec![]);
        r.transaction = Some(TransactionId {
            via,
            call_id: b"abc@host",
            cseq,
            source: [7; 20],
        });
        r
    };
    let first = a.authorize(
        &with(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"2 REGISTER"),
        &mut sso,
        NOW,
    );
    assert_eq!(first.code, Code::DigestOk);
    // The SSO would now issue another token: the retransmission must not ask it.
    sso.login_answer = Some(Ok(LoginOutcome::Session {
        access_token: "tok-second".into(),
        expires_in: None,
    }));
    for later in [0, 5, 31] {
        let again = a.authorize(
            &with(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"2 REGISTER"),
            &mut sso,
            NOW + later,
        );
        assert_eq!(again.code, Code::DigestOk, "{}", again.reason);
        assert_eq!(again.new_token(), Some("tok-first"));
        assert_eq!(again.user.as_deref(), Some("alice"));
        assert_eq!(again.source, Some(TokenSource::Digest));
    }
    assert_eq!(sso.logins, 1);
    // Another branch or CSeq with the same credentials: a replay, challenged with stale=true.
    for (via, cseq) in [
        (&b"SIP/2.0/UDP h;branch=z9hG4bK2"[..], &b"2 REGISTER"[..]),
        (b"SIP/2.0/UDP h;branch=z9hG4bK1", b"3 REGISTER"),
    ] {
        let o = a.authorize(&with(via, cseq), &mut sso, NOW + 1);
        assert_eq!(o.code, Code::BadNonce);
        assert!(o.nonce_reused);
        assert!(o.new_token().is_none());
    }
    // Past the window, a retransmission is a replay too.
    let late = a.authorize(
        &with(b"SIP/2.0/UDP h;branch=z9hG4bK1", b"2 REGISTER"),
        &mut sso,
        NOW + 33,
    );
    assert_eq!(late.code, Code::BadNonce);
    assert_eq!(sso.logins, 1);
    assert_eq!(a.stats().get(Stat::ReplaysBlocked), 3);
}

#[test]
fn retransmission_waits_for_the_first_copy() {
    use crate::core::digest::retrans::{RetransKey, Seen};
    let shared = shared();
    let key = RetransKey::new(b"0123456789abcdef0123456789abcdef");
    let t = TransactionId {
        via: b"v",
        call_id: b"c",
        cseq: b"1 REGISTER",
        source: [0; 20],
    };
    let fp = key.fingerprint(&t, b"Digest x");
    assert!(shared.retrans.begin(&fp, NOW, NOW + 4));
    let other = std::sync::Arc::clone(&shared);
    let finisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(60));
        let fp = RetransKey::new(b"0123456789abcdef0123456789abcdef").fingerprint(
            &TransactionId {
                via: b"v",
                call_id: b"c",
                cseq: b"1 REGISTER",
                source: [0; 20],
            },
            b"Digest x",
        );
        other.retrans.finish(&fp, 2, Some("late-token"), NOW);
    });
    let a = Authorizer::new(config(), shared);
    let started = Instant::now();
    let o = a
        .retransmitted(&fp, "alice", NOW)
        .expect("the first copy's answer");
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(o.code, Code::DigestOk);
    assert_eq!(o.new_token(), Some("late-token"));
    finisher.join().unwrap();
    assert_eq!(
        a.shared.retrans.lookup(&fp, NOW),
        Seen::Done(2, Some("late-token".into()))
    );
}

// ---- issue 14 (security review) and issue 13 item 1: nonces and replays ----------------

fn session_sso() -> FakeSso {
    FakeSso {
        login_answer: Some(Ok(LoginOutcome::Session {
            access_token: "t".into(),
            expires_in: None,
        })),
        ..Default::default()
    }
}

fn alice_digest(a: &mut Authorizer, sso: &mut FakeSso, h: &str, now: u64) -> Outcome {
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), vec![]),
        sso,
        now,
    )
}

/// Item 1: an answer without qop does not cover nc; a captured one sent again with
/// nc=2, 3 must not be accepted again, and nc/cnonce do not reach the SSO.
#[test]
fn nc_without_qop_is_ignored_and_the_nonce_single_use() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = session_sso();
    let h = digest_header(&a, "alice", "example.com", None, None, Algorithm::Md5, b"")
        + ", nc=00000001, cnonce=\"abc\"";
    let first = alice_digest(&mut a, &mut sso, &h, NOW);
    assert_eq!(first.code, Code::DigestOk, "{}", first.reason);
    let sent = sso.last_login.clone().unwrap();
    assert_eq!((sent.nc, sent.cnonce, sent.qop), (None, None, None));
    for nc in ["00000002", "00000003"] {
        let again = alice_digest(&mut a, &mut sso, &h.replace("00000001", nc), NOW);
        assert_eq!(again.code, Code::BadNonce, "nc={nc}: {}", again.reason);
    }
    assert_eq!(sso.logins, 1);
}

/// Item 3: with a configured secret, a header accepted before a restart is not accepted
/// after it (the new replay table is empty): the nonce is stale (-3), not a new login.
#[test]
fn nonce_from_before_a_restart_is_stale() {
    let mut before = Authorizer::new(config(), shared());
    let mut sso = session_sso();
    let h = digest_header(
        &before,
        "alice",
        "example.com",
        None,
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    assert_eq!(
        alice_digest(&mut before, &mut sso, &h, NOW).code,
        Code::DigestOk
    );
    // Same secret, same node_id, a new start: new shared state.
    for node_id in [None, Some("sip-a")] {
        let mut cfg = config();
        cfg.node_id = node_id.map(String::from);
        let mut after = Authorizer::new(cfg, shared());
        let o = alice_digest(&mut after, &mut sso, &h, NOW + 1);
        assert_eq!(o.code, Code::StaleNonce, "{node_id:?}: {}", o.reason);
    }
    assert_eq!(sso.logins, 1);
    // The stale answer makes the next challenge say stale=true.
    let mut after = Authorizer::new(config(), shared());
    let o = alice_digest(&mut after, &mut sso, &h, NOW + 1);
    let spec = ChallengeSpec {
        placement: Placement::Www,
        realm: "example.com",
        is_register: true,
        to: None,
        from: None,
        qop: QopOffer::Auth,
        algorithms: vec![Algorithm::Md5],
    };
    let lines = after.challenge(&spec, Some(&o), NOW + 1, &[1; 12]).unwrap();
    assert!(lines[0].contains("stale=true"), "{}", lines[0]);
}

/// Issue 13 item 1: two nodes share the secret; a valid nonce of node A presented to node B
/// is stale (-3), with or without node_id, and never reaches B's SSO call.
#[test]
fn nonce_of_another_node_is_stale() {
    let mut cfg_a = config();
    cfg_a.node_id = Some("sip-a".into());
    let mut cfg_b = config();
    cfg_b.node_id = Some("sip-b".into());
    let shared_ab = shared();
    let node_a = Authorizer::new(cfg_a, shared_ab.clone());
    let mut node_b = Authorizer::new(cfg_b, shared());
    let mut sso = session_sso();
    let h = digest_header(
        &node_a,
        "alice",
        "example.com",
        None,
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let o = alice_digest(&mut node_b, &mut sso, &h, NOW);
    assert_eq!(o.code, Code::StaleNonce, "{}", o.reason);
    assert!(o.reason.contains("another node"), "{}", o.reason);
    // Forgetting node_id everywhere is safe too: every start is its own node.
    let unnamed_a = Authorizer::new(config(), shared());
    let mut unnamed_b = Authorizer::new(config(), shared());
    let h = digest_header(
        &unnamed_a,
        "alice",
        "example.com",
        None,
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    assert_eq!(
        alice_digest(&mut unnamed_b, &mut sso, &h, NOW).code,
        Code::StaleNonce
    );
    // A forged nonce is still -8 on any node.
    let forged = h.replace("nonce=\"02", "nonce=\"03");
    assert_eq!(
        alice_digest(&mut unnamed_b, &mut sso, &forged, NOW).code,
        Code::BadNonce
    );
    assert_eq!(sso.logins, 0);
    // Workers of one node (same shared state, same node_id) accept each other's nonces.
    let mut cfg_a2 = config();
    cfg_a2.node_id = Some("sip-a".into());
    let mut worker2 = Authorizer::new(cfg_a2, shared_ab);
    let h = digest_header(
        &node_a,
        "alice",
        "example.com",
        None,
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    assert_eq!(
        alice_digest(&mut worker2, &mut sso, &h, NOW).code,
        Code::DigestOk
    );
}

/// Item 4: the nonce is bound to the algorithm and qop of its challenge: an answer that
/// switches to MD5 without qop (a downgrade by a man in the middle) is -8.
#[test]
fn answers_with_another_algorithm_or_qop_are_minus_8() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = session_sso();
    let spec = ChallengeSpec {
        placement: Placement::Www,
        realm: "example.com",
        is_register: true,
        to: None,
        from: None,
        qop: QopOffer::Auth,
        algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
    };
    let lines = a.challenge(&spec, None, NOW, &[4; 12]).unwrap();
    let nonce_of = |line: &str| {
        line.split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    let (sha_nonce, md5_nonce) = (nonce_of(&lines[0]), nonce_of(&lines[1]));
    assert_ne!(sha_nonce, md5_nonce, "one nonce per algorithm");
    let cases: [(&String, Option<&str>, Algorithm, Code); 5] = [
        (&sha_nonce, None, Algorithm::Md5, Code::BadNonce),
        (&sha_nonce, Some("auth"), Algorithm::Md5, Code::BadNonce),
        (&sha_nonce, None, Algorithm::Sha256, Code::BadNonce),
        (
            &sha_nonce,
            Some("auth-int"),
            Algorithm::Sha256,
            Code::BadNonce,
        ),
        (&md5_nonce, Some("auth"), Algorithm::Md5, Code::DigestOk),
    ];
    for (nonce, qop, alg, want) in cases {
        let h = digest_header(
            &a,
            "alice",
            "example.com",
            Some(nonce.clone()),
            qop,
            alg,
            b"",
        );
        let o = alice_digest(&mut a, &mut sso, &h, NOW);
        assert_eq!(o.code, want, "{alg:?} {qop:?}: {}", o.reason);
    }
    assert_eq!(sso.logins, 1, "downgraded answers never reach the SSO");
    // With both qops offered, either may be used.
    let spec = ChallengeSpec {
        qop: QopOffer::Both,
        algorithms: vec![Algorithm::Sha256],
        ..spec
    };
    let lines = a.challenge(&spec, None, NOW, &[5; 12]).unwrap();
    let n = nonce_of(&lines[0]);
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        Some(n),
        Some("auth-int"),
        Algorithm::Sha256,
        b"",
    );
    assert_eq!(alice_digest(&mut a, &mut sso, &h, NOW).code, Code::DigestOk);
}

/// Item 2: flooding the replay table never lets a header through later: a nonce refused
/// for lack of room (-3) stays refused once room is back.
#[test]
fn nonce_refused_by_a_full_table_stays_refused() {
    let c = Config {
        cache_slots: 64,
        nonce_slots: 64,
        ..Default::default()
    };
    let shared = std::sync::Arc::new(SharedState::new(&c).unwrap());
    let mut a = Authorizer::new(config(), shared);
    let mut sso = session_sso();
    // Fill the table with nonces issued at NOW.
    let mut filled = 0;
    for i in 0..1000u32 {
        let mut r = [0u8; 12];
        r[..4].copy_from_slice(&i.to_be_bytes());
        let n = a.nonces.issue(NOW, &r, Algorithm::Md5, QopOffer::Auth);
        let h = digest_header(
            &a,
            "alice",
            "example.com",
            Some(n),
            Some("auth"),
            Algorithm::Md5,
            b"",
        );
        match alice_digest(&mut a, &mut sso, &h, NOW).code {
            Code::DigestOk => filled += 1,
            Code::StaleNonce => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(filled >= 32, "{filled}");
    // Headers of nonces issued at NOW + 100 until one finds no room: -3, no SSO call.
    let mut refused = None;
    for i in 0..1000u32 {
        let mut r = [0xee; 12];
        r[..4].copy_from_slice(&i.to_be_bytes());
        let n = a
            .nonces
            .issue(NOW + 100, &r, Algorithm::Md5, QopOffer::Auth);
        let h = digest_header(
            &a,
            "alice",
            "example.com",
            Some(n),
            Some("auth"),
            Algorithm::Md5,
            b"",
        );
        match alice_digest(&mut a, &mut sso, &h, NOW + 100).code {
            Code::StaleNonce => {
                refused = Some(h);
                break;
            }
            Code::DigestOk => {}
            other => panic!("{other:?}"),
        }
    }
    let h = refused.expect("victim refused");
    let logins = sso.logins;
    // NOW + 305: the early nonces have expired and room is back; the captured header is
    // still refused, and a fresh nonce works.
    let o = alice_digest(&mut a, &mut sso, &h, NOW + 305);
    assert_eq!(o.code, Code::StaleNonce, "{}", o.reason);
    assert_eq!(
        sso.logins, logins,
        "the captured header never reaches the SSO"
    );
    let fresh = digest_header(
        &a,
        "alice",
        "example.com",
        Some(
            a.nonces
                .issue(NOW + 305, &[1; 12], Algorithm::Md5, QopOffer::Auth),
        ),
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    assert_eq!(
        alice_digest(&mut a, &mut sso, &fresh, NOW + 305).code,
        Code::DigestOk
    );
}

// ---- issue 14: tokens, bounded time, honest outcomes ------------------------------------

fn tok(value: &'static [u8]) -> Vec<HeaderRef<'static>> {
    vec![HeaderRef { id: 0, value }]
}

fn with_claims_json(user: &str, claims: serde_json::Value, scope: &str) -> Introspection {
    let mut i = active(user, Some(NOW as i64 + 600));
    i.scope = Some(scope.into());
    i.claims = ClaimSet::from_json(&claims.to_string());
    i
}

/// Item 7: refresh and ID tokens never authenticate; `audience` and `required_scope` are
/// checked on introspected tokens, failures are -6 (insufficient_scope for the scope).
#[test]
fn token_kind_audience_and_scope() {
    let mut cfg = config();
    cfg.set_str("audience", "opensips").unwrap();
    cfg.set_str("required_scope", "sip  voice").unwrap();
    assert_eq!(cfg.required_scope, ["sip", "voice"]);
    let mut a = Authorizer::new(cfg, shared());
    let good = serde_json::json!({"aud": ["account", "opensips"], "token_type": "Bearer"});
    let mut sso = FakeSso {
        tokens: vec![
            (
                "good".into(),
                Ok(with_claims_json("alice", good.clone(), "sip voice x")),
            ),
            (
                "aud-str".into(),
                Ok(with_claims_json(
                    "alice",
                    serde_json::json!({"aud": "opensips"}),
                    "voice sip",
                )),
            ),
            (
                "refresh".into(),
                Ok(with_claims_json(
                    "alice",
                    serde_json::json!({"aud": "opensips", "token_type": "refresh_token"}),
                    "sip voice",
                )),
            ),
            (
                "kc-refresh".into(),
                Ok(with_claims_json(
                    "alice",
                    serde_json::json!({"aud": "opensips", "typ": "Refresh"}),
                    "sip voice",
                )),
            ),
            (
                "kc-id".into(),
                Ok(with_claims_json(
                    "alice",
                    serde_json::json!({"aud": "opensips", "typ": "ID"}),
                    "sip voice",
                )),
            ),
            (
                "other-aud".into(),
                Ok(with_claims_json(
                    "alice",
                    serde_json::json!({"aud": ["web"]}),
                    "sip voice",
                )),
            ),
            (
                "no-aud".into(),
                Ok(with_claims_json(
                    "alice",
                    serde_json::json!({}),
                    "sip voice",
                )),
            ),
            (
                "few-scopes".into(),
                Ok(with_claims_json("alice", good.clone(), "sip")),
            ),
            (
                "scope-prefix".into(),
                Ok(with_claims_json("alice", good, "sip voicemail")),
            ),
        ],
        ..Default::default()
    };
    let cases: [(&'static [u8], Code, Option<BearerError>); 9] = [
        (b"good", Code::TokenOk, None),
        (b"aud-str", Code::TokenOk, None),
        (
            b"refresh",
            Code::InvalidToken,
            Some(BearerError::InvalidToken),
        ),
        (
            b"kc-refresh",
            Code::InvalidToken,
            Some(BearerError::InvalidToken),
        ),
        (
            b"kc-id",
            Code::InvalidToken,
            Some(BearerError::InvalidToken),
        ),
        (
            b"other-aud",
            Code::InvalidToken,
            Some(BearerError::InvalidToken),
        ),
        (
            b"no-aud",
            Code::InvalidToken,
            Some(BearerError::InvalidToken),
        ),
        (
            b"few-scopes",
            Code::InvalidToken,
            Some(BearerError::InsufficientScope),
        ),
        (
            b"scope-prefix",
            Code::InvalidToken,
            Some(BearerError::InsufficientScope),
        ),
    ];
    for round in 0..2 {
        // The second round is answered by the cache: the same verdicts.
        for (t, code, error) in &cases {
            let o = a.authorize(
                &register(b"<sip:alice@example.com>", vec![], tok(t)),
                &mut sso,
                NOW,
            );
            assert_eq!(
                (o.code, o.bearer_error),
                (*code, *error),
                "round {round} {:?}: {}",
                String::from_utf8_lossy(t),
                o.reason
            );
        }
    }
    // The challenge after an insufficient scope says so and names what is required.
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], tok(b"few-scopes")),
        &mut sso,
        NOW,
    );
    let spec = ChallengeSpec {
        placement: Placement::Www,
        realm: "example.com",
        is_register: true,
        to: None,
        from: None,
        qop: QopOffer::Auth,
        algorithms: vec![Algorithm::Md5],
    };
    let lines = a.challenge(&spec, Some(&o), NOW, &[1; 12]).unwrap();
    let bearer = lines.last().unwrap();
    assert!(
        bearer.contains("error=\"insufficient_scope\"") && bearer.contains("scope=\"sip voice\""),
        "{bearer}"
    );
    // Defaults: no audience, no required scope; refresh tokens are still refused.
    let mut plain = Authorizer::new(config(), shared());
    for (t, code) in [
        (&b"no-aud"[..], Code::TokenOk),
        (b"few-scopes", Code::TokenOk),
        (b"refresh", Code::InvalidToken),
    ] {
        let t: &'static [u8] = Box::leak(t.to_vec().into_boxed_slice());
        assert_eq!(
            plain
                .authorize(
                    &register(b"<sip:alice@example.com>", vec![], tok(t)),
                    &mut sso,
                    NOW
                )
                .code,
            code
        );
    }
}

/// Item 7, JWT side: `audience` applies to locally validated JWTs too.
#[test]
fn audience_applies_to_jwts() {
    let mut cfg = jwt_config(true);
    cfg.set_str("audience", "opensips").unwrap();
    let mut a = Authorizer::new(cfg, shared());
    let mut sso = FakeSso::default();
    let mut claims = alice_claims(NOW + 600);
    let without = ed_jwt(claims.clone(), None);
    claims["aud"] = serde_json::json!("opensips");
    let with = ed_jwt(claims.clone(), None);
    claims["typ"] = serde_json::json!("ID");
    let id_token = ed_jwt(claims, None);
    for (t, code) in [
        (&without, Code::InvalidToken),
        (&with, Code::TokenOk),
        (&id_token, Code::InvalidToken),
    ] {
        let req = register(
            b"<sip:alice@example.com>",
            vec![],
            vec![HeaderRef {
                id: 0,
                value: t.as_bytes(),
            }],
        );
        let o = a.authorize(&req, &mut sso, NOW);
        assert_eq!(o.code, code, "{}", o.reason);
    }
}

/// Item 8: one rule for a JWT's exp: inside jwt_leeway it is accepted by every check (not
/// accepted by the JWT check and then refused and negatively cached).
#[test]
fn jwt_leeway_is_one_rule() {
    let mut a = Authorizer::new(jwt_config(true), shared());
    let mut sso = FakeSso::default();
    let token = ed_jwt(alice_claims(NOW - 5), None);
    for _ in 0..3 {
        let req = register(
            b"<sip:alice@example.com>",
            vec![],
            vec![HeaderRef {
                id: 0,
                value: token.as_bytes(),
            }],
        );
        let o = a.authorize(&req, &mut sso, NOW);
        assert_eq!(o.code, Code::TokenOk, "{}", o.reason);
    }
    let req = register(
        b"<sip:alice@example.com>",
        vec![],
        vec![HeaderRef {
            id: 0,
            value: token.as_bytes(),
        }],
    );
    assert_eq!(
        a.authorize(&req, &mut sso, NOW + 30).code,
        Code::InvalidToken,
        "past the leeway"
    );
    // An introspected token gets no leeway: the SSO decides whether it is active.
    let mut b = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![("opaque".into(), Ok(active("alice", Some(NOW as i64 - 5))))],
        ..Default::default()
    };
    assert_eq!(
        b.authorize(
            &register(b"<sip:alice@example.com>", vec![], tok(b"opaque")),
            &mut sso,
            NOW
        )
        .code,
        Code::InvalidToken
    );
}

/// Item 9: a token without exp still caps the registration, at cache_ttl.
#[test]
fn register_limit_without_exp_is_cache_ttl() {
    let mut cfg = config();
    cfg.bind_register_to_token = true;
    cfg.cache_ttl = 45;
    let mut a = Authorizer::new(cfg, shared());
    let mut sso = FakeSso {
        tokens: vec![
            ("noexp".into(), Ok(active("alice", None))),
            ("exp".into(), Ok(active("alice", Some(NOW as i64 + 20)))),
        ],
        ..Default::default()
    };
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], tok(b"noexp")),
        &mut sso,
        NOW,
    );
    assert_eq!(a.register_limit(&o, NOW), Some(45));
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], tok(b"exp")),
        &mut sso,
        NOW,
    );
    assert_eq!(a.register_limit(&o, NOW), Some(20));
    let mut cfg = config();
    cfg.bind_register_to_token = true;
    cfg.cache_ttl = 0;
    let a0 = Authorizer::new(cfg, shared());
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], tok(b"noexp")),
        &mut sso,
        NOW,
    );
    assert_eq!(
        a0.register_limit(&o, NOW),
        Some(1),
        "never 0 (a de-registration)"
    );
}

/// An SSO that honours the call's deadline like HttpSso: each call sleeps until the
/// deadline and times out.
#[derive(Default)]
struct HangingSso {
    deadline: Option<std::time::Instant>,
    calls: usize,
}

impl SsoApi for HangingSso {
    fn introspect(&mut self, _token: &str) -> Result<Introspection, SsoError> {
        self.hang()
    }
    fn digest_login(&mut self, _req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        self.hang()
    }
    fn set_deadline(&mut self, deadline: Option<std::time::Instant>) {
        self.deadline = deadline;
    }
}

impl HangingSso {
    fn hang<T>(&mut self) -> Result<T, SsoError> {
        self.calls += 1;
        let left = self
            .deadline
            .expect("deadline set")
            .saturating_duration_since(std::time::Instant::now());
        std::thread::sleep(left);
        Err(SsoError::Timeout)
    }
}

/// Item 10: one deadline per call. A hanging token check followed by a Digest attempt, or
/// a wait for another worker's pending check, all end within http_timeout.
#[test]
fn one_deadline_per_call() {
    let mut cfg = config();
    cfg.http_timeout_ms = 200;
    let shared = shared();
    let mut a = Authorizer::new(cfg.clone(), shared.clone());
    let mut sso = HangingSso::default();
    let h = digest_header(
        &a,
        "alice",
        "example.com",
        None,
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let c = [HeaderRef {
        id: 1,
        value: h.as_bytes(),
    }];
    let started = std::time::Instant::now();
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", c.to_vec(), tok(b"hangs")),
        &mut sso,
        NOW,
    );
    let took = started.elapsed();
    assert_eq!(o.code, Code::Error, "{}", o.reason);
    assert!(
        took < std::time::Duration::from_millis(350),
        "{took:?}: token then Digest, one budget"
    );
    // Another worker (a child process) holds the pending mark of a token and dies: the
    // waiter gives up at its own deadline instead of asking the SSO after it.
    let id = TokenId::of("pending-token");
    // SAFETY: the child only touches the shared mapping and exits with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let claimed = matches!(
            shared.tokens.lookup(&id, NOW, NOW + 60),
            crate::core::token::cache::Lookup::Claimed
        );
        unsafe { libc::_exit(if claimed { 0 } else { 1 }) };
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0);
    let mut sso = HangingSso::default();
    let started = std::time::Instant::now();
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], tok(b"pending-token")),
        &mut sso,
        NOW,
    );
    let took = started.elapsed();
    assert_eq!(o.code, Code::Error, "{}", o.reason);
    assert_eq!(sso.calls, 0, "no SSO call of its own after the wait");
    assert!(took < std::time::Duration::from_millis(350), "{took:?}");
}

/// Item 11: a success turned into -5 afterwards exposes nothing.
#[test]
fn a_success_that_failed_later_exposes_nothing() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![("tok1".into(), Ok(active("alice", Some(NOW as i64 + 600))))],
        ..Default::default()
    };
    let o = a.authorize(
        &register(b"<sip:alice@example.com>", vec![], tok(b"tok1")),
        &mut sso,
        NOW,
    );
    assert_eq!(o.code, Code::TokenOk);
    let mut failed = o.failed("cannot add a reply header");
    assert_eq!(failed.code, Code::Error);
    assert_eq!(a.variable(&mut failed, &SsoVar::User, &mut sso, NOW), None);
    assert!(a
        .is_user_in(&mut failed, None, "staff", &mut sso, NOW)
        .is_err());
    assert!(a.identity(&mut failed, &mut sso, NOW).is_none());
    assert!(failed.consume_headers.is_empty() && failed.new_token().is_none());
}

/// Also-look-at: the token headers of a request. Empty token headers are absent; one token
/// sent twice is one token; two different tokens, or a malformed one beside a good one, are
/// -6; sso_consume_credentials removes every token-carrying header.
#[test]
fn token_headers_policy_and_consume() {
    let mut a = Authorizer::new(config(), shared());
    let mut sso = FakeSso {
        tokens: vec![
            ("good".into(), Ok(active("alice", Some(NOW as i64 + 600)))),
            ("other".into(), Ok(active("alice", Some(NOW as i64 + 600)))),
        ],
        ..Default::default()
    };
    let h = |id, value: &'static [u8]| HeaderRef { id, value };
    let run = |a: &mut Authorizer,
               sso: &mut FakeSso,
               creds: Vec<HeaderRef<'static>>,
               tokens: Vec<HeaderRef<'static>>| {
        a.authorize(
            &register(b"<sip:alice@example.com>", creds, tokens),
            sso,
            NOW,
        )
    };
    let o = run(
        &mut a,
        &mut sso,
        vec![h(1, b"Bearer good")],
        vec![h(0, b"  ")],
    );
    assert_eq!(
        (o.code, o.source),
        (Code::TokenOk, Some(TokenSource::Bearer)),
        "empty X-SSO-Token is absent"
    );
    assert_eq!(o.consume_headers[..], [0, 1]);
    let o = run(
        &mut a,
        &mut sso,
        vec![h(1, b"Bearer good")],
        vec![h(0, b"good")],
    );
    assert_eq!(o.code, Code::TokenOk, "the same token twice");
    assert_eq!(o.consume_headers[..], [0, 1], "both copies are consumed");
    let o = run(
        &mut a,
        &mut sso,
        vec![h(2, b"Bearer other")],
        vec![h(0, b"good")],
    );
    assert_eq!(
        (o.code, o.bearer_error),
        (Code::InvalidToken, Some(BearerError::InvalidRequest))
    );
    let o = run(
        &mut a,
        &mut sso,
        vec![],
        vec![h(0, b"good"), h(1, b"other")],
    );
    assert_eq!(
        (o.code, o.bearer_error),
        (Code::InvalidToken, Some(BearerError::InvalidRequest)),
        "second token header read too"
    );
    let o = run(
        &mut a,
        &mut sso,
        vec![h(1, b"Bearer good")],
        vec![h(0, b"not a token")],
    );
    assert_eq!(
        (o.code, o.bearer_error),
        (Code::InvalidToken, Some(BearerError::InvalidToken))
    );
    let o = run(
        &mut a,
        &mut sso,
        vec![h(1, b"Bearer good")],
        vec![h(0, b"good"), h(3, b"good")],
    );
    assert_eq!(o.code, Code::TokenOk);
    assert_eq!(o.consume_headers[..], [0, 1, 3]);
    // A Digest login with a stray Bearer beside it: both go on consume.
    let d = digest_header(
        &a,
        "alice",
        "example.com",
        None,
        Some("auth"),
        Algorithm::Md5,
        b"",
    );
    let d: &'static [u8] = Box::leak(d.into_bytes().into_boxed_slice());
    let mut sso = session_sso();
    let o = run(
        &mut a,
        &mut sso,
        vec![h(4, b"Bearer unknown"), h(5, d)],
        vec![],
    );
    assert_eq!(o.code, Code::DigestOk, "{}", o.reason);
    assert_eq!(o.consume_headers[..], [4, 5]);
}
