//! Per-request cost of the module's core, without OpenSIPS and without HTTP:
//! the token cache-hit path (parse the token header, hash, shared-cache lookup, AOR parse,
//! identity check) and the Digest path up to the SSO call (parse credentials, nonce MAC,
//! replay table, identity), plus a challenge. Target (issue 4): cache hit <= 2 us.

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sso_auth::core::authorize::{
    AuthRequest, Authorizer, ChallengeSpec, Code, HeaderRef, Placement, SharedState,
};
use sso_auth::core::config::Config;
use sso_auth::core::digest::challenge::QopOffer;
use sso_auth::core::digest::Algorithm;
use sso_auth::core::sso::{DigestLogin, Introspection, LoginOutcome, SsoApi, SsoError};
use sso_auth::core::token::cache::{SharedTokenCache, TokenId};

/// An SSO that answers at once: the benchmark measures the module, not the network.
struct InstantSso;

impl SsoApi for InstantSso {
    fn introspect(&mut self, _token: &str) -> Result<Introspection, SsoError> {
        Ok(Introspection {
            active: true,
            user: Some("alice".into()),
            exp: None,
            scope: Some("sip".into()),
            // A realistic claim set (about 300 bytes), which the cache keeps and copies.
            claims: match serde_json::json!({
                "active": true, "username": "alice", "sub": "f81d4fae-7dec-11d0-a765",
                "scope": "openid sip", "client_id": "opensips", "token_type": "Bearer",
                "groups": ["staff", "sip-users"], "realm_access": {"roles": ["voip-admin"]},
                "phone_number": "+14255550101", "tenant": "t1", "iss": "https://sso.example.com"
            }) {
                serde_json::Value::Object(m) => m.into(),
                _ => unreachable!(),
            },
        })
    }
    fn digest_login(&mut self, _req: &DigestLogin) -> Result<LoginOutcome, SsoError> {
        Ok(LoginOutcome::Session {
            access_token: "fresh-token".into(),
            expires_in: Some(3600),
        })
    }
}

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.set_str("introspect_url", "http://127.0.0.1:9/introspect")
        .unwrap();
    cfg.set_str("token_url", "http://127.0.0.1:9/token")
        .unwrap();
    cfg.set_str("secret", "bench-secret-bench-secret-bench-secret")
        .unwrap();
    cfg.finish(|| unreachable!()).unwrap();
    cfg
}

/// Two engines of one instance (one node, one start: nonces of one are good for the other).
fn authorizers() -> (Authorizer, Authorizer) {
    let cfg = config();
    let shared = Arc::new(SharedState::new(&cfg).unwrap());
    (
        Authorizer::new(cfg.clone(), shared.clone()),
        Authorizer::new(cfg, shared),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn bench(c: &mut Criterion) {
    let (mut auth, issuer) = authorizers();
    let mut sso = InstantSso;
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz";
    let request = |tokens: Vec<HeaderRef<'static>>, creds: Vec<HeaderRef<'static>>| AuthRequest {
        placement: Placement::Www,
        method: "REGISTER",
        is_register: true,
        realm: "",
        to: Some(b"\"Alice\" <sip:alice@example.com>"),
        from: Some(b"\"Alice\" <sip:alice@example.com>;tag=8a7b6c"),
        credential_headers: creds.into(),
        token_headers: tokens.into(),
        body: b"",
        transaction: None,
    };
    let token_req = request(
        vec![HeaderRef {
            id: 5,
            value: token.as_bytes(),
        }],
        vec![],
    );
    assert_eq!(
        auth.authorize(&token_req, &mut sso, now()).code,
        Code::TokenOk
    );
    c.bench_function("token_cache_hit", |b| {
        b.iter(|| {
            let o = auth.authorize(black_box(&token_req), &mut sso, now());
            debug_assert_eq!(o.code, Code::TokenOk);
            o
        })
    });

    // The cache key of a token, SHA-256 of it: natively this uses the CPU's SHA extensions
    // when it has them, which valgrind does not emulate (bench/profile.py counts the
    // software rounds instead), so this figure is the one that holds on such hardware.
    let opaque = "2YotnFZFEjr1zCsicMWpAA.bench-token-of-43-chars";
    c.bench_function("token_id_opaque_45_bytes", |b| {
        b.iter(|| TokenId::of(black_box(opaque)))
    });
    let jwt_like = "e".repeat(800);
    c.bench_function("token_id_jwt_800_bytes", |b| {
        b.iter(|| TokenId::of(black_box(&jwt_like)))
    });

    // The shared cache alone, with lookups spread over many tokens, as real traffic does: each
    // lookup lands in other buckets. At the default size (8192 entries, 16 MiB) the table
    // still fits this machine's L3; at 65536 entries (128 MiB) most of what a lookup reads
    // comes from memory. (The one-token bench above keeps its two buckets hot.)
    let t = now();
    let info = Introspection {
        active: true,
        user: Some("alice".into()),
        exp: None,
        scope: Some("sip".into()),
        claims: Default::default(),
    };
    for (entries, tokens) in [(8192usize, 4096usize), (65536, 32768)] {
        let cache = SharedTokenCache::new(entries).expect("shared mapping");
        let ids: Vec<TokenId> = (0..tokens)
            .map(|i| TokenId::of(&format!("spread-token-{i}")))
            .collect();
        for id in &ids {
            cache.lookup(id, t, t + 5);
            cache.store_positive(id, &info, r#"{"sub":"alice","scope":"sip"}"#, t, 3600);
        }
        let mut next = 0usize;
        c.bench_function(&format!("token_cache_lookup_spread_{tokens}"), |b| {
            b.iter(|| {
                // A stride coprime to the count walks every token before it repeats one.
                next = (next + 1021) % ids.len();
                cache.lookup(black_box(&ids[next]), t, t + 5)
            })
        });
    }

    let spec = ChallengeSpec {
        placement: Placement::Www,
        realm: "example.com",
        is_register: true,
        to: None,
        from: None,
        qop: QopOffer::Auth,
        algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
    };
    c.bench_function("challenge_two_algorithms", |b| {
        b.iter(|| {
            auth.challenge(black_box(&spec), None, now(), &[7; 12])
                .unwrap()
        })
    });

    // Digest: a fresh nonce per iteration (the replay table refuses a reused one), issued by
    // a second engine of the same instance so the measured one is borrowed only once. The
    // MD5 line is answered (each nonce is bound to its algorithm).
    let mut n = 0u64;
    c.bench_function("digest_to_sso_call", |b| {
        b.iter_batched(
            || {
                n += 1;
                let mut random = [0u8; 12];
                random[..8].copy_from_slice(&n.to_le_bytes());
                let lines = issuer.challenge(&spec, None, now(), &random).unwrap();
                let nonce = lines[1].split("nonce=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
                format!(
                    "Digest username=\"alice\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", \
                     response=\"6629fae49393a05397450978507c4ef1\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", algorithm=MD5"
                )
            },
            |header| {
                let header: &'static str = Box::leak(header.into_boxed_str());
                let req = request(vec![], vec![HeaderRef { id: 1, value: header.as_bytes() }]);
                let o = auth.authorize(&req, &mut sso, now());
                debug_assert_eq!(o.code, Code::DigestOk);
                o
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
