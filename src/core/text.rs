//! Checks for text the module writes into SIP messages.

/// True when `s` can be placed in a SIP header value as-is: printable ASCII or UTF-8,
/// no CR, LF, NUL or other control bytes (HTAB is allowed).
pub fn is_header_safe(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// True when `s` can go inside a quoted-string of a SIP header: header-safe and no `"` or `\`.
pub fn is_quoted_safe(s: &str) -> bool {
    is_header_safe(s) && !s.bytes().any(|b| b == b'"' || b == b'\\')
}

/// True for an RFC 6750 b64token / a token made of characters allowed in a SIP header value
/// without quoting: visible ASCII, no spaces, commas, quotes or semicolons.
pub fn is_token68_like(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'+'
                        | b'/'
                        | b'='
                        | b':'
                        | b'%'
                        | b'!'
                        | b'*'
                        | b'\''
                )
        })
}

/// Linear white space inside a header value: space or HTAB.
pub fn is_lws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing spaces and tabs.
pub fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_safety() {
        assert!(is_header_safe("abc def\tx"));
        assert!(!is_header_safe("abc\r\nX-Evil: 1"));
        assert!(!is_header_safe("a\0b"));
        assert!(is_quoted_safe("sip.example.com"));
        assert!(!is_quoted_safe("a\"b"));
        assert!(is_token68_like("eyJhbGciOi.J9-_x=="));
        assert!(!is_token68_like("a b"));
        assert!(!is_token68_like(""));
        assert!(!is_token68_like("a,b"));
        assert_eq!(trim_lws(b" \t ab c\t "), b"ab c");
        assert_eq!(trim_lws(b" \t "), b"");
        assert_eq!(trim_lws(b""), b"");
    }
}
