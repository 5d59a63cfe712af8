/* Shared between the smtp_*.c files only. */
#ifndef MB_SMTP_INTERNAL_H
#define MB_SMTP_INTERNAL_H

#include "smtp.h"

struct smtp_session;

struct smtp_auth_cache;

struct smtp_server {
	struct ev_loop *loop;
	const struct config *cfg;
	struct store_writer *writer;
	struct ev_tls *tls;
	struct ev_listener **listeners;
	size_t nlisteners;
	struct mb_cidr *allow;
	size_t nallow;
	char hostname[256];
	uint64_t next_id;
	size_t nsessions;
	/* sessions by id, for callbacks that outlive a session */
	struct smtp_session **buckets;
	size_t nbuckets;
	struct smtp_auth_cache *auth_cache;
	bool draining;
	uint64_t accepted;
	uint64_t refused;
	ev_cb on_queued;
	void *on_queued_arg;
};

void smtp_session_accept(struct smtp_server *srv, int fd, const struct mb_sockaddr *peer,
                         const struct mb_sockaddr *local);
struct smtp_session *smtp_server_find(struct smtp_server *srv, uint64_t id);
void smtp_server_register(struct smtp_server *srv, struct smtp_session *s);
void smtp_server_unregister(struct smtp_server *srv, struct smtp_session *s);
uint64_t smtp_session_id(const struct smtp_session *s);
struct smtp_session **smtp_session_next_ptr(struct smtp_session *s);
void smtp_session_free_all(struct smtp_server *srv);
/* Drain: sessions not in the middle of a message get 421 now. */
void smtp_session_drain_all(struct smtp_server *srv);

/* Checks a user's password against the config; caches a keyed digest after a success so
 * later logins cost one HMAC, not one scrypt. */
bool smtp_auth_check(struct smtp_server *srv, const char *user, const char *pass);
void smtp_auth_cache_free(struct smtp_auth_cache *c);

#endif
