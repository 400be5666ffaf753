//! Authorization / Proxy-Authorization values: Digest, Bearer, other schemes, garbage.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::credentials::{parse_authorization, Credentials};

fuzz_target!(|data: &[u8]| {
    if let Ok(Credentials::Digest(d)) = parse_authorization(data) {
        // What the parser accepts must be safe to hand on: no control bytes in any field.
        for v in [&d.username, &d.realm, &d.nonce, &d.uri, &d.response] {
            assert!(!v.bytes().any(|b| b < 0x20 && b != b'\t'));
        }
        if let Some(nc) = d.nc {
            assert!(nc.len() == 8 && nc.bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }
});
