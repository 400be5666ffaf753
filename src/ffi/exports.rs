//! The `exports` symbol OpenSIPS looks up after dlopen: module name, version info taken from
//! the target OpenSIPS at build time, dependencies, script functions, parameters and the
//! init/child_init/destroy hooks, all routed through the guard.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::null;

use crate::core::sso::HttpSso;

use super::bindings::{
    _str, acmd_export_t, acmd_function, cmd_export_t, cmd_function, cmd_param, dep_export_t,
    modparam_dependency_t, module_dependency_t, module_exports, module_exports__bindgen_ty_1,
    module_type, param_export_t, pv_export_t, scm_version, stat_export_t, stat_var, BRANCH_ROUTE,
    CMD_PARAM_OPT, CMD_PARAM_STR, DEP_ABORT, FAILURE_ROUTE, INT_PARAM, MAX_MOD_DEPS, REQUEST_ROUTE,
    STAT_IS_FUNC, STAT_NO_RESET, STR_PARAM, USE_FUNC_PARAM,
};
use super::functions::*;
use super::guard::{guarded, EntryError};
use super::log::{install_panic_hook, report_error, sso_log, L_INFO, L_NOTICE, L_WARN};
use super::params::*;
use super::{cachedb, params, reply, resolver, worker};
use crate::core::stats::Stat;

/// Lets tables of raw pointers live in statics: they are written once by the compiler and
/// only read by OpenSIPS.
#[repr(transparent)]
pub struct Table<T>(T);
// SAFETY: the wrapped tables are immutable after link time.
unsafe impl<T> Sync for Table<T> {}

const fn cstr(s: &'static CStr) -> *const c_char {
    s.as_ptr()
}

macro_rules! nul_terminated_env {
    ($name:literal) => {
        concat!(env!($name), "\0").as_ptr() as *const c_char
    };
}

const NO_PARAM: cmd_param = cmd_param {
    flags: 0,
    fixup: None,
    free_fixup: None,
};
const STR: cmd_param = cmd_param {
    flags: CMD_PARAM_STR as c_int,
    fixup: None,
    free_fixup: None,
};
const OPT_STR: cmd_param = cmd_param {
    flags: (CMD_PARAM_STR | CMD_PARAM_OPT) as c_int,
    fixup: None,
    free_fixup: None,
};

type Trampoline = unsafe extern "C" fn(
    *mut super::bindings::sip_msg,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
) -> c_int;

const fn cmd(name: &'static CStr, f: Trampoline, args: &[cmd_param], routes: u32) -> cmd_export_t {
    let mut params = [NO_PARAM; 9];
    let mut i = 0;
    while i < args.len() {
        params[i] = args[i];
        i += 1;
    }
    let function: cmd_function = Some(f);
    cmd_export_t {
        name: cstr(name),
        function,
        params,
        flags: routes as c_int,
    }
}

const END_CMD: cmd_export_t = cmd_export_t {
    name: null(),
    function: None,
    params: [NO_PARAM; 9],
    flags: 0,
};

#[cfg(not(feature = "panic-test"))]
const CMD_COUNT: usize = 10;
#[cfg(feature = "panic-test")]
const CMD_COUNT: usize = 11;

