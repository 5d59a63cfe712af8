/* /api/v1: security headers, access control and the route table; the read-only routes. */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

#include "store/store.h"

#define API_PREFIX "/api/v1/"

typedef void (*api_handler_cb)(struct admin *a, struct ev_http_req *req,
                               const struct admin_caller *c);

struct api_route {
	const char *method;
	const char *path; /* after API_PREFIX */
	api_handler_cb handle;
	bool open; /* answered without credentials (login only) */
};

void
admin_reply_json(struct ev_http_req *req, int status, json_t *j)
{
	char *text = json_dumps(j, JSON_COMPACT);

	json_decref(j);
	if (text == NULL) {
		admin_reply_error(req, 500, "internal", "the answer could not be encoded",
		                  "report this as a bug");
		return;
	}
	ev_http_reply(req, status, "application/json", text, strlen(text));
	free(text);
}

static json_t *
str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* ---- GET /api/v1/connections ---- */

struct conn_ctx {
	struct admin *a;
	json_t *arr;
	char *def;
};

static json_t *
token_valid_min(struct admin *a, const char *conn, const char *resource)
{
	int64_t expires = 0;

	if (store_token_get(a->d.st, conn, resource, "access", NULL, NULL, &expires, NULL, NULL,
	                    NULL, NULL) < 0 ||
	    expires == 0)
		return json_null();
	return json_integer((expires - mb_now_ms()) / 60000);
}

static int
conn_one(void *arg, const struct store_conn *sc)
{
	struct conn_ctx *ctx = arg;
	json_t *o = json_object();
	char date[40] = "";

	/* Only what is safe to show: the secret never leaves the store, not even sealed. */
	json_object_set_new(o, "name", json_string(sc->name));
	json_object_set_new(o, "provider", json_string(sc->provider));
	json_object_set_new(o, "sender", json_string(sc->sender));
	json_object_set_new(o, "source", str_or_null(sc->source));
	json_object_set_new(o, "default",
	                    json_boolean(ctx->def && strcmp(ctx->def, sc->name) == 0));
	json_object_set_new(o, "state", str_or_null(sc->state));
	json_object_set_new(o, "reason", str_or_null(sc->state_reason));
	json_object_set_new(o, "account", str_or_null(sc->account));
	json_object_set_new(o, "graph_token_valid_min", token_valid_min(ctx->a, sc->name, "graph"));
	json_object_set_new(o, "outlook_token_valid_min",
	                    token_valid_min(ctx->a, sc->name, "outlook"));
	if (sc->last_refresh_ms)
		mb_iso_date(sc->last_refresh_ms, date, sizeof(date));
	json_object_set_new(o, "last_refresh", *date ? json_string(date) : json_null());
	json_object_set_new(o, "last_error", str_or_null(sc->last_error));
	json_object_set_new(o, "fix", str_or_null(sc->last_fix));
	json_object_set_new(o, "secret_fingerprint", str_or_null(sc->secret_fp));
	date[0] = '\0';
	if (sc->secret_expires_ms)
		mb_iso_date(sc->secret_expires_ms, date, sizeof(date));
	json_object_set_new(o, "secret_expires", *date ? json_string(date) : json_null());
	json_array_append_new(ctx->arr, o);
	return 0;
}

/* The default connection: default = yes in the config file wins, else the stored setting. */
static char *
default_conn(struct admin *a)
{
	const struct config *cfg = a->d.cfg;
	char *v = NULL;

	for (size_t i = 0; i < cfg->nconns; i++)
		if (cfg->conns[i].is_default)
			return mb_strdup(cfg->conns[i].name);
	if (store_setting_get(a->d.st, "default_connection", &v, NULL) < 0)
		return NULL;
	return v;
}

static void
api_connections(struct admin *a, struct ev_http_req *req, const struct admin_caller *c)
{
	struct conn_ctx ctx = {a, json_array(), default_conn(a)};
	struct mb_err err = {0};
	json_t *j;

	if (store_conn_list(a->d.st, conn_one, &ctx, &err) < 0) {
		json_decref(ctx.arr);
		free(ctx.def);
		admin_reply_error(req, 503, "store", err.msg, "see the daemon's log");
		return;
	}
	free(ctx.def);
	j = json_object();
	json_object_set_new(j, "connections", ctx.arr);
	admin_reply_json(req, 200, j);
}

/* ---- GET /api/v1/stats ---- */

