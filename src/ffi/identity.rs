//! Script functions about who the SSO says the caller is: `sso_is_user_in`, and the asserted
//! identity functions `sso_append_rpid`, `sso_append_pai`, `sso_is_rpid_user_e164`. Each works
//! on the authorization this worker decided for the same message.

use std::ffi::{c_int, c_void, CStr};

use crate::core::authorize::{AssertError, Authorizer, Placement};
use crate::core::identity::{parse_aor, Aor};
use crate::core::sso::HttpSso;
use crate::core::text::is_header_safe;
use crate::core::token::claims::{is_e164, uri_user};

use super::bindings::{sip_msg, HDR_AUTHORIZATION_T, HDR_FROM_T, HDR_PROXYAUTH_T, HDR_TO_T};
use super::guard::{guarded, EntryError};
use super::log::{report_error, sso_log, L_DBG, L_INFO};
use super::msg::Msg;
use super::request::{auth_request, first_value, now, request, str_arg, ERROR};
use super::worker::{self, LastAuth, Spans};

/// Runs `f` on this message's authorization with the worker's engine; None when nothing
/// authorized it. On tm's failure-route copy of a request (a new message id, maybe another
/// worker), the request's token is checked again through the shared cache.
pub(super) fn with_outcome<R>(
    msg: &Msg,
    f: impl FnOnce(&mut Authorizer, &mut LastAuth, &mut HttpSso) -> R,
) -> Result<Option<R>, EntryError> {
    let key = msg.key();
    let recheck = msg.is_failure_route_copy();
    let cfg = worker::config().ok_or_else(|| EntryError::new(ERROR, "module not initialized"))?;
    let req = if recheck {
        Some(auth_request(msg, Placement::Proxy, &BOTH_CREDENTIAL_KINDS, "", cfg)?.0)
    } else {
        None
    };
    worker::with_worker(|w| {
        let worker::Worker {
            authorizer,
            sso,
            last,
        } = w;
        if !last.as_ref().is_some_and(|l| l.key == key) {
            let outcome = authorizer.recheck_token(req.as_ref()?, sso, now())?;
            *last = Some(LastAuth::new(key, outcome, Spans::new()));
        }
        last.as_mut().map(|l| f(authorizer, l, sso))
    })
    .map_err(|e| EntryError::new(ERROR, e))
}

/// A token may ride in either header when a failure route asks.
const BOTH_CREDENTIAL_KINDS: [i32; 2] = [HDR_AUTHORIZATION_T as i32, HDR_PROXYAUTH_T as i32];

/// The URI `who` names: Request-URI, From or To (None for Credentials).
fn who_uri<'a>(msg: &Msg<'a>, who: &str) -> Result<Option<Aor<'a>>, EntryError> {
    let (name, value) = match who.to_ascii_lowercase().as_str() {
        "credentials" => return Ok(None),
        "request-uri" | "ruri" => ("Request-URI", Some(msg.request_uri())),
        "from" => ("From", first_value(msg, HDR_FROM_T)),
        "to" => ("To", first_value(msg, HDR_TO_T)),
        _ => {
            return Err(EntryError::new(
                ERROR,
                format!(
                    "bad first argument {who:?}: expected \"Request-URI\", \"From\", \"To\" \
                     or \"Credentials\""
                ),
            ))
        }
    };
    let value = value.ok_or_else(|| EntryError::new(ERROR, format!("no {name} in the request")))?;
    parse_aor(value)
        .map(Some)
        .map_err(|_| EntryError::new(ERROR, format!("malformed {name}")))
}

