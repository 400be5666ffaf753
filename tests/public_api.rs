//! The core as another crate sees it: a full Digest round through the public API, with a
//! scripted SSO. Also proves the rlib (with its FFI layer) links outside OpenSIPS.

use sso_auth::core::authorize::{AuthRequest, Authorizer, Code, HeaderRef, Placement, SharedState};
use sso_auth::core::config::Config;
use sso_auth::core::sso::{DigestLogin, Introspection, LoginOutcome, SsoApi, SsoError};

struct AlwaysSession;

impl SsoApi for AlwaysSession {
    fn introspect(&mut self, _token: &str) -> Result<Introspection, SsoError> {
        Err(SsoError::Timeout)
    }
    fn digest_login(&mut self, req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        assert_eq!(req.username, "alice");
        Ok(LoginOutcome::Session {
            access_token: "abc.def".into(),
            expires_in: Some(60),
        })
    }
}

#[test]
fn challenge_then_login() {
    let mut cfg = Config::default();
    cfg.set_str("token_url", "http://127.0.0.1:9/token")
        .unwrap();
    cfg.set_str("secret", &"s".repeat(32)).unwrap();
    cfg.finish(|| unreachable!()).unwrap();
    let shared = std::sync::Arc::new(SharedState::new(&cfg).unwrap());
    let mut auth = Authorizer::new(cfg, shared);
    let now = 1_800_000_000;
    let spec = sso_auth::core::authorize::ChallengeSpec {
        placement: Placement::Www,
        realm: "example.com",
        is_register: true,
        to: None,
        from: None,
        qop: sso_auth::core::digest::challenge::QopOffer::Auth,
        algorithms: vec![sso_auth::core::digest::Algorithm::Md5],
    };
    let lines = auth.challenge(&spec, None, now, &[9; 12]).unwrap();
    assert_eq!(lines.len(), 1, "no Bearer challenge without introspect_url");
    let nonce = lines[0]
        .split("nonce=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let header = format!(
        "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", \
         response=\"00112233445566778899aabbccddeeff\", qop=auth, nc=00000001, cnonce=\"x\""
    );
    let req = AuthRequest {
        placement: Placement::Www,
        method: "REGISTER",
        is_register: true,
        realm: "example.com",
        to: Some(b"<sip:alice@example.com>"),
        from: Some(b"<sip:alice@example.com>;tag=1"),
        credential_headers: vec![HeaderRef {
            id: 0,
            value: header.as_bytes(),
        }]
        .into(),
        token_headers: Default::default(),
        body: b"",
        transaction: None,
    };
    let outcome = auth.authorize(&req, &mut AlwaysSession, now + 5);
    assert_eq!(outcome.code, Code::DigestOk, "{}", outcome.reason);
    assert_eq!(outcome.new_token(), Some("abc.def"));
}
