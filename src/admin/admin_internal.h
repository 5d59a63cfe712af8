/* Shared between the admin_*.c files only. */
#ifndef MB_ADMIN_INTERNAL_H
#define MB_ADMIN_INTERNAL_H

#include <jansson.h>

#include "admin.h"

/* Failed logins per client address, in memory: a sliding window of the last few failures. */
#define ADMIN_LOGIN_MAX_FAILS  5
#define ADMIN_LOGIN_WINDOW_MS  (60 * 1000)
#define ADMIN_LOGIN_TRACKED    256
#define ADMIN_SESSION_LIFETIME (12 * 3600 * 1000LL)

struct admin_login_fails {
	char host[64];
	int64_t at_ms[ADMIN_LOGIN_MAX_FAILS]; /* ring of failure times (monotonic) */
	int next;
	int64_t last_ms;
};

struct admin_signins; /* admin_api_conn.c: device-code sign-ins in progress */
struct admin_doctors; /* admin_api_doctor.c: doctor runs in progress */
struct admin_setup;   /* admin_auth.c: the one-time setup link */

struct admin {
	struct admin_deps d;
	struct ev_loop *loop;
	struct ev_http **servers;
	size_t nservers;
	struct admin_login_fails fails[ADMIN_LOGIN_TRACKED];
	struct admin_signins *signins;
	struct admin_doctors *doctors;
	struct admin_setup *setup;
};

/* Who is calling /api/v1, once authenticated. */
struct admin_caller {
	bool via_session;   /* else an API token */
	char id_hash[65];   /* the session's, when via_session */
	char *csrf;         /* the session's CSRF token (new string), when via_session */
	char *token_name;   /* the API token's name (new string), else NULL */
	int64_t expires_ms; /* the session's expiry */
};

void admin_caller_clear(struct admin_caller *c);
/* 0 and c filled when the request carries a valid session cookie or API token; -1 otherwise. */
int admin_caller_find(struct admin *a, struct ev_http_req *req, struct admin_caller *c);
/* Whether the X-CSRF-Token header equals the session's token (constant time). */
bool admin_csrf_is_valid(const struct admin_caller *c, struct ev_http_req *req);

/* Replies with the JSON text of j, which it takes (and frees). */
void admin_reply_json(struct ev_http_req *req, int status, json_t *j);

/* ---- /api/v1 routes ----
 * A route's path is relative to /api/v1/ and is matched segment by segment; a "*" segment
 * matches one non-empty segment, which the handler gets percent-decoded in p->v[]. Each
 * admin_api_*.c file exports one table, ended by a {NULL} entry; admin_api.c walks them all. */
#define API_MAX_PARAMS 2

struct api_params {
	const char *v[API_MAX_PARAMS];
	size_t n;
};

typedef void (*api_handler_cb)(struct admin *a, struct ev_http_req *req,
                               const struct admin_caller *c, const struct api_params *p);

struct api_route {
	const char *method;
	const char *path;
	api_handler_cb handle;
	bool open; /* answered without credentials (login, setup) */
};

extern const struct api_route admin_routes_auth[];   /* admin_auth.c */
extern const struct api_route admin_routes_conn[];   /* admin_api_conn.c */
extern const struct api_route admin_routes_msg[];    /* admin_api_msg.c */
extern const struct api_route admin_routes_doctor[]; /* admin_api_doctor.c */

/* /api/v1 as a whole (admin_api.c): security headers, access control, routing. */
void admin_api_dispatch(struct admin *a, struct ev_http_req *req);

/* Helpers for handlers (admin_api.c). */
/* The request body as a JSON object, or NULL after replying 400 (empty body, bad JSON, or
 * not an object). */
json_t *admin_body_json(struct ev_http_req *req);
/* A query parameter, percent-decoded ('+' is a space): a new string, or NULL if absent. */
char *admin_query_get(struct ev_http_req *req, const char *name);
/* 400 with code "invalid": the message is "FIELD: WHAT" (just WHAT when it starts with the
 * field's name), with the fix given. */
void admin_reply_invalid_fix(struct ev_http_req *req, const char *field, const char *what,
                             const char *fix);
/* 503 with code "store", the store's message, and the fix "see the daemon's log". */
void admin_reply_store_error(struct ev_http_req *req, const struct mb_err *err);
json_t *admin_json_str_or_null(const char *s);
/* Unix ms as an ISO 8601 UTC string, or null for 0 (never, unknown). */
json_t *admin_json_time(int64_t ms);
/* Whole minutes the connection's access token for resource ("graph", "outlook") is still
 * valid (0 when expired), or null when there is none. */
json_t *admin_token_valid_min(struct admin *a, const char *conn, const char *resource);

/* Shared by the connection, sign-in and settings files (admin_api_conn.c). */
/* admin_reply_invalid_fix with the field's own fix (admin_api_conn.c's table). */
void admin_reply_invalid(struct ev_http_req *req, const char *field, const char *msg);
void admin_reply_conn_not_found(struct ev_http_req *req, const char *name);
/* Whether the store holds the connection (config ones are mirrored there). */
bool admin_conn_exists(struct admin *a, const char *name);
/* The redirect URI, {public_url}/oauth/callback: a new string. */
char *admin_callback_url(struct admin *a);
/* The connection that has default = yes in the config file, or NULL. */
const char *admin_config_default(struct admin *a);
/* Makes name (NULL: none) the default connection; -1 after replying. */
int admin_default_set(struct admin *a, struct ev_http_req *req, const char *name);

/* Routes of admin_api_signin.c and admin_api_settings.c, listed in admin_routes_conn. */
void admin_api_signin_start(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                            const struct api_params *p);
void admin_api_signin_status(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                             const struct api_params *p);
void admin_api_settings_get(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                            const struct api_params *p);
void admin_api_settings_patch(struct admin *a, struct ev_http_req *req,
                              const struct admin_caller *c, const struct api_params *p);
/* POST /api/v1/test (admin_api_test.c), listed in admin_routes_msg. */
void admin_api_test(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                    const struct api_params *p);
/* Ends the device sign-in of a connection, if one runs (the connection is being deleted). */
void admin_signin_remove(struct admin *a, const char *conn);

/* Per-file state, freed by admin_free(). */
void admin_conn_state_free(struct admin *a);
void admin_doctor_state_free(struct admin *a);
void admin_setup_state_free(struct admin *a);
/* admin_api_msg.c: test sends in flight lose their HTTP side (they end in the deliverer). */
void admin_msg_state_free(struct admin *a);

/* The embedded web UI (admin_ui.c): true when path is one of its files (and it replied). */
bool admin_ui_serve(struct admin *a, struct ev_http_req *req);

void admin_reply_error(struct ev_http_req *req, int status, const char *code, const char *message,
                       const char *fix);
/* A small self-contained HTML page (no script, no external resources). body is HTML. */
void admin_reply_page(struct ev_http_req *req, int status, const char *title, const char *body);
/* Appends s with HTML escaping. */
void admin_html_escape(struct mb_buf *b, const char *s);
/* The server a request came in on, for deferring its reply. */
struct ev_http *admin_server_of(struct admin *a, struct ev_http_req *req);

void admin_oauth_callback(struct admin *a, struct ev_http_req *req);

#endif
