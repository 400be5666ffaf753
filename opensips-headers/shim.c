/*
 * The few OpenSIPS services that exist only as C macros, or under names that differ between
 * versions, wrapped as plain functions for the Rust side.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "sso_opensips.h"

/* logger internals behind OpenSIPS's LM_* macros */
extern int *log_level;
extern int log_facility;
extern char *log_prefix;
int dp_my_pid(void);
void dprint(int log_level, int facility, const char *module, const char *func,
		char *stderr_fmt, char *syslog_fmt, char *format, ...);

#if SSO_ABI >= 306
int parse_headers_aux(struct sip_msg *msg, hdr_flags_t flags, int next, int sip_well_known_parse);
#define sso_parse_headers(m, f, n) parse_headers_aux((m), (f), (n), 1)
#else
int parse_headers(struct sip_msg *msg, hdr_flags_t flags, int next);
#define sso_parse_headers(m, f, n) parse_headers((m), (f), (n))
#endif

/* async.h: generic fds in the reactor, and tm's resume of a suspended script */
int register_async_fd(int fd, int (*f)(int fd, void *param), void *param);
extern int (*async_script_resume_f)(int fd, void *param, int was_timeout);

int sso_shim_watch_fd(int fd, int (*ready)(int fd, void *param), void *param)
{
	return register_async_fd(fd, ready, param);
}

int sso_shim_resume_suspended(void *ctx)
{
	if (!async_script_resume_f)
		return -1;
	/* -1 is ASYNC_FD_NONE: no fd of the request's own to take out of the reactor */
	return async_script_resume_f(-1, ctx, 0);
}

int sso_shim_log_level(void)
{
	return log_level ? *log_level : L_ERR;
}

/* "Nov 23 08:00:00", as the core's own prefix shows it */
static char *sso_time_text(char buf[32])
{
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	if (strftime(buf, 32, "%b %d %H:%M:%S", &tm) == 0)
		buf[0] = 0;
	return buf;
}

/* The user text is always an argument of a fixed "%.*s" format, never a format itself. */
#define SSO_LOG_AT(_lev, _txt)                                                         \
	dprint(_lev, log_facility, "sso_auth", func,                                       \
		(char *)"%s [%d] %s" _txt ":sso_auth:%s: %.*s\n",                             \
		(char *)"%s" _txt ":sso_auth:%s: %.*s\n", (char *)"%.*s\n",                   \
		sso_time_text(tbuf), dp_my_pid(), log_prefix ? log_prefix : "", func, len, text)

void sso_shim_log(int level, const char *func, const char *text, int len)
{
	char tbuf[32];

	if (!log_level || *log_level < level)
		return;
	if (!func)
		func = "";
	switch (level) {
	case L_ALERT: SSO_LOG_AT(L_ALERT, "ALERT"); break;
	case L_CRIT: SSO_LOG_AT(L_CRIT, "CRITICAL"); break;
	case L_ERR: SSO_LOG_AT(L_ERR, "ERROR"); break;
	case L_WARN: SSO_LOG_AT(L_WARN, "WARNING"); break;
	case L_NOTICE: SSO_LOG_AT(L_NOTICE, "NOTICE"); break;
	case L_INFO: SSO_LOG_AT(L_INFO, "INFO"); break;
	default: SSO_LOG_AT(L_DBG, "DBG"); break;
	}
}

int sso_shim_parse_all_headers(struct sip_msg *msg)
{
	return sso_parse_headers(msg, HDR_EOH_F, 0) < 0 ? -1 : 0;
}

/* ---- package memory: what pkg_malloc expands to in the core's build ---- */
extern void *mem_block;
#ifdef SSO_DBG_MALLOC
extern void *(*gen_pkg_malloc)(void *blk, unsigned long size, const char *file,
		const char *func, unsigned int line);
#define sso_pkg_malloc(sz) gen_pkg_malloc(mem_block, (sz), "sso_auth", __func__, __LINE__)
#else
extern void *(*gen_pkg_malloc)(void *blk, unsigned long size);
#define sso_pkg_malloc(sz) gen_pkg_malloc(mem_block, (sz))
#endif

#ifdef SSO_DBG_MALLOC
extern void (*gen_pkg_free)(void *blk, void *p, const char *file, const char *func,
		unsigned int line);
#define sso_pkg_free(p) gen_pkg_free(mem_block, (p), "sso_auth", __func__, __LINE__)
#else
extern void (*gen_pkg_free)(void *blk, void *p);
#define sso_pkg_free(p) gen_pkg_free(mem_block, (p))
#endif

/* ---- request lumps ---- */
struct lump *anchor_lump(struct sip_msg *msg, unsigned int offset, int type);
struct lump *insert_new_lump_before(struct lump *before, char *new_hdr, unsigned int len,
		int type);

