//! To/From header values to AOR, and the identity rules on what comes out.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::identity::{digest_user_matches, parse_aor, token_user_matches};

fuzz_target!(|data: &[u8]| {
    if let Ok(aor) = parse_aor(data) {
        let _ = token_user_matches(&aor.user, &aor, false);
        let _ = digest_user_matches(&format!("{}@{}", aor.user, aor.host), &aor, true);
    }
});
