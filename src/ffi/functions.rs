//! The script functions. Each trampoline is `extern "C"`, goes through the guard, turns the
//! OpenSIPS message into plain slices for the core, and applies the core's answer (reply
//! headers, replies, delete lumps).

use std::ffi::{c_int, c_void, CStr};

use crate::core::authorize::{challenge_options, ChallengeSpec, Code, Outcome, Placement};
use crate::core::config::Config;
use crate::core::text::is_header_safe;

use super::bindings::{_str as os_str, async_ctx, sip_msg};
use super::guard::{guarded, EntryError};
use super::log::{report_error, sso_log, L_DBG, L_ERR, L_INFO, L_WARN};
use super::msg::{Header, Msg};
use super::reply::{add_reply_header, delete_span, send_reply};
use super::request::{
    authorization_request, now, on_authorizer, request, str_arg, to_and_from, ERROR,
};
use super::worker::{self, LastAuth, Span, Spans};
use super::{identity, pvar};

/// `sso_authorize` / `sso_proxy_authorize`, the sync form.
fn authorize(
    name: &'static CStr,
    placement: Placement,
    ptr: *mut sip_msg,
    realm: *mut c_void,
) -> c_int {
    guarded(name, ERROR, report_error, || {
        let mut msg = request(ptr)?;
        let realm = str_arg("realm", realm)?.unwrap_or("");
        let (cfg, req, kept) = authorization_request(&msg, placement, realm)?;
        let now = now();
        let outcome = on_authorizer(|w| w.authorizer.authorize(&req, &mut w.sso, now))?;
        // The connection this call used is free again for a request queued by the async form.
        if super::async_call::anyone_queued() {
            super::async_call::wake_queued();
        }
        conclude(&mut msg, cfg, &kept, outcome, now)
    })
}

/// What every decision ends with, sync or async: the log line, the reply header with a new
/// token, the capped registration lifetime, and the record the identity functions, `$sso`
/// and sso_consume_credentials read. Returns the script code.
pub(super) fn conclude(
    msg: &mut Msg,
    cfg: &Config,
    kept: &[Header],
    mut outcome: Outcome,
    now: u64,
) -> Result<c_int, EntryError> {
    let msg_key = msg.key();
    // Credentials to remove on sso_consume_credentials: the deciding header and every
    // token-carrying header (the core lists them), in message order.
    let spans: Spans = outcome
        .consume_headers
        .iter()
        .filter_map(|&i| kept.get(i))
        .map(|h| Span {
            offset: h.offset,
            len: h.len,
            kind: h.kind,
        })
        .collect();
    let reason = std::mem::take(&mut outcome.reason);
    let decision = outcome.code;
    let code = decision.value();
    match decision {
        Code::Error => sso_log!(L_ERR, "{reason} -> {code}"),
        Code::BadNonce => sso_log!(L_WARN, "{reason} -> {code}"),
        // Success and "no credentials yet" (the first step of every login) are routine.
        c if c.is_success() || c == Code::NoCredentials => {
            sso_log!(L_DBG, "{reason} -> {code}")
        }
        _ => sso_log!(L_INFO, "{reason} -> {code}"),
    }
    // One visit to the worker state: the capped lifetime, the message changes (OpenSIPS
    // calls that never call back into the module), then the record.
    let applied = worker::with_worker(|w| {
        let register_limit = w.authorizer.register_limit(&outcome, now);
        // What can still fail comes before the outcome is recorded: a request that ends
        // in -5 here must not look authenticated to sso_consume_credentials, $sso or the
        // identity functions afterwards.
        let applied = apply_success(msg, cfg, &outcome, register_limit);
        if let Some(earlier) = w.last.take() {
            w.authorizer.recycle(earlier.outcome);
        }
        w.last = Some(match &applied {
            Ok(()) => LastAuth::new(msg_key, outcome, spans),
            Err(e) => LastAuth::new(msg_key, outcome.failed(e.message.clone()), Spans::new()),
        });
        applied
    })
    .map_err(|e| EntryError::new(ERROR, e))?;
    applied?;
    Ok(code)
}

/// The parts of a success that touch the message: the capped registration lifetime and
/// the reply header with the token the SSO issued.
fn apply_success(
    msg: &mut Msg,
    cfg: &Config,
    outcome: &Outcome,
    register_limit: Option<u64>,
) -> Result<(), EntryError> {
    if let Some(limit) = register_limit.filter(|_| msg.is_register()) {
        let changed = msg
            .cap_register_expires(limit)
            .map_err(|e| EntryError::new(ERROR, e))?;
        if changed > 0 {
            sso_log!(
                L_DBG,
                "registration lifetime capped at {limit} s, the token's remaining life \
                 ({changed} value(s) changed)"
            );
        }
    }
    if let Some(token) = outcome.new_token() {
        let line = format!("{}: {}\r\n", cfg.token_header, token);
        if !is_header_safe(line.trim_end_matches("\r\n")) {
            return Err(EntryError::new(
                ERROR,
                "SSO token holds bytes not allowed in a SIP header",
            ));
        }
        add_reply_header(msg, &line).map_err(|e| EntryError::new(ERROR, e))?;
    }
    Ok(())
}

