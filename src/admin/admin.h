/*
 * admin: the embedded HTTP server on http_listen: health now; later the JSON API, the
 * OAuth callback, metrics and the web UI. Routes are a table of {method, path, handler}.
 */
#ifndef MB_ADMIN_H
#define MB_ADMIN_H

#include "config/config.h"
#include "ev/ev.h"

struct admin;

/* Binds every http_listen address. */
struct admin *admin_new(struct ev_loop *loop, const struct config *cfg, struct mb_err *err);
void admin_free(struct admin *a);

#endif
