/*
 * sso_auth's own declarations of the slice of the OpenSIPS module ABI it uses.
 *
 * Only what the module touches is declared; the parts of struct sip_msg it never reads are
 * opaque padding whose sizes come from the per-version file selected by SSO_ABI
 * (304 = 3.4.x, 306 = 3.6.x, 400 = 4.0.x). The layout test checks every size and offset here
 * against ../shared/opensips-abi/<version>.json.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef SSO_OPENSIPS_H
#define SSO_OPENSIPS_H

#ifndef SSO_ABI
#error "SSO_ABI must be defined (304, 306 or 400)"
#endif

/* ---- basic types ---- */
typedef struct _str {
	char *s;
	int len;
} str;

typedef unsigned long long hdr_flags_t;
typedef unsigned int modparam_t;

/* header type enum: only the values the module compares with */
enum sso_hdr_type {
	HDR_OTHER_T = 0,
	HDR_TO_T = 3,
	HDR_FROM_T = 4,
	HDR_CONTACT_T = 7,
	HDR_AUTHORIZATION_T = 14,
	HDR_EXPIRES_T = 15,
	HDR_PROXYAUTH_T = 16,
};
typedef int hdr_types_t;

#define HDR_TO_F            (1ULL << 3)
#define HDR_FROM_F          (1ULL << 4)
#define HDR_AUTHORIZATION_F (1ULL << 14)
#define HDR_PROXYAUTH_F     (1ULL << 16)
#define HDR_EOH_F           ((hdr_flags_t)-1)

/* ---- parsed message ---- */
struct hdr_field {
	hdr_types_t type;
	str name;
	str body;
	int len;                   /* from the header's start to its end, CRLF included */
	void *parsed;
	struct hdr_field *next;
	struct hdr_field *sibling; /* next header of the same type */
};

struct msg_start {
	int type; /* SIP_REQUEST / SIP_REPLY */
	int len;
	union {
		struct {
			str method;
			str uri;
			str version;
			int method_value;
		} request;
		struct {
			str version;
			str status;
			str reason;
			unsigned int statuscode;
		} reply;
	} u;
};

#define SIP_REQUEST 1
#define SIP_REPLY 2
#define METHOD_INVITE 1
#define METHOD_REGISTER 128

#include "sip_msg_layout.h"

/* The first members of struct receive_info, the same in 3.4, 3.6 and 4.0: two struct ip_addr
 * (af, len, 16 address bytes of which `len` are set), the ports and the protocol. */
struct sso_rcv_head {
	unsigned int src_af;
	unsigned int src_len;
	unsigned char src_addr[16];
	unsigned char _dst_ip[24];
	unsigned short src_port;
	unsigned short dst_port;
	int proto;
};

struct sip_msg {
	unsigned int id;
	struct msg_start first_line;
	void *via1;
	void *via2;
	struct hdr_field *headers;
	struct hdr_field *last_header;
	hdr_flags_t parsed_flag;
	struct hdr_field *h_via1;
	char _opaque_before_callid[SSO_MSG_CALLID_OFFSET - 120];
	struct hdr_field *callid;
	struct hdr_field *to;
	struct hdr_field *cseq;
	struct hdr_field *from;
	struct hdr_field *contact;
	struct hdr_field *maxforwards;
	struct hdr_field *route;
	struct hdr_field *record_route;
	struct hdr_field *path;
	struct hdr_field *content_type;
	struct hdr_field *content_length;
	struct hdr_field *authorization;
	struct hdr_field *expires;
	struct hdr_field *proxy_auth;
	char _opaque_before_unparsed[SSO_MSG_UNPARSED_OFFSET - (SSO_MSG_CALLID_OFFSET + 14 * 8)];
	char *unparsed;     /* first byte not parsed yet: the end of headers once all are */
	char _opaque_before_rcv[SSO_MSG_RCV_OFFSET - (SSO_MSG_UNPARSED_OFFSET + 8)];
	struct sso_rcv_head rcv; /* the start of struct receive_info: where the request came from */
	char _opaque_before_buf[SSO_MSG_BUF_OFFSET - (SSO_MSG_RCV_OFFSET + 56)];
	char *buf;          /* the message as received */
	unsigned int len;
	str new_uri;        /* the rewritten Request-URI, when the script changed it */
	char _opaque_before_msg_flags[SSO_MSG_MSG_FLAGS_OFFSET - (SSO_MSG_BUF_OFFSET + 32)];
	unsigned int msg_flags; /* FL_* flags, e.g. FL_TM_FAKE_REQ */
	char _opaque_tail[SSO_MSG_SIZE - (SSO_MSG_MSG_FLAGS_OFFSET + 4)];
};

