/* Listeners, buffered streams and server-side TLS, over libevent's bufferevents. */
#include "ev.h"
#include "ev_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ev_listener {
	struct evconnlistener *l;
	ev_accept_cb cb;
	void *arg;
};

struct ev_tls {
	SSL_CTX *ctx;
};

struct ev_stream {
	struct ev_loop *loop;
	struct bufferevent *bev;
	ev_cb read_cb;
	ev_stream_event_cb event_cb;
	void *arg;
	int64_t read_ms;
	bool tls;
	bool closing;
	bool discarding;                  /* inside an overlong line, dropping input up to its LF */
	struct event *deferred;           /* delivers FLUSHED outside the caller's stack */
	struct evbuffer_cb_entry *raw_cb; /* TLS: watches the socket's own output drain */
};

static void
accepted(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct ev_listener *el = arg;
	struct mb_sockaddr peer, local;

	memset(&peer, 0, sizeof(peer));
	memcpy(&peer.ss, sa, (size_t)salen);
	peer.len = (socklen_t)salen;
	local.len = sizeof(local.ss);
	if (getsockname(fd, (struct sockaddr *)&local.ss, &local.len) < 0) {
		close(fd);
		return;
	}
	el->cb(el->arg, fd, &peer, &local);
}

static void
accept_failed(struct evconnlistener *l, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();

	/* EMFILE and friends: keep listening; the sessions limit normally prevents this. */
	mb_warn("ev: accept: %s", evutil_socket_error_to_string(e));
}

struct ev_listener *
ev_listener_new(struct ev_loop *loop, const struct mb_sockaddr *addr, ev_accept_cb cb, void *arg,
                struct mb_err *err)
{
	struct ev_listener *el = mb_calloc(1, sizeof(*el));
	char host[64];

	el->cb = cb;
	el->arg = arg;
	el->l = evconnlistener_new_bind(loop->base, accepted, el,
	                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	                                    LEV_OPT_CLOSE_ON_EXEC,
	                                1024, (const struct sockaddr *)&addr->ss, (int)addr->len);
	if (el->l == NULL) {
		mb_sockaddr_host(addr, host, sizeof(host));
		mb_err_set(err, MB_EIO, "cannot listen on %s port %d: %s", host,
		           mb_sockaddr_port(addr), strerror(errno));
		free(el);
		return NULL;
	}
	evconnlistener_set_error_cb(el->l, accept_failed);
	return el;
}

void
ev_listener_pause(struct ev_listener *l)
{
	evconnlistener_disable(l->l);
}

void
ev_listener_resume(struct ev_listener *l)
{
	evconnlistener_enable(l->l);
}

void
ev_listener_free(struct ev_listener *l)
{
	if (l == NULL)
		return;
	evconnlistener_free(l->l);
	free(l);
}

struct ev_tls *
ev_tls_server_new(const char *cert_file, const char *key_file, struct mb_err *err)
{
	struct ev_tls *t;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char buf[256];

	if (ctx == NULL) {
		mb_err_set(err, MB_EIO, "TLS: cannot create a context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
		mb_err_set(err, MB_EINVAL, "tls_cert %s: %s", cert_file, buf);
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
		mb_err_set(err, MB_EINVAL, "tls_key %s: %s", key_file, buf);
		SSL_CTX_free(ctx);
		return NULL;
	}
	t = mb_calloc(1, sizeof(*t));
	t->ctx = ctx;
	return t;
}

void
ev_tls_free(struct ev_tls *tls)
{
	if (tls == NULL)
		return;
	SSL_CTX_free(tls->ctx);
	free(tls);
}

static void
stream_read(struct bufferevent *bev, void *arg)
{
	struct ev_stream *s = arg;

	s->read_cb(s->arg);
}

/* Bytes still waiting below the TLS layer, in the socket's own bufferevent. */
static size_t
raw_pending(const struct ev_stream *s)
{
	struct bufferevent *raw = s->tls ? bufferevent_get_underlying(s->bev) : NULL;

	return raw ? evbuffer_get_length(bufferevent_get_output(raw)) : 0;
}

static void
raw_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct ev_stream *s = arg;
	struct timeval now = {0, 0};

	if (evbuffer_get_length(buf) == 0 && s->raw_cb) {
		evbuffer_remove_cb_entry(buf, s->raw_cb);
		s->raw_cb = NULL;
		evtimer_add(s->deferred, &now);
	}
}

