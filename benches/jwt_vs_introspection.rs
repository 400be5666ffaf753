//! Local JWT validation against an introspection round trip, per token the module has not
//! seen yet (a cache hit costs the same for both: see core_paths). The introspection side is
//! the module's real HTTP client talking to a minimal keep-alive server on loopback that
//! answers at once, so it measures the module's share plus loopback, not an SSO's own work.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sso_auth::core::jwt::{self, JwtPolicy, KeySet};
use sso_auth::core::sso::{HttpSso, SsoApi, SsoSettings};

// Benchmark-only keys (openssl genpkey); they protect nothing.
const BENCH_RSA_PRIVATE: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEAjvsVe4HwlRv1fe8FKKyeWMlrTiAHvtKXt9URJUUOOXYnE0sM
iizD1YpcBDTHSudaFsppT3O/HMBURPCQv97yuRbRaDhy24LzL2tHRMI8JFMP/szP
7DbqZRQOsRfjkpAbL2fq6oQXIUg0xg7nqjU75SPxFvgP7/UuZuZ5Q3zaBtq1vSFG
EF1nHmRforHiySHnMO4nS0QK2Q+LrtVba4bDw93jw/3UO+D3jOmwWkvItVPaB2Ng
HEKAYU0Uy4cThziNraIlG/lLWwac5DP4u8Twd2pwk5CsQMr1KcyiG5eoH3G+Jl3K
SvSF3XySvtFhc7Cpf1c7V/qF0GPKRTnvZDBzkQIDAQABAoIBAAxJn2OBW8EcvtYR
9Adg/6y8Bp5CBMMNSx+aeSzoSIbUqhqvhkYw/wAmMgPkhe9gftla5NOrVqnBt5xD
G6rO81zHuBBfsDNAMju0Lv2a6bCUzi5EwLuuo9SISujvl3hRgnHqWYHKVJ3gxt7x
306Si5wEy46AnAdbB/VXlOVMC1qvpoX3ieJ+OpjOkROYBkLIAWYk62Zri/bH+CcN
HJAW5rqWUJIzwGkUkOxnc/LBLU09RFmPfqXPDA6uZphMBG22OlK/h4Jx9oluuB82
tHLw61FJiLwwqE1J6/SjxaXoaxJjMv9pe2AZ9Wz07LKqEUtKp7WJi8UhbOCLadRm
swztaB8CgYEAwFmfVp+JIkbAIhVdYiVZuxel+8THyn1Hc2MvLZtdDFHsSH9A7prm
76OFZKHS2Osagij5lEfb6qi4ITUQmBwb92PzajEHwRGghOPE3JbTFaTMJZ7+8Hs8
2lKFys0sxEToc+GV/naqcaLL2plYlWhYMMQr725Y1R4QMbMwwEdLgaMCgYEAvktJ
J+ZV72tEIJsyQKaG/eOGz2JC9oFA1EYbY9ccgWq62dd2F0dnlo2BlPlhp42vTi4R
yhLSZAmx6lYr92tihdW5FO5v5LC3qiT0ujVxUvgIdn8017hk0I1tenPQn3C1e8Er
8HQDCsGQeIfT/kLoKB5jspNn0/RZaYEoAOV3UTsCgYEAkqG/viFQQTj+Lv1qeu9O
QDn+5rdUNyDZ3zS1Omc9v66UGZAox7x+YCCgB971BTf0tVTXLhq5o2GLPIVfaRXE
nAst/L3z01LEs4mPATpZIB7JIcTbRCguc6CFLdzLS7PcILrPxXRg6s/X54UO6pbo
5AQoGhZc0dphLgIUIAA5p1ECgYATVFBlBieafznXWgxbts6lgXQTIrcMlQqBxXFI
zfPuTWoXcKRlLvKdv1f3SvGZdHHnLhTOguTuFnIFDKXApx7F23TGZIXnI/A0Dzbw
pzcQp3MsnjU+6FMNQCBrvNHnMCqvHGsbLJ2WfRzwsVNeU2uDj7quy/xS8lIWvnDS
znw1OwKBgQCALHrlxSeTKZmKLrK+tTu5GWEWXVp8Z+vBKlxtI6AwxqmFx11k1Di+
glich+rsfvP23NXYiWt6Tnre2e+LiCsoL2Jlcr8ZJ5ncX9Zklw8D/SOnYKt2ze5G
ocmyYm7imHq+80TymtCdMEayypo+b3YKGRjNDSUfoxt/ucy5X9pbbw==
-----END RSA PRIVATE KEY-----";
const BENCH_EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkN1D5QpoZ6a3q/PH
slWmeHCUId1sv5neZ3s7In05gPGhRANCAATk6syBJgnWLfC9sEpY+OwtkjGDVkIf
E56U+eCEuyedqQj+WsM3w4Mf5dWMQ6+cjJJVrgbRWoW6cWvwYABVmbWy
-----END PRIVATE KEY-----";
const BENCH_ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIE6vIiuapsnVtD3F1vgjds6c+Q4SumY980snzoG9z2Ge
-----END PRIVATE KEY-----";
const BENCH_PUBLIC_KEYS: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAjvsVe4HwlRv1fe8FKKye
WMlrTiAHvtKXt9URJUUOOXYnE0sMiizD1YpcBDTHSudaFsppT3O/HMBURPCQv97y
uRbRaDhy24LzL2tHRMI8JFMP/szP7DbqZRQOsRfjkpAbL2fq6oQXIUg0xg7nqjU7
5SPxFvgP7/UuZuZ5Q3zaBtq1vSFGEF1nHmRforHiySHnMO4nS0QK2Q+LrtVba4bD
w93jw/3UO+D3jOmwWkvItVPaB2NgHEKAYU0Uy4cThziNraIlG/lLWwac5DP4u8Tw
d2pwk5CsQMr1KcyiG5eoH3G+Jl3KSvSF3XySvtFhc7Cpf1c7V/qF0GPKRTnvZDBz
kQIDAQAB
-----END PUBLIC KEY-----
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE5OrMgSYJ1i3wvbBKWPjsLZIxg1ZC
HxOelPnghLsnnakI/lrDN8ODH+XVjEOvnIySVa4G0VqFunFr8GAAVZm1sg==
-----END PUBLIC KEY-----
-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAjRt8DGq4Jh/zi9Yblj+NhaN6uKfVk3H8k7c0SU4R13A=
-----END PUBLIC KEY-----";

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
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
        ("RS256", Algorithm::RS256, EncodingKey::from_rsa_der(&pem_der(BENCH_RSA_PRIVATE))),
        ("ES256", Algorithm::ES256, EncodingKey::from_ec_der(&pem_der(BENCH_EC_PRIVATE))),
        ("EdDSA", Algorithm::EdDSA, EncodingKey::from_ed_der(&pem_der(BENCH_ED_PRIVATE))),
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
    };
    let mut sso = HttpSso::new(settings).unwrap();
    assert!(sso.introspect("warm-up").unwrap().active);
    c.bench_function("introspection_http_loopback", |b| {
        b.iter(|| sso.introspect(black_box("2YotnFZFEjr1zCsicMWpAA")).unwrap())
    });
}

criterion_group!(benches, bench_jwt, bench_introspection);
criterion_main!(benches);