fn challenge(
    name: &'static CStr,
    placement: Placement,
    ptr: *mut sip_msg,
    realm: *mut c_void,
    qop: *mut c_void,
    algorithms: *mut c_void,
) -> c_int {
    guarded(name, ERROR, report_error, || {
        let mut msg = request(ptr)?;
        let realm = str_arg("realm", realm)?.unwrap_or("");
        let (qop, algorithms) =
            challenge_options(str_arg("qop", qop)?, str_arg("algorithms", algorithms)?)
                .map_err(|e| EntryError::new(ERROR, e))?;
        let (to, from) = to_and_from(&msg);
        let spec = ChallengeSpec {
            placement,
            realm,
            is_register: msg.is_register(),
            to,
            from,
            qop,
            algorithms,
        };
        let mut random = [0u8; 12];
        getrandom::getrandom(&mut random)
            .map_err(|e| EntryError::new(ERROR, format!("no randomness for a nonce: {e}")))?;
        let msg_key = msg.key();
        let lines = worker::with_worker(|w| {
            let last = w.last_for(msg_key).map(|l| &l.outcome);
            w.authorizer.challenge(&spec, last, now(), &random)
        })
        .map_err(|e| EntryError::new(ERROR, e))?
        .map_err(|e| EntryError::new(ERROR, e))?;
        for line in &lines {
            add_reply_header(&mut msg, line).map_err(|e| EntryError::new(ERROR, e))?;
        }
        let (code, reason) = match placement {
            Placement::Www => (401, "Unauthorized"),
            Placement::Proxy => (407, "Proxy Authentication Required"),
        };
        send_reply(&mut msg, code, reason).map_err(|e| EntryError::new(ERROR, e))?;
        // As OpenSIPS auth's challenges: the reply is out, the script stops here.
        Ok(0)
    })
}

fn consume(ptr: *mut sip_msg) -> c_int {
    guarded(c"sso_consume_credentials", -1, report_error, || {
        let mut msg = request(ptr)?;
        let msg_key = msg.key();
        let spans = worker::with_worker(|w| match w.last.as_mut().filter(|l| l.key == msg_key) {
            Some(last) if last.outcome.code.is_success() && !last.consumed => {
                last.consumed = true;
                last.spans.clone()
            }
            _ => Spans::new(),
        })
        .map_err(|e| EntryError::new(ERROR, e))?;
        if spans.is_empty() {
            sso_log!(
                L_DBG,
                "nothing to consume: the request was not authorized by sso_auth"
            );
            return Ok(-1);
        }
        for s in spans {
            delete_span(&mut msg, s.offset, s.len, s.kind)
                .map_err(|e| EntryError::new(ERROR, e))?;
        }
        Ok(1)
    })
}

type Arg = *mut c_void;

/// One `extern "C"` trampoline per script function. OpenSIPS always passes eight argument
/// slots; the script functions use at most three, the rest are ignored.
macro_rules! trampoline {
    ($name:ident, |$m:ident, $a1:pat_param, $a2:pat_param, $a3:pat_param| $body:expr) => {
        pub unsafe extern "C" fn $name(
            $m: *mut sip_msg,
            $a1: Arg,
            $a2: Arg,
            $a3: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
        ) -> c_int {
            $body
        }
    };
}

trampoline!(w_sso_authorize, |m, realm, _, _| authorize(
    c"sso_authorize",
    Placement::Www,
    m,
    realm
));
trampoline!(w_sso_proxy_authorize, |m, realm, _, _| {
    authorize(c"sso_proxy_authorize", Placement::Proxy, m, realm)
});

/// The async form, `async(sso_authorize(realm), resume_route)`: see async_call.rs.
macro_rules! async_trampoline {
    ($name:ident, $entry:literal, $placement:expr) => {
        pub unsafe extern "C" fn $name(
            m: *mut sip_msg,
            ctx: *mut async_ctx,
            realm: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
            _: Arg,
        ) -> c_int {
            super::async_call::start($entry, $placement, m, ctx, realm)
        }
    };
}

async_trampoline!(wa_sso_authorize, c"sso_authorize", Placement::Www);
async_trampoline!(
    wa_sso_proxy_authorize,
    c"sso_proxy_authorize",
    Placement::Proxy
);
trampoline!(w_sso_challenge, |m, realm, qop, algs| {
    challenge(c"sso_challenge", Placement::Www, m, realm, qop, algs)
});
trampoline!(w_sso_proxy_challenge, |m, realm, qop, algs| {
    challenge(
        c"sso_proxy_challenge",
        Placement::Proxy,
        m,
        realm,
        qop,
        algs,
    )
});
trampoline!(w_sso_consume_credentials, |m, _, _, _| consume(m));

trampoline!(w_sso_is_user_in, |m, who, group, _| identity::is_user_in(
    m, who, group
));
trampoline!(w_sso_append_rpid, |m, prefix, suffix, _| {
    identity::append_asserted(
        c"sso_append_rpid",
        identity::Asserted::Rpid,
        m,
        prefix,
        suffix,
    )
});
trampoline!(w_sso_append_pai, |m, _, _, _| {
    identity::append_asserted(
        c"sso_append_pai",
        identity::Asserted::Pai,
        m,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
});
trampoline!(w_sso_is_rpid_user_e164, |m, _, _, _| {
    identity::is_rpid_user_e164(m)
});

/// `$sso(name)`: name parser and getter, both guarded.
pub unsafe extern "C" fn pv_parse_sso_name(
    sp: *mut super::bindings::pv_spec_t,
    name: *const os_str,
) -> c_int {
    pvar::parse_name(sp, name)
}

pub unsafe extern "C" fn pv_get_sso(
    m: *mut sip_msg,
    param: *mut super::bindings::pv_param_t,
    res: *mut super::bindings::pv_value_t,
) -> c_int {
    pvar::get(m, param, res)
}

// Test-only (feature `panic-test`): proves that a panic becomes -5 and a log line.
#[cfg(feature = "panic-test")]
trampoline!(w_sso_test_panic, |_m, _, _, _| {
    guarded(
        c"sso_test_panic",
        ERROR,
        report_error,
        || -> Result<c_int, EntryError> { panic!("deliberate panic from sso_test_panic") },
    )
});
