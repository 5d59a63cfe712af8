/* The embedded HTTP server: a thin layer over evhttp with one request callback. */
#include "ev.h"
#include "ev_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ev_http_req {
	struct evhttp_request *req;
	char *path;
	char *query;
	char *body;
	size_t body_len;
	/* deferred requests only */
	struct ev_http *owner;
	uint64_t id;
	bool heap;
	bool replied;
	struct ev_http_req *next;
};

struct ev_http {
	struct evhttp *http;
	ev_http_cb cb;
	void *arg;
	uint64_t next_id;
	struct ev_http_req *deferred;
};

static void
deferred_unlink(struct ev_http_req *r)
{
	for (struct ev_http_req **p = &r->owner->deferred; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			return;
		}
	}
}

static void
deferred_release(struct ev_http_req *r)
{
	deferred_unlink(r);
	free(r->path);
	free(r->query);
	free(r->body);
	free(r);
}

/* the client closed the connection before the deferred reply */
static void
deferred_closed(struct evhttp_connection *c, void *arg)
{
	struct ev_http_req *r = arg;

	deferred_release(r);
}

uint64_t
ev_http_req_defer(struct ev_http *h, struct ev_http_req *r)
{
	struct ev_http_req *d = mb_calloc(1, sizeof(*d));
	size_t len;

	d->req = r->req;
	d->path = mb_strdup(r->path);
	d->query = r->query ? mb_strdup(r->query) : NULL;
	ev_http_req_body(r, &len);
	d->body = mb_strndup(r->body, r->body_len);
	d->body_len = r->body_len;
	d->owner = h;
	d->id = ++h->next_id;
	d->heap = true;
	d->next = h->deferred;
	h->deferred = d;
	r->replied = true; /* the stack copy must not be answered by dispatch() */
	evhttp_connection_set_closecb(evhttp_request_get_connection(r->req), deferred_closed, d);
	return d->id;
}

struct ev_http *
ev_http_req_server(const struct ev_http_req *r)
{
	return r->owner;
}

struct ev_http_req *
ev_http_deferred(struct ev_http *h, uint64_t id)
{
	for (struct ev_http_req *d = h->deferred; d; d = d->next)
		if (d->id == id)
			return d;
	return NULL;
}

static const char *const methods[] = {"GET",     "POST",  "HEAD",    "PUT",  "DELETE",
                                      "OPTIONS", "TRACE", "CONNECT", "PATCH"};

static void
dispatch(struct evhttp_request *req, void *arg)
{
	struct ev_http *h = arg;
	struct ev_http_req r = {.req = req, .owner = h};
	const char *uri = evhttp_request_get_uri(req);
	const char *q = strchr(uri, '?');

	r.path = q ? mb_strndup(uri, (size_t)(q - uri)) : mb_strdup(uri);
	r.query = q ? mb_strdup(q + 1) : NULL;
	h->cb(h->arg, &r);
	free(r.path);
	free(r.query);
	free(r.body);
}

struct ev_http *
ev_http_new(struct ev_loop *loop, const struct mb_sockaddr *addr, ev_http_cb cb, void *arg,
            size_t max_body, struct mb_err *err)
{
	struct ev_http *h = mb_calloc(1, sizeof(*h));
	char host[64];

	h->cb = cb;
	h->arg = arg;
	h->http = evhttp_new(loop->base);
	mb_sockaddr_host(addr, host, sizeof(host));
	if (h->http == NULL || evhttp_bind_socket_with_handle(
	                           h->http, host, (ev_uint16_t)mb_sockaddr_port(addr)) == NULL) {
		mb_err_set(err, MB_EIO, "cannot listen on %s port %d: %s", host,
		           mb_sockaddr_port(addr), strerror(errno));
		if (h->http)
			evhttp_free(h->http);
		free(h);
		return NULL;
	}
	evhttp_set_max_body_size(h->http, (ev_ssize_t)max_body);
	evhttp_set_max_headers_size(h->http, 32 * 1024);
	evhttp_set_timeout(h->http, 30);
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
	                                        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                        EVHTTP_REQ_PATCH);
	evhttp_set_gencb(h->http, dispatch, h);
	return h;
}

void
ev_http_free(struct ev_http *h)
{
	if (h == NULL)
		return;
	while (h->deferred) {
		/* evhttp_free() closes the connection: its close callback must not find a freed
		 * deferral */
		evhttp_connection_set_closecb(evhttp_request_get_connection(h->deferred->req), NULL,
		                              NULL);
		deferred_release(h->deferred);
	}
	evhttp_free(h->http);
	free(h);
}

const char *
ev_http_req_method(const struct ev_http_req *r)
{
	enum evhttp_cmd_type t = evhttp_request_get_command(r->req);

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (t == (enum evhttp_cmd_type)(1 << i))
			return methods[i];
	return "";
}

const char *
ev_http_req_path(const struct ev_http_req *r)
{
	return r->path;
}

const char *
ev_http_req_query(const struct ev_http_req *r)
{
	return r->query;
}

const char *
ev_http_req_header(const struct ev_http_req *r, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(r->req), name);
}

const char *
ev_http_req_body(struct ev_http_req *r, size_t *len)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(r->req);

	if (r->body == NULL) {
		r->body_len = evbuffer_get_length(in);
		r->body = mb_malloc(r->body_len + 1);
		evbuffer_copyout(in, r->body, r->body_len);
		r->body[r->body_len] = '\0';
	}
	*len = r->body_len;
	return r->body;
}

void
ev_http_req_peer(const struct ev_http_req *r, char *host, size_t hostlen)
{
	struct evhttp_connection *c = evhttp_request_get_connection(r->req);
	char *addr = NULL;
	ev_uint16_t port = 0;

	evhttp_connection_get_peer(c, &addr, &port);
	snprintf(host, hostlen, "%s", addr ? addr : "");
}

void
ev_http_add_header(struct ev_http_req *r, const char *name, const char *value)
{
	evhttp_add_header(evhttp_request_get_output_headers(r->req), name, value);
}

void
ev_http_reply(struct ev_http_req *r, int status, const char *content_type, const void *body,
              size_t len)
{
	struct evbuffer *out = evbuffer_new();

	/* the reply is going out: the deferral no longer needs to hear of a close */
	if (r->heap)
		evhttp_connection_set_closecb(evhttp_request_get_connection(r->req), NULL, NULL);
	if (content_type)
		ev_http_add_header(r, "Content-Type", content_type);
	ev_http_add_header(r, "X-Content-Type-Options", "nosniff");
	/* no-store unless the handler chose a policy (the web UI's files are revalidated) */
	if (evhttp_find_header(evhttp_request_get_output_headers(r->req), "Cache-Control") == NULL)
		ev_http_add_header(r, "Cache-Control", "no-store");
	evbuffer_add(out, body, len);
	evhttp_send_reply(r->req, status, NULL, out);
	evbuffer_free(out);
	r->replied = true;
	if (r->heap)
		deferred_release(r);
}
