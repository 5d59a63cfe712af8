/*
 * admin: the embedded HTTP server on http_listen: /healthz, /readyz, /metrics and the OAuth
 * callback now; the JSON API and the web UI later. Routes are a table of {method, path, handler}.
 */
#ifndef MB_ADMIN_H
#define MB_ADMIN_H

#include "config/config.h"
#include "ev/ev.h"

struct admin;
struct http_client;
struct store;
struct oauth_tm;
struct smtp_server;
struct deliver;

struct admin_deps {
	const struct config *cfg;
	struct store *st;
	const struct mb_key *key;
	struct http_client *http;
	struct oauth_tm *tm;
	struct smtp_server *smtp;
	struct deliver *deliver;
};

/* Binds every http_listen address. deps must outlive the admin. */
struct admin *admin_new(struct ev_loop *loop, const struct admin_deps *deps, struct mb_err *err);
/* A reloaded config (http_listen changes need a restart). */
void admin_set_config(struct admin *a, const struct config *cfg);
void admin_free(struct admin *a);

#endif