/* When closing, FLUSHED means on the wire: over TLS the encrypted bytes must leave too. */
static void
flush_then_report(struct ev_stream *s)
{
	struct timeval now = {0, 0};
	struct bufferevent *raw;

	if (raw_pending(s) == 0) {
		evtimer_add(s->deferred, &now);
		return;
	}
	raw = bufferevent_get_underlying(s->bev);
	if (s->raw_cb == NULL)
		s->raw_cb = evbuffer_add_cb(bufferevent_get_output(raw), raw_drained, s);
}

static void
stream_write(struct bufferevent *bev, void *arg)
{
	struct ev_stream *s = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	if (s->closing)
		flush_then_report(s);
	else
		s->event_cb(s->arg, EV_STREAM_DRAINED);
}

static void
deferred_flushed(evutil_socket_t fd, short what, void *arg)
{
	struct ev_stream *s = arg;

	s->event_cb(s->arg, EV_STREAM_FLUSHED);
}

static void
stream_event(struct bufferevent *bev, short what, void *arg)
{
	struct ev_stream *s = arg;

	if (what & BEV_EVENT_CONNECTED)
		return;
	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING)) {
		/* libevent disabled reading; the owner decides whether to go on */
		s->event_cb(s->arg, EV_STREAM_TIMEOUT);
	} else if (what & BEV_EVENT_TIMEOUT)
		s->event_cb(s->arg, EV_STREAM_ERROR); /* the peer stopped reading */
	else if (what & BEV_EVENT_EOF)
		s->event_cb(s->arg, EV_STREAM_EOF);
	else
		s->event_cb(s->arg, EV_STREAM_ERROR);
}

static void
stream_arm(struct ev_stream *s)
{
	struct timeval tv = {.tv_sec = s->read_ms / 1000, .tv_usec = (s->read_ms % 1000) * 1000};

	bufferevent_setcb(s->bev, stream_read, stream_write, stream_event, s);
	bufferevent_set_timeouts(s->bev, s->read_ms > 0 ? &tv : NULL, s->read_ms > 0 ? &tv : NULL);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

struct ev_stream *
ev_stream_new(struct ev_loop *loop, int fd, ev_cb read_cb, ev_stream_event_cb event_cb, void *arg)
{
	struct ev_stream *s = mb_calloc(1, sizeof(*s));

	evutil_make_socket_nonblocking(fd);
	s->loop = loop;
	s->read_cb = read_cb;
	s->event_cb = event_cb;
	s->arg = arg;
	s->bev = bufferevent_socket_new(loop->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		close(fd);
		free(s);
		return NULL;
	}
	s->deferred = evtimer_new(loop->base, deferred_flushed, s);
	stream_arm(s);
	return s;
}

void
ev_stream_free(struct ev_stream *s)
{
	if (s == NULL)
		return;
	event_free(s->deferred);
	if (s->raw_cb)
		evbuffer_remove_cb_entry(bufferevent_get_output(bufferevent_get_underlying(s->bev)),
		                         s->raw_cb);
	bufferevent_free(s->bev);
	free(s);
}

size_t
ev_stream_input_len(const struct ev_stream *s)
{
	return evbuffer_get_length(bufferevent_get_input(s->bev));
}

size_t
ev_stream_output_len(const struct ev_stream *s)
{
	return evbuffer_get_length(bufferevent_get_output(s->bev));
}

static bool
discard_to_lf(struct ev_stream *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr p = evbuffer_search(in, "\n", 1, NULL);

	if (p.pos < 0) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return false;
	}
	evbuffer_drain(in, (size_t)p.pos + 1);
	s->discarding = false;
	return true;
}