static CMDS: Table<[cmd_export_t; CMD_COUNT]> = Table([
    cmd(c"sso_authorize", w_sso_authorize, &[STR], REQUEST_ROUTE),
    cmd(
        c"sso_proxy_authorize",
        w_sso_proxy_authorize,
        &[STR],
        REQUEST_ROUTE,
    ),
    cmd(
        c"sso_challenge",
        w_sso_challenge,
        &[STR, OPT_STR, OPT_STR],
        REQUEST_ROUTE,
    ),
    cmd(
        c"sso_proxy_challenge",
        w_sso_proxy_challenge,
        &[STR, OPT_STR, OPT_STR],
        REQUEST_ROUTE,
    ),
    cmd(
        c"sso_consume_credentials",
        w_sso_consume_credentials,
        &[],
        REQUEST_ROUTE,
    ),
    cmd(
        c"sso_is_user_in",
        w_sso_is_user_in,
        &[STR, STR],
        REQUEST_ROUTE | FAILURE_ROUTE,
    ),
    cmd(
        c"sso_append_rpid",
        w_sso_append_rpid,
        &[OPT_STR, OPT_STR],
        REQUEST_ROUTE | BRANCH_ROUTE | FAILURE_ROUTE,
    ),
    cmd(
        c"sso_append_pai",
        w_sso_append_pai,
        &[],
        REQUEST_ROUTE | BRANCH_ROUTE | FAILURE_ROUTE,
    ),
    cmd(
        c"sso_is_rpid_user_e164",
        w_sso_is_rpid_user_e164,
        &[],
        REQUEST_ROUTE | BRANCH_ROUTE | FAILURE_ROUTE,
    ),
    #[cfg(feature = "panic-test")]
    cmd(c"sso_test_panic", w_sso_test_panic, &[], REQUEST_ROUTE),
    END_CMD,
]);

type AsyncTrampoline = unsafe extern "C" fn(
    *mut super::bindings::sip_msg,
    *mut super::bindings::async_ctx,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
    *mut c_void,
) -> c_int;

const fn acmd(name: &'static CStr, f: AsyncTrampoline, args: &[cmd_param]) -> acmd_export_t {
    let mut params = [NO_PARAM; 9];
    let mut i = 0;
    while i < args.len() {
        params[i] = args[i];
        i += 1;
    }
    let function: acmd_function = Some(f);
    acmd_export_t {
        name: cstr(name),
        function,
        params,
    }
}

/// The same names as async commands, for `async(sso_authorize("realm"), resume_route)`.
static ACMDS: Table<[acmd_export_t; 3]> = Table([
    acmd(c"sso_authorize", wa_sso_authorize, &[STR]),
    acmd(c"sso_proxy_authorize", wa_sso_proxy_authorize, &[STR]),
    acmd_export_t {
        name: null(),
        function: None,
        params: [NO_PARAM; 9],
    },
]);

type Setter = unsafe extern "C" fn(u32, *mut c_void) -> c_int;

const fn param(name: &'static CStr, kind: u32, f: Setter) -> param_export_t {
    param_export_t {
        name: cstr(name),
        type_: kind | USE_FUNC_PARAM,
        param_pointer: f as *mut c_void,
    }
}

