/*
 * doctor: the seed guide's Quick Reference Checklist and its five common errors, run against
 * reality for one connection. Each item is pass / warn / fail / unknown ("can't tell") or an
 * informational line, with the evidence that decided it and, when something must change, the
 * fix. The command line (`mailbridge doctor`) prints the report; the HTTP API can serve the
 * same list.
 *
 * doctor_run() is blocking: it forces a token refresh through its own token manager and loop
 * (unless no_refresh), probes the login, Graph and SMTP hosts with a timeout each and, with
 * admin, signs an administrator in with a device code to read the app registration (the
 * application, its redirect URIs, required permissions, consent, owners and secrets). It
 * never prints, logs or returns a token or secret: only fingerprints.
 */
#ifndef MB_DOCTOR_H
#define MB_DOCTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/util.h"

enum doctor_status { DOCTOR_PASS, DOCTOR_WARN, DOCTOR_FAIL, DOCTOR_UNKNOWN, DOCTOR_INFO };

struct doctor_item {
	const char *id;        /* stable: "config", "token", "mailbox", ... */
	const char *title;     /* one line for people */
	const char *checklist; /* the guide's checklist item or error this covers */
	enum doctor_status status;
	char *evidence; /* what was seen (never a secret) */
	char *fix;      /* NULL when there is nothing to do */
};

struct doctor_report {
	char *connection; /* the connection checked; NULL when none could be chosen */
	struct doctor_item *items;
	size_t n;
};

struct doctor_opts {
	const char *connection; /* NULL: the default connection (or the only one) */
	int64_t timeout_ms;     /* per probe; 0 = 10 s */
	/* No forced refresh: the token check uses the stored access token (what a running
	 * daemon's token manager keeps fresh). The API runs doctor this way, so that it never
	 * races the daemon's refresh-token rotation. */
	bool no_refresh;
	/* The admin's sign-in (device code) to check the app registration itself. */
	bool admin;
	const char *bootstrap_id; /* the public client it signs in with; NULL = setup's */
	FILE *prompt;             /* where the device code is shown; NULL = stderr */
	/* Without admin: what the registration items say to do ("run mailbridge doctor
	 * --admin" by default). */
	const char *admin_hint;
};

struct config;
struct store;

/* Fills out (release with doctor_report_free). Returns 0, or -1 with err set when the check
 * could not run at all (never because an item failed). */
int doctor_run(const struct config *cfg, struct store *st, const struct mb_key *key,
               const struct doctor_opts *o, struct doctor_report *out, struct mb_err *err);
void doctor_report_free(struct doctor_report *r);

/* Whether any item failed. */
bool doctor_report_failed(const struct doctor_report *r);
/* "pass", "warn", "fail", "unknown", "info" */
const char *doctor_status_name(enum doctor_status s);
/* One line per item, "PASS  title — evidence", with "fix: ..." under what needs one. */
void doctor_report_text(const struct doctor_report *r, struct mb_buf *out);
/* A JSON array of {id, title, status, evidence, fix, checklist}. */
void doctor_report_json(const struct doctor_report *r, struct mb_buf *out);

#endif
