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

struct admin {
	struct admin_deps d;
	struct ev_http **servers;
	size_t nservers;
	struct admin_login_fails fails[ADMIN_LOGIN_TRACKED];
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

/* /api/v1 as a whole (admin_api.c): security headers, access control, routing. */
void admin_api_dispatch(struct admin *a, struct ev_http_req *req);
/* The routes of admin_auth.c. */
void admin_api_login(struct admin *a, struct ev_http_req *req, const struct admin_caller *c);
void admin_api_logout(struct admin *a, struct ev_http_req *req, const struct admin_caller *c);
void admin_api_session(struct admin *a, struct ev_http_req *req, const struct admin_caller *c);

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
