//! Authorization / Proxy-Authorization values: Digest, Bearer, other schemes, garbage.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sso_auth::core::digest::credentials::{
    parse_authorization, Credentials, DigestCredentials, MAX_CREDENTIALS_LEN,
};
use sso_auth::core::text::is_token68_like;

fn no_ctl(v: &str) -> bool {
    !v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// `"..."` with `"` and `\` escaped: the canonical way to send any accepted value.
fn quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Writes the credentials back as a header value with every parameter quoted.
fn serialize(d: &DigestCredentials) -> String {
    let mut parts = vec![
        format!("username={}", quote(&d.username)),
        format!("realm={}", quote(&d.realm)),
        format!("nonce={}", quote(&d.nonce)),
        format!("uri={}", quote(&d.uri)),
        format!("response={}", quote(&d.response)),
    ];
    for (name, v) in [
        ("algorithm", &d.algorithm),
        ("cnonce", &d.cnonce),
        ("opaque", &d.opaque),
        ("qop", &d.qop),
        ("nc", &d.nc),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name}={}", quote(v)));
        }
    }
    format!("Digest {}", parts.join(", "))
}

fuzz_target!(|data: &[u8]| {
    let parsed = parse_authorization(data);
    if parsed.is_ok() {
        assert!(data.len() <= MAX_CREDENTIALS_LEN);
    }
    match parsed {
        Ok(Credentials::Digest(d)) => {
            // What the parser accepts must be safe to hand on: no control bytes in any field.
            for v in [&d.username, &d.realm, &d.nonce, &d.uri, &d.response] {
                assert!(no_ctl(v));
            }
            for v in [&d.algorithm, &d.cnonce, &d.opaque, &d.qop, &d.nc].into_iter().flatten() {
                assert!(no_ctl(v));
            }
            // Mandatory parameters are present and non-empty (realm may be empty).
            assert!(!d.username.is_empty() && !d.nonce.is_empty() && !d.uri.is_empty());
            assert!(!d.response.is_empty() && d.response.len() <= 128);
            assert!(d.response.bytes().all(|b| b.is_ascii_hexdigit()));
            if let Some(nc) = &d.nc {
                assert!(nc.len() == 8 && nc.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            // qop makes the response cover nc and cnonce: both must be there.
            if d.qop.is_some() {
                assert!(d.nc.is_some() && d.cnonce.as_deref().is_some_and(|c| !c.is_empty()));
            }
            assert!(d.algorithm.as_deref() != Some(""));
            // Round trip: the same credentials, re-sent fully quoted, parse to the same values
            // (unescaping and quoting agree). Only checked when the re-encoding fits the limit.
            let again = serialize(&d);
            if again.len() <= MAX_CREDENTIALS_LEN {
                assert_eq!(
                    parse_authorization(again.as_bytes()),
                    Ok(Credentials::Digest(d)),
                    "round trip of {again:?}"
                );
            }
        }
        Ok(Credentials::Bearer(t)) => {
            assert!(is_token68_like(&t));
            assert_eq!(
                parse_authorization(format!("Bearer {t}").as_bytes()),
                Ok(Credentials::Bearer(t))
            );
        }
        Ok(Credentials::OtherScheme(s)) => {
            assert!(!s.is_empty() && no_ctl(&s) && !s.contains([' ', '\t']));
            assert!(!s.eq_ignore_ascii_case("digest") && !s.eq_ignore_ascii_case("bearer"));
        }
        Err(_) => {}
    }
});
