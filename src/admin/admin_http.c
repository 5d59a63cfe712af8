/* Routing for the HTTP listener. */
#include "admin.h"

#include <stdlib.h>
#include <string.h>

struct admin {
	const struct config *cfg;
	struct ev_http **servers;
	size_t nservers;
};

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

static void
reply_error(struct ev_http_req *req, int status, const char *code, const char *message,
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

static const struct route routes[] = {
    {"GET", "/healthz", healthz},
    {"HEAD", "/healthz", healthz},
};

static void
dispatch(void *arg, struct ev_http_req *req)
{
	struct admin *a = arg;
	const char *method = ev_http_req_method(req), *path = ev_http_req_path(req);
	bool path_known = false;

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
		reply_error(req, 405, "method_not_allowed", "this method is not allowed here",
		            "see docs/api.md for the methods each path takes");
	else
		reply_error(req, 404, "not_found", "no such path",
		            "see docs/api.md for the paths this server answers");
}

struct admin *
admin_new(struct ev_loop *loop, const struct config *cfg, struct mb_err *err)
{
	struct admin *a = mb_calloc(1, sizeof(*a));
	const struct config_list *l = &cfg->server.http_listen;

	a->cfg = cfg;
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
admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	for (size_t i = 0; i < a->nservers; i++)
		ev_http_free(a->servers[i]);
	free(a->servers);
	free(a);
}
