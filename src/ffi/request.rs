//! What every script function needs of a request, in the core's terms: its arguments, the
//! parsed message, and the slices `AuthRequest` is made of. Entry points (functions.rs,
//! identity.rs, pvar.rs) use these helpers; nothing here calls an entry point.

use std::ffi::c_void;

use smallvec::SmallVec;

use crate::core::authorize::{AuthRequest, Code, HeaderRef, HeaderRefs, Placement};
use crate::core::config::Config;
use crate::core::digest::retrans::TransactionId;
use crate::core::text::utf8;

use super::bindings::{
    _str as os_str, sip_msg, HDR_AUTHORIZATION_T, HDR_FROM_T, HDR_OTHER_T, HDR_PROXYAUTH_T,
    HDR_TO_T,
};
use super::guard::EntryError;
use super::log::{self, L_DBG};
use super::msg::{Header, HeaderEntry, Msg};
use super::worker::{self, Worker};

pub(super) const ERROR: i32 = Code::Error as i32;

/// Unix seconds. time(2) reads the kernel's per-tick copy of the clock (glibc answers it
/// from the vDSO without reading the TSC): every decision needs the second, and this is
/// its cheapest source. Before 1970 reads as 0, like an unset clock.
pub(super) fn now() -> u64 {
    // SAFETY: time(NULL) only returns a value.
    let t = unsafe { libc::time(std::ptr::null_mut()) };
    u64::try_from(t).unwrap_or(0)
}

/// A CMD_PARAM_STR argument: OpenSIPS passes a `str*` (already expanded), or NULL when an
/// optional one was left out.
pub(super) fn str_arg<'a>(what: &str, p: *mut c_void) -> Result<Option<&'a str>, EntryError> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: for CMD_PARAM_STR parameters the core hands over a valid `str*`.
    let s = unsafe { &*(p as *const os_str) };
    if s.s.is_null() || s.len <= 0 {
        return Ok(Some(""));
    }
    // SAFETY: the `str` describes `len` readable bytes for the duration of the call.
    let bytes = unsafe { std::slice::from_raw_parts(s.s as *const u8, s.len as usize) };
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|_| EntryError::new(ERROR, format!("{what} argument is not UTF-8")))
}

pub(super) fn request<'a>(ptr: *mut sip_msg) -> Result<Msg<'a>, EntryError> {
    // SAFETY: `ptr` is the message OpenSIPS called the script function with.
    let mut msg = unsafe { Msg::from_ptr(ptr) }
        .ok_or_else(|| EntryError::new(ERROR, "called without a message"))?;
    if !msg.is_request() {
        return Err(EntryError::new(
            ERROR,
            "called for a reply; only requests can be authorized",
        ));
    }
    if !msg.parse_all_headers() {
        return Err(EntryError::new(ERROR, "cannot parse the request's headers"));
    }
    Ok(msg)
}

/// The value of the first header of type `kind`.
pub(super) fn first_value<'a>(msg: &Msg<'a>, kind: u32) -> Option<&'a [u8]> {
    msg.headers()
        .find(|h| h.kind == kind as i32)
        .map(|h| h.value)
}

/// The first To and the first From header of a message.
pub(super) fn to_and_from<'a>(msg: &Msg<'a>) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    let (mut to, mut from) = (None, None);
    for h in msg.headers() {
        if h.kind == HDR_TO_T as i32 {
            to.get_or_insert(h.value);
        } else if h.kind == HDR_FROM_T as i32 {
            from.get_or_insert(h.value);
        }
    }
    (to, from)
}

/// The credential and token headers of a request, which the core's header ids index: a
/// request has few, so they live inline.
pub(super) type KeptHeaders<'a> = SmallVec<[Header<'a>; 4]>;

/// What the core needs of a request, from one walk over its headers: only credential headers
/// (of the `cred_kinds` types) and token headers are kept, in message order; a HeaderRef's id
/// is its index in the returned Vec.
pub(super) fn auth_request<'a>(
    msg: &Msg<'a>,
    placement: Placement,
    cred_kinds: &[i32],
    realm: &'a str,
    cfg: &Config,
) -> Result<(AuthRequest<'a>, KeptHeaders<'a>), EntryError> {
    let is_token_header = |h: &HeaderEntry| {
        h.kind == HDR_OTHER_T as i32 && h.name().eq_ignore_ascii_case(cfg.token_header.as_bytes())
    };
    let method = utf8(msg.method()).ok_or_else(|| EntryError::new(ERROR, "method is not UTF-8"))?;
    let (mut to, mut from) = (None, None);
    let mut kept = KeptHeaders::new();
    let mut credential_headers = HeaderRefs::new();
    let mut token_headers = HeaderRefs::new();
    for h in msg.header_entries() {
        if h.kind == HDR_TO_T as i32 {
            to.get_or_insert(h.value());
        } else if h.kind == HDR_FROM_T as i32 {
            from.get_or_insert(h.value());
        } else if cred_kinds.contains(&h.kind) {
            let h = h.read();
            credential_headers.push(HeaderRef {
                id: kept.len(),
                value: h.value,
            });
            kept.push(h);
        } else if is_token_header(&h) {
            let h = h.read();
            token_headers.push(HeaderRef {
                id: kept.len(),
                value: h.value,
            });
            kept.push(h);
        }
    }
    // Only Digest credentials look at the body (qop=auth-int) and at the transaction (a
    // retransmitted login): skip both for the token path and credential-less requests.
    let has_credentials = !credential_headers.is_empty();
    let req = AuthRequest {
        placement,
        method,
        is_register: msg.is_register(),
        realm,
        to,
        from,
        credential_headers,
        token_headers,
        body: if has_credentials { msg.body() } else { &[] },
        transaction: if has_credentials {
            msg.transaction_parts()
                .map(|(via, call_id, cseq)| TransactionId {
                    via,
                    call_id,
                    cseq,
                    source: msg.source(),
                })
        } else {
            None
        },
    };
    Ok((req, kept))
}

/// The frozen configuration, or the error every entry point gives before mod_init.
pub(super) fn module_config() -> Result<&'static Config, EntryError> {
    super::worker::config().ok_or_else(|| EntryError::new(ERROR, "module not initialized"))
}

/// The credential header type each placement reads.
pub(super) fn credential_kind(placement: Placement) -> i32 {
    let kind = match placement {
        Placement::Www => HDR_AUTHORIZATION_T,
        Placement::Proxy => HDR_PROXYAUTH_T,
    };
    kind as i32
}

/// What sso_authorize / sso_proxy_authorize decide on: the configuration, the request in
/// the core's terms (credentials of `placement`'s header type), and the headers it points at.
pub(super) fn authorization_request<'a>(
    msg: &Msg<'a>,
    placement: Placement,
    realm: &'a str,
) -> Result<(&'static Config, AuthRequest<'a>, KeptHeaders<'a>), EntryError> {
    let cfg = module_config()?;
    let (req, kept) = auth_request(msg, placement, &[credential_kind(placement)], realm, cfg)?;
    Ok((cfg, req, kept))
}

/// Runs a decision step on this worker's authorizer (sync call or async start), telling it
/// first whether the success line will be read: that line is logged at DBG only, and
/// without a reader the core skips building it.
pub(super) fn on_authorizer<T>(step: impl FnOnce(&mut Worker) -> T) -> Result<T, EntryError> {
    let explain_success = log::enabled(L_DBG);
    worker::with_worker(|w| {
        w.authorizer.set_explain_success(explain_success);
        step(w)
    })
    .map_err(|e| EntryError::new(ERROR, e))
}