int sso_shim_append_header(struct sip_msg *msg, const char *text, int len)
{
	struct lump *anchor;
	char *copy;

	if (sso_parse_headers(msg, HDR_EOH_F, 0) < 0 || !msg->unparsed || len <= 0)
		return -1;
	anchor = anchor_lump(msg, (unsigned int)(msg->unparsed - msg->buf), 0);
	if (!anchor)
		return -1;
	/* the lump owns the copy from here on and frees it with the message */
	copy = sso_pkg_malloc((unsigned long)len);
	if (!copy)
		return -1;
	memcpy(copy, text, (size_t)len);
	if (!insert_new_lump_before(anchor, copy, (unsigned int)len, 0))
		return -1; /* on failure the core has freed nothing: a small leak beats a crash */
	return 0;
}

/* ---- registration lifetime (bind_register_to_token) ----
 * The parsed forms registrar reads; identical in 3.4, 3.6 and 4.0. */
typedef struct sso_param {
	int type; /* ptype_t */
	str name;
	str body;
	int len;
	struct sso_param *next;
} sso_param_t;
#define SSO_P_EXPIRES 2

typedef struct sso_contact {
	str name;
	str uri;
	sso_param_t *instance;
	sso_param_t *q;
	sso_param_t *expires;
	sso_param_t *methods;
	sso_param_t *received;
	sso_param_t *params;
	int len;
	struct sso_contact *next;
} sso_contact_t;

typedef struct sso_contact_body {
	unsigned char star;
	sso_contact_t *contacts;
} sso_contact_body_t;

typedef struct sso_exp_body {
	str text;
	unsigned char valid;
	int val;
} sso_exp_body_t;

int parse_contact(struct hdr_field *h);
int parse_expires(struct hdr_field *h);

/* How registrar reads a contact's expires parameter: digits of any length (leading zeros
   included) are a number, saturated here at LONG_MAX; anything else makes registrar fall
   back to its default_expires, which the module cannot know: -1, "no limit". */
static long sso_expires_value(const str *s)
{
	long v = 0;
	int i;

	for (i = 0; i < s->len; i++) {
		if (s->s[i] < '0' || s->s[i] > '9')
			return -1;
		if (v > (LONG_MAX - 9) / 10)
			v = LONG_MAX;
		else
			v = v * 10 + (s->s[i] - '0');
	}
	return v;
}

static int sso_digits(unsigned int v)
{
	int n = 1;

	while (v >= 10) {
		v /= 10;
		n++;
	}
	return n;
}

/* Writes `max` over the digits of `s` in the message buffer, zero-padded to the same length
   ("3600" -> "0120", "000000000003600" -> "000000000000120"), so what registrar parses and
   what is relayed agree and nothing moves. The caller checked that the digits fit. */
static void sso_overwrite_digits(const str *s, unsigned int max)
{
	int i;

	for (i = s->len - 1; i >= 0; i--) {
		s->s[i] = (char)('0' + max % 10);
		max /= 10;
	}
}

/* A new "expires=<max>" parameter for contact `c`, in its parameter list (which OpenSIPS
   frees with the message: the parameter and its text are one allocation), made the one
   registrar reads. 0 on success. */
static int sso_set_expires_param(sso_contact_t *c, unsigned int max)
{
	sso_param_t *p, **tail;

	p = sso_pkg_malloc(sizeof(*p) + 16);
	if (!p)
		return -1;
	memset(p, 0, sizeof(*p));
	p->type = SSO_P_EXPIRES;
	p->name.s = "expires";
	p->name.len = 7;
	p->body.s = (char *)(p + 1);
	p->body.len = snprintf(p->body.s, 16, "%u", max);
	p->len = p->name.len + 1 + p->body.len;
	for (tail = &c->params; *tail; tail = &(*tail)->next)
		;
	*tail = p;
	c->expires = p;
	return 0;
}

/* Caps the expires parameter of contact `c`. Values that are not numbers (which registrar
   replaces with default_expires) and numbers above `max` are rewritten in place when `max`
   fits in the original text; otherwise the contact gets a parameter of our own (registrar
   reads the parsed parameter; the relayed text keeps its bytes). Returns 1 when changed,
   0 when already within `max`, -1 out of memory. */
static int sso_cap_param(sso_contact_t *c, unsigned int max)
{
	str *body = &c->expires->body;
	long v = sso_expires_value(body);

	if (v >= 0 && v <= (long)max)
		return 0;
	if (body->len >= sso_digits(max)) {
		sso_overwrite_digits(body, max);
		return 1;
	}
	return sso_set_expires_param(c, max) < 0 ? -1 : 1;
}