static void
api_stats(struct admin *a, struct ev_http_req *req, const struct admin_caller *c)
{
	json_t *j = json_object(), *by = json_object();
	struct mb_err err = {0};
	int64_t queue = 0;

	for (int s = 0; s < STORE_STATE_COUNT; s++) {
		int64_t n = store_msg_count(a->d.st, (enum store_state)s, &err);
		if (n < 0) {
			json_decref(j);
			json_decref(by);
			admin_reply_error(req, 503, "store", err.msg, "see the daemon's log");
			return;
		}
		if (s == STORE_QUEUED || s == STORE_SENDING || s == STORE_DEFERRED)
			queue += n;
		json_object_set_new(by, store_state_name((enum store_state)s), json_integer(n));
	}
	json_object_set_new(j, "messages", by);
	json_object_set_new(j, "queue", json_integer(queue));
	json_object_set_new(j, "usable_connections",
	                    json_integer(store_conn_usable_count(a->d.st)));
	admin_reply_json(req, 200, j);
}

/* ---- the table and the gate ---- */

static const struct api_route api_routes[] = {
    {"POST", "login", admin_api_login, true},     {"POST", "logout", admin_api_logout, false},
    {"GET", "session", admin_api_session, false}, {"GET", "connections", api_connections, false},
    {"GET", "stats", api_stats, false},
};

#define NROUTES (sizeof(api_routes) / sizeof(api_routes[0]))

static bool
method_changes_state(const char *m)
{
	return strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 && strcmp(m, "OPTIONS") != 0;
}

static void
add_security_headers(struct ev_http_req *req)
{
	/* ev_http_reply() adds Cache-Control: no-store and X-Content-Type-Options: nosniff to
	 * every answer; the API adds what keeps a browser from rendering or framing it. */
	ev_http_add_header(req, "Content-Security-Policy",
	                   "default-src 'none'; frame-ancestors 'none'");
	ev_http_add_header(req, "Referrer-Policy", "no-referrer");
}

/* Every method a path takes, for 405's Allow header, or "" for an unknown path. */
static void
allowed_methods(const char *path, char *out, size_t outlen)
{
	out[0] = '\0';
	for (size_t i = 0; i < NROUTES; i++) {
		if (strcmp(api_routes[i].path, path) != 0)
			continue;
		if (out[0])
			strncat(out, ", ", outlen - strlen(out) - 1);
		strncat(out, api_routes[i].method, outlen - strlen(out) - 1);
	}
}

void
admin_api_dispatch(struct admin *a, struct ev_http_req *req)
{
	const char *method = ev_http_req_method(req);
	const char *path = ev_http_req_path(req) + strlen(API_PREFIX);
	const struct api_route *r = NULL;
	struct admin_caller c = {0};
	char allow[64];

	add_security_headers(req);
	for (size_t i = 0; i < NROUTES; i++)
		if (strcmp(api_routes[i].path, path) == 0 &&
		    strcmp(api_routes[i].method, method) == 0)
			r = &api_routes[i];
	/* Credentials come before routing, so that without them no path is revealed as real. */
	if ((r == NULL || !r->open) && strcmp(path, "login") != 0 &&
	    admin_caller_find(a, req, &c) < 0) {
		ev_http_add_header(req, "WWW-Authenticate", "Bearer realm=\"mailbridge\"");
		admin_reply_error(
		    req, 401, "unauthorized", "log in or send an API token",
		    "POST /api/v1/login with the admin password, or send "
		    "Authorization: Bearer TOKEN (mailbridge admin token create NAME)");
		admin_caller_clear(&c);
		return;
	}
	if (r == NULL) {
		allowed_methods(path, allow, sizeof(allow));
		if (allow[0]) {
			char *fix = mb_asprintf("use %s (see docs/api.md)", allow);
			ev_http_add_header(req, "Allow", allow);
			admin_reply_error(req, 405, "method_not_allowed",
			                  "this method is not allowed here", fix);
			free(fix);
		} else {
			admin_reply_error(req, 404, "not_found", "no such API path",
			                  "see docs/api.md for the paths under /api/v1");
		}
	} else if (!r->open && c.via_session && method_changes_state(method) &&
	           !admin_csrf_is_valid(&c, req)) {
		admin_reply_error(
		    req, 403, "csrf", "missing or wrong X-CSRF-Token header",
		    "send the csrf value from /api/v1/login or /api/v1/session as the "
		    "X-CSRF-Token header");
	} else {
		r->handle(a, req, &c);
	}
	admin_caller_clear(&c);
}
