//! Checks the module's own OpenSIPS declarations against facts measured on real OpenSIPS
//! builds (`../shared/opensips-abi/<version>.json`), for every supported ABI, not only the
//! one being built. A missing facts file is reported and skipped, never silently passed.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;

use serde_json::Value;

/// Records `offset_of!` of several fields of one struct under "offsetof.<prefix>.<name>".
macro_rules! offsets {
    ($put:ident, $ty:ty, $prefix:literal, $($field:ident => $name:literal),+ $(,)?) => {
        $($put(concat!("offsetof.", $prefix, ".", $name), offset_of!($ty, $field) as i64);)+
    };
}

/// Records constants under "constants.<NAME>".
macro_rules! constants {
    ($put:ident, $m:ident, $($c:ident),+ $(,)?) => {
        $($put(concat!("constants.", stringify!($c)), $m::$c as i64);)+
    };
}

/// Sizes, offsets and constants the module relies on, computed from one bindings module.
macro_rules! facts_of {
    ($m:path) => {{
        use $m as b;
        let mut f: BTreeMap<String, i64> = BTreeMap::new();
        let mut put = |k: &str, v: i64| {
            f.insert(k.to_string(), v);
        };
        put("sizeof.str", size_of::<b::_str>() as i64);
        put("sizeof.struct sip_msg", size_of::<b::sip_msg>() as i64);
        put("sizeof.struct msg_start", size_of::<b::msg_start>() as i64);
        put("sizeof.struct hdr_field", size_of::<b::hdr_field>() as i64);
        put("sizeof.struct module_exports", size_of::<b::module_exports>() as i64);
        put("sizeof.cmd_export_t", size_of::<b::cmd_export_t>() as i64);
        put("sizeof.struct cmd_param", size_of::<b::cmd_param>() as i64);
        put("sizeof.param_export_t", size_of::<b::param_export_t>() as i64);
        put("sizeof.stat_export_t", size_of::<b::stat_export_t>() as i64);
        put("sizeof.dep_export_t", size_of::<b::dep_export_t>() as i64);
        put("sizeof.struct sig_binds", size_of::<b::sig_binds>() as i64);
        put("sizeof.struct lump_rpl", size_of::<b::lump_rpl>() as i64);
        put("sizeof.hdr_flags_t", size_of::<b::hdr_flags_t>() as i64);
        put("sizeof.modparam_t", size_of::<b::modparam_t>() as i64);
        put("sizeof.pv_export_t", size_of::<b::pv_export_t>() as i64);
        put("sizeof.pv_spec_t", size_of::<b::pv_spec_t>() as i64);
        put("sizeof.pv_value_t", size_of::<b::pv_value_t>() as i64);
        put("sizeof.pv_param_t", size_of::<b::pv_param_t>() as i64);
        put("sizeof.int_str", size_of::<b::int_str>() as i64);

        put("offsetof.str.s", offset_of!(b::_str, s) as i64);
        put("offsetof.str.len", offset_of!(b::_str, len) as i64);
        offsets!(put, b::sip_msg, "struct sip_msg", id => "id", first_line => "first_line", via1 => "via1", via2 => "via2", headers => "headers",
            last_header => "last_header", parsed_flag => "parsed_flag", h_via1 => "h_via1", callid => "callid",
            to => "to", cseq => "cseq", from => "from", contact => "contact", maxforwards => "maxforwards",
            route => "route", authorization => "authorization", expires => "expires", proxy_auth => "proxy_auth",
            unparsed => "unparsed", rcv => "rcv", buf => "buf", len => "len", new_uri => "new_uri",
            msg_flags => "msg_flags");
        // The start of struct receive_info the module reads (sso_rcv_head): not in the
        // measured facts files, checked by the header probe.
        let rcv_af = offset_of!(b::sso_rcv_head, src_af) as i64;
        put("offsetof.struct receive_info.src_ip", rcv_af);
        put("offsetof.struct receive_info.src_port", offset_of!(b::sso_rcv_head, src_port) as i64);
        put("offsetof.struct receive_info.proto", offset_of!(b::sso_rcv_head, proto) as i64);
        put("offsetof.struct ip_addr.len", offset_of!(b::sso_rcv_head, src_len) as i64 - rcv_af);
        put("offsetof.struct ip_addr.u", offset_of!(b::sso_rcv_head, src_addr) as i64 - rcv_af);
        let u = offset_of!(b::msg_start, u) as i64;
        put("offsetof.struct msg_start.type", offset_of!(b::msg_start, type_) as i64);
        put("offsetof.struct msg_start.len", offset_of!(b::msg_start, len) as i64);
        put("offsetof.struct msg_start.u.request.method", u + offset_of!(b::msg_start__bindgen_ty_1__bindgen_ty_1, method) as i64);
        put("offsetof.struct msg_start.u.request.uri", u + offset_of!(b::msg_start__bindgen_ty_1__bindgen_ty_1, uri) as i64);
        put("offsetof.struct msg_start.u.request.version", u + offset_of!(b::msg_start__bindgen_ty_1__bindgen_ty_1, version) as i64);
        put("offsetof.struct msg_start.u.request.method_value", u + offset_of!(b::msg_start__bindgen_ty_1__bindgen_ty_1, method_value) as i64);
        put("offsetof.struct msg_start.u.reply.statuscode", u + offset_of!(b::msg_start__bindgen_ty_1__bindgen_ty_2, statuscode) as i64);
        offsets!(put, b::hdr_field, "struct hdr_field", type_ => "type", name => "name", body => "body", len => "len", parsed => "parsed", next => "next", sibling => "sibling");
        offsets!(put, b::module_exports, "struct module_exports", name => "name", type_ => "type", dlflags => "dlflags", load_f => "load_f", deps => "deps", cmds => "cmds",
            acmds => "acmds", params => "params", stats => "stats", mi_cmds => "mi_cmds", items => "items",
            trans => "trans", procs => "procs", preinit_f => "preinit_f", init_f => "init_f",
            response_f => "response_f", destroy_f => "destroy_f", init_child_f => "init_child_f",
            reload_ack_f => "reload_ack_f");
        let v = offset_of!(b::module_exports, ver_info) as i64;
        put("offsetof.struct module_exports.ver_info.version", v + offset_of!(b::module_exports__bindgen_ty_1, version) as i64);
        put("offsetof.struct module_exports.ver_info.compile_flags", v + offset_of!(b::module_exports__bindgen_ty_1, compile_flags) as i64);
        let scm = v + offset_of!(b::module_exports__bindgen_ty_1, scm) as i64;
        put("offsetof.struct module_exports.ver_info.scm.type", scm + offset_of!(b::scm_version, type_) as i64);
        put("offsetof.struct module_exports.ver_info.scm.rev", scm + offset_of!(b::scm_version, rev) as i64);
        put("offsetof.cmd_export_t.name", offset_of!(b::cmd_export_t, name) as i64);
        put("offsetof.cmd_export_t.function", offset_of!(b::cmd_export_t, function) as i64);
        put("offsetof.cmd_export_t.params", offset_of!(b::cmd_export_t, params) as i64);
        put("offsetof.cmd_export_t.flags", offset_of!(b::cmd_export_t, flags) as i64);
        put("offsetof.struct cmd_param.flags", offset_of!(b::cmd_param, flags) as i64);
        put("offsetof.struct cmd_param.fixup", offset_of!(b::cmd_param, fixup) as i64);
        put("offsetof.struct cmd_param.free_fixup", offset_of!(b::cmd_param, free_fixup) as i64);
        put("offsetof.param_export_t.name", offset_of!(b::param_export_t, name) as i64);
        put("offsetof.param_export_t.type", offset_of!(b::param_export_t, type_) as i64);
        put("offsetof.param_export_t.param_pointer", offset_of!(b::param_export_t, param_pointer) as i64);
        put("offsetof.stat_export_t.name", offset_of!(b::stat_export_t, name) as i64);
        put("offsetof.stat_export_t.flags", offset_of!(b::stat_export_t, flags) as i64);
        put("offsetof.stat_export_t.stat_pointer", offset_of!(b::stat_export_t, stat_pointer) as i64);
        put("offsetof.dep_export_t.md", offset_of!(b::dep_export_t, md) as i64);
        put("offsetof.dep_export_t.mpd", offset_of!(b::dep_export_t, mpd) as i64);
        put("offsetof.struct sig_binds.reply", offset_of!(b::sig_binds, reply) as i64);
        put("sizeof.acmd_export_t", size_of::<b::acmd_export_t>() as i64);
        put("offsetof.acmd_export_t.name", offset_of!(b::acmd_export_t, name) as i64);
        put("offsetof.acmd_export_t.function", offset_of!(b::acmd_export_t, function) as i64);
        put("offsetof.acmd_export_t.params", offset_of!(b::acmd_export_t, params) as i64);
        put("sizeof.async_ctx", size_of::<b::async_ctx>() as i64);
        put("offsetof.async_ctx.resume_f", offset_of!(b::async_ctx, resume_f) as i64);
        put("offsetof.async_ctx.resume_param", offset_of!(b::async_ctx, resume_param) as i64);
        put("offsetof.async_ctx.timeout_f", offset_of!(b::async_ctx, timeout_f) as i64);
        put("offsetof.async_ctx.timeout_s", offset_of!(b::async_ctx, timeout_s) as i64);

        constants!(put, b, DEFAULT_DLFLAGS, STR_PARAM, INT_PARAM, USE_FUNC_PARAM, CMD_PARAM_INT, CMD_PARAM_STR, CMD_PARAM_VAR,
            CMD_PARAM_OPT, REQUEST_ROUTE, FAILURE_ROUTE, ONREPLY_ROUTE, BRANCH_ROUTE, SIP_REQUEST, SIP_REPLY,
            METHOD_REGISTER, METHOD_INVITE, HDR_AUTHORIZATION_T, HDR_PROXYAUTH_T, HDR_TO_T, HDR_FROM_T, HDR_OTHER_T,
            HDR_TO_F, HDR_FROM_F, HDR_AUTHORIZATION_F, HDR_PROXYAUTH_F, LUMP_RPL_HDR, L_ALERT, L_CRIT, L_ERR,
            L_WARN, L_NOTICE, L_INFO, L_DBG, STAT_NO_RESET, STAT_IS_FUNC, DEP_SILENT, DEP_WARN, DEP_ABORT,
            PV_VAL_NULL, PV_VAL_STR, PV_VAL_INT, PV_TYPE_INT, ASYNC_NO_IO, ASYNC_SYNC, ASYNC_NO_FD,
            ASYNC_CONTINUE, ASYNC_CHANGE_FD, ASYNC_DONE_CLOSE_FD, ASYNC_DONE_NO_IO, ASYNC_DONE);
        put("sizeof.proc_export_t", size_of::<b::proc_export_t>() as i64);
        offsets!(put, b::proc_export_t, "proc_export_t", name => "name", pre_fork_function => "pre_fork_function",
            post_fork_function => "post_fork_function", function => "function", no => "no", flags => "flags");
        constants!(put, b, PROC_FLAG_INITCHILD, PROC_FLAG_HAS_IPC, PROC_FLAG_NEEDS_SCRIPT);
        put("sizeof.cachedb_funcs", size_of::<b::cachedb_funcs>() as i64);
        put("sizeof.cachedb_con", size_of::<b::cachedb_con>() as i64);
        offsets!(put, b::cachedb_con, "cachedb_con", url => "url", data => "data");
        offsets!(put, b::cachedb_funcs, "cachedb_funcs", init => "init", destroy => "destroy", get => "get",
            get_counter => "get_counter", set => "set", remove => "remove", _remove => "_remove", add => "add",
            sub => "sub", raw_query => "raw_query", truncate => "truncate", is_replicated => "is_replicated",
            capability => "capability");
        constants!(put, b, CACHEDB_CAP_GET, CACHEDB_CAP_SET, CACHEDB_CAP_ADD);
        put("constants.MOD_TYPE_CACHEDB", b::module_type::MOD_TYPE_CACHEDB as i64);
        put("constants.MOD_TYPE_DEFAULT", b::module_type::MOD_TYPE_DEFAULT as i64);
        put("constants.MOD_TYPE_NULL", b::module_type::MOD_TYPE_NULL as i64);
        f
    }};
}