int sso_shim_cap_register_expires(struct sip_msg *msg, unsigned int max)
{
	struct hdr_field *h;
	sso_contact_body_t *cb;
	sso_contact_t *c;
	sso_exp_body_t *e;
	int changed = 0, header_expires = 0;
	long v;

	if (sso_parse_headers(msg, HDR_EOH_F, 0) < 0)
		return -1;
	for (h = msg->headers; h; h = h->next) {
		if (h->type != HDR_EXPIRES_T)
			continue;
		if (parse_expires(h) < 0 || !h->parsed)
			return -1;
		e = (sso_exp_body_t *)h->parsed;
		if (!e->valid)
			continue;
		if (h == msg->expires)
			header_expires = 1;
		if (e->val < 0 || (unsigned int)e->val > max) {
			/* registrar reads the parsed value; the text is rewritten too when the
			   digits fit, so a relayed copy says the same */
			if (e->text.len >= sso_digits(max) && sso_expires_value(&e->text) >= 0)
				sso_overwrite_digits(&e->text, max);
			e->val = (int)max;
			changed++;
		}
	}
	for (h = msg->headers; h; h = h->next) {
		if (h->type != HDR_CONTACT_T)
			continue;
		if (parse_contact(h) < 0 || !h->parsed)
			return -1;
		cb = (sso_contact_body_t *)h->parsed;
		if (cb->star)
			continue; /* "Contact: *" removes bindings; nothing to cap */
		for (c = cb->contacts; c; c = c->next) {
			if (c->expires && c->expires->body.len > 0) {
				v = sso_cap_param(c, max);
				if (v < 0)
					return -1;
				changed += (int)v;
				continue;
			}
			if (header_expires)
				continue; /* the (capped) Expires header applies */
			/* No lifetime asked: registrar would use its default. */
			if (sso_set_expires_param(c, max) < 0)
				return -1;
			changed++;
		}
	}
	return changed;
}

/* ---- cachedb (cachedb_url) ----
 * Bound once in the main process (the functions live in the engine module, mapped before
 * fork); each process opens its own connection after fork. */
static cachedb_funcs sso_cdb;
static str sso_cdb_url;

int sso_shim_cachedb_bind(const char *url, int len)
{
	char *copy;

	if (!url || len <= 0)
		return -1;
	copy = malloc((size_t)len + 1);
	if (!copy)
		return -1;
	memcpy(copy, url, (size_t)len);
	copy[len] = 0;
	sso_cdb_url.s = copy;
	sso_cdb_url.len = len;
	if (cachedb_bind_mod(&sso_cdb_url, &sso_cdb) < 0)
		return -1;
	if (!sso_cdb.init || !sso_cdb.get || !sso_cdb.set || !sso_cdb.add
			|| (sso_cdb.capability & (CACHEDB_CAP_GET | CACHEDB_CAP_SET | CACHEDB_CAP_ADD))
				!= (CACHEDB_CAP_GET | CACHEDB_CAP_SET | CACHEDB_CAP_ADD))
		return -2;
	return 0;
}

void *sso_shim_cachedb_connect(void)
{
	if (!sso_cdb.init || !sso_cdb_url.s)
		return NULL;
	return sso_cdb.init(&sso_cdb_url);
}

int sso_shim_cachedb_add(void *con, const char *key, int klen, int delta, int expires,
		long long *new_val)
{
	str k = { (char *)key, klen };
	int v = 0;

	if (!con || !sso_cdb.add || sso_cdb.add((cachedb_con *)con, &k, delta, expires, &v) < 0)
		return -1;
	*new_val = v;
	return 0;
}

int sso_shim_cachedb_get(void *con, const char *key, int klen, char *buf, int cap, int *len)
{
	str k = { (char *)key, klen };
	str v = { NULL, 0 };
	int rc;

	*len = 0;
	if (!con || !sso_cdb.get)
		return -1;
	rc = sso_cdb.get((cachedb_con *)con, &k, &v);
	if (rc == -2)
		return 1;
	if (rc < 0) {
		if (v.s)
			sso_pkg_free(v.s);
		return -1;
	}
	if (v.s && v.len > 0) {
		memcpy(buf, v.s, (size_t)(v.len < cap ? v.len : cap));
		*len = v.len;
	}
	if (v.s)
		sso_pkg_free(v.s);
	return 0;
}

int sso_shim_cachedb_set(void *con, const char *key, int klen, const char *val, int vlen,
		int expires)
{
	str k = { (char *)key, klen };
	str v = { (char *)val, vlen };

	if (!con || !sso_cdb.set)
		return -1;
	return sso_cdb.set((cachedb_con *)con, &k, &v, expires) < 0 ? -1 : 0;
}

module_dependency_t *alloc_module_dep(enum module_type mod_type, char *mod_name,
		unsigned int dep_type);

/* in the Rust part: 1 when cachedb_url names a store (an empty value does not) */
int sso_cachedb_url_is_set(void);

module_dependency_t *sso_shim_cachedb_deps(const param_export_t *param)
{
	(void)param;
	if (!sso_cachedb_url_is_set())
		return NULL;
	return alloc_module_dep(MOD_TYPE_CACHEDB, NULL, DEP_ABORT);
}
