//! Local JWT validation against an introspection round trip, per token the module has not
//! seen yet (a cache hit costs the same for both: see core_paths). The introspection side is
//! the module's real HTTP client talking to a minimal keep-alive server on loopback that
//! answers at once, so it measures the module's share plus loopback, not an SSO's own work.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sso_auth::core::sso::{HttpSso, SsoApi, SsoSettings};
use sso_auth::core::token::jwt::{self, JwtPolicy, KeySet};

// The test keys of src/core/jwt.rs (openssl genpkey); they protect nothing.
const BENCH_RSA_PRIVATE: &str = include_str!("../tests/data/jwt/rsa-private.pem");
const BENCH_EC_PRIVATE: &str = include_str!("../tests/data/jwt/ec-private.pem");
const BENCH_ED_PRIVATE: &str = include_str!("../tests/data/jwt/ed-private.pem");
const BENCH_PUBLIC_KEYS: &str = concat!(
    include_str!("../tests/data/jwt/rsa-public.pem"),
    include_str!("../tests/data/jwt/ec-public.pem"),
    include_str!("../tests/data/jwt/ed-public.pem")
);

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn bench_jwt(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let now = 1_700_000_000u64;
    let keys = KeySet::from_file_contents(BENCH_PUBLIC_KEYS.as_bytes()).unwrap();
    let policy = JwtPolicy {
        issuer: Some("https://sso.example.com".into()),
        audience: Some("sip".into()),
        ..JwtPolicy::default()
    };
    let claims = serde_json::json!({
        "iss": "https://sso.example.com", "aud": "sip", "sub": "alice",
        "exp": now + 300, "iat": now, "scope": "openid sip",
    });
    let cases = [
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_der(&pem_der(BENCH_RSA_PRIVATE)),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_der(&pem_der(BENCH_EC_PRIVATE)),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            EncodingKey::from_ed_der(&pem_der(BENCH_ED_PRIVATE)),
        ),
    ];
    for (name, alg, key) in cases {
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
        assert!(jwt::validate(&token, &keys, &policy, now).is_ok());
        c.bench_function(&format!("jwt_validate_{name}"), |b| {
            b.iter(|| jwt::validate(black_box(&token), &keys, &policy, now).unwrap())
        });
    }
    c.bench_function("jwt_looks_like_jwt_opaque", |b| {
        b.iter(|| jwt::looks_like_jwt(black_box("2YotnFZFEjr1zCsicMWpAA")))
    });
}

/// A keep-alive HTTP/1.1 server on loopback answering every request with one introspection
/// result; returns its URL.
fn instant_introspection_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/introspect", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let body = br#"{"active":true,"username":"alice","exp":4102444800,"scope":"sip"}"#;
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut form = vec![0u8; length];
                    if reader.read_exact(&mut form).is_err() {
                        return;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    let mut answer = head.into_bytes();
                    answer.extend_from_slice(body);
                    if out.write_all(&answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn bench_introspection(c: &mut Criterion) {
    let settings = SsoSettings {
        introspect_url: Some(instant_introspection_server()),
        token_url: None,
        client_id: Some("opensips".into()),
        client_secret: Some("secret".into()),
        timeout: Duration::from_secs(2),
        tls_ca_file: None,
        digest_grant_type: "urn:sso-auth:grant-type:sip-digest".into(),
        max_connections: sso_auth::core::sso::DEFAULT_MAX_CONNECTIONS,
    };
    let mut sso = HttpSso::new(settings).unwrap();
    assert!(sso.introspect("warm-up").unwrap().active);
    c.bench_function("introspection_http_loopback", |b| {
        b.iter(|| sso.introspect(black_box("2YotnFZFEjr1zCsicMWpAA")).unwrap())
    });
}

criterion_group!(benches, bench_jwt, bench_introspection);
criterion_main!(benches);