fn facts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/opensips-abi")
}

/// Facts files of the given major.minor line (e.g. "3.6" -> 3.6.8.json).
fn facts_files(line: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(facts_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{line}.")) && n.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Compares every fact the module computes with the measured one; returns mismatches and
/// how many values were compared.
fn compare(ours: &BTreeMap<String, i64>, file: &PathBuf) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(file).expect("facts file readable");
    let json: Value = serde_json::from_str(&text).expect("facts file is JSON");
    let mut bad = Vec::new();
    let mut compared = 0;
    for (key, value) in ours {
        let (section, name) = key.split_once('.').unwrap();
        let Some(measured) = json
            .get(section)
            .and_then(|s| s.get(name))
            .and_then(Value::as_i64)
        else {
            // The cachedb facts are not in the shared facts files (yet): they are checked by
            // `cachedb_layout_*` below, and by the header probe where a version is built.
            if is_cachedb_fact(key) {
                continue;
            }
            // dep_export_t.md / .mpd are not in the measured set; everything else must be.
            if !matches!(
                name,
                "dep_export_t.md"
                    | "dep_export_t.mpd"
                    | "struct msg_start.type"
                    | "struct msg_start.len"
            ) && !PROBE_ONLY.iter().any(|p| name.starts_with(p))
            {
                bad.push(format!("{key}: not in {}", file.display()));
            }
            continue;
        };
        compared += 1;
        if measured != *value {
            bad.push(format!("{key}: ours {value}, measured {measured}"));
        }
    }
    (bad, compared)
}

/// Facts the measured json files do not hold (added after they were measured): checked
/// against the real headers by the probe, which `make test` always has.
const PROBE_ONLY: &[&str] = &[
    "async_ctx",
    "acmd_export_t.",
    "ASYNC_",
    "struct receive_info.",
    "struct ip_addr.",
    "proc_export_t",
    "PROC_FLAG_",
];

/// Real headers the probe includes: together they declare every struct and constant the
/// module's own declarations mirror.
const PROBE_HEADERS: &[&str] = &[
    "sr_module.h",
    "sr_module_deps.h",
    "cmds.h",
    "route.h",
    "dprint.h",
    "ip_addr.h",
    "statistics.h",
    "pvar.h",
    "usr_avp.h",
    "data_lump.h",
    "data_lump_rpl.h",
    "async.h",
    "cachedb/cachedb.h",
    "mi/mi.h",
    "parser/msg_parser.h",
    "parser/parse_to.h",
    "parser/hf.h",
    "modules/signaling/signaling.h",
];

/// Builds of OpenSIPS from source made by `tools/build-opensips.sh` (one folder per version,
/// with `include/` and `defs.txt`), for the given major.minor line.
fn probe_builds(line: &str) -> Vec<PathBuf> {
    let cache = std::env::var_os("OPENSIPS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/opensips"));
    let mut out: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{line}.")))
                        && p.join("include/sr_module.h").is_file()
                        && p.join("defs.txt").is_file()
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// C expression that measures one fact key ("sizeof.X", "offsetof.T.a.b", "constants.N").
fn c_expression(key: &str) -> String {
    let (section, name) = key.split_once('.').unwrap();
    match section {
        "sizeof" => format!("(long long)sizeof({name})"),
        "offsetof" => {
            // The type is everything before the first '.' after an optional "struct " prefix.
            let (prefix, rest) = match name.strip_prefix("struct ") {
                Some(r) => ("struct ", r),
                None => ("", name),
            };
            let (ty, member) = rest.split_once('.').unwrap();
            format!("(long long)offsetof({prefix}{ty}, {member})")
        }
        "constants" => format!("(long long)({name})"),
        other => panic!("unknown fact section {other}"),
    }
}

/// Compiles a probe against a real OpenSIPS build's headers with its -D flags, runs it and
/// returns what it measured for every key of `ours`.
fn probe(build: &std::path::Path, ours: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let work = std::env::temp_dir().join(format!(
        "sso-abi-probe-{}-{}",
        std::process::id(),
        build.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&work).unwrap();
    let mut c = String::from("#include <stddef.h>\n#include <stdio.h>\n");
    for h in PROBE_HEADERS {
        c.push_str(&format!("#include \"{h}\"\n"));
    }
    c.push_str("int main(void) {\n");
    for key in ours.keys() {
        c.push_str(&format!(
            "    printf(\"%s=%lld\\n\", \"{key}\", {});\n",
            c_expression(key)
        ));
    }
    c.push_str("    return 0;\n}\n");
    let src = work.join("probe.c");
    let exe = work.join("probe");
    std::fs::write(&src, c).unwrap();
    let defs = std::fs::read_to_string(build.join("defs.txt")).unwrap();
    let include = build.join("include");
    let out = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(defs.split_whitespace())
        .arg(format!("-I{}", include.display()))
        .arg("-w")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("a C compiler (cc) for the layout probe");
    assert!(
        out.status.success(),
        "layout probe does not compile against {} (a field or constant the module declares is \
         not in the real headers):\n{}",
        include.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::process::Command::new(&exe).output().unwrap();
    assert!(run.status.success(), "layout probe failed to run");
    let _ = std::fs::remove_dir_all(&work);
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.rsplit_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

/// The stronger check: the module's declarations against a probe compiled with the real
/// headers of each version built from source. Skipped loudly when none is built.
fn check_with_probe(line: &str, ours: &BTreeMap<String, i64>) {
    let builds = probe_builds(line);
    if builds.is_empty() {
        println!(
            "SKIPPED header probe for OpenSIPS {line}: no build from source \
             (run `make opensips`); the measured facts files remain the check"
        );
        return;
    }
    for build in builds {
        let measured = probe(&build, ours);
        let bad: Vec<String> = ours
            .iter()
            .filter(|(k, v)| measured.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: ours {v}, real headers {:?}", measured.get(k)))
            .collect();
        assert!(
            bad.is_empty(),
            "ABI drift against the headers of {}:\n{}",
            build.display(),
            bad.join("\n")
        );
        println!(
            "layout OK against a probe compiled with {} ({} values)",
            build.join("include").display(),
            measured.len()
        );
    }
}

fn is_cachedb_fact(key: &str) -> bool {
    key.contains("cachedb_") || key.contains("CACHEDB_CAP_") || key.ends_with("MOD_TYPE_CACHEDB")
}

/// `struct cachedb_funcs` / `cachedb_con` facts measured with a probe compiled against each
/// release's own headers (`cachedb/cachedb.h`, with the `-D` flags of its build): 3.6 inserted
/// `iter_keys` after `sub`, so everything from `raw_query` on moves by 8 bytes.
const CACHEDB_FACTS: &[(&str, &[(&str, i64)])] = &[
    (
        "3.4",
        &[
            ("sizeof.cachedb_funcs", 184),
            ("offsetof.cachedb_funcs.raw_query", 72),
            ("offsetof.cachedb_funcs.truncate", 80),
            ("offsetof.cachedb_funcs.is_replicated", 168),
            ("offsetof.cachedb_funcs.capability", 176),
        ],
    ),
    (
        "3.6",
        &[
            ("sizeof.cachedb_funcs", 192),
            ("offsetof.cachedb_funcs.raw_query", 80),
            ("offsetof.cachedb_funcs.truncate", 88),
            ("offsetof.cachedb_funcs.is_replicated", 176),
            ("offsetof.cachedb_funcs.capability", 184),
        ],
    ),
    (
        "4.0",
        &[
            ("sizeof.cachedb_funcs", 192),
            ("offsetof.cachedb_funcs.raw_query", 80),
            ("offsetof.cachedb_funcs.truncate", 88),
            ("offsetof.cachedb_funcs.is_replicated", 176),
            ("offsetof.cachedb_funcs.capability", 184),
        ],
    ),
];

/// Facts every supported version shares (the members before the 3.6 insertion, the
/// connection, the capability bits and the module type).
const CACHEDB_COMMON: &[(&str, i64)] = &[
    ("sizeof.cachedb_con", 24),
    ("offsetof.cachedb_con.url", 0),
    ("offsetof.cachedb_con.data", 16),
    ("offsetof.cachedb_funcs.init", 0),
    ("offsetof.cachedb_funcs.destroy", 8),
    ("offsetof.cachedb_funcs.get", 16),
    ("offsetof.cachedb_funcs.get_counter", 24),
    ("offsetof.cachedb_funcs.set", 32),
    ("offsetof.cachedb_funcs.remove", 40),
    ("offsetof.cachedb_funcs._remove", 48),
    ("offsetof.cachedb_funcs.add", 56),
    ("offsetof.cachedb_funcs.sub", 64),
    ("constants.CACHEDB_CAP_GET", 1),
    ("constants.CACHEDB_CAP_SET", 2),
    ("constants.CACHEDB_CAP_ADD", 8),
    ("constants.MOD_TYPE_CACHEDB", 3),
];

fn check_cachedb(line: &str, ours: &BTreeMap<String, i64>) {
    let (_, specific) = CACHEDB_FACTS
        .iter()
        .find(|(l, _)| *l == line)
        .expect("cachedb facts for every supported line");
    let mut checked = 0;
    for (key, want) in CACHEDB_COMMON.iter().chain(specific.iter()) {
        assert_eq!(ours.get(*key), Some(want), "OpenSIPS {line}: {key}");
        checked += 1;
    }
    let ours_count = ours.keys().filter(|k| is_cachedb_fact(k)).count();
    assert_eq!(
        checked, ours_count,
        "every cachedb fact the module computes is checked"
    );
}

#[test]
fn cachedb_layout_3_4() {
    check_cachedb("3.4", &facts_of!(super::bindings::all::abi_304));
}

#[test]
fn cachedb_layout_3_6() {
    check_cachedb("3.6", &facts_of!(super::bindings::all::abi_306));
}

#[test]
fn cachedb_layout_4_0() {
    check_cachedb("4.0", &facts_of!(super::bindings::all::abi_400));
}

fn check(line: &str, ours: BTreeMap<String, i64>) {
    check_with_probe(line, &ours);
    let files = facts_files(line);
    if files.is_empty() {
        println!(
            "SKIPPED layout check for OpenSIPS {line}: no {line}.*.json in {}",
            facts_dir().display()
        );
        return;
    }
    for file in files {
        let (bad, compared) = compare(&ours, &file);
        assert!(
            bad.is_empty(),
            "ABI drift against {}:\n{}",
            file.display(),
            bad.join("\n")
        );
        assert!(compared > 100, "only {compared} values compared");
        println!("layout OK against {} ({compared} values)", file.display());
    }
}

#[test]
fn layout_matches_opensips_3_4() {
    check("3.4", facts_of!(super::bindings::all::abi_304));
}

#[test]
fn layout_matches_opensips_3_6() {
    check("3.6", facts_of!(super::bindings::all::abi_306));
}

#[test]
fn layout_matches_opensips_4_0() {
    check("4.0", facts_of!(super::bindings::all::abi_400));
}

#[test]
fn async_ctx_grew_in_4_0() {
    // 4.0 inserted resume_f_name after resume_f; its tm dereferences it.
    let a = facts_of!(super::bindings::all::abi_306);
    let b = facts_of!(super::bindings::all::abi_400);
    assert_eq!(a["sizeof.async_ctx"], 32);
    assert_eq!(b["sizeof.async_ctx"], 40);
    assert_eq!(b["offsetof.async_ctx.resume_param"], 16);
}

#[test]
fn proc_export_is_the_same_everywhere() {
    // The resolver process entry: one table serves every version.
    for f in [
        facts_of!(super::bindings::all::abi_304),
        facts_of!(super::bindings::all::abi_306),
        facts_of!(super::bindings::all::abi_400),
    ] {
        assert_eq!(f["sizeof.proc_export_t"], 40);
        assert_eq!(f["offsetof.proc_export_t.no"], 32);
        assert_eq!(f["offsetof.proc_export_t.flags"], 36);
    }
}

#[test]
fn the_36_and_40_layouts_really_differ() {
    let a = facts_of!(super::bindings::all::abi_306);
    let b = facts_of!(super::bindings::all::abi_400);
    assert_ne!(
        a["offsetof.struct sip_msg.buf"],
        b["offsetof.struct sip_msg.buf"]
    );
}
