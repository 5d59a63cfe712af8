/*
 * store: the durable queue and everything the gateway must remember, in SQLite.
 *
 * Only this module includes sqlite3.h. The database lives at {data_dir}/mailbridge.db in
 * WAL mode with synchronous=FULL, STRICT tables, and numbered migrations (PRAGMA
 * user_version).
 *
 * Two ways in:
 * - struct store: a plain handle for reads and occasional writes (CLI, API). Blocking.
 * - struct store_writer: the daemon's one writer. It owns a thread and a connection;
 *   messages handed to store_writer_submit() are committed in groups (one fsync for many
 *   sessions), and each submitter's callback runs on the loop only after its message's
 *   transaction is durable. A failed commit fails every message in that group, and none of
 *   them is acknowledged.
 *
 * Ownership: store_writer_submit() adopts the message; the callback runs exactly once.
 */
#ifndef MB_STORE_H
#define MB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ev/ev.h"
#include "util/util.h"

enum store_state {
	STORE_QUEUED,
	STORE_SENDING,
	STORE_DEFERRED,
	STORE_SENT,
	STORE_FAILED,
	STORE_STATE_COUNT
};

const char *store_state_name(enum store_state s);
int store_state_parse(const char *s, enum store_state *out);

struct store_msg {
	char id[MB_ID_LEN + 1];
	char *sender; /* "" for the null sender <> */
	char **rcpts;
	size_t nrcpts;
	char *body; /* exact bytes as stored, Received header included */
	size_t body_len;
	int64_t size;        /* body length even when the body was not loaded */
	int64_t received_ms; /* Unix ms */
	char *client;        /* "[127.0.0.1] helo=host auth=user tls=TLSv1.3" */
	enum store_state state;
	int attempts;
	int64_t next_attempt_ms;
	char *last_error;
	char *connection; /* the connection chosen (or last tried); NULL until routed */
	char *subject;    /* from the headers, for listings; may be NULL */
	char *from_hdr;   /* likewise */
	int64_t updated_ms;
};

struct store_msg *store_msg_new(void);
void store_msg_free(struct store_msg *m);
void store_msg_add_rcpt(struct store_msg *m, const char *rcpt);

#define STORE_DB_NAME "mailbridge.db"

struct store;

/* Opens {data_dir}/mailbridge.db, creating data_dir (0700) and the schema if asked. */
struct store *store_open(const char *data_dir, bool create, struct mb_err *err);
void store_close(struct store *st);
int store_schema_version(struct store *st);

struct store_query {
	const enum store_state *states; /* NULL = any */
	size_t nstates;
	int64_t limit; /* 0 = no limit */
	int64_t offset;
	bool oldest_first;
	int64_t from_ms;  /* received at or after this; 0 = no bound */
	int64_t to_ms;    /* received before this; 0 = no bound */
	const char *text; /* NULL or "" = any; else found (ASCII case-insensitively) in a
	                   * recipient, the sender, the From: header or the subject */
};

typedef int (*store_msg_each_cb)(void *arg, const struct store_msg *m);

/* Lists messages (without bodies), newest first unless oldest_first. */
int store_msg_list(struct store *st, const struct store_query *q, store_msg_each_cb cb, void *arg,
                   struct mb_err *err);
/* How many messages match q, its limit and offset aside; -1 on error. */
int64_t store_msg_total(struct store *st, const struct store_query *q, struct mb_err *err);
/* One message; NULL with MB_ENOTFOUND when absent. */
struct store_msg *store_msg_get(struct store *st, const char *id, bool with_body,
                                struct mb_err *err);
int store_msg_delete(struct store *st, const char *id, struct mb_err *err);
/* Like store_msg_delete, but a message in state sending (being delivered right now) stays:
 * MB_EINVAL. */
int store_msg_delete_idle(struct store *st, const char *id, struct mb_err *err);
int64_t store_msg_count(struct store *st, enum store_state state, struct mb_err *err);

struct store_result;
/* Stores a message tried outside the queue (the Email Test): m whole, in r's state, with r's
 * attempt row, in one transaction. */
int store_msg_record(struct store *st, const struct store_msg *m, const struct store_result *r,
                     struct mb_err *err);
/* For each UTC day (Unix ms / 86400000) since since_ms with any: the messages that became
 * sent and failed that day (by their last update). */
int store_msg_daily(struct store *st, int64_t since_ms,
                    void (*cb)(void *arg, int64_t day, int64_t sent, int64_t failed), void *arg,
                    struct mb_err *err);

