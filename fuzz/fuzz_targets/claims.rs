//! Untrusted claim sets (what an SSO or a JWT says) through everything the script can ask of
//! them: claim text, group checks, and the asserted identity that goes on the wire.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::token::claims::{asserted_uri, claim_text, is_member, uri_user, ClaimSet};
use sso_auth::core::text::is_header_safe;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let claims = ClaimSet::from_json(text);
    let names = vec!["groups".to_string(), "realm_access.roles".into(), "scope".into()];
    let _ = is_member(&claims, &names, "staff");
    for (name, value) in claims.map() {
        let _ = claim_text(value);
        let _ = claims.get(name);
        if let Ok(uri) = asserted_uri(value, "example.com") {
            // Whatever a claim holds, what reaches a header is one safe name-addr.
            assert!(is_header_safe(&uri), "{uri:?}");
            assert!(uri.starts_with('<') && uri.ends_with('>'));
            assert!(!uri[1..uri.len() - 1].contains(['<', '>', '"', ' ', '\\']));
            let _ = uri_user(&uri);
        }
    }
    // The cache's JSON round trip keeps what the script would see.
    assert_eq!(ClaimSet::from_json(&claims.to_json()).map(), claims.map());
});
