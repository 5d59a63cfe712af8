/* The server: listeners, the session limit and the id registry. */
#include "smtp_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
accepted(void *arg, int fd, const struct mb_sockaddr *peer, const struct mb_sockaddr *local)
{
	smtp_session_accept(arg, fd, peer, local);
}

struct smtp_server *
smtp_server_new(struct ev_loop *loop, const struct config *cfg, struct store_writer *writer,
                struct mb_err *err)
{
	struct smtp_server *srv = mb_calloc(1, sizeof(*srv));
	const struct config_server *cs = &cfg->server;

	srv->loop = loop;
	srv->cfg = cfg;
	srv->writer = writer;
	srv->next_id = 1;
	srv->nbuckets = 1024;
	srv->buckets = mb_calloc(srv->nbuckets, sizeof(*srv->buckets));
	if (cs->smtp_hostname && *cs->smtp_hostname)
		snprintf(srv->hostname, sizeof(srv->hostname), "%s", cs->smtp_hostname);
	else if (gethostname(srv->hostname, sizeof(srv->hostname) - 1) < 0)
		snprintf(srv->hostname, sizeof(srv->hostname), "localhost");
	srv->allow = mb_calloc(cs->smtp_allow.n, sizeof(*srv->allow));
	for (size_t i = 0; i < cs->smtp_allow.n; i++) {
		if (mb_cidr_parse(cs->smtp_allow.v[i], &srv->allow[srv->nallow]) < 0) {
			mb_err_set(err, MB_EINVAL, "smtp_allow: '%s' is not a network",
			           cs->smtp_allow.v[i]);
			goto fail;
		}
		srv->nallow++;
	}
	if (cs->tls_cert && cs->tls_key) {
		srv->tls = ev_tls_server_new(cs->tls_cert, cs->tls_key, err);
		if (srv->tls == NULL)
			goto fail;
	}
	srv->listeners = mb_calloc(cs->smtp_listen.n, sizeof(*srv->listeners));
	for (size_t i = 0; i < cs->smtp_listen.n; i++) {
		struct mb_sockaddr a;
		if (mb_sockaddr_parse(cs->smtp_listen.v[i], &a, err) < 0)
			goto fail;
		srv->listeners[i] = ev_listener_new(loop, &a, accepted, srv, err);
		if (srv->listeners[i] == NULL)
			goto fail;
		srv->nlisteners++;
		mb_info("smtp: listening: %s%s", cs->smtp_listen.v[i],
		        srv->tls ? " (STARTTLS)" : "");
	}
	return srv;
fail:
	smtp_server_free(srv);
	return NULL;
}

void
smtp_server_drain(struct smtp_server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++)
		ev_listener_free(srv->listeners[i]);
	srv->nlisteners = 0;
	srv->draining = true;
	smtp_session_drain_all(srv);
}

void
smtp_server_close(struct smtp_server *srv)
{
	if (srv == NULL)
		return;
	for (size_t i = 0; i < srv->nlisteners; i++)
		ev_listener_free(srv->listeners[i]);
	srv->nlisteners = 0;
	smtp_session_free_all(srv);
}

void
smtp_server_free(struct smtp_server *srv)
{
	if (srv == NULL)
		return;
	smtp_server_close(srv);
	free(srv->listeners);
	free(srv->buckets);
	free(srv->allow);
	ev_tls_free(srv->tls);
	smtp_auth_cache_free(srv->auth_cache);
	free(srv);
}

int
smtp_server_set_config(struct smtp_server *srv, const struct config *cfg, struct mb_err *err)
{
	const struct config_server *cs = &cfg->server;
	struct mb_cidr *allow = mb_calloc(cs->smtp_allow.n, sizeof(*allow));
	struct ev_tls *tls = NULL;
	size_t nallow = 0;

	for (size_t i = 0; i < cs->smtp_allow.n; i++) {
		if (mb_cidr_parse(cs->smtp_allow.v[i], &allow[nallow]) < 0) {
			mb_err_set(err, MB_EINVAL, "smtp_allow: '%s' is not a network",
			           cs->smtp_allow.v[i]);
			free(allow);
			return -1;
		}
		nallow++;
	}
	if (cs->tls_cert && cs->tls_key) {
		tls = ev_tls_server_new(cs->tls_cert, cs->tls_key, err);
		if (tls == NULL) {
			free(allow);
			return -1;
		}
	}
	free(srv->allow);
	srv->allow = allow;
	srv->nallow = nallow;
	/* sessions already in TLS keep their own SSL objects; the old context is refcounted */
	ev_tls_free(srv->tls);
	srv->tls = tls;
	srv->cfg = cfg;
	if (cs->smtp_hostname && *cs->smtp_hostname)
		snprintf(srv->hostname, sizeof(srv->hostname), "%s", cs->smtp_hostname);
	smtp_auth_cache_free(srv->auth_cache);
	srv->auth_cache = NULL;
	return 0;
}

void
smtp_server_on_queued(struct smtp_server *srv, ev_cb cb, void *arg)
{
	srv->on_queued = cb;
	srv->on_queued_arg = arg;
}

size_t
smtp_server_session_count(const struct smtp_server *srv)
{
	return srv->nsessions;
}

struct smtp_session *
smtp_server_find(struct smtp_server *srv, uint64_t id)
{
	struct smtp_session *s = srv->buckets[id % srv->nbuckets];

	while (s && smtp_session_id(s) != id)
		s = *smtp_session_next_ptr(s);
	return s;
}

void
smtp_server_register(struct smtp_server *srv, struct smtp_session *s)
{
	struct smtp_session **b = &srv->buckets[smtp_session_id(s) % srv->nbuckets];

	*smtp_session_next_ptr(s) = *b;
	*b = s;
	srv->nsessions++;
}

void
smtp_server_unregister(struct smtp_server *srv, struct smtp_session *s)
{
	struct smtp_session **p = &srv->buckets[smtp_session_id(s) % srv->nbuckets];

	while (*p && *p != s)
		p = smtp_session_next_ptr(*p);
	if (*p) {
		*p = *smtp_session_next_ptr(s);
		srv->nsessions--;
	}
}

void
smtp_server_metrics(const struct smtp_server *srv, struct mb_buf *out)
{
	mb_buf_printf(out,
	              "# HELP mailbridge_smtp_sessions Open SMTP sessions.\n"
	              "# TYPE mailbridge_smtp_sessions gauge\nmailbridge_smtp_sessions %zu\n"
	              "# HELP mailbridge_smtp_messages_total Messages at the end of DATA, by "
	              "outcome.\n# TYPE mailbridge_smtp_messages_total counter\n"
	              "mailbridge_smtp_messages_total{outcome=\"queued\"} %llu\n"
	              "mailbridge_smtp_messages_total{outcome=\"refused\"} %llu\n",
	              srv->nsessions, (unsigned long long)srv->accepted,
	              (unsigned long long)srv->refused);
}
