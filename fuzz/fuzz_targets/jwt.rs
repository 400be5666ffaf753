//! Untrusted tokens through local JWT validation, and untrusted JWK Sets / key files through
//! the key loaders: never a panic, never a success without a valid signature.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::token::jwt::{looks_like_jwt, validate, JwtError, JwtPolicy, KeySet};

// A real Ed25519 public key (test only), so inputs can reach the signature check.
const ED_PUBLIC: &str = include_str!("../../tests/data/jwt/ed-public.pem");

fuzz_target!(|data: &[u8]| {
    // The input as a key source: must parse or refuse, nothing else.
    let _ = KeySet::from_jwks_json(data);
    let _ = KeySet::from_file_contents(data);
    let Ok(token) = std::str::from_utf8(data) else { return };
    let keys = KeySet::from_file_contents(ED_PUBLIC.as_bytes()).unwrap();
    let policy = JwtPolicy::default();
    match validate(token, &keys, &policy, 1_700_000_000) {
        // Without the private key a fuzzer cannot produce a valid signature.
        Ok(_) => panic!("forged token accepted: {token:?}"),
        Err(JwtError::NotAJwt) => assert!(!looks_like_jwt(token) || token.len() > 16 * 1024),
        Err(_) => {}
    }
});
