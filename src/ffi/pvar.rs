//! The `$sso(name)` pseudo-variable: read-only, filled from the authorization this worker
//! decided for the same message, empty (null) otherwise.

use std::ffi::c_int;

use crate::core::authorize::VarValue;
use crate::core::token::claims::SsoVar;

use super::bindings::{
    _str as os_str, pv_param_t, pv_spec_t, pv_value_t, sip_msg, PV_TYPE_INT, PV_VAL_INT,
    PV_VAL_NULL, PV_VAL_STR,
};
use super::guard::{guarded, EntryError};
use super::identity::with_outcome;
use super::log::report_error;
use super::msg::Msg;
use super::request::now;

/// Parsed names live as long as the configuration that names them (the whole process):
/// each distinct name is leaked once, in the main process before fork.
fn intern(var: SsoVar) -> *mut SsoVar {
    use std::sync::Mutex;
    static NAMES: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    for &addr in names.iter() {
        // SAFETY: every address in NAMES is a leaked, never freed SsoVar.
        if unsafe { &*(addr as *const SsoVar) } == &var {
            return addr as *mut SsoVar;
        }
    }
    let leaked = Box::into_raw(Box::new(var));
    names.push(leaked as usize);
    leaked
}

/// Called by OpenSIPS for each `$sso(...)` in the script, at start-up.
pub fn parse_name(sp: *mut pv_spec_t, name: *const os_str) -> c_int {
    guarded(c"$sso", -1, report_error, || {
        // SAFETY: OpenSIPS passes a valid spec and the name text between the parentheses.
        let (sp, name) = unsafe { (sp.as_mut(), name.as_ref()) };
        let (Some(sp), Some(name)) = (sp, name) else {
            return Err(EntryError::new(-1, "$sso: no name"));
        };
        let text = if name.s.is_null() || name.len <= 0 {
            ""
        } else {
            // SAFETY: `name` describes `len` bytes of the configuration text.
            let b = unsafe { std::slice::from_raw_parts(name.s as *const u8, name.len as usize) };
            std::str::from_utf8(b).map_err(|_| EntryError::new(-1, "$sso: name is not UTF-8"))?
        };
        let var = SsoVar::parse(text).map_err(|e| EntryError::new(-1, format!("$sso: {e}")))?;
        sp.pvp.pvn.u.dname = intern(var) as *mut _;
        Ok(0)
    })
}

fn set_null(res: &mut pv_value_t) {
    res.rs = os_str {
        s: c"".as_ptr() as *mut _,
        len: 0,
    };
    res.ri = 0;
    res.flags = PV_VAL_NULL as c_int;
}

/// Called each time the script reads `$sso(name)`.
pub fn get(msg: *mut sip_msg, param: *mut pv_param_t, res: *mut pv_value_t) -> c_int {
    guarded(c"$sso", -1, report_error, || {
        // SAFETY: OpenSIPS passes the result slot and the parsed parameter of this variable.
        let (Some(res), Some(param)) = (unsafe { res.as_mut() }, unsafe { param.as_ref() }) else {
            return Ok(-1);
        };
        set_null(res);
        // SAFETY: parse_name stored a pointer to an interned SsoVar here.
        let Some(var) = (unsafe { (param.pvn.u.dname as *const SsoVar).as_ref() }) else {
            return Ok(0);
        };
        // SAFETY: `msg` is the message the script runs on (or null outside of one).
        let Some(msg) = (unsafe { Msg::from_ptr(msg) }) else {
            return Ok(0);
        };
        // Headers are parsed by sso_authorize; a failure-route copy may need them parsed.
        let mut msg = msg;
        if msg.is_failure_route_copy() && !msg.parse_all_headers() {
            return Ok(0);
        }
        let filled = with_outcome(&msg, |authorizer, last, sso| {
            let value = authorizer.variable(&mut last.outcome, var, sso, now())?;
            let (text, int) = match value {
                VarValue::Text(t) => (t, None),
                VarValue::Int(n) => (n.to_string(), Some(n)),
            };
            let kept = last.keep_text(text);
            res.rs = os_str {
                s: kept.as_ptr() as *mut _,
                len: kept.len() as c_int,
            };
            match int {
                Some(n) => {
                    res.ri = n.clamp(i32::MIN as i64, i32::MAX as i64) as c_int;
                    res.flags = (PV_VAL_STR | PV_VAL_INT | PV_TYPE_INT) as c_int;
                }
                None => res.flags = PV_VAL_STR as c_int,
            }
            Some(())
        })?
        .flatten();
        if filled.is_none() {
            set_null(res);
        }
        Ok(0)
    })
}
