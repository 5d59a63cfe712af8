/*
 * oauth: sign-in to the Microsoft identity platform v2.0 and the token manager.
 *
 * Pure parts (this header's first half): clouds and endpoints, scopes per provider, PKCE,
 * the token-response and error parsers, and the table that turns every AADSTS code and OAuth
 * error string into one line of cause and one line of fix. They do no I/O and are unit-tested
 * and fuzzed.
 *
 * The flows and the token manager (second half) run on the loop through the http module and
 * keep tokens in the store, sealed with the store key. No function here logs, prints or
 * returns a token or secret: only fingerprints.
 */
#ifndef MB_OAUTH_H
#define MB_OAUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/util.h"

/* ---- connections' vocabulary ---- */

enum oauth_provider { OAUTH_PROVIDER_GRAPH, OAUTH_PROVIDER_MSSMTP, OAUTH_PROVIDER_SMTP };
enum oauth_auth { OAUTH_AUTH_DELEGATED, OAUTH_AUTH_APP_ONLY };
/* A token is per resource: Microsoft Graph, or Exchange Online for SMTP. */
enum oauth_resource { OAUTH_RES_GRAPH, OAUTH_RES_OUTLOOK, OAUTH_RES_COUNT };

int oauth_provider_parse(const char *s, enum oauth_provider *out);
const char *oauth_provider_name(enum oauth_provider p);
int oauth_auth_parse(const char *s, enum oauth_auth *out);
const char *oauth_auth_name(enum oauth_auth a);
const char *oauth_resource_name(enum oauth_resource r); /* "graph", "outlook" */

/* ---- clouds and endpoints ---- */

struct oauth_endpoints {
	char login[256];            /* "https://login.microsoftonline.com" (no trailing /) */
	char graph[256];            /* "https://graph.microsoft.com" */
	char smtp[256];             /* "smtp://smtp.office365.com:587" */
	char graph_resource[128];   /* scope prefix: "https://graph.microsoft.com" */
	char outlook_resource[128]; /* delegated SMTP scope prefix: "https://outlook.office.com" */
	char outlook_app[128]; /* app-only SMTP .default prefix: "https://outlook.office365.com" */
};

/* cloud: global | usgov | usgov-dod | china. The *_url overrides (NULL or "" = none) replace
 * hosts but never the resource identifiers used in scopes. http:// is accepted only for
 * loopback hosts (127.0.0.0/8, ::1, localhost). */
int oauth_endpoints_resolve(const char *cloud, const char *login_url, const char *graph_url,
                            const char *smtp_url, struct oauth_endpoints *out, struct mb_err *err);

/* Appends "{login}/{tenant}/oauth2/v2.0/{what}", what = authorize | token | devicecode; bytes
 * of tenant outside [A-Za-z0-9.-_~] are percent-encoded. */
void oauth_endpoint_url(const struct oauth_endpoints *e, const char *tenant, const char *what,
                        struct mb_buf *out);

/* ---- scopes ---- */

/* What /authorize asks consent for (may span resources), space-separated, fully qualified:
 * offline_access + Graph Mail.Send + User.Read (+ Mail.ReadWrite when upload_sessions)
 * (+ Outlook SMTP.Send for microsoft-smtp). openid and profile are asked too, so the id_token
 * names the account. The scope functions append to out; provider smtp appends nothing. */
void oauth_scopes_authorize(const struct oauth_endpoints *e, enum oauth_provider p,
                            bool upload_sessions, struct mb_buf *out);
/* What one /token request asks for: one resource only (plus offline_access when delegated).
 * App-only: "{resource}/.default". */
void oauth_scopes_token(const struct oauth_endpoints *e, enum oauth_provider p, enum oauth_auth a,
                        enum oauth_resource r, bool upload_sessions, struct mb_buf *out);
/* The resources a provider needs tokens for. */
bool oauth_provider_needs(enum oauth_provider p, enum oauth_resource r);

/* ---- PKCE (RFC 7636, S256) ---- */

#define OAUTH_VERIFIER_LEN 43
/* A new verifier from 32 random bytes, base64url without padding. */
void oauth_pkce_verifier(char out[OAUTH_VERIFIER_LEN + 1]);
/* BASE64URL-NOPAD(SHA256(verifier)); out must hold 44 bytes. */
void oauth_pkce_challenge(const char *verifier, char out[44]);
/* Appends the base64url without padding of n bytes (random state values and the like). */
void oauth_base64url(const void *data, size_t n, struct mb_buf *out);

