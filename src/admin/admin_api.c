/* /api/v1: security headers, access control, routing over the per-file route tables, and the
 * small helpers every handler uses. */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "store/store.h"

#define API_PREFIX "/api/v1/"

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

/* ---- helpers for handlers ---- */

json_t *
admin_json_str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

json_t *
admin_json_time(int64_t ms)
{
	char date[40];

	if (ms <= 0)
		return json_null();
	mb_iso_date(ms, date, sizeof(date));
	return json_string(date);
}

json_t *
admin_token_valid_min(struct admin *a, const char *conn, const char *resource)
{
	int64_t expires = 0, min;

	if (store_token_get(a->d.st, conn, resource, "access", NULL, NULL, &expires, NULL, NULL,
	                    NULL, NULL) < 0 ||
	    expires == 0)
		return json_null();
	min = (expires - mb_now_ms()) / 60000;
	return json_integer(min > 0 ? min : 0);
}

void
admin_reply_store_error(struct ev_http_req *req, const struct mb_err *err)
{
	admin_reply_error(req, 503, "store", err && err->msg[0] ? err->msg : "the store failed",
	                  "see the daemon's log");
}

void
admin_reply_invalid_fix(struct ev_http_req *req, const char *field, const char *what,
                        const char *fix)
{
	size_t n = strlen(field);
	char *msg = NULL;

	if (strncmp(what, field, n) != 0 || (what[n] != ' ' && what[n] != ':'))
		msg = mb_asprintf("%s: %s", field, what);
	admin_reply_error(req, 400, "invalid", msg ? msg : what, fix);
	free(msg);
}

json_t *
admin_body_json(struct ev_http_req *req)
{
	size_t len = 0;
	const char *body = ev_http_req_body(req, &len);
	json_error_t jerr;
	json_t *j = NULL;
	char *msg;

	if (body == NULL || len == 0) {
		admin_reply_error(req, 400, "bad_request", "the request has no body",
		                  "send a JSON object with Content-Type: application/json");
		return NULL;
	}
	j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (j != NULL && json_is_object(j))
		return j;
	msg = j ? mb_strdup("the body is JSON but not an object")
	        : mb_asprintf("the body is not valid JSON: %s (line %d, column %d)", jerr.text,
	                      jerr.line, jerr.column);
	json_decref(j);
	admin_reply_error(req, 400, "bad_request", msg, "send a JSON object, as docs/api.md shows");
	free(msg);
	return NULL;
}

char *
admin_query_get(struct ev_http_req *req, const char *name)
{
	return http_query_get(ev_http_req_query(req), name);
}

/* ---- the tables and the gate ---- */

static const struct api_route *const api_tables[] = {
    admin_routes_auth,
    admin_routes_conn,
    admin_routes_msg,
    admin_routes_doctor,
};

#define NTABLES (sizeof(api_tables) / sizeof(api_tables[0]))

/* Whether path matches pattern; the "*" segments go into p (decoded into bufs). */
static bool
path_match(const char *pattern, const char *path, struct api_params *p, char **bufs)
{
	p->n = 0;
	for (;;) {
		const char *pe = strchr(pattern, '/'), *se = strchr(path, '/');
		size_t plen = pe ? (size_t)(pe - pattern) : strlen(pattern);
		size_t slen = se ? (size_t)(se - path) : strlen(path);

		if (plen == 1 && pattern[0] == '*') {
			if (slen == 0 || p->n == API_MAX_PARAMS)
				return false;
			if (bufs) {
				bufs[p->n] = http_url_decode(path, slen, false);
				if (bufs[p->n] == NULL)
					return false;
				p->v[p->n] = bufs[p->n];
			}
			p->n++;
		} else if (plen != slen || memcmp(pattern, path, plen) != 0) {
			return false;
		}
		if (!pe || !se)
			return !pe && !se;
		pattern = pe + 1;
		path = se + 1;
	}
}

static void
free_bufs(char **bufs)
{
	for (size_t i = 0; i < API_MAX_PARAMS; i++) {
		free(bufs[i]);
		bufs[i] = NULL;
	}
}

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

/* Finds the route for method and path; *allow gets every method the path takes (for 405). */
static const struct api_route *
route_find(const char *method, const char *path, struct api_params *p, char **bufs, char *allow,
           size_t allowlen, bool *open)
{
	const struct api_route *found = NULL;
	struct api_params dummy;

	allow[0] = '\0';
	for (size_t t = 0; t < NTABLES; t++) {
		for (const struct api_route *r = api_tables[t]; r->method; r++) {
			if (!path_match(r->path, path, &dummy, NULL))
				continue;
			*open = *open || r->open;
			if (allow[0])
				strncat(allow, ", ", allowlen - strlen(allow) - 1);
			strncat(allow, r->method, allowlen - strlen(allow) - 1);
			if (found == NULL && strcmp(r->method, method) == 0)
				found = r;
		}
	}
	if (found && !path_match(found->path, path, p, bufs)) {
		free_bufs(bufs);
		return NULL; /* a "*" segment that does not decode */
	}
	return found;
}

void
admin_api_dispatch(struct admin *a, struct ev_http_req *req)
{
	const char *method = ev_http_req_method(req);
	const char *path = ev_http_req_path(req) + strlen(API_PREFIX);
	const struct api_route *r = NULL;
	struct admin_caller c = {0};
	struct api_params p = {{NULL}, 0};
	char *bufs[API_MAX_PARAMS] = {NULL};
	char allow[64];
	bool open = false;

	add_security_headers(req);
	r = route_find(method, path, &p, bufs, allow, sizeof(allow), &open);
	/* Credentials come before routing, so that without them no path is revealed as real
	 * (an open path, like login, is public anyway). */
	if (!open && admin_caller_find(a, req, &c) < 0) {
		ev_http_add_header(req, "WWW-Authenticate", "Bearer realm=\"mailbridge\"");
		admin_reply_error(
		    req, 401, "unauthorized", "log in or send an API token",
		    "POST /api/v1/login with the admin password, or send "
		    "Authorization: Bearer TOKEN (mailbridge admin token create NAME)");
	} else if (r == NULL) {
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
		r->handle(a, req, &c, &p);
	}
	free_bufs(bufs);
	admin_caller_clear(&c);
}