/* the request tm builds for a failure route (a copy of the transaction's request) */
#define FL_TM_FAKE_REQ (1 << 18)

/* ---- module interface ---- */
typedef int (*cmd_function)(struct sip_msg *, void *, void *, void *, void *, void *, void *,
		void *, void *);
typedef int (*fixup_function)(void **param);
typedef int (*free_fixup_function)(void **param);

#define MAX_CMD_PARAMS 8
#define CMD_PARAM_INT (1 << 0)
#define CMD_PARAM_STR (1 << 1)
#define CMD_PARAM_VAR (1 << 2)
#define CMD_PARAM_OPT (1 << 4)

struct cmd_param {
	int flags;
	fixup_function fixup;
	free_fixup_function free_fixup;
};

typedef struct cmd_export_ {
	const char *name;
	cmd_function function;
	struct cmd_param params[MAX_CMD_PARAMS + 1];
	int flags; /* routes it may be called from */
} cmd_export_t;

/* ---- async commands (the async() script statement) ---- */
/* What an async command hands back to the core through the global async_status: a
 * non-negative fd to watch, or one of these. */
enum async_ret_code {
	ASYNC_NO_IO = -8,
	ASYNC_SYNC,
	ASYNC_NO_FD,
	ASYNC_CONTINUE,
	ASYNC_CHANGE_FD,
	ASYNC_DONE_CLOSE_FD,
	ASYNC_DONE_NO_IO,
	ASYNC_DONE,
};
extern int async_status;

typedef struct _async_ctx {
	void *resume_f;
#if SSO_ABI >= 400
	char *resume_f_name; /* 4.0 added it; its tm reads it whenever resume_f is set */
#endif
	void *resume_param;
	void *timeout_f;
	unsigned int timeout_s;
} async_ctx;

typedef int (*acmd_function)(struct sip_msg *, async_ctx *ctx, void *, void *, void *, void *,
		void *, void *, void *, void *);

typedef struct acmd_export_ {
	const char *name;
	acmd_function function;
	struct cmd_param params[MAX_CMD_PARAMS + 1];
} acmd_export_t;

#define REQUEST_ROUTE 1
#define FAILURE_ROUTE 2
#define ONREPLY_ROUTE 4
#define BRANCH_ROUTE 8

typedef struct param_export_ {
	const char *name;
	modparam_t type;
	void *param_pointer;
} param_export_t;

#define STR_PARAM 1
#define INT_PARAM 2
#define USE_FUNC_PARAM (1U << 31)
typedef int (*param_func_t)(modparam_t type, void *val);

typedef struct stat_var_ stat_var;
typedef unsigned long stat_val;
typedef struct stat_export_ {
	const char *name;
	unsigned short flags;
	stat_var **stat_pointer;
} stat_export_t;

#define STAT_NO_RESET 1
#define STAT_IS_FUNC 8
typedef unsigned long (*stat_function)(void *ctx);

enum module_type { MOD_TYPE_NULL = 0, MOD_TYPE_DEFAULT = 1, MOD_TYPE_SQLDB = 2, MOD_TYPE_CACHEDB = 3 };

#define MAX_MOD_DEPS 10
#define DEP_SILENT 1
#define DEP_WARN 2
#define DEP_ABORT 4

typedef struct module_dependency {
	enum module_type mod_type;
	char *mod_name;
	unsigned int type;
} module_dependency_t;

typedef struct modparam_dependency {
	char *script_param;
	void *get_deps_f;
} modparam_dependency_t;

typedef struct dep_export_ {
	module_dependency_t md[MAX_MOD_DEPS];
	modparam_dependency_t mpd[];
} dep_export_t;

/* An extra process a module asks the core to fork (start_module_procs, after mod_init):
 * the same layout in 3.4, 3.6 and 4.0. An entry with no == 0 is skipped. */
typedef void (*mod_proc)(int no);
typedef int (*mod_proc_wrapper)(void);

