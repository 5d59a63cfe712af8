/* Routing for the HTTP listener. */
#include "admin_internal.h"

#include "deliver/deliver.h"
#include "oauth/oauth.h"
#include "smtp/smtp.h"
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

struct route {
	const char *method;
	const char *path;
	void (*handle)(struct admin *a, struct ev_http_req *req);
};

static void
reply_text(struct ev_http_req *req, int status, const char *text)
{
	ev_http_reply(req, status, "text/plain; charset=utf-8", text, strlen(text));
}

void
admin_reply_error(struct ev_http_req *req, int status, const char *code, const char *message,
                  const char *fix)
{
	struct mb_buf b = {0};

	mb_buf_puts(&b, "{\"error\":{\"code\":");
	mb_buf_json_str(&b, code);
	mb_buf_puts(&b, ",\"message\":");
	mb_buf_json_str(&b, message);
	mb_buf_puts(&b, ",\"fix\":");
	mb_buf_json_str(&b, fix);
	mb_buf_puts(&b, "}}\n");
	ev_http_reply(req, status, "application/json", b.data, b.len);
	mb_buf_release(&b);
}

static void
healthz(struct admin *a, struct ev_http_req *req)
{
	reply_text(req, 200, "ok\n");
}

/* Ready: the store takes writes and at least one connection is usable. */
static void
readyz(struct admin *a, struct ev_http_req *req)
{
	struct mb_buf b = {0};
	int code = 200;

	if (!store_is_writable(a->d.st)) {
		code = 503;
		mb_buf_puts(&b, "store: not writable\n");
	} else {
		mb_buf_puts(&b, "store: ok\n");
	}
	if (store_conn_usable_count(a->d.st) == 0) {
		code = 503;
		mb_buf_puts(&b, "connections: none usable (see mailbridge auth status)\n");
	} else {
		mb_buf_puts(&b, "connections: ok\n");
	}
	ev_http_reply(req, code, "text/plain; charset=utf-8", b.data, b.len);
	mb_buf_release(&b);
}

static void
metrics(struct admin *a, struct ev_http_req *req)
{
	struct mb_buf b = {0};

	store_metrics(a->d.st, &b, NULL);
	if (a->d.smtp)
		smtp_server_metrics(a->d.smtp, &b);
	if (a->d.deliver)
		deliver_metrics(a->d.deliver, &b);
	if (a->d.tm)
		oauth_tm_metrics(a->d.tm, &b);
	ev_http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
	mb_buf_release(&b);
}

static const struct route routes[] = {
    {"GET", "/healthz", healthz},
    {"HEAD", "/healthz", healthz},
    {"GET", "/readyz", readyz},
    {"GET", "/metrics", metrics},
    {"GET", "/oauth/callback", admin_oauth_callback},
};

static void
dispatch(void *arg, struct ev_http_req *req)
{
	struct admin *a = arg;
	const char *method = ev_http_req_method(req), *path = ev_http_req_path(req);
	bool path_known = false;

	if (strncmp(path, "/api/v1/", 8) == 0) {
		admin_api_dispatch(a, req);
		return;
	}
	if (admin_ui_serve(a, req))
		return;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(routes[i].path, path) != 0)
			continue;
		path_known = true;
		if (strcmp(routes[i].method, method) == 0) {
			routes[i].handle(a, req);
			return;
		}
	}
	if (path_known)
		admin_reply_error(req, 405, "method_not_allowed", "this method is not allowed here",
		                  "see docs/api.md for the methods each path takes");
	else
		admin_reply_error(req, 404, "not_found", "no such path",
		                  "see docs/api.md for the paths this server answers");
}

void
admin_html_escape(struct mb_buf *b, const char *s)
{
	for (; s && *s; s++) {
		switch (*s) {
		case '<':
			mb_buf_puts(b, "&lt;");
			break;
		case '>':
			mb_buf_puts(b, "&gt;");
			break;
		case '&':
			mb_buf_puts(b, "&amp;");
			break;
		case '"':
			mb_buf_puts(b, "&quot;");
			break;
		case '\'':
			mb_buf_puts(b, "&#39;");
			break;
		default:
			mb_buf_append(b, s, 1);
		}
	}
}

void
admin_reply_page(struct ev_http_req *req, int status, const char *title, const char *body)
{
	struct mb_buf b = {0};

	mb_buf_puts(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	                "<title>");
	admin_html_escape(&b, title);
	mb_buf_puts(&b, " — mailbridge</title><style>"
	                "body{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f4f6f8;"
	                "color:#1b1f23}main{max-width:40rem;margin:4rem auto;background:#fff;"
	                "border-radius:8px;padding:2rem 2.5rem;box-shadow:0 1px 4px #0002}"
	                "h1{font-size:1.4rem;margin-top:0}.ok{color:#116329}.bad{color:#b42318}"
	                "dt{font-weight:600;margin-top:1rem}dd{margin:0}code{background:#eef1f4;"
	                "padding:0 .25rem;border-radius:3px}</style></head><body><main>");
	mb_buf_puts(&b, body);
	mb_buf_puts(&b, "</main></body></html>\n");
	ev_http_add_header(req, "Content-Security-Policy",
	                   "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
	                   "form-action 'none'; frame-ancestors 'none'");
	ev_http_add_header(req, "Referrer-Policy", "no-referrer");
	ev_http_reply(req, status, "text/html; charset=utf-8", b.data, b.len);
	mb_buf_release(&b);
}

struct ev_http *
admin_server_of(struct admin *a, struct ev_http_req *req)
{
	return ev_http_req_server(req);
}

struct admin *
admin_new(struct ev_loop *loop, const struct admin_deps *deps, struct mb_err *err)
{
	struct admin *a = mb_calloc(1, sizeof(*a));
	const struct config_list *l = &deps->cfg->server.http_listen;

	a->d = *deps;
	a->loop = loop;
	a->servers = mb_calloc(l->n, sizeof(*a->servers));
	for (size_t i = 0; i < l->n; i++) {
		struct mb_sockaddr addr;
		if (mb_sockaddr_parse(l->v[i], &addr, err) < 0)
			goto fail;
		a->servers[i] = ev_http_new(loop, &addr, dispatch, a, 1024 * 1024, err);
		if (a->servers[i] == NULL)
			goto fail;
		a->nservers++;
		mb_info("admin: listening: http://%s/", l->v[i]);
	}
	return a;
fail:
	admin_free(a);
	return NULL;
}

void
admin_set_config(struct admin *a, const struct config *cfg)
{
	a->d.cfg = cfg;
}

void
admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->nservers; i++)
		ev_http_free(a->servers[i]);
	free(a->servers);
	admin_conn_state_free(a);
	admin_doctor_state_free(a);
	admin_setup_state_free(a);
	admin_msg_state_free(a);
	free(a);
}
