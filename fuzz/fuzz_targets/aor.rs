//! To/From header values to AOR, and the identity rules on what comes out.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::identity::{
    digest_user_matches, parse_aor, token_user_matches, AorRules,
};

const PLAIN: AorRules = AorRules {
    use_domain: false,
    case_sensitive: false,
    realm_prefix: "",
};
const DOMAIN: AorRules = AorRules {
    use_domain: true,
    case_sensitive: false,
    realm_prefix: "",
};

fuzz_target!(|data: &[u8]| {
    let Ok(aor) = parse_aor(data) else { return };
    // User and host are plain visible ASCII without the bytes that delimit a URI.
    for part in [&aor.user, &aor.host] {
        assert!(part
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\' | b'@')));
    }
    assert_eq!(aor.host, aor.host.to_ascii_lowercase());
    let tel = aor.host.is_empty();
    // A tel URI has a number; a SIP URI a host.
    assert!(!tel || !aor.user.is_empty());
    if !aor.user.is_empty() && !aor.user.contains('%') {
        // The AOR's own user matches it (without domain) ...
        assert!(token_user_matches(&aor.user, &aor, &PLAIN));
        // ... and user@host matches with domain, in any host case, for SIP URIs ...
        let full = format!("{}@{}", aor.user, aor.host.to_ascii_uppercase());
        assert_eq!(digest_user_matches(&full, "", &aor, &DOMAIN), !tel);
        // ... but never without it (registrar would file it under the user alone).
        assert!(!token_user_matches(&full, &aor, &PLAIN) || aor.user.contains('@'));
        // A bare token user never matches once the domain is required.
        assert!(!token_user_matches(&aor.user, &aor, &DOMAIN));
    } else if aor.user.is_empty() {
        // No user, no identity.
        assert!(!token_user_matches("", &aor, &PLAIN));
        assert!(!digest_user_matches(&format!("x@{}", aor.host), "", &aor, &DOMAIN));
    }
    // Round trip: the AOR written as a plain name-addr parses to itself.
    let again = if tel {
        format!("<tel:{}>", aor.user)
    } else if aor.user.is_empty() {
        format!("<sip:{}>", aor.host)
    } else {
        format!("<sip:{}@{}>", aor.user, aor.host)
    };
    assert_eq!(parse_aor(again.as_bytes()).as_ref(), Ok(&aor), "round trip of {again:?}");
});
