/*
 * setup: `mailbridge setup microsoft`, the seed guide's fifty portal clicks done through
 * Microsoft Graph (reference §6). An admin signs in once with the device code flow and a
 * first-party public client; the admin's token lives in memory for the run only and is never
 * stored or printed. Every step prints one line: "created", "already there", "repaired (...)"
 * or "failed: ..." with the cause, the fix and, for 403 Authorization_RequestDenied, the
 * admin role the step needs (§6.1). Re-running finds the app by its display name and repairs
 * only what is missing.
 *
 * setup_microsoft() covers the admin sign-in through writing the connection; the command line
 * then signs the sender in and sends the test mail with the ordinary commands, and prints the
 * PowerShell of what Graph cannot do (setup_microsoft_powershell).
 */
#ifndef MB_SETUP_H
#define MB_SETUP_H

#include <stdbool.h>
#include <stdio.h>

#include "oauth/oauth.h"
#include "util/util.h"

/* The Microsoft Graph Command Line Tools public client (reference §6.1). */
#define SETUP_BOOTSTRAP_CLIENT_ID "14d82eec-204b-4c2f-b7e8-296a70dab67e"

struct setup_opts {
	const char *name;         /* connection name; NULL = "microsoft" */
	const char *sender;       /* NULL = the admin's own address */
	const char *tenant;       /* NULL = "organizations" for the admin, then the token's tid */
	const char *provider;     /* microsoft-graph (default) | microsoft-smtp */
	bool app_only;            /* application permissions instead of delegated */
	const char *bootstrap_id; /* NULL = SETUP_BOOTSTRAP_CLIENT_ID */
	const char *display_name; /* NULL = "mailbridge {sender}" */
	const char *cloud;        /* NULL = global */
	const char *login_url;    /* host overrides (tests, national clouds); NULL = none */
	const char *graph_url;
	const char *smtp_url;
	const char *ca_file;
};

struct setup_result {
	char *conn;   /* the connection written */
	char *sender; /* the sender it sends as */
	char *tenant; /* the tenant id (or what was given) */
	char *client_id;
	char *sp_id; /* the app's service principal object id */
	enum oauth_provider provider;
	bool app_only;
	int failed; /* steps that failed */
};

struct config;
struct store;

/* Steps 1-9 (admin sign-in ... connection written). Returns 0 when the connection was
 * written (r filled; some later steps may still have failed: r->failed), -1 when setup could
 * not go on (the reason was printed). */
int setup_microsoft(const struct config *cfg, struct store *st, const struct mb_key *key,
                    const struct setup_opts *o, struct setup_result *r, FILE *out);
void setup_result_free(struct setup_result *r);

/* What Graph cannot do, as the exact PowerShell with the real ids (reference §4.5, §7).
 * Prints nothing but a line saying so when nothing is needed. */
void setup_microsoft_powershell(const struct setup_result *r, FILE *out);

#endif
