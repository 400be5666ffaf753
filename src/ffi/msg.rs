//! A read-only view of an OpenSIPS `struct sip_msg`: its method, headers and body as byte
//! slices borrowed from the message buffer.

use super::bindings::{self, _str as os_str, hdr_field, sip_msg};
use super::worker::MsgKey;

/// One header as OpenSIPS split it.
#[derive(Clone, Copy)]
pub struct Header<'a> {
    pub kind: i32,
    pub value: &'a [u8],
    /// Offset of the header's first byte in the message buffer and its length with CRLF:
    /// what a delete lump needs.
    pub offset: u32,
    pub len: u32,
}

pub struct Msg<'a> {
    raw: &'a mut sip_msg,
}

/// Bytes behind an OpenSIPS `str`, or empty when it is unset.
fn bytes<'a>(s: &os_str) -> &'a [u8] {
    if s.s.is_null() || s.len <= 0 {
        return &[];
    }
    // SAFETY: OpenSIPS `str`s in a parsed message point into the message buffer, which lives
    // as long as the message the script function was called with.
    unsafe { std::slice::from_raw_parts(s.s as *const u8, s.len as usize) }
}

impl<'a> Msg<'a> {
    /// # Safety
    /// `ptr` must be the message OpenSIPS passed to the running script function.
    pub unsafe fn from_ptr(ptr: *mut sip_msg) -> Option<Msg<'a>> {
        ptr.as_mut().map(|raw| Msg { raw })
    }

    pub fn as_ptr(&mut self) -> *mut sip_msg {
        self.raw as *mut sip_msg
    }

    /// Names this message for the per-worker state: its per-process id and a hash of its
    /// Call-ID and CSeq values. The id already tells messages apart within the process; the
    /// hash only guards against a reused id, so a plain multiply-rotate hash over 8-byte words
    /// serves (no keyed hash: nothing is gained by a sender who makes two keys equal, as the
    /// ids differ anyway).
    pub fn key(&self) -> MsgKey {
        const MIX: u64 = 0x517c_c1b7_2722_0a95;
        let mut h: u64 = 0;
        let mut add = |word: u64| h = (h.rotate_left(5) ^ word).wrapping_mul(MIX);
        for hdr in [self.raw.callid, self.raw.cseq] {
            // SAFETY: callid/cseq are null or headers of this message.
            let body = unsafe { hdr.as_ref() }.map_or(&[][..], |hdr| bytes(&hdr.body));
            // The length first, so that moving bytes between the two values changes the hash.
            add(body.len() as u64);
            let mut words = body.chunks_exact(8);
            for w in &mut words {
                add(u64::from_le_bytes(w.try_into().expect("8-byte chunk")));
            }
            // The last bytes as a zero-padded little-endian word, without a copy.
            let tail = words
                .remainder()
                .iter()
                .rev()
                .fold(0u64, |word, &b| (word << 8) | u64::from(b));
            add(tail);
        }
        MsgKey {
            id: self.raw.id,
            dialog: h,
        }
    }

    /// Bodies of the top Via, Call-ID and CSeq headers (parsed already), which a
    /// retransmission repeats byte for byte. None when one is missing.
    pub fn transaction_parts(&self) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
        let body = |h: *mut hdr_field| {
            // SAFETY: h_via1/callid/cseq are null or headers of this message.
            unsafe { h.as_ref() }
                .map(|h| bytes(&h.body))
                .filter(|b| !b.is_empty())
        };
        Some((
            body(self.raw.h_via1)?,
            body(self.raw.callid)?,
            body(self.raw.cseq)?,
        ))
    }

    /// Where the request came from, for telling a retransmission from a copy sent by someone
    /// else: transport, address family, the `len` bytes of the source address (zero-padded to
    /// 16; the rest of OpenSIPS's address buffer is not initialised for IPv4) and the port.
    pub fn source(&self) -> [u8; 20] {
        let rcv = &self.raw.rcv;
        let len = (rcv.src_len as usize).min(16);
        let mut out = [0u8; 20];
        out[0] = rcv.proto as u8;
        out[1] = rcv.src_af as u8;
        out[2..2 + len].copy_from_slice(&rcv.src_addr[..len]);
        out[18..20].copy_from_slice(&rcv.src_port.to_be_bytes());
        out
    }

    /// The copy of a transaction's request that tm hands to a failure route: it has a new
    /// message id, and may run in another worker than the one that authorized the request.
    pub fn is_failure_route_copy(&self) -> bool {
        self.raw.msg_flags & bindings::FL_TM_FAKE_REQ != 0
    }

    pub fn is_request(&self) -> bool {
        self.raw.first_line.type_ == bindings::SIP_REQUEST as i32
    }

    pub fn is_register(&self) -> bool {
        // SAFETY: the request member of the union is the valid one for requests.
        self.is_request()
            && unsafe { self.raw.first_line.u.request.method_value }
                == bindings::METHOD_REGISTER as i32
    }

    pub fn method(&self) -> &'a [u8] {
        if !self.is_request() {
            return &[];
        }
        // SAFETY: as above.
        bytes(unsafe { &self.raw.first_line.u.request.method })
    }

    /// The Request-URI as the script sees it now: the rewritten one, else the received one.
    pub fn request_uri(&self) -> &'a [u8] {
        if !self.is_request() {
            return &[];
        }
        let rewritten = bytes(&self.raw.new_uri);
        if !rewritten.is_empty() {
            return rewritten;
        }
        // SAFETY: the request member of the union is the valid one for requests.
        bytes(unsafe { &self.raw.first_line.u.request.uri })
    }

    /// Appends whole header lines (CRLF-terminated) to the request as it will be relayed.
    pub fn append_header(&mut self, lines: &str) -> Result<(), String> {
        debug_assert!(lines.ends_with("\r\n"));
        // SAFETY: the shim copies the text into a lump the message owns.
        let rc = unsafe {
            bindings::sso_shim_append_header(
                self.raw,
                lines.as_ptr() as *const _,
                lines.len() as i32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err("cannot add a header to the request (out of memory?)".into())
        }
    }

    /// Caps the registration lifetime this REGISTER asks for at `max` seconds where
    /// registrar reads it; returns how many values changed.
    pub fn cap_register_expires(&mut self, max: u64) -> Result<u32, String> {
        let max = max.min(u32::MAX as u64) as u32;
        // SAFETY: the shim edits only this message's parsed Expires/Contact values and the
        // digits they point to, keeping every length as it was.
        let rc = unsafe { bindings::sso_shim_cap_register_expires(self.raw, max) };
        u32::try_from(rc).map_err(|_| "cannot parse the REGISTER's Contact or Expires".into())
    }

    /// Parses every header; false when OpenSIPS cannot.
    pub fn parse_all_headers(&mut self) -> bool {
        // SAFETY: parsing a message OpenSIPS handed us is what its API is for.
        unsafe { bindings::sso_shim_parse_all_headers(self.raw) == 0 }
    }

    /// The whole message as received.
    pub fn buffer(&self) -> &'a [u8] {
        if self.raw.buf.is_null() {
            return &[];
        }
        // SAFETY: buf/len describe the received message, alive as long as the message.
        unsafe { std::slice::from_raw_parts(self.raw.buf as *const u8, self.raw.len as usize) }
    }

    /// The body as OpenSIPS's `get_body()` sees it (call `parse_all_headers` first): it
    /// starts after the empty line that ends the headers (CRLF or a lone LF or CR) and runs
    /// to the end of the buffer, cut to Content-Length when that header says less.
    pub fn body(&self) -> &'a [u8] {
        let buf = self.buffer();
        if self.raw.unparsed.is_null() || self.raw.buf.is_null() {
            return &[];
        }
        let end_of_headers = (self.raw.unparsed as usize).wrapping_sub(self.raw.buf as usize);
        crate::core::text::body_after_headers(buf, end_of_headers, self.content_length())
    }

    /// The value OpenSIPS parsed out of Content-Length (it keeps the number in `parsed`).
    fn content_length(&self) -> Option<usize> {
        // SAFETY: null or a header of this message.
        let h = unsafe { self.raw.content_length.as_ref() }?;
        if h.parsed.is_null() && bytes(&h.body).iter().all(|b| b.is_ascii_whitespace()) {
            return None;
        }
        Some(h.parsed as usize)
    }

    /// Headers in message order (call `parse_all_headers` first), read from OpenSIPS's list
    /// as they are walked: nothing is collected.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> {
        self.header_entries().map(|h| h.read())
    }

    /// `headers`, each read only when its type is of interest (the per-request walk).
    pub fn header_entries(&self) -> HeaderEntries<'a> {
        HeaderEntries {
            base: self.raw.buf as usize,
            cur: self.raw.headers,
            _msg: std::marker::PhantomData,
        }
    }
}