static PARAMS: Table<[param_export_t; 41]> = Table([
    param(c"introspect_url", STR_PARAM, set_introspect_url),
    param(c"token_url", STR_PARAM, set_token_url),
    param(c"client_id", STR_PARAM, set_client_id),
    param(c"client_secret", STR_PARAM, set_client_secret),
    param(c"token_header", STR_PARAM, set_token_header),
    param(c"secret", STR_PARAM, set_secret),
    param(c"nonce_expire", INT_PARAM, set_nonce_expire),
    param(c"realm_prefix", STR_PARAM, set_realm_prefix),
    param(c"use_domain", INT_PARAM, set_use_domain),
    param(c"http_timeout", INT_PARAM, set_http_timeout),
    param(c"authz_server", STR_PARAM, set_authz_server),
    param(c"bearer_scope", STR_PARAM, set_bearer_scope),
    param(c"bearer_challenge", STR_PARAM, set_bearer_challenge),
    param(c"digest_grant_type", STR_PARAM, set_digest_grant_type),
    param(c"cache_ttl", INT_PARAM, set_cache_ttl),
    param(c"tls_ca_file", STR_PARAM, set_tls_ca_file),
    param(c"negative_cache_ttl", INT_PARAM, set_negative_cache_ttl),
    param(c"cache_slots", INT_PARAM, set_cache_slots),
    param(c"nonce_slots", INT_PARAM, set_nonce_slots),
    param(c"retransmission_slots", INT_PARAM, set_retransmission_slots),
    param(c"group_claims", STR_PARAM, set_group_claims),
    param(c"rpid_claim", STR_PARAM, set_rpid_claim),
    param(c"rpid_prefix", STR_PARAM, set_rpid_prefix),
    param(c"rpid_suffix", STR_PARAM, set_rpid_suffix),
    param(
        c"bind_register_to_token",
        INT_PARAM,
        set_bind_register_to_token,
    ),
    param(c"jwks_url", STR_PARAM, set_jwks_url),
    param(c"jwt_key_file", STR_PARAM, set_jwt_key_file),
    param(c"jwt_algorithms", STR_PARAM, set_jwt_algorithms),
    param(c"jwt_issuer", STR_PARAM, set_jwt_issuer),
    param(c"jwt_audience", STR_PARAM, set_jwt_audience),
    param(c"jwt_leeway", INT_PARAM, set_jwt_leeway),
    param(c"jwks_refresh", INT_PARAM, set_jwks_refresh),
    param(c"dns_refresh", INT_PARAM, set_dns_refresh),
    param(c"node_id", STR_PARAM, set_node_id),
    param(c"case_sensitive", INT_PARAM, set_case_sensitive),
    param(c"audience", STR_PARAM, set_audience),
    param(c"required_scope", STR_PARAM, set_required_scope),
    param(c"cachedb_url", STR_PARAM, set_cachedb_url),
    param(c"cachedb_timeout", INT_PARAM, set_cachedb_timeout),
    param(c"sso_max_connections", INT_PARAM, set_sso_max_connections),
    param_export_t {
        name: null(),
        type_: 0,
        param_pointer: std::ptr::null_mut(),
    },
]);

/// Statistics are function-backed (STAT_IS_FUNC): the values live in the module's shared
/// counters, which every worker adds to; OpenSIPS calls these to read them.
fn stat_value(stat: Stat) -> std::ffi::c_ulong {
    worker::shared().map(|s| s.stats.get(stat)).unwrap_or(0) as std::ffi::c_ulong
}

macro_rules! stat_readers {
    ($($fn_name:ident => $stat:ident),+ $(,)?) => {
        $(
            unsafe extern "C" fn $fn_name(_ctx: *mut c_void) -> std::ffi::c_ulong {
                // Reading an atomic cannot panic; no guard needed beyond that.
                stat_value(Stat::$stat)
            }
        )+
    };
}

stat_readers! {
    stat_token_accepted => TokenAccepted,
    stat_token_rejected => TokenRejected,
    stat_digest_accepted => DigestAccepted,
    stat_digest_rejected => DigestRejected,
    stat_challenges_sent => ChallengesSent,
    stat_sso_requests => SsoRequests,
    stat_sso_errors => SsoErrors,
    stat_sso_timeouts => SsoTimeouts,
    stat_cache_hits => CacheHits,
    stat_cache_misses => CacheMisses,
    stat_replays_blocked => ReplaysBlocked,
    stat_cachedb_errors => CachedbErrors,
    stat_cross_node_replays_blocked => CrossNodeReplaysBlocked,
    stat_cachedb_hits => CachedbHits,
    stat_cachedb_bad_entries => CachedbBadEntries,
    stat_dns_failures => DnsFailures,
}

type StatReader = unsafe extern "C" fn(*mut c_void) -> std::ffi::c_ulong;

const fn stat(name: &'static CStr, f: StatReader) -> stat_export_t {
    stat_export_t {
        name: cstr(name),
        flags: (STAT_IS_FUNC | STAT_NO_RESET) as u16,
        stat_pointer: f as *mut *mut stat_var,
    }
}

