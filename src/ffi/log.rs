//! Logging through OpenSIPS's own logger. The level is checked before any formatting, and the
//! text always travels as the argument of a fixed "%.*s" format inside the C shim.

use std::ffi::CStr;

use super::bindings;
use super::guard::current_entry;

// OpenSIPS log levels, as the signed ints its logger compares.
pub const L_CRIT: i32 = bindings::L_CRIT;
pub const L_ERR: i32 = bindings::L_ERR;
pub const L_WARN: i32 = bindings::L_WARN as i32;
pub const L_NOTICE: i32 = bindings::L_NOTICE as i32;
pub const L_INFO: i32 = bindings::L_INFO as i32;
pub const L_DBG: i32 = bindings::L_DBG as i32;

/// True when a line at `level` would be printed by this process now.
pub fn enabled(level: i32) -> bool {
    // SAFETY: reads OpenSIPS's per-process log level; valid for the process's lifetime.
    unsafe { bindings::sso_shim_log_level() >= level }
}

/// Writes one line as entry point `func`.
pub fn write_as(level: i32, func: &CStr, text: &str) {
    let len = text.len().min(i32::MAX as usize) as i32;
    // SAFETY: `text` outlives the call; the shim prints exactly `len` bytes with "%.*s".
    unsafe { bindings::sso_shim_log(level, func.as_ptr(), text.as_ptr().cast(), len) }
}

/// Writes one line as the entry point currently running.
pub fn write(level: i32, text: &str) {
    write_as(level, current_entry(), text)
}

/// The guard's reporter: errors of entry points are logged at L_ERR.
pub fn report_error(func: &CStr, text: &str) {
    write_as(L_ERR, func, text)
}

/// `sso_log!(L_INFO, "format", args...)`: formats only when the level is enabled.
macro_rules! sso_log {
    ($level:expr, $($arg:tt)+) => {{
        let level = $level;
        if $crate::ffi::log::enabled(level) {
            $crate::ffi::log::write(level, &format!($($arg)+));
        }
    }};
}
pub(crate) use sso_log;

/// Sends panic reports to OpenSIPS's log instead of stderr (the worker keeps serving).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        write(
            L_CRIT,
            &format!("panic{place}, caught by the entry-point guard"),
        );
    }));
}
