//! RFC 7662 answers from the SSO, with any status.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::sso::interpret_introspection;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 128 { 200 } else { 400 + *s as u16 }, rest),
        None => (200, data),
    };
    let _ = interpret_introspection(status, body);
});