enum ev_line_result
ev_stream_read_line(struct ev_stream *s, struct mb_buf *line, size_t max)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr p;
	size_t eol_len = 0;

	mb_buf_reset(line);
	if (s->discarding && !discard_to_lf(s))
		return EV_LINE_NONE;
	p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
	if (p.pos < 0) {
		if (evbuffer_get_length(in) > max) {
			s->discarding = true;
			discard_to_lf(s);
			return EV_LINE_TOO_LONG;
		}
		return EV_LINE_NONE;
	}
	if ((size_t)p.pos > max) {
		evbuffer_drain(in, (size_t)p.pos + eol_len);
		return EV_LINE_TOO_LONG;
	}
	mb_buf_reserve(line, (size_t)p.pos);
	evbuffer_remove(in, line->data, (size_t)p.pos);
	line->len = (size_t)p.pos;
	line->data[line->len] = '\0';
	evbuffer_drain(in, eol_len);
	return EV_LINE_OK;
}

const char *
ev_stream_peek(struct ev_stream *s, size_t *len)
{
	struct evbuffer_iovec v;

	if (evbuffer_peek(bufferevent_get_input(s->bev), -1, NULL, &v, 1) < 1) {
		*len = 0;
		return NULL;
	}
	*len = v.iov_len;
	return v.iov_base;
}

void
ev_stream_drain(struct ev_stream *s, size_t n)
{
	evbuffer_drain(bufferevent_get_input(s->bev), n);
}

void
ev_stream_write(struct ev_stream *s, const void *data, size_t len)
{
	bufferevent_write(s->bev, data, len);
}

void
ev_stream_printf(struct ev_stream *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
	va_end(ap);
}

void
ev_stream_set_timeout(struct ev_stream *s, int64_t read_ms)
{
	struct timeval tv = {.tv_sec = read_ms / 1000, .tv_usec = (read_ms % 1000) * 1000};

	s->read_ms = read_ms;
	bufferevent_set_timeouts(s->bev, read_ms > 0 ? &tv : NULL, read_ms > 0 ? &tv : NULL);
}

void
ev_stream_pause_read(struct ev_stream *s)
{
	bufferevent_disable(s->bev, EV_READ);
}

void
ev_stream_resume_read(struct ev_stream *s)
{
	if (!s->closing)
		bufferevent_enable(s->bev, EV_READ);
}

void
ev_stream_close_after_write(struct ev_stream *s)
{
	s->closing = true;
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		flush_then_report(s);
}

int
ev_stream_start_tls(struct ev_stream *s, struct ev_tls *tls, struct mb_err *err)
{
	struct bufferevent *filter;
	SSL *ssl = SSL_new(tls->ctx);

	if (ssl == NULL) {
		mb_err_set(err, MB_EIO, "TLS: cannot create a session");
		return -1;
	}
	/* RFC 3207 §4.2 / CVE-2011-0411: nothing pipelined in plaintext survives. */
	evbuffer_drain(bufferevent_get_input(s->bev),
	               evbuffer_get_length(bufferevent_get_input(s->bev)));
	filter = bufferevent_openssl_filter_new(s->loop->base, s->bev, ssl,
	                                        BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (filter == NULL) {
		SSL_free(ssl);
		mb_err_set(err, MB_EIO, "TLS: cannot start");
		return -1;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(filter, 1);
	s->bev = filter;
	s->tls = true;
	stream_arm(s);
	return 0;
}

bool
ev_stream_is_tls(const struct ev_stream *s)
{
	return s->tls;
}

void
ev_stream_tls_desc(const struct ev_stream *s, char *out, size_t outlen)
{
	SSL *ssl;

	out[0] = '\0';
	if (!s->tls)
		return;
	ssl = bufferevent_openssl_get_ssl(s->bev);
	if (ssl)
		snprintf(out, outlen, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}