static STATS: Table<[stat_export_t; 17]> = Table([
    stat(c"token_accepted", stat_token_accepted),
    stat(c"token_rejected", stat_token_rejected),
    stat(c"digest_accepted", stat_digest_accepted),
    stat(c"digest_rejected", stat_digest_rejected),
    stat(c"challenges_sent", stat_challenges_sent),
    stat(c"sso_requests", stat_sso_requests),
    stat(c"sso_errors", stat_sso_errors),
    stat(c"sso_timeouts", stat_sso_timeouts),
    stat(c"cache_hits", stat_cache_hits),
    stat(c"cache_misses", stat_cache_misses),
    stat(c"replays_blocked", stat_replays_blocked),
    stat(c"cachedb_errors", stat_cachedb_errors),
    stat(
        c"cross_node_replays_blocked",
        stat_cross_node_replays_blocked,
    ),
    stat(c"cachedb_hits", stat_cachedb_hits),
    stat(c"cachedb_bad_entries", stat_cachedb_bad_entries),
    stat(c"dns_failures", stat_dns_failures),
    stat_export_t {
        name: null(),
        flags: 0,
        stat_pointer: std::ptr::null_mut(),
    },
]);

/// Pseudo-variable class number: any value not used by the core's own classes.
const PVT_SSO: c_int = 1770;

/// `$sso(name)`.
static ITEMS: Table<[pv_export_t; 2]> = Table([
    pv_export_t {
        name: _str {
            s: c"sso".as_ptr() as *mut c_char,
            len: 3,
        },
        type_: PVT_SSO,
        getf: Some(pv_get_sso),
        setf: None,
        parse_name: Some(pv_parse_sso_name),
        parse_index: None,
        init_param: None,
        iparam: 0,
    },
    pv_export_t {
        name: _str {
            s: std::ptr::null_mut(),
            len: 0,
        },
        type_: 0,
        getf: None,
        setf: None,
        parse_name: None,
        parse_index: None,
        init_param: None,
        iparam: 0,
    },
]);

/// dep_export_t ends in a flexible array; this is the same layout with its one terminator.
#[repr(C)]
pub struct Deps {
    md: [module_dependency_t; MAX_MOD_DEPS as usize],
    mpd: [modparam_dependency_t; 2],
}

const NO_DEP: module_dependency_t = module_dependency_t {
    mod_type: module_type::MOD_TYPE_NULL,
    mod_name: std::ptr::null_mut(),
    type_: 0,
};

static DEPS: Table<Deps> = Table(Deps {
    md: {
        let mut md = [NO_DEP; MAX_MOD_DEPS as usize];
        // Challenges go out through the signaling API.
        md[0] = module_dependency_t {
            mod_type: module_type::MOD_TYPE_DEFAULT,
            mod_name: c"signaling".as_ptr() as *mut c_char,
            type_: DEP_ABORT,
        };
        md
    },
    mpd: [
        // With cachedb_url set, a cachedb engine module initializes before sso_auth.
        modparam_dependency_t {
            script_param: c"cachedb_url".as_ptr() as *mut c_char,
            get_deps_f: super::bindings::sso_shim_cachedb_deps as *mut c_void,
        },
        modparam_dependency_t {
            script_param: std::ptr::null_mut(),
            get_deps_f: std::ptr::null_mut(),
        },
    ],
});

#[no_mangle]
pub static exports: Table<module_exports> = Table(module_exports {
    name: cstr(c"sso_auth"),
    type_: module_type::MOD_TYPE_DEFAULT,
    ver_info: module_exports__bindgen_ty_1 {
        version: nul_terminated_env!("SSO_OPENSIPS_FULL_VERSION"),
        compile_flags: nul_terminated_env!("SSO_OPENSIPS_COMPILE_FLAGS"),
        scm: scm_version {
            type_: nul_terminated_env!("SSO_OPENSIPS_SCM_TYPE"),
            rev: nul_terminated_env!("SSO_OPENSIPS_SCM_REV"),
        },
    },
    dlflags: 0,
    load_f: None,
    deps: &DEPS.0 as *const Deps as *const dep_export_t,
    cmds: &CMDS.0 as *const cmd_export_t,
    acmds: &ACMDS.0 as *const acmd_export_t,
    params: &PARAMS.0 as *const param_export_t,
    stats: &STATS.0 as *const stat_export_t,
    mi_cmds: null(),
    items: &ITEMS.0 as *const pv_export_t as *const c_void,
    trans: null(),
    procs: &resolver::PROCS as *const resolver::ProcTable as *const super::bindings::proc_export_t,
    preinit_f: None,
    init_f: Some(mod_init),
    response_f: None,
    destroy_f: Some(destroy),
    init_child_f: Some(child_init),
    reload_ack_f: None,
});

