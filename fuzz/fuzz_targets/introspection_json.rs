//! RFC 7662 answers from the SSO, with any status.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::sso::interpret_introspection;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (if *s < 128 { 200 } else { 400 + *s as u16 }, rest),
        None => (200, data),
    };
    match interpret_introspection(status, body) {
        Ok(i) => {
            // Only a 200 answer is read, and `active` was a JSON boolean.
            assert_eq!(status, 200);
            assert_eq!(i.claims.get("active").and_then(|v| v.as_bool()), Some(i.active));
            if i.active {
                // The user is `username`, else `sub`, never empty.
                if let Some(u) = &i.user {
                    assert!(!u.is_empty());
                    let username = i.claims.get("username").and_then(|v| v.as_str());
                    let sub = i.claims.get("sub").and_then(|v| v.as_str());
                    assert!(username == Some(u.as_str()) || sub == Some(u.as_str()));
                }
            } else {
                // Nothing is read from an inactive token's answer.
                assert!(i.user.is_none() && i.exp.is_none() && i.scope.is_none());
            }
        }
        Err(_) => {}
    }
});
