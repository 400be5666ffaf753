//! `cachedb_url`: the shared store through OpenSIPS's cachedb API, the way OpenSIPS modules
//! use it: the engine is bound in mod_init (main process, capabilities checked), and every
//! process opens its own connection after fork (child_init, or on first use in a process
//! child_init did not cover). The logic is `core::cluster`; this is the connection and logs.

use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;

use once_cell::sync::OnceCell;

use crate::core::cluster::entry::MAX_VALUE;
use crate::core::cluster::health::Health;
use crate::core::cluster::store::{Store, StoreFailed};
use crate::core::cluster::{Cluster, Note};
use crate::core::config::Config;

use super::bindings;
use super::guard::guarded;
use super::log::{report_error, write, L_ERR, L_INFO, L_NOTICE, L_WARN};

/// Node-wide store health, mapped in mod_init before fork.
static HEALTH: OnceCell<Arc<Health>> = OnceCell::new();

/// This process's connection (a `cachedb_con *`), opened after fork.
static CONNECTION: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// Asked by the shim's modparam dependency of cachedb_url (right after the parameter was
/// set): 1 when it names a store, so `cachedb_url = ""` imposes no cachedb module.
#[no_mangle]
pub unsafe extern "C" fn sso_cachedb_url_is_set() -> c_int {
    guarded(c"cachedb_url", 0, report_error, || {
        Ok(i32::from(super::params::pending_cachedb_url_set()))
    })
}

/// Main process, mod_init: binds the engine named by the URL and maps the health words.
pub fn bind(cfg: &Config) -> Result<(), String> {
    let Some(url) = cfg.cachedb_url.as_deref() else {
        return Ok(());
    };
    let engine = cfg.cachedb_engine().unwrap_or("?");
    // SAFETY: the shim copies the URL before binding.
    let rc = unsafe { bindings::sso_shim_cachedb_bind(url.as_ptr().cast(), url.len() as c_int) };
    match rc {
        0 => {}
        -2 => {
            return Err(format!(
                "modparam cachedb_url: cachedb engine {engine:?} cannot get, set and add"
            ))
        }
        _ => {
            return Err(format!(
                "modparam cachedb_url: cannot bind cachedb engine {engine:?} (is cachedb_{engine}.so loaded?)"
            ))
        }
    }
    let health = Health::new().map_err(|e| format!("cannot map shared memory: {e}"))?;
    HEALTH
        .set(Arc::new(health))
        .map_err(|_| "cachedb already bound".to_string())?;
    write(
        L_INFO,
        &format!(
            "shared store: cachedb engine {engine:?}, store calls over {} ms count as an outage",
            cfg.cachedb_timeout_ms
        ),
    );
    Ok(())
}

/// After fork: opens this process's connection (no-op without cachedb_url or when open).
pub fn connect() -> Result<(), String> {
    if HEALTH.get().is_none() || !CONNECTION.load(Ordering::Acquire).is_null() {
        return Ok(());
    }
    // SAFETY: the engine was bound in mod_init; init opens a connection for this process.
    let con = unsafe { bindings::sso_shim_cachedb_connect() };
    if con.is_null() {
        return Err("cannot open a connection for cachedb_url".to_string());
    }
    CONNECTION.store(con, Ordering::Release);
    Ok(())
}

/// The store for this process's Authorizer; None without cachedb_url.
pub fn cluster_for(cfg: &Config) -> Result<Option<Cluster>, String> {
    let Some(health) = HEALTH.get() else {
        return Ok(None);
    };
    connect()?;
    let con = CONNECTION.load(Ordering::Acquire);
    let secret = cfg.secret.as_deref().unwrap_or_default();
    Ok(Some(Cluster::new(
        secret,
        cfg.cachedb_timeout_ms,
        Box::new(CachedbStore { con }),
        health.clone(),
        note,
    )))
}

struct CachedbStore {
    con: *mut c_void,
}

// SAFETY: the connection belongs to the one process that opened it and is used only from
// that process's (single) worker thread, behind the worker mutex.
unsafe impl Send for CachedbStore {}

fn key_len(key: &str) -> c_int {
    key.len() as c_int
}

impl Store for CachedbStore {
    fn add(&mut self, key: &str, delta: i32, ttl_secs: u32) -> Result<i64, StoreFailed> {
        let mut new_val: i64 = 0;
        // SAFETY: key outlives the call; new_val is a valid out pointer.
        let rc = unsafe {
            bindings::sso_shim_cachedb_add(
                self.con,
                key.as_ptr() as *const c_char,
                key_len(key),
                delta,
                ttl_secs.min(i32::MAX as u32) as c_int,
                &mut new_val as *mut i64 as *mut _,
            )
        };
        if rc == 0 {
            Ok(new_val)
        } else {
            Err(StoreFailed)
        }
    }

    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreFailed> {
        let mut buf = vec![0u8; MAX_VALUE];
        let mut len: c_int = 0;
        // SAFETY: buf has MAX_VALUE writable bytes; the shim copies at most that many.
        let rc = unsafe {
            bindings::sso_shim_cachedb_get(
                self.con,
                key.as_ptr() as *const c_char,
                key_len(key),
                buf.as_mut_ptr() as *mut c_char,
                buf.len() as c_int,
                &mut len,
            )
        };
        match rc {
            0 => {
                let len = len.max(0) as usize;
                if len > buf.len() {
                    // Larger than anything this module writes: not one of ours.
                    return Ok(Some(Vec::new()));
                }
                buf.truncate(len);
                Ok(Some(buf))
            }
            1 => Ok(None),
            _ => Err(StoreFailed),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], ttl_secs: u32) -> Result<(), StoreFailed> {
        // SAFETY: key and value outlive the call.
        let rc = unsafe {
            bindings::sso_shim_cachedb_set(
                self.con,
                key.as_ptr() as *const c_char,
                key_len(key),
                value.as_ptr() as *const c_char,
                value.len() as c_int,
                ttl_secs.min(i32::MAX as u32) as c_int,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(StoreFailed)
        }
    }
}

/// Unix seconds of this process's last "forged entry" line (at most one a minute).
static LAST_FORGED_LOG: AtomicU64 = AtomicU64::new(0);

/// Log lines of the store's state changes: one per outage and node (the process that saw
/// the change writes it), fixed texts.
fn note(n: Note) {
    match n {
        Note::WentDown { slow } => write(
            L_ERR,
            if slow {
                "shared store slower than cachedb_timeout: treated as down; replay checks use \
                 this node's table (other nodes' nonces get -3), tokens use the local cache and \
                 introspection; retried every 2 s"
            } else {
                "shared store unreachable: replay checks use this node's table (other nodes' \
                 nonces get -3), tokens use the local cache and introspection; retried every 2 s"
            },
        ),
        Note::CameBack(secs) => write(
            L_NOTICE,
            &format!("shared store answers again after an outage of {secs} s: shared mode resumed"),
        ),
        Note::ForgedEntry => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let last = LAST_FORGED_LOG.load(Ordering::Relaxed);
            if now >= last + 60 {
                LAST_FORGED_LOG.store(now, Ordering::Relaxed);
                write(
                    L_WARN,
                    "refused a token entry of the shared store that fails its MAC check \
                     (not written with this cluster's secret); see cachedb_bad_entries",
                );
            }
        }
    }
}