/* ---- parsers ---- */

struct oauth_token_resp {
	char *access_token;  /* secret */
	char *refresh_token; /* secret; NULL when none was returned */
	char *id_token;      /* NULL unless openid */
	char *scope;         /* as returned; NULL if absent */
	char *token_type;
	int64_t expires_in; /* seconds */
	int64_t ext_expires_in;
	char *account; /* preferred_username (or upn, email) from the id_token, if any */
};

struct oauth_error {
	char error[64];        /* the OAuth error string: branch on this */
	char description[512]; /* error_description, first line only */
	long codes[8];         /* error_codes (AADSTS numbers) */
	int ncodes;
	char trace_id[64];
	char correlation_id[64];
	int http_status;
};

/* Parses a 200 token response. Refuses (returns -1, err set) anything unusable: not JSON,
 * no access_token, token_type not Bearer, expires_in missing or not positive. expires_in and
 * interval may be numbers or numeric strings. */
int oauth_token_resp_parse(const char *json, size_t len, struct oauth_token_resp *out,
                           struct mb_err *err);
void oauth_token_resp_release(struct oauth_token_resp *r); /* wipes the secrets */

/* Parses an error body (any 4xx/5xx). Returns 0 if it had Microsoft/OAuth error shape. When
 * error_codes is absent, the AADSTSnnnn at the start of error_description is used. */
int oauth_error_parse(const char *json, size_t len, int http_status, struct oauth_error *out);

struct oauth_device_resp {
	char *device_code; /* secret */
	char *user_code;
	char *verification_uri;
	char *message;
	int64_t expires_in;
	int64_t interval;
};

int oauth_device_resp_parse(const char *json, size_t len, struct oauth_device_resp *out,
                            struct mb_err *err);
void oauth_device_resp_release(struct oauth_device_resp *r);

/* ---- errors that name the fix ---- */

enum oauth_class {
	OAUTH_CLASS_TRANSIENT,   /* retry with back-off; keep the refresh token */
	OAUTH_CLASS_REAUTHORIZE, /* the grant is dead: needs re-authorization */
	OAUTH_CLASS_CONFIG,      /* an admin must fix the app, secret, tenant or consent */
	OAUTH_CLASS_USER,        /* the signing-in user must act */
	OAUTH_CLASS_PENDING      /* device flow: keep polling */
};

struct oauth_explain {
	enum oauth_class cls;
	long aadsts; /* 0 when none */
	const char *cause;
	const char *fix;
};

/* Explains an error: the AADSTS code when known, else the OAuth error string, else a generic
 * row by HTTP status (5xx/429 transient, others config) whose cause may point into
 * e->description: out is valid as long as e is. Never NULL fields. */
void oauth_error_explain(const struct oauth_error *e, struct oauth_explain *out);
/* The table row for one AADSTS code, or NULL. */
const struct oauth_explain *oauth_aadsts_find(long code);
/* Every row, for documentation and tests. */
const struct oauth_explain *oauth_aadsts_table(size_t *n);

/* The row for one OAuth error string ("invalid_grant", "authorization_pending", ...), or NULL;
 * aadsts is 0. oauth_error_name(i) is the i-th known string (NULL past the end), for
 * documentation and tests. */
const struct oauth_explain *oauth_error_find(const char *error);
const char *oauth_error_name(size_t i);
/* What users meet that is no error code (the seed guide's Errors 4 and 5): the consent screen
 * saying "unverified" (not a blocker), and "token expired" (access tokens last 60-90 min and are
 * refreshed by mailbridge; only invalid_grant needs a new sign-in). */
const struct oauth_explain *oauth_explain_unverified(void);
const struct oauth_explain *oauth_explain_token_expired(void);
/* "transient", "reauthorize", "config", "user", "pending" */
const char *oauth_class_name(enum oauth_class c);

/* ---- connections, as the flows and the token manager see them ---- */

struct config;
struct config_conn;
struct store;
struct store_conn;

struct oauth_conn {
	char *name;
	bool from_config;
	enum oauth_provider provider;
	enum oauth_auth auth;
	char *sender;
	char *tenant;
	char *client_id;
	char *client_secret; /* clear text, wiped on free; NULL for a public client */
	char *secret_fp;     /* fingerprint of the secret, for display */
	struct oauth_endpoints ep;
	char *ca_file;
	bool upload_sessions; /* large_messages = upload-session: Mail.ReadWrite too */
	bool large_by_smtp;   /* large_messages = smtp: consent to SMTP.Send too */
	char **senders;       /* further From addresses routed to this connection */
	size_t nsenders;
	char *fallback; /* the connection tried when this one is down; NULL = none */
	bool force_from;
};

