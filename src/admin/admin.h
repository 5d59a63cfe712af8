/*
 * admin: the embedded HTTP server on http_listen: /healthz, /readyz, /metrics, the OAuth
 * callback and the JSON API under /api/v1 (docs/api.md); the web UI later. Routes are a table of
 * {method, path, handler}.
 *
 * Access to /api/v1: an admin session (cookie mb_session, plus X-CSRF-Token on state-changing
 * methods) or an API token (Authorization: Bearer). Nothing is trusted for its address, not
 * even loopback. The password hash, the session ids and the API tokens are kept in the store,
 * the last two only as SHA-256.
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

/* The settings key of the admin password's scrypt hash, and its shortest length. */
#define ADMIN_PASSWORD_SETTING "admin_password_hash"
#define ADMIN_PASSWORD_MIN     12
/* An API token starts with this. */
#define ADMIN_TOKEN_PREFIX "mbt_"

/* A new API token: ADMIN_TOKEN_PREFIX + 32 random bytes in base64url. Free with
 * mb_secret_free. */
char *admin_token_new(void);
/* SHA-256 of a credential, lowercase hex: how sessions and tokens are stored and found. */
void admin_secret_hash(const char *secret, char out[65]);
/* Sets the admin password: at least ADMIN_PASSWORD_MIN characters, stored as an scrypt hash
 * (mailbridge admin password and the setup link). 0, or -1 with err (MB_EINVAL: too short). */
int admin_password_set(struct store *st, const char *pw, struct mb_err *err);
/* At start: when no admin password is set, makes the one-time setup link (valid 24 h, once,
 * until the next start) and shows it: on stderr when that is a terminal, else in the file
 * data_dir/setup-link (mode 0600), never in the log. */
void admin_setup_offer(struct admin *a);

#endif