/// `sso_is_user_in(who, group)`: 1 when the authenticated user is `who` and a member of
/// `group` per the token's claims, -1 otherwise (-5 on bad arguments).
pub fn is_user_in(ptr: *mut sip_msg, who: *mut c_void, group: *mut c_void) -> c_int {
    guarded(c"sso_is_user_in", ERROR, report_error, || {
        let msg = request(ptr)?;
        let who = str_arg("who", who)?.unwrap_or("");
        let group = str_arg("group", group)?.unwrap_or("");
        let aor = who_uri(&msg, who)?;
        let verdict = with_outcome(&msg, |a, l, sso| {
            a.is_user_in(&mut l.outcome, aor.as_ref(), group, sso, now())
        })?;
        match verdict {
            Some(Ok(())) => Ok(1),
            Some(Err(why)) => {
                sso_log!(L_DBG, "{why} -> -1");
                Ok(-1)
            }
            None => {
                sso_log!(L_DBG, "the request was not authorized by sso_auth -> -1");
                Ok(-1)
            }
        }
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Asserted {
    Rpid,
    Pai,
}

/// The asserted identity of this request, or the code to return: -1 nothing to assert,
/// -2 the claim is unusable.
fn asserted_identity(msg: &Msg) -> Result<Result<String, c_int>, EntryError> {
    // A bare number or name is completed with the caller's domain.
    let host = first_value(msg, HDR_FROM_T)
        .and_then(|v| parse_aor(v).ok())
        .map(|a| a.host.into_owned())
        .unwrap_or_default();
    let found = with_outcome(msg, |a, l, sso| {
        a.asserted_identity(&mut l.outcome, &host, sso, now())
    })?;
    Ok(match found {
        Some(Ok(uri)) => Ok(uri),
        Some(Err(AssertError::NoIdentity(why))) => {
            sso_log!(L_DBG, "{why} -> -1");
            Err(-1)
        }
        Some(Err(AssertError::Unusable(why))) => {
            sso_log!(L_INFO, "{why} -> -2");
            Err(-2)
        }
        None => {
            sso_log!(L_DBG, "the request was not authorized by sso_auth -> -1");
            Err(-1)
        }
    })
}

/// `sso_append_rpid([prefix, suffix])` / `sso_append_pai()`: 1 appended, -1 no identity to
/// assert, -2 the claim holds something unusable, -5 error.
pub fn append_asserted(
    name: &'static CStr,
    kind: Asserted,
    ptr: *mut sip_msg,
    prefix: *mut c_void,
    suffix: *mut c_void,
) -> c_int {
    guarded(name, ERROR, report_error, || {
        let mut msg = request(ptr)?;
        let cfg =
            worker::config().ok_or_else(|| EntryError::new(ERROR, "module not initialized"))?;
        let uri = match asserted_identity(&msg)? {
            Ok(uri) => uri,
            Err(code) => return Ok(code),
        };
        let line = match kind {
            Asserted::Rpid => {
                let prefix = str_arg("prefix", prefix)?.unwrap_or(&cfg.rpid_prefix);
                let suffix = str_arg("suffix", suffix)?.unwrap_or(&cfg.rpid_suffix);
                format!("Remote-Party-ID: {prefix}{uri}{suffix}")
            }
            Asserted::Pai => format!("P-Asserted-Identity: {uri}"),
        };
        if !is_header_safe(&line) {
            return Err(EntryError::new(
                ERROR,
                "prefix or suffix holds bytes not allowed in a header",
            ));
        }
        msg.append_header(&format!("{line}\r\n"))
            .map_err(|e| EntryError::new(ERROR, e))?;
        Ok(1)
    })
}

/// `sso_is_rpid_user_e164()`: 1 when the asserted identity's user is an E.164 number, -1 when
/// it is not or there is none, -2 when the claim is unusable.
pub fn is_rpid_user_e164(ptr: *mut sip_msg) -> c_int {
    guarded(c"sso_is_rpid_user_e164", ERROR, report_error, || {
        let msg = request(ptr)?;
        Ok(match asserted_identity(&msg)? {
            Ok(uri) if is_e164(uri_user(&uri)) => 1,
            Ok(_) => -1,
            Err(code) => code,
        })
    })
}
