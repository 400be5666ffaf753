//! `modparam` storage: every parameter is a USE_FUNC_PARAM setter, so each value is checked
//! the moment OpenSIPS reads the config and a wrong one stops start-up naming the parameter.

use std::ffi::{c_int, c_void, CStr};
use std::sync::Mutex;

use crate::core::config::Config;

use super::bindings::{modparam_t, INT_PARAM, STR_PARAM};
use super::guard::{guarded, EntryError};
use super::log::report_error;

/// Values collected from the config file, until `mod_init` freezes them.
static PENDING: Mutex<Option<Config>> = Mutex::new(None);

/// Takes the collected configuration (defaults where nothing was set).
pub fn take_pending() -> Config {
    PENDING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default()
}

/// Whether the configuration read so far sets a (non-empty) cachedb_url.
pub fn pending_cachedb_url_set() -> bool {
    PENDING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .is_some_and(|c| c.cachedb_url.is_some())
}

fn apply(name: &'static CStr, kind: modparam_t, val: *mut c_void) -> c_int {
    guarded(name, -1, report_error, || {
        let key = name.to_str().unwrap_or_default();
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = pending.get_or_insert_with(Config::default);
        let applied = if kind & STR_PARAM != 0 {
            if val.is_null() {
                return Err(EntryError::new(-1, format!("modparam {key}: no value")));
            }
            // SAFETY: for STR_PARAM OpenSIPS passes a NUL-terminated string it owns.
            let bytes = unsafe { CStr::from_ptr(val as *const _) }.to_bytes();
            let text = std::str::from_utf8(bytes)
                .map_err(|_| EntryError::new(-1, format!("modparam {key}: not UTF-8")))?;
            cfg.set_str(key, text)
        } else if kind & INT_PARAM != 0 {
            // For INT_PARAM the value itself travels in the pointer.
            cfg.set_int(key, val as isize as i32 as i64)
        } else {
            return Err(EntryError::new(
                -1,
                format!("modparam {key}: unexpected type {kind}"),
            ));
        };
        applied.map(|_| 0).map_err(|e| EntryError::new(-1, e.0))
    })
}

/// One `extern "C"` setter per parameter (OpenSIPS does not tell the setter which name it is).
macro_rules! setters {
    ($($fn_name:ident => $param:literal),+ $(,)?) => {
        $(
            pub unsafe extern "C" fn $fn_name(kind: modparam_t, val: *mut c_void) -> c_int {
                apply($param, kind, val)
            }
        )+
    };
}

setters! {
    set_introspect_url => c"introspect_url",
    set_token_url => c"token_url",
    set_client_id => c"client_id",
    set_client_secret => c"client_secret",
    set_token_header => c"token_header",
    set_secret => c"secret",
    set_nonce_expire => c"nonce_expire",
    set_realm_prefix => c"realm_prefix",
    set_use_domain => c"use_domain",
    set_http_timeout => c"http_timeout",
    set_authz_server => c"authz_server",
    set_bearer_scope => c"bearer_scope",
    set_bearer_challenge => c"bearer_challenge",
    set_digest_grant_type => c"digest_grant_type",
    set_cache_ttl => c"cache_ttl",
    set_tls_ca_file => c"tls_ca_file",
    set_negative_cache_ttl => c"negative_cache_ttl",
    set_cache_slots => c"cache_slots",
    set_nonce_slots => c"nonce_slots",
    set_retransmission_slots => c"retransmission_slots",
    set_group_claims => c"group_claims",
    set_rpid_claim => c"rpid_claim",
    set_rpid_prefix => c"rpid_prefix",
    set_rpid_suffix => c"rpid_suffix",
    set_bind_register_to_token => c"bind_register_to_token",
    set_jwks_url => c"jwks_url",
    set_jwt_key_file => c"jwt_key_file",
    set_jwt_algorithms => c"jwt_algorithms",
    set_jwt_issuer => c"jwt_issuer",
    set_jwt_audience => c"jwt_audience",
    set_jwt_leeway => c"jwt_leeway",
    set_jwks_refresh => c"jwks_refresh",
    set_dns_refresh => c"dns_refresh",
    set_node_id => c"node_id",
    set_case_sensitive => c"case_sensitive",
    set_audience => c"audience",
    set_required_scope => c"required_scope",
    set_cachedb_url => c"cachedb_url",
    set_cachedb_timeout => c"cachedb_timeout",
    set_sso_max_connections => c"sso_max_connections",
}
