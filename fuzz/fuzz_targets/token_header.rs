//! The token header value: whatever is accepted must be a token68-like string.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::digest::credentials::{parse_authorization, parse_token_header, Credentials};
use sso_auth::core::text::{is_header_safe, is_token68_like};

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = parse_token_header(data) {
        assert!(is_token68_like(&t) && is_header_safe(&t));
        // Idempotent: the accepted token is itself a valid header value giving the same token.
        assert_eq!(parse_token_header(t.as_bytes()).as_ref(), Ok(&t));
        // The same token sent as a Bearer credential is read the same way.
        assert_eq!(
            parse_authorization(format!("Bearer {t}").as_bytes()),
            Ok(Credentials::Bearer(t))
        );
    }
});
