//! Checks for text the module writes into SIP messages, and reads from them.

/// `bytes` as text when they are valid UTF-8. SIP header values are nearly always ASCII:
/// `is_ascii` checks those a word at a time, where the general UTF-8 check of a short value
/// goes byte by byte; other values get the full check.
pub fn utf8(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// True when `s` can be placed in a SIP header value as-is: printable ASCII or UTF-8,
/// no CR, LF, NUL or other control bytes (HTAB is allowed).
pub fn is_header_safe(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// True when `s` can go inside a quoted-string of a SIP header: header-safe and no `"` or `\`.
pub fn is_quoted_safe(s: &str) -> bool {
    is_header_safe(s) && !s.bytes().any(|b| b == b'"' || b == b'\\')
}

/// A class of bytes as a 256-entry table built at compile time, so checking a value costs
/// one load per byte instead of a chain of comparisons.
pub struct ByteClass([bool; 256]);

impl ByteClass {
    /// ASCII letters and digits plus `extra`.
    pub const fn alphanumeric_and(extra: &[u8]) -> ByteClass {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            table[b] = (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            table[extra[i] as usize] = true;
            i += 1;
        }
        ByteClass(table)
    }

    #[inline]
    pub fn has(&self, b: u8) -> bool {
        self.0[b as usize]
    }

    /// Every byte of `bytes` is in the class (true for an empty slice).
    #[inline]
    pub fn all(&self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.has(b))
    }
}

/// RFC 6750 b64token characters and the few more a SIP header value carries unquoted:
/// visible ASCII, no spaces, commas, quotes or semicolons.
pub const TOKEN68: ByteClass = ByteClass::alphanumeric_and(b"-._~+/=:%!*'");

/// RFC 3261 `token` characters.
pub const SIP_TOKEN: ByteClass = ByteClass::alphanumeric_and(b"-.!%*_+`'~");

/// Control bytes a header value must not hold: C0 controls but HTAB, and DEL.
pub const CONTROL: ByteClass = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b != b'\t' as usize;
        b += 1;
    }
    table[0x7f] = true;
    ByteClass(table)
};

/// Bytes a SIP or tel URI is written with: visible ASCII but `<`, `>`, `"` and `\`.
pub const URI_CHARS: ByteClass = {
    let mut table = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        table[b] = !matches!(b as u8, b'<' | b'>' | b'"' | b'\\');
        b += 1;
    }
    ByteClass(table)
};

/// True for an RFC 6750 b64token / a token made of characters allowed in a SIP header value
/// without quoting (`TOKEN68`).
pub fn is_token68_like(s: &str) -> bool {
    !s.is_empty() && TOKEN68.all(s.as_bytes())
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

/// `get_body()` on plain bytes: `end_of_headers` is the offset of the first byte after the
/// last header line.
pub fn body_after_headers(
    buf: &[u8],
    end_of_headers: usize,
    content_length: Option<usize>,
) -> &[u8] {
    let Some(rest) = buf.get(end_of_headers..) else {
        return &[];
    };
    let body = if rest.starts_with(b"\r\n") {
        &rest[2..]
    } else if rest.first().is_some_and(|&b| b == b'\n' || b == b'\r') {
        &rest[1..]
    } else {
        return &[];
    };
    match content_length {
        Some(n) if n < body.len() => &body[..n],
        _ => body,
    }
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

    /// Issue 14 item 12: the body auth-int hashes is OpenSIPS's, not "everything after the
    /// first CRLFCRLF".
    #[test]
    fn body_after_headers_follows_get_body() {
        let m = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 5\r\n\r\nhello trailing junk";
        let eoh = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 2;
        assert_eq!(body_after_headers(m, eoh, Some(5)), b"hello");
        assert_eq!(body_after_headers(m, eoh, None), b"hello trailing junk");
        assert_eq!(
            body_after_headers(m, eoh, Some(500)),
            b"hello trailing junk"
        );
        assert_eq!(body_after_headers(m, eoh, Some(0)), b"");
        // LF-only line ends: the body starts after the lone LF.
        let lf = b"MESSAGE sip:x SIP/2.0\nContent-Length: 2\n\nhi\r\n\r\nmore";
        let eoh = lf.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
        assert_eq!(body_after_headers(lf, eoh, Some(2)), b"hi");
        // No empty line at the end of the headers, or an offset past the buffer: no body.
        assert_eq!(body_after_headers(m, 3, Some(5)), b"");
        assert_eq!(body_after_headers(m, m.len() + 10, None), b"");
        assert_eq!(body_after_headers(m, m.len(), None), b"");
    }

    #[test]
    fn byte_classes_hold_exactly_their_characters() {
        for b in 0..=255u8 {
            let token68 = b.is_ascii_alphanumeric() || b"-._~+/=:%!*'".contains(&b);
            let token = b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
            assert_eq!(TOKEN68.has(b), token68, "{b:#x}");
            assert_eq!(SIP_TOKEN.has(b), token, "{b:#x}");
            let control = (b < 0x20 && b != b'\t') || b == 0x7f;
            assert_eq!(CONTROL.has(b), control, "{b:#x}");
            let uri = b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\');
            assert_eq!(URI_CHARS.has(b), uri, "{b:#x}");
        }
    }

    #[test]
    fn utf8_agrees_with_the_standard_check() {
        let cases: [&[u8]; 7] = [
            b"",
            b"alice",
            b"<sip:alice@example.com>;tag=1",
            "\"J\u{f6}rg\" <sip:j@x>".as_bytes(),
            b"\xff",
            b"ab\xc3",
            b"\xed\xa0\x80",
        ];
        for c in cases {
            assert_eq!(utf8(c), std::str::from_utf8(c).ok(), "{c:?}");
        }
    }
}