#define PROC_FLAG_INITCHILD    (1<<0)
#define PROC_FLAG_HAS_IPC      (1<<1)
#define PROC_FLAG_NEEDS_SCRIPT (1<<2)

typedef struct proc_export_ {
	const char *name;
	mod_proc_wrapper pre_fork_function;
	mod_proc_wrapper post_fork_function;
	mod_proc function;
	unsigned int no;
	unsigned int flags;
} proc_export_t;

struct scm_version {
	const char *type;
	const char *rev;
};

typedef int (*load_function)(void);
typedef int (*response_function)(struct sip_msg *);
typedef void (*destroy_function)(void);
typedef int (*preinit_function)(void);
typedef int (*init_function)(void);
typedef int (*child_init_function)(int rank);
typedef int (*reload_confirm_function)(void);

struct module_exports {
	const char *name;
	enum module_type type;
	struct {
		const char *version;
		const char *compile_flags;
		struct scm_version scm;
	} ver_info;
	unsigned int dlflags;
	load_function load_f;
	const dep_export_t *deps;
	const cmd_export_t *cmds;
	const acmd_export_t *acmds;
	const param_export_t *params;
	const stat_export_t *stats;
	const void *mi_cmds;
	const void *items;
	const void *trans;
	const proc_export_t *procs;
	preinit_function preinit_f;
	init_function init_f;
	response_function response_f;
	destroy_function destroy_f;
	child_init_function init_child_f;
	reload_confirm_function reload_ack_f;
};

#define DEFAULT_DLFLAGS 0

/* ---- pseudo-variables ($sso(name)) ---- */
typedef union {
	int n;
	str s;
} int_str;

#define PV_VAL_NULL 1
#define PV_VAL_STR 4
#define PV_VAL_INT 8
#define PV_TYPE_INT 16

typedef struct _pv_value {
	str rs;
	int ri;
	int flags;
} pv_value_t;

typedef struct _pv_name {
	int type;
	union {
		struct {
			int type;
			int_str name;
		} isname;
		void *dname; /* the module's own parsed name */
	} u;
} pv_name_t;

typedef struct _pv_index {
	int type;
	union {
		int ival;
		void *dval;
	} u;
} pv_index_t;

typedef struct _pv_param {
	pv_name_t pvn;
	pv_index_t pvi;
	str pvv;
#if SSO_ABI >= 306
	int pvv_flags;
#endif
} pv_param_t;

typedef int (*pv_getf_t)(struct sip_msg *, pv_param_t *, pv_value_t *);
typedef int (*pv_setf_t)(struct sip_msg *, pv_param_t *, int, pv_value_t *);

typedef struct _pv_spec {
	int type;
	pv_getf_t getf;
	pv_setf_t setf;
	pv_param_t pvp;
	void *pvc;
	void *trans;
} pv_spec_t;

typedef int (*pv_parse_name_f)(pv_spec_t *sp, const str *in);
typedef int (*pv_parse_index_f)(pv_spec_t *sp, const str *in);
typedef int (*pv_init_param_f)(pv_spec_t *sp, int param);

typedef struct _pv_export {
	str name; /* str_const since 3.6: same layout */
	int type;
	pv_getf_t getf;
	pv_setf_t setf;
	pv_parse_name_f parse_name;
	pv_parse_index_f parse_index;
	pv_init_param_f init_param;
	int iparam;
} pv_export_t;

/* ---- core services ---- */
cmd_function find_export(const char *name, int flags);

struct lump_rpl {
	str text;
	int flags;
	struct lump_rpl *next;
};
#define LUMP_RPL_HDR (1 << 1)
struct lump_rpl *add_lump_rpl(struct sip_msg *msg, char *s, int len, int flags);

struct lump;
struct lump *del_lump(struct sip_msg *msg, unsigned int offset, unsigned int len,
		hdr_types_t type);

/* signaling module API (load_sig) */
typedef int (*sig_send_reply_f)(struct sip_msg *msg, int code, const str *reason, str *tag);
typedef int (*sig_gen_totag_f)(struct sip_msg *msg, str *tag);
struct sig_binds {
	sig_send_reply_f reply;
	sig_gen_totag_f gen_totag;
};
typedef int (*load_sig_f)(struct sig_binds *sigb);

/* ---- cachedb API (cachedb/cachedb.h, cachedb_con.h, cachedb_cap.h) ----
 * Only add, get and set are called; the other members are there for the layout, which
 * differs between versions: 3.6 inserted iter_keys after sub. */
