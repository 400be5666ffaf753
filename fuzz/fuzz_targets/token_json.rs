//! token_url answers: an accepted token must be safe to put into a SIP header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::sso::{interpret_token_response, LoginOutcome};
use sso_auth::core::text::is_header_safe;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 128 { 200 } else { 400 }, rest),
        None => (200, data),
    };
    if let Ok(LoginOutcome::Session { access_token, .. }) = interpret_token_response(status, body) {
        assert!(is_header_safe(&access_token) && !access_token.contains(' '));
    }
});
