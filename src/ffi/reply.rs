//! What the module writes: reply header lumps, delete lumps, and replies sent through the
//! signaling module.

use std::ffi::c_int;

use once_cell::sync::OnceCell;

use super::bindings::{self, _str as os_str, sig_send_reply_f, LUMP_RPL_HDR};
use super::msg::Msg;

/// signaling's `reply` function, bound at mod_init.
static SIG_REPLY: OnceCell<SigReply> = OnceCell::new();

#[derive(Clone, Copy)]
struct SigReply(
    unsafe extern "C" fn(*mut bindings::sip_msg, c_int, *const os_str, *mut os_str) -> c_int,
);

/// Binds the signaling API (the module depends on `signaling`). Called once from mod_init.
pub fn bind_signaling() -> Result<(), String> {
    // SAFETY: find_export is the core's lookup of functions other modules export.
    let load = unsafe { bindings::find_export(c"load_sig".as_ptr(), 0) };
    let Some(load) = load else {
        return Err("cannot import load_sig: is the signaling module loaded?".into());
    };
    let mut binds = bindings::sig_binds {
        reply: None,
        gen_totag: None,
    };
    // SAFETY: load_sig fills the struct we pass; its real type is load_sig_f.
    let load: bindings::load_sig_f = unsafe { std::mem::transmute(load) };
    let rc = unsafe { load.ok_or("load_sig is null")?(&mut binds) };
    let reply: sig_send_reply_f = binds.reply;
    match (rc, reply) {
        (0.., Some(f)) => {
            let _ = SIG_REPLY.set(SigReply(f));
            Ok(())
        }
        _ => Err("signaling module did not provide its reply function".into()),
    }
}

/// Adds one header line (with CRLF) to the reply OpenSIPS will send for this request.
/// The caller has checked the text holds no CR/LF except the final one.
pub fn add_reply_header(msg: &mut Msg, line: &str) -> Result<(), String> {
    debug_assert!(line.ends_with("\r\n"));
    // SAFETY: add_lump_rpl copies the text (no LUMP_RPL_NODUP flag).
    let lump = unsafe {
        bindings::add_lump_rpl(
            msg.as_ptr(),
            line.as_ptr() as *mut _,
            line.len() as c_int,
            LUMP_RPL_HDR as c_int,
        )
    };
    if lump.is_null() {
        Err("cannot add a reply header (out of memory?)".into())
    } else {
        Ok(())
    }
}

/// Sends a reply through the signaling module (stateful when a transaction exists).
pub fn send_reply(msg: &mut Msg, code: i32, reason: &str) -> Result<(), String> {
    let f = SIG_REPLY.get().ok_or("signaling API not bound")?;
    let reason = os_str {
        s: reason.as_ptr() as *mut _,
        len: reason.len() as c_int,
    };
    // SAFETY: the reason outlives the call; signaling copies what it sends.
    let rc = unsafe { (f.0)(msg.as_ptr(), code, &reason, std::ptr::null_mut()) };
    if rc < 0 {
        Err(format!("signaling failed to send {code}"))
    } else {
        Ok(())
    }
}

/// Removes `len` bytes at `offset` of the message (a whole header) before it is relayed.
pub fn delete_span(msg: &mut Msg, offset: u32, len: u32, kind: i32) -> Result<(), String> {
    // SAFETY: offset/len come from the message's own header list.
    let lump = unsafe { bindings::del_lump(msg.as_ptr(), offset, len, kind) };
    if lump.is_null() {
        Err("cannot remove a header (out of memory?)".into())
    } else {
        Ok(())
    }
}