/* The event log: what happened to messages and connections, for `mailbridge log` and the UI. */
int store_event_add(struct store *st, const char *level, const char *msg_id, const char *connection,
                    const char *text, struct mb_err *err);

/* ---- connections ----
 *
 * A connection row holds its definition (provider, sender, opaque JSON settings, the sealed
 * client secret) and what the gateway learned while using it (state, account, scopes, the
 * last refresh and error). Rows with source "config" mirror [connection] sections of the
 * config file, so their state survives restarts too; "store" rows were made by the CLI or UI.
 *
 * The store never sees a secret in clear: secret, token ciphertexts and PKCE verifiers arrive
 * sealed by the caller (mb_seal) and are returned as stored. Buffers holding them are wiped on
 * free. Every function below returns 0 or -1 (NULL for pointers) with err filled; a missing
 * row is MB_ENOTFOUND, a bad argument MB_EINVAL, a busy database MB_ETEMP.
 */

#define STORE_CONN_NOT_AUTHORIZED "not authorized"
#define STORE_CONN_AUTHORIZED     "authorized"
#define STORE_CONN_NEEDS_REAUTH   "needs re-authorization"

struct store_conn {
	char *name;
	char *provider; /* microsoft-graph | microsoft-smtp | smtp */
	char *sender;
	char *settings; /* JSON text, opaque to the store; NULL is stored as "{}" */
	char *source;   /* "store" | "config"; NULL is stored as "store" */
	char *state;    /* STORE_CONN_* */
	char *state_reason;
	char *account; /* the signed-in account */
	char *scopes;  /* granted */
	char *last_error;
	char *last_fix;
	char *secret_fp;       /* fingerprint of the clear secret, for display */
	unsigned char *secret; /* sealed client secret or SMTP password; NULL if none */
	size_t secret_len;
	int64_t secret_expires_ms; /* 0 unknown */
	int64_t last_refresh_ms;   /* 0 never */
	int64_t created_ms;
	int64_t updated_ms;
};

struct store_conn *store_conn_new(void);
/* Wipes the secret; NULL does nothing. */
void store_conn_free(struct store_conn *c);

/* Inserts c, or replaces the definition columns of an existing row: provider, sender, settings,
 * source, secret, secret_fp, secret_expires_ms (all of them: to change one, get, change, put).
 * state, account, scopes and last_* are never touched (a new row starts "not authorized"). */
int store_conn_put(struct store *st, const struct store_conn *c, struct mb_err *err);
struct store_conn *store_conn_get(struct store *st, const char *name, struct mb_err *err);
/* Calls cb for each connection, ordered by name; a non-zero return from cb stops the walk.
 * The rows are read before the first call, so cb may use the store. */
int store_conn_list(struct store *st, int (*cb)(void *arg, const struct store_conn *c), void *arg,
                    struct mb_err *err);
/* Removes the connection, its tokens and its pending sign-ins in one transaction. */
int store_conn_delete(struct store *st, const char *name, struct mb_err *err);
/* state is one of STORE_CONN_*; a NULL reason, last_error or last_fix stores NULL. */
int store_conn_set_state(struct store *st, const char *name, const char *state, const char *reason,
                         const char *last_error, const char *last_fix, struct mb_err *err);
/* last_refresh_ms 0 stores "never". */
int store_conn_set_account(struct store *st, const char *name, const char *account,
                           const char *scopes, int64_t last_refresh_ms, struct mb_err *err);

/* ---- tokens (sealed by the caller) ---- */

struct store_token {
	const char *connection;
	const char *resource; /* "graph" | "outlook" */
	const char *kind;     /* "refresh" | "access" */
	const unsigned char *ct;
	size_t ct_len;
	int64_t expires_ms; /* 0 unknown */
	const char *scopes;
	const char *account;
};

/* Upserts all n rows in one transaction: all are stored or none. This is how a rotated refresh
 * token and the access token it minted are persisted together. */
int store_token_put_many(struct store *st, const struct store_token *t, size_t n,
                         struct mb_err *err);
/* MB_ENOTFOUND when absent. Any out parameter may be NULL. *ct is a new buffer: wipe ct_len
 * bytes, then free it. *expires_ms is 0 when unknown. */
int store_token_get(struct store *st, const char *connection, const char *resource,
                    const char *kind, unsigned char **ct, size_t *ct_len, int64_t *expires_ms,
                    char **scopes, char **account, int64_t *updated_ms, struct mb_err *err);
