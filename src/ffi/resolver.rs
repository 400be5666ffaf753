//! The resolver process: an extra OpenSIPS process (module_exports.procs) that looks up the
//! SSO URLs' host names and publishes their addresses in shared memory, so that SIP workers
//! never wait on DNS and never start a thread. It may block in getaddrinfo as long as the
//! system resolver likes: it serves no SIP traffic.
//!
//! OpenSIPS forks it after mod_init, which decides whether it is needed at all: the entry's
//! `no` stays 0 (the core skips it) when every SSO URL names an IP literal. It has no IPC
//! (PROC_FLAG_HAS_IPC unset), so at shutdown the main process sends it SIGTERM and the core's
//! own handler, inherited across the fork, ends it: whatever it is doing (sleeping or waiting
//! on DNS) is interrupted, and a half-written record is never the published one.

use std::cell::UnsafeCell;
use std::ffi::c_int;
use std::sync::Arc;
use std::time::Duration;

use once_cell::sync::OnceCell;

use crate::core::config::Config;
use crate::core::sso::resolve::addresses::{
    host_names, system_lookup, AddressTable, NoteLevel, Refresher,
};
use crate::core::sso::resolve::{LiteralsOnly, Resolve};
use crate::core::stats::Stat;

use super::bindings::proc_export_t;
use super::guard::{guarded, EntryError};
use super::log::{report_error, sso_log, L_INFO, L_WARN};
use super::request::now;
use super::worker;

/// The table, mapped at mod_init (before fork) and inherited by every process.
static TABLE: OnceCell<Arc<AddressTable>> = OnceCell::new();

/// The `procs` table of the exports: the resolver entry and the terminator. `no` is set at
/// mod_init, before the core counts and forks module processes; nothing writes it after.
#[repr(transparent)]
pub struct ProcTable(UnsafeCell<[proc_export_t; 2]>);
// SAFETY: written once in mod_init (main process, single-threaded, before anything reads it
// but the core's own start-up code), read-only afterwards.
unsafe impl Sync for ProcTable {}

pub static PROCS: ProcTable = ProcTable(UnsafeCell::new([
    proc_export_t {
        name: c"SSO resolver".as_ptr(),
        pre_fork_function: None,
        post_fork_function: None,
        function: Some(resolver_main),
        no: 0,
        // No IPC: the core then stops it with SIGTERM. No child_init of the other modules:
        // it needs none of their per-process state.
        flags: 0,
    },
    proc_export_t {
        name: std::ptr::null(),
        pre_fork_function: None,
        post_fork_function: None,
        function: None,
        no: 0,
        flags: 0,
    },
]));

/// Maps the table for the host names of the SSO URLs and asks for the resolver process when
/// there is at least one. Main process, mod_init. Returns the names.
pub fn map(cfg: &Config) -> Result<Vec<String>, String> {
    let names = host_names(cfg.sso_urls());
    let table = AddressTable::new(names.clone())
        .map_err(|e| format!("cannot map the SSO address table: {e}"))?;
    TABLE
        .set(Arc::new(table))
        .map_err(|_| "SSO address table already mapped".to_string())?;
    if !names.is_empty() {
        // SAFETY: see ProcTable: mod_init runs before the core reads `no`.
        unsafe { (*PROCS.0.get())[0].no = 1 };
    }
    Ok(names)
}

/// The resolver the workers' SSO client uses: IP literals at once, host names from the
/// shared table (an error at once for a name not resolved yet). Before mod_init: literals only.
pub fn sso_resolver() -> Box<dyn Resolve> {
    match TABLE.get() {
        Some(table) => Box::new(table.reader()),
        None => Box::new(LiteralsOnly),
    }
}

/// The process body OpenSIPS calls after forking it; never returns while OpenSIPS runs.
unsafe extern "C" fn resolver_main(_rank: c_int) {
    guarded(c"sso_resolver", 0, report_error, || {
        let table = TABLE
            .get()
            .cloned()
            .ok_or_else(|| EntryError::new(-1, "SSO address table not mapped"))?;
        let every = worker::config().map_or(30, |c| c.dns_refresh);
        if table.names().is_empty() {
            // Not forked in that case; should a core fork it anyway, stay idle.
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        sso_log!(
            L_INFO,
            "started: looking up {} every {every} s",
            table.names().join(", ")
        );
        let mut refresher = Refresher::new(table, every);
        loop {
            let wait = guarded(c"sso_resolver", -1, report_error, || {
                Ok(one_pass(&mut refresher).min(i32::MAX as u64) as i32)
            });
            // After a panic (-1): try again in a second.
            std::thread::sleep(Duration::from_secs(wait.max(1) as u64));
        }
    });
    // Only reached when the table is missing: the core ends the process when this returns,
    // which shuts OpenSIPS down; better to idle and let the workers report the names unresolved.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// One refresh: lookups due now, the log lines and the failure count. Returns seconds to wait.
fn one_pass(refresher: &mut Refresher) -> u64 {
    let pass = refresher.pass(now(), &mut system_lookup);
    for (level, text) in &pass.notes {
        match level {
            NoteLevel::Info => sso_log!(L_INFO, "{text}"),
            NoteLevel::Warn => sso_log!(L_WARN, "{text}"),
        }
    }
    if pass.failures > 0 {
        if let Some(shared) = worker::shared() {
            shared.stats.add(Stat::DnsFailures, pass.failures);
        }
    }
    pass.wait
}
