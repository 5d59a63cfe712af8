/*
 * setup_graph: an administrator's Microsoft Graph session, shared by `mailbridge setup
 * microsoft` (which writes the app registration) and `mailbridge doctor --admin` (which reads
 * it). The admin signs in with the device code flow and a first-party public client (the
 * bootstrap client id, configurable); the token lives in memory for the run only and is
 * never stored, logged or printed. Blocking (a command-line tool's calls).
 *
 * Also the permission names each provider needs (reference §6.2 step 0: the ids are looked
 * up by value on the resource service principals, not hard-coded) and a few small helpers for
 * Graph's JSON and OData.
 */
#ifndef MB_SETUP_GRAPH_H
#define MB_SETUP_GRAPH_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "oauth/oauth.h"
#include "util/util.h"

#define SG_GRAPH_APP_ID    "00000003-0000-0000-c000-000000000000"
#define SG_EXCHANGE_APP_ID "00000002-0000-0ff1-ce00-000000000000"

struct sg {
	struct oauth_endpoints ep;
	const char *ca_file;
	char *token;  /* the admin's access token, in memory only (wiped by sg_release) */
	char *tenant; /* the tenant id from the admin's token, else the tenant asked for */
	/* the last Graph call */
	long status; /* HTTP status, -1 when there was no answer */
	char code[128], msg[512];
	char *transport; /* why there was no answer */
};

/* Why the sign-in failed: what happened, the identity platform's words (may be empty), and
 * the cause and fix when they are known (else empty). */
struct sg_why {
	char what[400];
	char detail[800];
	char cause[400];
	char fix[400];
};

/* The device code sign-in: prints intro and Microsoft's "To sign in, ... enter the code ..."
 * message to prompt, polls until the admin is done. scope: space-separated. tenant NULL =
 * "organizations" (then s->tenant is the token's tid). Returns 0 with s->token and s->tenant
 * set, or -1 with why filled. */
int sg_sign_in(struct sg *s, const char *client_id, const char *tenant, const char *scope,
               const char *intro, FILE *prompt, struct sg_why *why);
/* One Graph call with the admin's token: returns the HTTP status (-1: no answer); *out gets
 * the parsed body of a 2xx answer that has one. On >= 400 s->code and s->msg hold Graph's
 * error. */
long sg_call(struct sg *s, const char *method, const char *path, json_t *body, json_t **out);
/* Wipes the token; frees what s holds. */
void sg_release(struct sg *s);

/* ---- permissions ---- */

struct sg_need {
	const char *value; /* "Mail.Send" */
	const char *type;  /* "Scope" (delegated) | "Role" (application) */
	bool exchange;     /* on Office 365 Exchange Online instead of Microsoft Graph */
	char id[64];       /* filled by sg_resolve */
};

#define SG_MAX_NEEDS      6
#define SG_NEED_OFFLINE   1 /* offline_access (delegated), as setup registers it */
#define SG_NEED_READWRITE 2 /* Mail.ReadWrite: large_messages = upload-session */
#define SG_NEED_SMTP      4 /* SMTP.Send on a Graph connection: large_messages = smtp */

/* What the provider needs, into out[SG_MAX_NEEDS]; returns how many. */
size_t sg_needs(enum oauth_provider p, bool app_only, unsigned flags, struct sg_need *out);
/* Looks up the resource service principal of app_id (SG_GRAPH_APP_ID or SG_EXCHANGE_APP_ID)
 * and the ids of the needs on it (those with exchange == the resource). Returns 0 (sp_out
 * filled), -1 when the Graph call failed (s->status ...), -2 when the tenant lacks the
 * service principal or a permission (why says which). */
int sg_resolve(struct sg *s, const char *app_id, bool exchange, struct sg_need *needs, size_t n,
               char *sp_out, size_t sp_len, char *why, size_t whylen);

/* ---- helpers ---- */

/* base + "?$filter=" + the percent-encoded filter + extra (already encoded); a new string. */
char *sg_filter_path(const char *base, const char *filter, const char *extra);
/* An OData string literal's content: quotes doubled; a new string. */
char *sg_odata_quote(const char *s);
/* The string member k of o, or "" */
const char *sg_jstr(json_t *o, const char *k);
/* A string claim of a JWT's payload (not verified), a new string, or NULL. */
char *sg_jwt_claim(const char *jwt, const char *claim);
/* "2026-11-27T10:00:00Z" (fractions and zones after the seconds ignored) -> ms, 0 if bad. */
int64_t sg_parse_iso(const char *s);

#endif