/* Removes the connection's tokens of one kind, or all of them if kind is NULL. Removing
 * nothing is not an error. */
int store_token_delete(struct store *st, const char *connection, const char *kind,
                       struct mb_err *err);

/* ---- settings (default_connection, UI settings) ---- */

/* MB_ENOTFOUND when absent; *value is a new string. */
int store_setting_get(struct store *st, const char *key, char **value, struct mb_err *err);
/* A NULL value removes the key (removing an absent key is not an error). */
int store_setting_set(struct store *st, const char *key, const char *value, struct mb_err *err);

/* [server] keys the admin may change at run time (store_settings.c): log_retention_days,
 * alert_webhook, alert_email. A key set in the config file wins; else the stored setting of
 * the same name; else the built-in default. */
enum store_setting_source { STORE_SETTING_CONFIG, STORE_SETTING_STORE, STORE_SETTING_DEFAULT };
struct config;
/* The effective value as text (a new string; NULL when unset everywhere), and *source (may
 * be NULL) where it came from. */
char *store_server_setting(struct store *st, const struct config *cfg, const char *key,
                           enum store_setting_source *source);
/* Whether [server] key is set in the config file (or with --set). */
bool store_server_setting_in_config(const struct config *cfg, const char *key);
/* The default connection's name, a new string or NULL: the config file's default = yes wins,
 * else the stored default_connection setting. */
char *store_default_connection(const struct config *cfg, struct store *st);

/* ---- admin API access (store_admin.c) ----
 *
 * Sessions and API tokens are stored as the SHA-256 (hex) of what the client holds; the
 * caller hashes. A missing or expired row is MB_ENOTFOUND. */

int store_admin_session_put(struct store *st, const char *id_hash, const char *csrf,
                            const char *peer, int64_t expires_ms, struct mb_err *err);
/* An unexpired session; *csrf (a new string) and *expires_ms may be NULL. */
int store_admin_session_get(struct store *st, const char *id_hash, char **csrf, int64_t *expires_ms,
                            struct mb_err *err);
int store_admin_session_delete(struct store *st, const char *id_hash, struct mb_err *err);
/* Removes expired sessions. */
int store_admin_session_prune(struct store *st, struct mb_err *err);

struct store_api_token {
	const char *name;
	const char *fingerprint;
	int64_t created_ms;
	int64_t last_used_ms; /* 0 never */
};

/* MB_EINVAL when a token of that name exists. */
int store_api_token_put(struct store *st, const char *name, const char *hash,
                        const char *fingerprint, struct mb_err *err);
/* The name of the token with this hash (*name a new string, may be NULL); records its use. */
int store_api_token_find(struct store *st, const char *hash, char **name, struct mb_err *err);
int store_api_token_list(struct store *st, void (*cb)(void *arg, const struct store_api_token *t),
                         void *arg, struct mb_err *err);
/* MB_ENOTFOUND when no token has that name. */
int store_api_token_delete(struct store *st, const char *name, struct mb_err *err);

/* ---- OAuth sign-in states: the browser flow's `state`, single use, short-lived ---- */

#define STORE_OAUTH_STATE_MAX_AGE_MS (10 * 60 * 1000)

int store_oauth_state_put(struct store *st, const char *state, const char *connection,
                          const unsigned char *verifier_ct, size_t len, const char *redirect_uri,
                          struct mb_err *err);
/* Marks the state used and returns what was saved with it, atomically: of any number of
 * concurrent takers (threads, processes, nodes) exactly one succeeds. Fails with
 * MB_ENOTFOUND "unknown state", or MB_EINVAL "this sign-in link was already used" or
 * "this sign-in link expired after N minutes" (older than max_age_ms). Out parameters may be
 * NULL; *verifier_ct is a new buffer to wipe and free. */
int store_oauth_state_take(struct store *st, const char *state, int64_t max_age_ms,
                           char **connection, unsigned char **verifier_ct, size_t *len,
                           char **redirect_uri, struct mb_err *err);
/* Records the outcome of the sign-in: result "ok" or "error", detail for people. */
int store_oauth_state_finish(struct store *st, const char *state, const char *result,
                             const char *detail, struct mb_err *err);
/* What the CLI polls: *result is NULL while the sign-in is pending. Out parameters may be
 * NULL. */
int store_oauth_state_result(struct store *st, const char *state, char **result, char **detail,
                             struct mb_err *err);
/* Removes states created more than older_than_ms ago, used or not. */
int store_oauth_state_prune(struct store *st, int64_t older_than_ms, struct mb_err *err);