/// A header of the list before it is read: its type is at hand, the rest costs a look.
#[derive(Clone, Copy)]
pub struct HeaderEntry<'a> {
    pub kind: i32,
    raw: &'a hdr_field,
    base: usize,
}

impl<'a> HeaderEntry<'a> {
    pub fn name(&self) -> &'a [u8] {
        bytes(&self.raw.name)
    }

    pub fn value(&self) -> &'a [u8] {
        bytes(&self.raw.body)
    }

    pub fn read(&self) -> Header<'a> {
        let start = (self.raw.name.s as usize).wrapping_sub(self.base);
        Header {
            kind: self.kind,
            value: self.value(),
            offset: start as u32,
            len: self.raw.len.max(0) as u32,
        }
    }
}

/// Iterator over the parsed headers of a message, by type first.
pub struct HeaderEntries<'a> {
    base: usize,
    cur: *mut hdr_field,
    _msg: std::marker::PhantomData<&'a sip_msg>,
}

impl<'a> Iterator for HeaderEntries<'a> {
    type Item = HeaderEntry<'a>;

    fn next(&mut self) -> Option<HeaderEntry<'a>> {
        // SAFETY: the header list belongs to the message, which outlives 'a, and is walked
        // read-only.
        let raw = unsafe { self.cur.as_ref() }?;
        self.cur = raw.next;
        Some(HeaderEntry {
            kind: raw.type_,
            raw,
            base: self.base,
        })
    }
}