/// Main process, before fork: freeze and check the configuration, bind signaling.
/// Opens no connection and starts no thread.
unsafe extern "C" fn mod_init() -> c_int {
    guarded(c"mod_init", -1, report_error, || {
        install_panic_hook();
        sso_log!(
            L_INFO,
            "initializing sso_auth {} for {}",
            env!("CARGO_PKG_VERSION"),
            env!("SSO_OPENSIPS_FULL_VERSION")
        );
        let mut cfg = params::take_pending();
        let notes = cfg
            .finish(|| {
                let mut key = vec![0u8; 32];
                getrandom::getrandom(&mut key)
                    .expect("the OS has no randomness for the nonce secret");
                key
            })
            .map_err(|e| EntryError::new(-1, e.0))?;
        for note in notes {
            let level = if note.contains("plain http") {
                L_WARN
            } else {
                L_NOTICE
            };
            sso_log!(level, "{note}");
        }
        // Builds (and drops) one client to check the TLS settings now rather than per request.
        HttpSso::with_jwks_url(cfg.sso_settings(), cfg.jwks_url.as_deref())
            .map_err(|e| EntryError::new(-1, format!("SSO client settings rejected: {e:?}")))?;
        reply::bind_signaling().map_err(|e| EntryError::new(-1, e))?;
        // Binds the engine only: connections are opened per process after fork.
        cachedb::bind(&cfg).map_err(|e| EntryError::new(-1, e))?;
        // Before fork: the SSO host names' address table, and whether the resolver process
        // is needed (the core counts and forks module processes after mod_init).
        let names = resolver::map(&cfg).map_err(|e| EntryError::new(-1, e))?;
        if !names.is_empty() {
            sso_log!(
                L_INFO,
                "SSO URL host names ({}) are looked up by the \"SSO resolver\" process every {} s",
                names.join(", "),
                cfg.dns_refresh
            );
        }
        let (cache_slots, nonce_slots, retrans_slots) =
            (cfg.cache_slots, cfg.nonce_slots, cfg.retransmission_slots);
        let shared = worker::freeze(cfg).map_err(|e| EntryError::new(-1, e))?;
        sso_log!(
            L_INFO,
            "shared memory: token cache {} entries ({} KiB), replay table {} nonces ({} KiB), \
             retransmission table {} answers ({} KiB)",
            cache_slots,
            shared.tokens.bytes() / 1024,
            nonce_slots,
            shared.replay.bytes() / 1024,
            retrans_slots,
            shared.retrans.bytes() / 1024
        );
        Ok(0)
    })
}

/// OpenSIPS's rank of its main process (sr_module.h PROC_MAIN).
const PROC_MAIN: c_int = 0;

/// After fork: this process's cachedb connection (with cachedb_url); each worker builds its
/// HTTP agent on first use.
unsafe extern "C" fn child_init(rank: c_int) -> c_int {
    guarded(c"child_init", -1, report_error, || {
        if rank != PROC_MAIN {
            cachedb::connect().map_err(|e| EntryError::new(-1, e))?;
        }
        Ok(0)
    })
}

unsafe extern "C" fn destroy() {
    guarded(c"destroy", 0, report_error, || Ok(0));
}
