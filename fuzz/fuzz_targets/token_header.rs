//! The token header value: whatever is accepted must be a token68-like string.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::credentials::parse_token_header;
use sso_auth::core::text::is_token68_like;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = parse_token_header(data) {
        assert!(is_token68_like(&t));
    }
});
