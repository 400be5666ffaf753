//! Build script: finds the target OpenSIPS, takes its version, compile flags and SCM info from
//! `opensips -V` (the core refuses a module whose strings differ), selects the matching ABI,
//! generates bindings for every supported ABI (the layout test checks them all) and compiles
//! the C shim for the selected one.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (major.minor, SSO_ABI value) of every supported OpenSIPS line, oldest first.
const SUPPORTED: &[(&str, &str)] = &[("3.4", "304"), ("3.6", "306"), ("4.0", "400")];
/// Used when no OpenSIPS binary is found and OPENSIPS_VERSION is not set.
const NEWEST_KNOWN: &str = "4.0.1";

struct Target {
    /// e.g. "4.0.1"
    version: String,
    /// e.g. "opensips 4.0.1 (x86_64/linux)"
    full_version: String,
    compile_flags: String,
    scm_type: String,
    scm_rev: String,
    /// Where the facts came from, for the build log.
    source: String,
}

fn main() {
    for var in ["OPENSIPS", "OPENSIPS_VERSION", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=opensips-headers");
    println!("cargo::rustc-check-cfg=cfg(sso_abi, values(\"304\", \"306\", \"400\"))");

    let target = find_target();
    let abi = abi_of(&target.version).unwrap_or_else(|| {
        let names: Vec<&str> = SUPPORTED.iter().map(|(v, _)| *v).collect();
        panic!(
            "OpenSIPS {} is not supported by sso_auth; supported versions: {} (found via {})",
            target.version,
            names.join(", "),
            target.source
        )
    });

    println!("cargo:rustc-cfg=sso_abi=\"{abi}\"");
    println!("cargo:rustc-env=SSO_OPENSIPS_VERSION={}", target.version);
    println!(
        "cargo:rustc-env=SSO_OPENSIPS_FULL_VERSION={}",
        target.full_version
    );
    println!(
        "cargo:rustc-env=SSO_OPENSIPS_COMPILE_FLAGS={}",
        target.compile_flags
    );
    println!("cargo:rustc-env=SSO_OPENSIPS_SCM_TYPE={}", target.scm_type);
    println!("cargo:rustc-env=SSO_OPENSIPS_SCM_REV={}", target.scm_rev);
    println!("cargo:rustc-env=SSO_ABI={abi}");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let headers = Path::new("opensips-headers");
    for (_, each) in SUPPORTED {
        generate_bindings(headers, each, &out.join(format!("bindings_{each}.rs")));
    }

    let mut shim = cc::Build::new();
    shim.file(headers.join("shim.c"))
        .include(headers)
        .define("SSO_ABI", abi);
    // pkg_malloc takes the caller's file/function/line only in cores built with DBG_MALLOC.
    if target
        .compile_flags
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|f| f == "DBG_MALLOC")
    {
        shim.define("SSO_DBG_MALLOC", None);
    }
    shim.flag_if_supported("-Wall")
        .flag_if_supported("-Wformat=2")
        .compile("sso_shim");

    // Test and bench executables link the rlib, whose FFI layer names OpenSIPS core symbols
    // that only exist inside a running opensips. They never call them; let the link succeed.
    println!("cargo:rustc-link-arg-tests=-Wl,--unresolved-symbols=ignore-all");
    println!("cargo:rustc-link-arg-benches=-Wl,--unresolved-symbols=ignore-all");
}

fn abi_of(version: &str) -> Option<&'static str> {
    let mut parts = version.split('.');
    let line = format!("{}.{}", parts.next()?, parts.next()?);
    SUPPORTED
        .iter()
        .find(|(v, _)| *v == line)
        .map(|(_, abi)| *abi)
}

fn find_target() -> Target {
    if let Some(bin) = find_binary() {
        match run_dash_v(&bin) {
            Ok(t) => return t,
            Err(e) => panic!("cannot read `{} -V`: {e}", bin.display()),
        }
    }
    let (version, why) = match env::var("OPENSIPS_VERSION") {
        Ok(v) if !v.trim().is_empty() => (v.trim().to_string(), "OPENSIPS_VERSION"),
        _ => (NEWEST_KNOWN.to_string(), "default"),
    };
    println!(
        "cargo:warning=no OpenSIPS binary found (set OPENSIPS=/path/to/sbin/opensips); \
         building for OpenSIPS {version} ({why}); a core with other version or flags will refuse this module"
    );
    facts_without_binary(&version)
}

fn find_binary() -> Option<PathBuf> {
    if let Ok(p) = env::var("OPENSIPS") {
        if !p.trim().is_empty() {
            let path = PathBuf::from(p.trim());
            if !path.is_file() {
                panic!("OPENSIPS={} is not a file", path.display());
            }
            return Some(path);
        }
    }
    let path_var = env::var_os("PATH")?;
    env::split_paths(&path_var)
        .map(|dir| dir.join("opensips"))
        .find(|p| p.is_file())
}

