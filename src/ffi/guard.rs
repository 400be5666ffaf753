//! The one guard every `extern "C"` entry point goes through: a panic never unwinds into
//! OpenSIPS, and Rust errors and panics both end as a logged line and a return code.

use std::any::Any;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

/// An error an entry point reports: what to log, and the code OpenSIPS gets.
#[derive(Debug)]
pub struct EntryError {
    pub code: i32,
    pub message: String,
}

impl EntryError {
    pub fn new(code: i32, message: impl Into<String>) -> EntryError {
        EntryError {
            code,
            message: message.into(),
        }
    }
}

/// Name of the entry point running now, for log lines. OpenSIPS workers are single-threaded,
/// so this is "the current script function"; a process-wide atomic rather than a
/// thread-local, which in a cdylib costs a call into the dynamic loader on every entry.
/// Always a pointer taken from a `&'static CStr`.
static CURRENT: AtomicPtr<c_char> = AtomicPtr::new(c"sso_auth".as_ptr() as *mut c_char);

/// The entry point currently running (used as the function name in log lines).
pub fn current_entry() -> &'static CStr {
    // SAFETY: CURRENT only ever holds pointers of `&'static CStr`s (above and in `guarded`).
    unsafe { CStr::from_ptr(CURRENT.load(Ordering::Relaxed)) }
}

/// Runs `body` for entry point `name`. `Ok(code)` is returned as is; `Err` is logged through
/// `report` and its code returned; a panic is logged and `panic_code` returned.
pub fn guarded<F>(name: &'static CStr, panic_code: i32, report: fn(&CStr, &str), body: F) -> i32
where
    F: FnOnce() -> Result<i32, EntryError>,
{
    let previous = CURRENT.swap(name.as_ptr() as *mut c_char, Ordering::Relaxed);
    let result = catch_unwind(AssertUnwindSafe(body));
    CURRENT.store(previous, Ordering::Relaxed);
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            report(name, &e.message);
            e.code
        }
        Err(payload) => {
            report(
                name,
                &format!(
                    "internal error, refused (panic: {})",
                    panic_text(payload.as_ref())
                ),
            );
            panic_code
        }
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.as_str()
    } else {
        "non-text payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn remember(name: &CStr, text: &str) {
        SEEN.lock()
            .unwrap()
            .push(format!("{}: {text}", name.to_str().unwrap()));
    }

    #[test]
    fn ok_error_and_panic_become_codes() {
        assert_eq!(guarded(c"f", -5, remember, || Ok(2)), 2);
        assert_eq!(
            guarded(c"f", -5, remember, || Err(EntryError::new(-4, "nope"))),
            -4
        );
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let code = guarded(c"boom", -5, remember, || -> Result<i32, EntryError> {
            panic!("deliberate")
        });
        std::panic::set_hook(prev);
        assert_eq!(code, -5);
        let seen = SEEN.lock().unwrap();
        assert!(seen.iter().any(|l| l == "f: nope"));
        assert!(seen
            .iter()
            .any(|l| l.starts_with("boom: internal error") && l.contains("deliberate")));
        assert_eq!(current_entry(), c"sso_auth", "name restored after the call");
    }
}
