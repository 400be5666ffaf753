/*
 * The few OpenSIPS services that exist only as C macros, or under names that differ between
 * versions, wrapped as plain functions for the Rust side.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
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