/* Builds the connection NAME from the config file, else from the store. The secret is read
 * from client_secret_file / client_secret_env / client_secret, or unsealed from the store. */
struct oauth_conn *oauth_conn_load(const struct config *cfg, struct store *st,
                                   const struct mb_key *key, const char *name, struct mb_err *err);
void oauth_conn_free(struct oauth_conn *c);
/* Mirrors the config file's connections into the store (source = 'config'), so their state
 * is remembered; store-made connections are left alone. */
int oauth_conns_sync(const struct config *cfg, struct store *st, struct mb_err *err);

/* ---- connections made with the command line or the API (source "store") ----
 *
 * What defines one, as text: the command line's options and the API's fields. Every string
 * is owned (NULL = unset). oauth_conn_def_check() names the field at fault; save seals the
 * secret and stores the rest as the row's settings JSON. */
struct oauth_conn_def {
	char *name;
	char *provider; /* microsoft-graph | microsoft-smtp | smtp */
	char *sender;
	char *auth;  /* delegated | app-only; NULL = delegated */
	char *cloud; /* NULL = global */
	char *tenant;
	char *client_id;
	char *login_url, *graph_url, *smtp_url, *ca_file;
	char *large_messages; /* fail | upload-session | smtp; NULL = fail */
	char *fallback;
	bool force_from;
	char **senders;
	size_t nsenders;
};

#define OAUTH_CONN_NAME_MAX 64

/* 1 to OAUTH_CONN_NAME_MAX letters, digits, '-', '_' or '.' (as a [connection NAME]). */
bool oauth_conn_name_is_valid(const char *name);
/* A mailbox address as a sender: local@domain, no spaces, brackets or control bytes. */
bool oauth_addr_is_valid(const char *addr);
/* Fills def from the stored row NAME (MB_ENOTFOUND when absent). */
int oauth_conn_def_load(struct store *st, const char *name, struct oauth_conn_def *def,
                        struct mb_err *err);
void oauth_conn_def_release(struct oauth_conn_def *def);
/* Checks every field; on failure *field names the one at fault ("sender", "tenant", ...) and
 * err says why. has_secret: a client secret will be stored with it (app-only needs one). */
int oauth_conn_def_check(const struct oauth_conn_def *def, bool has_secret, const char **field,
                         struct mb_err *err);
/* Stores def as a "store" connection. secret: the new client secret in clear (sealed here),
 * or NULL to keep the one stored (if any). */
int oauth_conn_def_save(struct store *st, const struct mb_key *key,
                        const struct oauth_conn_def *def, const char *secret, struct mb_err *err);

/* "token:{conn}:{resource}:{kind}" and "secret:{conn}": what sealed blobs are bound to. */
void oauth_aad_token(const char *conn, enum oauth_resource r, const char *kind, char *out,
                     size_t outlen);
void oauth_aad_secret(const char *conn, char *out, size_t outlen);

/* ---- flows (blocking, for the command line) ---- */

/* The browser flow's first half: makes state + PKCE verifier (stored sealed, single use, 10
 * minutes) and returns the authorize URL for {public_url}/oauth/callback in url. */
int oauth_browser_start(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                        const char *public_url, struct mb_buf *url, char *state_out,
                        size_t state_len, struct mb_err *err);

/* The device flow, start to finish: prints Microsoft's message to out, polls at interval
 * (+5 s on slow_down), stores the tokens. Returns 0 when signed in. On failure err says why
 * and *explain (may be NULL) carries the cause and fix. */
int oauth_device_login(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                       FILE *out, struct oauth_explain *explain, struct mb_err *err);

/* The device flow in steps, without I/O of its own, for oauth_device_login() and for the
 * daemon, which sends the requests through its async client and polls on timers:
 *   1. oauth_device_code_request(): POST form to url (the devicecode endpoint);
 *   2. oauth_device_code_answer() on the answer: 0 started, 1 send step 1 again (the server
 *      wants the client secret; with_secret is now set), -1 failed;
 *   3. every dev->interval_s seconds, oauth_device_poll_request() and
 *      oauth_device_poll_answer() on its answer, until it is not PENDING. */
