//! token_url answers: an accepted token must be safe to put into a SIP header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::sso::{interpret_token_response, LoginOutcome, MAX_ACCESS_TOKEN};
use sso_auth::core::text::{is_header_safe, is_token68_like};

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 128 { 200 } else { 400 }, rest),
        None => (200, data),
    };
    match interpret_token_response(status, body) {
        Ok(LoginOutcome::Session { access_token, .. }) => {
            // Only a 200 opens a session, with a token that can go into a SIP header as is.
            assert_eq!(status, 200);
            assert!(is_header_safe(&access_token) && !access_token.contains(' '));
            assert!(is_token68_like(&access_token) && access_token.len() <= MAX_ACCESS_TOKEN);
        }
        // Refusals only come with a 400.
        Ok(LoginOutcome::InvalidGrant | LoginOutcome::UnknownUser) => assert_eq!(status, 400),
        Err(_) => {}
    }
});