/* ---- the group-commit writer ---- */

struct store_writer;

/* status 0: durable. -1: not stored (errmsg says why); the message must not be acknowledged. */
typedef void (*store_commit_cb)(void *arg, int status, const char *errmsg);

struct store_writer *store_writer_new(const char *data_dir, struct ev_loop *loop, int64_t batch_max,
                                      struct mb_err *err);
/* Adopts m. cb runs on the loop thread, exactly once. */
void store_writer_submit(struct store_writer *w, struct store_msg *m, store_commit_cb cb,
                         void *arg);
/* ---- delivery: claims and results go through the same writer ---- */

/* The callback adopts msgs (the array and each message; free with store_msg_free and
 * free()). n is 0 when nothing was due or the claim could not commit. */
typedef void (*store_claim_cb)(void *arg, struct store_msg **msgs, size_t n);

/* Leases up to max due messages (queued or deferred with next attempt now or earlier, or
 * sending with an expired lease) to owner for lease_ms; they come back whole, bodies
 * included, in state sending. */
void store_writer_claim(struct store_writer *w, size_t max, int64_t lease_ms, const char *owner,
                        store_claim_cb cb, void *arg);

struct store_result {
	char id[MB_ID_LEN + 1];
	enum store_state state;  /* sent, deferred, failed, or queued (a lease given back) */
	int64_t next_attempt_ms; /* 0 = now */
	bool count_attempt;
	char *connection; /* NULL keeps the stored one */
	char *last_error; /* NULL clears it */
	/* the attempts row, written when result is set: "sent", "tempfail", "permfail" */
	char *result;
	char *detail;
	char *upstream_id; /* Graph request-id or the SMTP reply */
	int64_t latency_ms;
};

struct store_result *store_result_new(const char *id);
void store_result_free(struct store_result *r);
/* Adopts r. The state change and its attempt row commit together. */
void store_writer_result(struct store_writer *w, struct store_result *r, store_commit_cb cb,
                         void *arg);

/* Prometheus text: messages by state, queue depth and the oldest waiting message's age,
 * and each connection's health. */
int store_metrics(struct store *st, struct mb_buf *out, struct mb_err *err);
/* Connections that can deliver now: signed in without a pending error, or plain SMTP. */
int64_t store_conn_usable_count(struct store *st);
/* Whether the store takes writes (for /readyz). */
bool store_is_writable(struct store *st);

struct store_attempt {
	int64_t at_ms;
	const char *connection;
	const char *result; /* sent, tempfail, permfail */
	const char *detail;
	const char *upstream_id;
	int64_t latency_ms;
};

/* A message's delivery attempts, oldest first. */
int store_attempts_list(struct store *st, const char *id,
                        void (*cb)(void *arg, const struct store_attempt *a), void *arg,
                        struct mb_err *err);

/* Puts a deferred, failed or queued message back in the queue, due now. */
int store_msg_requeue(struct store *st, const char *id, struct mb_err *err);
/* Queues a copy of message id under a new id (written to new_id): to its original
 * recipients, or to rcpts when nrcpts > 0. The body is the same bytes, or body when it is
 * not NULL. */
int store_msg_copy(struct store *st, const char *id, const char *const *rcpts, size_t nrcpts,
                   const char *body, size_t body_len, char new_id[MB_ID_LEN + 1],
                   struct mb_err *err);

/* For the daily recipient budget: each successful attempt through connection since
 * since_ms, with the number of recipients of its message. */
int store_sent_recipients(struct store *st, const char *connection, int64_t since_ms,
                          void (*cb)(void *arg, int64_t at_ms, int64_t nrcpts), void *arg,
                          struct mb_err *err);

/* Gives back every lease this owner held (after a restart: those deliveries died with the
 * old process). */
int store_leases_release(struct store *st, const char *owner, struct mb_err *err);

/* Retention: deletes up to batch messages (with their bodies, recipients and attempts) that
 * reached sent or failed before cutoff_ms, and events older than it. cb gets how many
 * messages went (0..batch): batch means there may be more. */
typedef void (*store_prune_cb)(void *arg, int status, int64_t deleted);
void store_writer_prune(struct store_writer *w, int64_t cutoff_ms, int64_t batch, store_prune_cb cb,
                        void *arg);

/* A consistent copy of the live store into dest (SQLite's online backup API). */
int store_backup(const char *data_dir, const char *dest, struct mb_err *err);

/* Commits what is pending, runs its callbacks, stops the thread. */
void store_writer_free(struct store_writer *w);

#endif
