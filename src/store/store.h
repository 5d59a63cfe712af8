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
};

typedef int (*store_msg_each_cb)(void *arg, const struct store_msg *m);

/* Lists messages (without bodies), newest first unless oldest_first. */
int store_msg_list(struct store *st, const struct store_query *q, store_msg_each_cb cb, void *arg,
                   struct mb_err *err);
/* One message; NULL with MB_ENOTFOUND when absent. */
struct store_msg *store_msg_get(struct store *st, const char *id, bool with_body,
                                struct mb_err *err);
int store_msg_delete(struct store *st, const char *id, struct mb_err *err);
int64_t store_msg_count(struct store *st, enum store_state state, struct mb_err *err);

/* The event log: what happened to messages and connections, for `mailbridge log` and the UI. */
int store_event_add(struct store *st, const char *level, const char *msg_id, const char *connection,
                    const char *text, struct mb_err *err);

/* ---- the group-commit writer ---- */

struct store_writer;

/* status 0: durable. -1: not stored (errmsg says why); the message must not be acknowledged. */
typedef void (*store_commit_cb)(void *arg, int status, const char *errmsg);

struct store_writer *store_writer_new(const char *data_dir, struct ev_loop *loop, int64_t batch_max,
                                      struct mb_err *err);
/* Adopts m. cb runs on the loop thread, exactly once. */
void store_writer_submit(struct store_writer *w, struct store_msg *m, store_commit_cb cb,
                         void *arg);
/* Commits what is pending, runs its callbacks, stops the thread. */
void store_writer_free(struct store_writer *w);

#endif
