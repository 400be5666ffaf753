//! Decision tests with a scripted SSO: every return code, both token placements, fallbacks.

use super::*;
use crate::core::digest::{expected_response, ResponseInput};

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

const NOW: u64 = 1_700_000_000;

fn shared() -> std::sync::Arc<SharedState> {
    let c = Config {
        cache_slots: 256,
        nonce_slots: 256,
        ..Default::default()
    };
    std::sync::Arc::new(SharedState::new(&c).unwrap())
}

fn config() -> Config {
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
        credential_headers: creds,
        token_headers: tokens,
        body: b"",
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
    let nonce = nonce.unwrap_or_else(|| a.nonces.issue(NOW, &[5; 12]));
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
    assert_eq!(o.used_headers, vec![7]);
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
        tokens: vec![("tok2".into(), Ok(active("alice@example.com", None)))],
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
    assert_eq!(o.new_token.as_deref(), Some("newtok"));
    assert_eq!(o.used_headers, vec![9]);
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
    let good = a.nonces.issue(NOW, &[1; 12]);
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
    assert_eq!(o.used_headers, vec![1]);
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
    let mismatch = Outcome {
        bearer_error: Some(BearerError::InvalidRequest),
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
    let nonce = a.nonces.issue(NOW, &[3; 12]);
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
