/* Shared between the doctor_*.c files only. */
#ifndef MB_DOCTOR_INTERNAL_H
#define MB_DOCTOR_INTERNAL_H

#include <jansson.h>

#include "doctor.h"
#include "oauth/oauth.h"

#define DAY_MS (24LL * 3600 * 1000)

/* The guide's checklist items and errors, as the report names them. */
#define CL_APP      "Created app registration in Azure Portal"
#define CL_SECRET   "Added Client Secret (and copied it)"
#define CL_PERMS    "Added Mail.Send and User.Read permissions"
#define CL_CONSENT  "Granted admin consent in Azure; Added admin account as owner (Error 3)"
#define CL_OWNERS   "Part 5: Added admin account as owner (Error 3)"
#define CL_CONFIG   "Configured with Client ID and Secret"
#define CL_AUTH     "Clicked \"Authenticate with Office365\" (signed in as the sender)"
#define CL_TOKEN    "Access token was generated and saved (Error 5)"
#define CL_DEFAULT  "Set correct default connection (Errors 1 and 2)"
#define CL_MODERN   "Verified Modern Authentication is enabled in Exchange"
#define CL_MAILBOX  "Error 2: \"Not Found\""
#define CL_REACH    "Error 1: \"cURL error 28: Operation timed out\""
#define CL_REDIRECT "Part 1, Step 1.3: Redirect URI"
#define CL_UNVERIF  "Error 4: \"Application is unverified\""

/* What the admin's sign-in showed of the app registration (doctor_registration.c). */
struct doc_reg {
	bool tried;      /* --admin and a Microsoft connection */
	bool ok;         /* signed in and the applications lookup answered */
	char why[1400];  /* when !ok: why there is nothing to look at */
	char fix[600];   /* and what to do */
	json_t *app;     /* the application, NULL when none has our client id */
	char tenant[64]; /* the tenant the admin signed in to */
};

struct doc {
	const struct config *cfg;
	struct store *st;
	const struct mb_key *key;
	const struct doctor_opts *o;
	int64_t timeout_ms;
	struct doctor_report *r;
	struct oauth_conn *oc;
	const struct config_conn *cc; /* NULL for store-made connections */
	/* the loop, for the token manager */
	struct ev_loop *loop;
	struct http_client *http;
	struct oauth_tm *tm;
	/* what the token check learned */
	char *token[OAUTH_RES_COUNT]; /* clear text, wiped at the end */
	struct oauth_explain tok_ex;
	char tok_cause[512];
	char tok_fix[512];
	bool tok_failed;
	/* the servers' clocks */
	int64_t skew_s;
	bool skew_known;
	char skew_host[128];
	struct doc_reg reg;
};

struct doctor_item *doc_add(struct doc *d, const char *id, const char *title,
                            const char *checklist);
/* Sets the outcome; "NAME" in fix becomes the connection's name at the end of the run. */
void doc_set(struct doctor_item *it, enum doctor_status s, const char *fix, const char *fmt, ...)
    MB_PRINTF(4, 5);
struct doctor_item *doc_find(const struct doctor_report *r, const char *id);

/* doctor_token.c */
void doc_check_token(struct doc *d);
void doc_check_scopes(struct doc *d);
void doc_check_consent(struct doc *d);
void doc_check_account(struct doc *d);

/* doctor_probe.c */
void doc_check_mailbox(struct doc *d);
void doc_check_smtp_auth(struct doc *d);
void doc_check_reach(struct doc *d);
void doc_check_clock(struct doc *d);

/* doctor_registration.c: the admin's sign-in and what it shows (--admin) */
void doc_check_registration(struct doc *d);
void doc_check_redirect(struct doc *d);
void doc_reg_free(struct doc *d);

#endif