struct oauth_device {
	struct oauth_device_resp d; /* device_code is secret */
	bool with_secret;
	int64_t interval_s;
	int64_t deadline_ms; /* mb_mono_ms() when the code expires */
	char account[320];   /* after OAUTH_DEVICE_DONE: the signed-in account, or "" */
	int64_t expires_in;  /* after OAUTH_DEVICE_DONE: the access token's lifetime (s) */
};

enum oauth_device_poll {
	OAUTH_DEVICE_PENDING,  /* poll again after dev->interval_s (grown on slow_down) */
	OAUTH_DEVICE_DONE,     /* signed in: the first token is stored */
	OAUTH_DEVICE_DECLINED, /* the user said no */
	OAUTH_DEVICE_EXPIRED,  /* the code expired first */
	OAUTH_DEVICE_FAILED    /* anything else: err and *explain say why */
};

void oauth_device_code_request(const struct oauth_conn *c, const struct oauth_device *dev,
                               struct mb_buf *url, struct mb_buf *form);
int oauth_device_code_answer(const struct oauth_conn *c, struct oauth_device *dev, long status,
                             const char *body, size_t len, struct oauth_explain *explain,
                             struct mb_err *err);
void oauth_device_poll_request(const struct oauth_conn *c, const struct oauth_device *dev,
                               struct mb_buf *url, struct mb_buf *form);
/* status 0: no answer (a transport error), which keeps polling until the code expires. On
 * DONE the token is stored with oauth_tokens_save(); the other resources the provider needs
 * are minted from the refresh token later (oauth_device_login does it at once). */
enum oauth_device_poll oauth_device_poll_answer(const struct oauth_conn *c, struct store *st,
                                                const struct mb_key *key, struct oauth_device *dev,
                                                long status, const char *body, size_t len,
                                                struct oauth_explain *explain, struct mb_err *err);
void oauth_device_release(struct oauth_device *dev); /* wipes the device code */

/* "{base}/oauth/callback", base without its trailing slashes: the browser flow's redirect
 * URI. */
void oauth_redirect_uri(const char *base, struct mb_buf *out);

/* Redeems an authorization code (the callback's second half), stores the tokens, and returns
 * the signed-in account in account (may be empty). */
int oauth_code_redeem(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                      const char *code, const char *verifier, const char *redirect_uri,
                      char *account, size_t account_len, int64_t *expires_in,
                      struct oauth_explain *explain, struct mb_err *err);

/* The form of an authorization-code redemption, and the resource its token is for. */
void oauth_code_form(const struct oauth_conn *c, const char *code, const char *verifier,
                     const char *redirect_uri, struct mb_buf *form, enum oauth_resource *r);

/* Stores a token response for resource r: the refresh token (if any) and the access token
 * in one transaction, then the connection's account and state. */
int oauth_tokens_save(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                      enum oauth_resource r, const struct oauth_token_resp *t, struct mb_err *err);

/* ---- the token manager (on the loop) ---- */

struct ev_loop;
struct http_client;
struct oauth_tm;

/* status 0: token is valid for the duration of the callback only. -1: explain says why. */
typedef void (*oauth_token_cb)(void *arg, int status, const char *token,
                               const struct oauth_explain *explain);

struct oauth_tm *oauth_tm_new(struct ev_loop *loop, struct http_client *http,
                              const struct config *cfg, struct store *st, const struct mb_key *key);
/* A reloaded config: later requests read connections from it. */
void oauth_tm_set_config(struct oauth_tm *tm, const struct config *cfg);
/* Connection NAME changed (new sign-in, new settings, removed): drop the access tokens held
 * for it and any back-off, so the next request reads the store again. */
void oauth_tm_forget(struct oauth_tm *tm, const char *conn);
/* Free the http client first: its cancelled requests answer every waiter. */
void oauth_tm_free(struct oauth_tm *tm);
/* A valid access token for (connection, resource). Concurrent callers share one request.
 * force: after a 401 or 535, refresh even if the cached token looks valid (once). */
void oauth_tm_get(struct oauth_tm *tm, const char *conn, enum oauth_resource r, bool force,
                  oauth_token_cb cb, void *arg);
/* Token requests sent so far (for tests and metrics). */
uint64_t oauth_tm_requests(const struct oauth_tm *tm);
/* Prometheus text: token requests and failures. */
void oauth_tm_metrics(const struct oauth_tm *tm, struct mb_buf *out);

#endif