/// Parses the three lines of `opensips -V` that the module loader compares:
/// `version: <full>`, `flags: <flags>`, `<type> revision: <rev>`.
fn run_dash_v(bin: &Path) -> Result<Target, String> {
    let out = Command::new(bin)
        .arg("-V")
        .output()
        .map_err(|e| e.to_string())?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut full_version = None;
    let mut flags = None;
    let mut scm = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("version: ") {
            full_version = Some(v.trim().to_string());
        } else if let Some(f) = line.strip_prefix("flags: ") {
            flags = Some(f.trim().to_string());
        } else if let Some((ty, rev)) = line.split_once(" revision: ") {
            if !ty.contains(' ') {
                scm = Some((ty.trim().to_string(), rev.trim().to_string()));
            }
        }
    }
    let full_version = full_version.ok_or("no `version:` line")?;
    let version = full_version
        .split_whitespace()
        .nth(1)
        .ok_or("unexpected `version:` line")?
        .to_string();
    let (scm_type, scm_rev) = scm.ok_or("no `<type> revision:` line")?;
    Ok(Target {
        version,
        full_version,
        compile_flags: flags.ok_or("no `flags:` line")?,
        scm_type,
        scm_rev,
        source: format!("{} -V", bin.display()),
    })
}

/// Without a binary, the strings come from the measured facts in ../shared/opensips-abi when
/// present; otherwise a default x86_64 build is assumed.
fn facts_without_binary(version: &str) -> Target {
    let facts = Path::new("../shared/opensips-abi").join(format!("{version}.json"));
    println!("cargo:rerun-if-changed={}", facts.display());
    let text = std::fs::read_to_string(&facts).unwrap_or_default();
    let field = |name: &str| -> Option<String> {
        let key = format!("\"{name}\": \"");
        let start = text.find(&key)? + key.len();
        let end = text[start..].find('"')?;
        Some(text[start..start + end].to_string())
    };
    Target {
        version: version.to_string(),
        full_version: field("opensips_full_version")
            .unwrap_or_else(|| format!("opensips {version} (x86_64/linux)")),
        compile_flags: field("opensips_compile_flags").unwrap_or_else(|| {
            "STATS: On, DISABLE_NAGLE, USE_MCAST, SHM_MMAP, PKG_MALLOC, Q_MALLOC, F_MALLOC, \
             HP_MALLOC, F_PARALLEL_MALLOC, DBG_MALLOC, FAST_LOCK-ADAPTIVE_WAIT"
                .to_string()
        }),
        scm_type: "unknown".to_string(),
        scm_rev: "unknown".to_string(),
        source: "no binary".to_string(),
    }
}

fn generate_bindings(headers: &Path, abi: &str, dest: &Path) {
    let bindings = bindgen::Builder::default()
        .header(headers.join("sso_opensips.h").to_string_lossy())
        .clang_arg(format!("-I{}", headers.display()))
        .clang_arg(format!("-DSSO_ABI={abi}"))
        .allowlist_type("async_ctx|acmd_export_t|acmd_function|async_ret_code|sip_msg|sso_rcv_head|hdr_field|msg_start|_str|str|sso_hdr_type|module_exports|cmd_export_t|param_export_t|stat_export_t|dep_export_t|module_dependency_t|modparam_dependency_t|sig_binds|lump_rpl|load_sig_f|param_func_t|stat_function|pv_export_t|pv_spec_t|pv_value_t|pv_param_t|pv_name_t|pv_index_t|int_str|pv_getf_t|pv_parse_name_f|cachedb_con|cachedb_funcs|proc_export_t|mod_proc|mod_proc_wrapper")
        .allowlist_function("find_export|add_lump_rpl|del_lump|sso_shim_.*")
        .allowlist_var("async_status|ASYNC_.*|CACHEDB_CAP_.*|HDR_.*|METHOD_.*|SIP_REQUEST|SIP_REPLY|CMD_PARAM_.*|REQUEST_ROUTE|FAILURE_ROUTE|ONREPLY_ROUTE|BRANCH_ROUTE|STR_PARAM|INT_PARAM|USE_FUNC_PARAM|DEP_.*|MAX_MOD_DEPS|MAX_CMD_PARAMS|LUMP_RPL_HDR|L_.*|DEFAULT_DLFLAGS|STAT_NO_RESET|STAT_IS_FUNC|MOD_TYPE_.*|PV_VAL_.*|PV_TYPE_INT|FL_TM_FAKE_REQ|PROC_FLAG_.*")
        .rustified_enum("module_type")
        .prepend_enum_name(false)
        .layout_tests(true)
        .derive_debug(false)
        .derive_default(false)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen failed for SSO_ABI={abi}: {e}"));
    bindings
        .write_to_file(dest)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", dest.display()));
}