typedef struct {
	str url;
	void *data;
} cachedb_con;

typedef struct cachedb_funcs_t {
	cachedb_con *(*init)(str *url);
	void (*destroy)(cachedb_con *con);
	int (*get)(cachedb_con *con, str *attr, str *val); /* val->s in pkg memory, caller frees */
	int (*get_counter)(cachedb_con *con, str *attr, int *val);
	int (*set)(cachedb_con *con, str *attr, str *val, int expires);
	int (*remove)(cachedb_con *con, str *attr);
	int (*_remove)(cachedb_con *con, str *attr, const str *key);
	int (*add)(cachedb_con *con, str *attr, int val, int expires, int *new_val);
	int (*sub)(cachedb_con *con, str *attr, int val, int expires, int *new_val);
#if SSO_ABI >= 306
	int (*iter_keys)(cachedb_con *con, int (*kv_func)(const str *key, const str *value));
#endif
	void *raw_query;
	void *truncate;
	void *db_query_trans;
	void *db_free_trans;
	void *db_insert_trans;
	void *db_delete_trans;
	void *db_update_trans;
	void *query;
	void *update;
	void *map_get;
	void *map_set;
	void *map_remove;
	void *is_replicated;
	int capability;
} cachedb_funcs;

/* capability bits the module needs (the same values in every supported version) */
#define CACHEDB_CAP_GET (1 << 0)
#define CACHEDB_CAP_SET (1 << 1)
#define CACHEDB_CAP_ADD (1 << 3)

int cachedb_bind_mod(str *url, cachedb_funcs *funcs);

/* logging levels */
#define L_ALERT -3
#define L_CRIT -2
#define L_ERR -1
#define L_WARN 1
#define L_NOTICE 2
#define L_INFO 3
#define L_DBG 4

/* ---- the C shim (shim.c): what OpenSIPS only offers as macros or per-version names ---- */
/* Logs `len` bytes of `text` at `level` through OpenSIPS's logger with a fixed format. */
void sso_shim_log(int level, const char *func, const char *text, int len);
/* Current OpenSIPS log level of this process (for checking before formatting). */
int sso_shim_log_level(void);
/* Parses every header of the message; 0 on success. */
int sso_shim_parse_all_headers(struct sip_msg *msg);
/* Appends `len` bytes (whole header lines) after the request's last header, for relaying;
   0 on success. */
int sso_shim_append_header(struct sip_msg *msg, const char *text, int len);
/* Caps at `max` seconds the registration lifetime a REGISTER asks for (Expires header and
   Contact expires parameters, and an expires parameter for contacts with neither), where
   registrar will read it. Returns how many values it changed, or -1. */
int sso_shim_cap_register_expires(struct sip_msg *msg, unsigned int max);

/* cachedb_url: binds the engine (main process, mod_init). 0 bound; -1 no such engine loaded;
   -2 the engine lacks get/set/add. */
int sso_shim_cachedb_bind(const char *url, int len);
/* Opens this process's connection (after fork). NULL on failure. */
void *sso_shim_cachedb_connect(void);
/* The three calls; 0 on success, -1 on failure. get: 1 when the key does not exist; the value
   is copied into buf (at most cap bytes) and its full length stored in *len. */
int sso_shim_cachedb_add(void *con, const char *key, int klen, int delta, int expires,
		long long *new_val);
int sso_shim_cachedb_get(void *con, const char *key, int klen, char *buf, int cap, int *len);
int sso_shim_cachedb_set(void *con, const char *key, int klen, const char *val, int vlen,
		int expires);
/* modparam dependency of cachedb_url: any cachedb module initializes before sso_auth. */
module_dependency_t *sso_shim_cachedb_deps(const param_export_t *param);

/* The async form without an fd per request: `fd` joins this process's reactor for good
   (register_async_fd); `ready` runs each time it is readable and keeps it there by leaving
   async_status at ASYNC_CONTINUE. 0 on success. */
int sso_shim_watch_fd(int fd, int (*ready)(int fd, void *param), void *param);
/* Resumes a request that an async command suspended with ASYNC_NO_FD (its tm context),
   as the reactor would for an fd: the command's resume function, then the resume route.
   -1 when no module (tm) registered the script resume handler. */
int sso_shim_resume_suspended(void *ctx);

#endif
