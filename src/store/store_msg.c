/* Messages: the struct, header scanning, and the blocking read/delete API. */
#include "store_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <strings.h>

static const char *const state_names[STORE_STATE_COUNT] = {"queued", "sending", "deferred", "sent",
                                                           "failed"};

const char *
store_state_name(enum store_state s)
{
	return s < STORE_STATE_COUNT ? state_names[s] : "unknown";
}

int
store_state_parse(const char *s, enum store_state *out)
{
	for (int i = 0; i < STORE_STATE_COUNT; i++) {
		if (strcmp(s, state_names[i]) == 0) {
			*out = (enum store_state)i;
			return 0;
		}
	}
	return -1;
}

struct store_msg *
store_msg_new(void)
{
	return mb_calloc(1, sizeof(struct store_msg));
}

void
store_msg_add_rcpt(struct store_msg *m, const char *rcpt)
{
	m->rcpts = mb_realloc(m->rcpts, (m->nrcpts + 1) * sizeof(char *));
	m->rcpts[m->nrcpts++] = mb_strdup(rcpt);
}

void
store_msg_free(struct store_msg *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nrcpts; i++)
		free(m->rcpts[i]);
	free(m->rcpts);
	free(m->sender);
	free(m->body);
	free(m->client);
	free(m->last_error);
	free(m->connection);
	free(m->subject);
	free(m->from_hdr);
	free(m);
}

/* The unfolded value of the first header called name, at most 200 bytes, or NULL. */
static char *
header_value(const char *body, size_t len, const char *name)
{
	size_t nlen = strlen(name), i = 0;
	struct mb_buf v = {0};

	while (i < len) {
		const char *line = body + i;
		const char *eol = memchr(line, '\n', len - i);
		size_t llen = eol ? (size_t)(eol - line) + 1 : len - i;

		if (llen <= 2 && (line[0] == '\r' || line[0] == '\n'))
			break; /* end of headers */
		if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			size_t j = i + nlen + 1;
			for (;;) {
				while (j < len && body[j] != '\r' && body[j] != '\n') {
					if (v.len < 200)
						mb_buf_append(&v, &body[j], 1);
					j++;
				}
				while (j < len && (body[j] == '\r' || body[j] == '\n'))
					j++;
				if (j >= len || (body[j] != ' ' && body[j] != '\t'))
					break;
			}
			if (v.data == NULL)
				return mb_strdup("");
			{
				char *t = mb_strdup(mb_str_trim(v.data));
				mb_buf_release(&v);
				return t;
			}
		}
		i += llen;
	}
	return NULL;
}

void
store_msg_scan_headers(struct store_msg *m)
{
	if (m->body == NULL)
		return;
	free(m->subject);
	free(m->from_hdr);
	m->subject = header_value(m->body, m->body_len, "Subject");
	m->from_hdr = header_value(m->body, m->body_len, "From");
}

#define MSG_COLS                                                                                   \
	"m.id, m.sender, m.size, m.received_at, m.state, m.attempts, m.next_attempt_at, "          \
	"m.last_error, m.connection, m.client, m.subject, m.from_hdr, m.updated_at"

static struct store_msg *
row_to_msg(sqlite3_stmt *st)
{
	struct store_msg *m = store_msg_new();
	const char *id = (const char *)sqlite3_column_text(st, 0);
	const char *state = (const char *)sqlite3_column_text(st, 4);

	snprintf(m->id, sizeof(m->id), "%s", id ? id : "");
	m->sender = store_db_col_text(st, 1);
	m->size = sqlite3_column_int64(st, 2);
	m->received_ms = sqlite3_column_int64(st, 3);
	if (state == NULL || store_state_parse(state, &m->state) < 0)
		m->state = STORE_QUEUED;
	m->attempts = sqlite3_column_int(st, 5);
	m->next_attempt_ms = sqlite3_column_int64(st, 6);
	m->last_error = store_db_col_text(st, 7);
	m->connection = store_db_col_text(st, 8);
	m->client = store_db_col_text(st, 9);
	m->subject = store_db_col_text(st, 10);
	m->from_hdr = store_db_col_text(st, 11);
	m->updated_ms = sqlite3_column_int64(st, 12);
	return m;
}

static int
load_rcpts(struct store *s, struct store_msg *m, struct mb_err *err)
{
	static const char what[] = "listing recipients";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db,
	                     "SELECT address FROM recipients WHERE message_id = ? ORDER BY idx",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		store_msg_add_rcpt(m, (const char *)sqlite3_column_text(st, 0));
	return store_db_finish(s->db, st, rc, what, err);
}

/* The WHERE clause of q: fixed text with a "?" for each value, which query_bind() binds in
 * the same order. Nothing from the caller is ever part of the SQL text. */
static void
query_where(struct mb_buf *sql, const struct store_query *q)
{
	const char *and = " WHERE ";

	if (q->nstates > 0) {
		mb_buf_printf(sql, "%sm.state IN (", and);
		for (size_t i = 0; i < q->nstates; i++)
			mb_buf_puts(sql, i ? ",?" : "?");
		mb_buf_puts(sql, ")");
		and = " AND ";
	}
	if (q->from_ms > 0) {
		mb_buf_printf(sql, "%sm.received_at >= ?", and);
		and = " AND ";
	}
	if (q->to_ms > 0) {
		mb_buf_printf(sql, "%sm.received_at < ?", and);
		and = " AND ";
	}
	if (q->text && *q->text)
		mb_buf_printf(
		    sql,
		    "%s(instr(lower(m.sender), ?) > 0 OR"
		    " instr(lower(coalesce(m.from_hdr, '')), ?) > 0 OR"
		    " instr(lower(coalesce(m.subject, '')), ?) > 0 OR EXISTS (SELECT 1 FROM"
		    " recipients r WHERE r.message_id = m.id AND"
		    " instr(lower(r.address), ?) > 0))",
		    and);
}

/* Binds what query_where() asked for; returns the next parameter's index. */
static int
query_bind(sqlite3_stmt *st, const struct store_query *q)
{
	int i = 1;

	for (size_t k = 0; k < q->nstates; k++)
		sqlite3_bind_text(st, i++, store_state_name(q->states[k]), -1, SQLITE_STATIC);
	if (q->from_ms > 0)
		sqlite3_bind_int64(st, i++, q->from_ms);
	if (q->to_ms > 0)
		sqlite3_bind_int64(st, i++, q->to_ms);
	if (q->text && *q->text) {
		/* SQLite's lower() folds ASCII only: so does this */
		char *low = mb_strdup(q->text);
		for (char *p = low; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		for (int k = 0; k < 4; k++)
			sqlite3_bind_text(st, i++, low, -1, SQLITE_TRANSIENT);
		free(low);
	}
	return i;
}

int
store_msg_list(struct store *s, const struct store_query *q, store_msg_each_cb cb, void *arg,
               struct mb_err *err)
{
	struct mb_buf sql = {0};
	sqlite3_stmt *st;
	int rc, stop = 0, next;

	mb_buf_puts(&sql, "SELECT " MSG_COLS " FROM messages m");
	query_where(&sql, q);
	mb_buf_printf(&sql, " ORDER BY m.received_at %s, m.id %s LIMIT ? OFFSET ?",
	              q->oldest_first ? "ASC" : "DESC", q->oldest_first ? "ASC" : "DESC");
	rc = sqlite3_prepare_v2(s->db, sql.data, -1, &st, NULL);
	mb_buf_release(&sql);
	if (rc != SQLITE_OK) {
		store_db_err(s->db, err, "listing messages");
		return -1;
	}
	next = query_bind(st, q);
	sqlite3_bind_int64(st, next, q->limit > 0 ? q->limit : -1);
	sqlite3_bind_int64(st, next + 1, q->offset > 0 ? q->offset : 0);
	while (!stop && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_msg *m = row_to_msg(st);
		if (load_rcpts(s, m, err) < 0) {
			store_msg_free(m);
			sqlite3_finalize(st);
			return -1;
		}
		stop = cb(arg, m);
		store_msg_free(m);
	}
	sqlite3_finalize(st);
	if (!stop && rc != SQLITE_DONE) {
		store_db_err(s->db, err, "listing messages");
		return -1;
	}
	return 0;
}

int64_t
store_msg_total(struct store *s, const struct store_query *q, struct mb_err *err)
{
	struct mb_buf sql = {0};
	sqlite3_stmt *st;
	int64_t n = -1;
	int rc;

	mb_buf_puts(&sql, "SELECT count(*) FROM messages m");
	query_where(&sql, q);
	rc = sqlite3_prepare_v2(s->db, sql.data, -1, &st, NULL);
	mb_buf_release(&sql);
	if (rc != SQLITE_OK) {
		store_db_err(s->db, err, "counting messages");
		return -1;
	}
	query_bind(st, q);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	else
		store_db_err(s->db, err, "counting messages");
	sqlite3_finalize(st);
	return n;
}

struct store_msg *
store_msg_get(struct store *s, const char *id, bool with_body, struct mb_err *err)
{
	sqlite3_stmt *st;
	struct store_msg *m;
	int rc;

	if (sqlite3_prepare_v2(s->db,
	                       "SELECT " MSG_COLS ", b.data FROM messages m"
	                       " LEFT JOIN bodies b ON b.message_id = m.id WHERE m.id = ?",
	                       -1, &st, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, "reading a message");
		return NULL;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		if (rc == SQLITE_DONE)
			mb_err_set(err, MB_ENOTFOUND, "no message with id %s", id);
		else
			store_db_err(s->db, err, "reading a message");
		sqlite3_finalize(st);
		return NULL;
	}
	m = row_to_msg(st);
	if (with_body && sqlite3_column_type(st, 13) == SQLITE_BLOB) {
		int n = sqlite3_column_bytes(st, 13);
		m->body = mb_malloc((size_t)n + 1);
		memcpy(m->body, sqlite3_column_blob(st, 13), (size_t)n);
		m->body[n] = '\0';
		m->body_len = (size_t)n;
	}
	sqlite3_finalize(st);
	if (load_rcpts(s, m, err) < 0) {
		store_msg_free(m);
		return NULL;
	}
	return m;
}

int
store_msg_delete(struct store *s, const char *id, struct mb_err *err)
{
	static const char what[] = "deleting a message";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db, "DELETE FROM messages WHERE id = ?", &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (store_db_step_done(s->db, st, what, err) < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0) {
		mb_err_set(err, MB_ENOTFOUND, "no message with id %s", id);
		return -1;
	}
	return 0;
}

int
store_msg_delete_idle(struct store *s, const char *id, struct mb_err *err)
{
	static const char what[] = "deleting a message";
	struct store_msg *m;
	sqlite3_stmt *st;

	if (store_db_prepare(s->db, "DELETE FROM messages WHERE id = ? AND state != 'sending'", &st,
	                     what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (store_db_step_done(s->db, st, what, err) < 0)
		return -1;
	if (sqlite3_changes(s->db) > 0)
		return 0;
	m = store_msg_get(s, id, false, err);
	if (m)
		mb_err_set(err, MB_EINVAL, "message %s is being sent right now", id);
	store_msg_free(m);
	return -1;
}

int64_t
store_msg_count(struct store *s, enum store_state state, struct mb_err *err)
{
	struct store_query q = {.states = &state, .nstates = 1};

	return store_msg_total(s, &q, err);
}

int
store_event_add(struct store *s, const char *level, const char *msg_id, const char *connection,
                const char *text, struct mb_err *err)
{
	static const char what[] = "adding an event";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db,
	                     "INSERT INTO events (at, level, message_id, connection, text)"
	                     " VALUES (?, ?, ?, ?, ?)",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_int64(st, 1, mb_now_ms());
	sqlite3_bind_text(st, 2, level, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, msg_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, connection, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, text, -1, SQLITE_STATIC);
	return store_db_step_done(s->db, st, what, err);
}

int
store_leases_release(struct store *s, const char *owner, struct mb_err *err)
{
	static const char what[] = "releasing leases";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db,
	                     "UPDATE messages SET state = 'queued', lease_owner = NULL,"
	                     " lease_until = NULL WHERE state = 'sending' AND lease_owner = ?",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
	if (store_db_step_done(s->db, st, what, err) < 0)
		return -1;
	if (sqlite3_changes(s->db) > 0)
		mb_info("store: %d deliveries in flight at the last stop go back to the queue",
		        sqlite3_changes(s->db));
	return 0;
}

int
store_sent_recipients(struct store *s, const char *connection, int64_t since_ms,
                      void (*cb)(void *arg, int64_t at_ms, int64_t nrcpts), void *arg,
                      struct mb_err *err)
{
	static const char what[] = "reading the recipient budget";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db,
	                     "SELECT a.at, (SELECT count(*) FROM recipients r WHERE"
	                     " r.message_id = a.message_id) FROM attempts a WHERE"
	                     " a.result = 'sent' AND a.connection = ? AND a.at > ? ORDER BY a.at",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, connection, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, since_ms);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb(arg, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1));
	return store_db_finish(s->db, st, rc, what, err);
}

int
store_msg_requeue(struct store *s, const char *id, struct mb_err *err)
{
	static const char what[] = "requeueing a message";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db,
	                     "UPDATE messages SET state = 'queued', next_attempt_at = ?1,"
	                     " updated_at = ?1 WHERE id = ?2 AND state IN ('queued', 'deferred',"
	                     " 'failed')",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_int64(st, 1, mb_now_ms());
	sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
	if (store_db_step_done(s->db, st, what, err) < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0) {
		struct store_msg *m = store_msg_get(s, id, false, err);
		if (m)
			mb_err_set(err, MB_EINVAL,
			           "message %s is %s: only deferred, failed or "
			           "queued messages can be retried",
			           id, store_state_name(m->state));
		store_msg_free(m);
		return -1;
	}
	return 0;
}

/* What exec_bound() and insert_body() name in their errors. */
static const char copy_what[] = "copying a message";

static int
exec_bound(sqlite3 *db, const char *sql, const char *a, const char *b, int64_t n, int64_t t,
           struct mb_err *err)
{
	sqlite3_stmt *st;

	if (store_db_prepare(db, sql, &st, copy_what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, n);
	sqlite3_bind_int64(st, 4, t);
	return store_db_step_done(db, st, copy_what, err);
}

static int
insert_body(sqlite3 *db, const char *id, const char *body, size_t len, struct mb_err *err)
{
	sqlite3_stmt *st;

	if (store_db_prepare(db, "INSERT INTO bodies (message_id, data) VALUES (?, ?)", &st,
	                     copy_what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 2, body, len, SQLITE_STATIC);
	return store_db_step_done(db, st, copy_what, err);
}

int
store_msg_copy(struct store *s, const char *id, const char *const *rcpts, size_t nrcpts,
               const char *body, size_t body_len, char new_id[MB_ID_LEN + 1], struct mb_err *err)
{
	int64_t now = mb_now_ms();

	mb_id_new(new_id);
	if (store_db_exec(s->db, "BEGIN IMMEDIATE", err) < 0)
		return -1;
	/* ?1 new id, ?2 old id */
	if (exec_bound(
	        s->db,
	        "INSERT INTO messages (id, sender, size, received_at, state, next_attempt_at,"
	        " client, subject, from_hdr, updated_at) SELECT ?1, sender, size, ?4,"
	        " 'queued', ?4, 'resend of ' || id, subject, from_hdr, ?4 FROM messages"
	        " WHERE id = ?2",
	        new_id, id, 0, now, err) < 0 ||
	    (body ? insert_body(s->db, new_id, body, body_len, err)
	          : exec_bound(s->db,
	                       "INSERT INTO bodies (message_id, data) SELECT ?1, data FROM bodies"
	                       " WHERE message_id = ?2",
	                       new_id, id, 0, now, err)) < 0)
		goto fail;
	if (sqlite3_changes(s->db) == 0) {
		mb_err_set(err, MB_ENOTFOUND, "no message with id %s, or its body was pruned", id);
		goto fail;
	}
	if (nrcpts == 0) {
		if (exec_bound(s->db,
		               "INSERT INTO recipients (message_id, idx, address) SELECT ?1, idx,"
		               " address FROM recipients WHERE message_id = ?2",
		               new_id, id, 0, now, err) < 0)
			goto fail;
	} else {
		for (size_t i = 0; i < nrcpts; i++)
			if (exec_bound(s->db,
			               "INSERT INTO recipients (message_id, idx, address) VALUES"
			               " (?1, ?3, ?2)",
			               new_id, rcpts[i], (int64_t)i, now, err) < 0)
				goto fail;
	}
	return store_db_exec(s->db, "COMMIT", err);
fail:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* ---- the Email Test's record, and the daily counts ---- */

void
store_attempt_bind(sqlite3_stmt *st, const char *id, int64_t now, const struct store_result *r)
{
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now);
	sqlite3_bind_text(st, 3, r->connection, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, r->result, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, r->detail, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 6, r->upstream_id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, r->latency_ms);
}

static int
record_rows(sqlite3 *db, const struct store_msg *m, const struct store_result *r, int64_t now,
            struct mb_err *err)
{
	static const char what[] = "storing the test message";
	char *subject = m->subject ? NULL : header_value(m->body, m->body_len, "Subject");
	char *from = m->from_hdr ? NULL : header_value(m->body, m->body_len, "From");
	sqlite3_stmt *st;
	int rc;

	rc =
	    store_db_prepare(db,
	                     "INSERT INTO messages (id, sender, size, received_at, state, attempts,"
	                     " next_attempt_at, last_error, connection, client, subject, from_hdr,"
	                     " updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
	                     " ?12, ?7)",
	                     &st, what, err);
	if (rc == 0) {
		sqlite3_bind_text(st, 1, m->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, m->sender ? m->sender : "", -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)m->body_len);
		sqlite3_bind_int64(st, 4, m->received_ms ? m->received_ms : now);
		sqlite3_bind_text(st, 5, store_state_name(r->state), -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 6, r->count_attempt ? 1 : 0);
		sqlite3_bind_int64(st, 7, now);
		sqlite3_bind_text(st, 8, r->last_error, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 9, r->connection, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 10, m->client, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 11, m->subject ? m->subject : subject, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 12, m->from_hdr ? m->from_hdr : from, -1, SQLITE_STATIC);
		rc = store_db_step_done(db, st, what, err);
	}
	free(subject);
	free(from);
	for (size_t i = 0; rc == 0 && i < m->nrcpts; i++)
		rc = exec_bound(
		    db, "INSERT INTO recipients (message_id, idx, address) VALUES (?1, ?3, ?2)",
		    m->id, m->rcpts[i], (int64_t)i, now, err);
	if (rc == 0)
		rc = insert_body(db, m->id, m->body ? m->body : "", m->body_len, err);
	if (rc < 0 || r->result == NULL)
		return rc;
	if (store_db_prepare(db, STORE_SQL_INSERT_ATTEMPT, &st, what, err) < 0)
		return -1;
	store_attempt_bind(st, m->id, now, r);
	return store_db_step_done(db, st, what, err);
}

int
store_msg_record(struct store *s, const struct store_msg *m, const struct store_result *r,
                 struct mb_err *err)
{
	if (store_db_exec(s->db, "BEGIN IMMEDIATE", err) < 0)
		return -1;
	if (record_rows(s->db, m, r, mb_now_ms(), err) < 0) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	return store_db_exec(s->db, "COMMIT", err);
}

int
store_msg_daily(struct store *s, int64_t since_ms,
                void (*cb)(void *arg, int64_t day, int64_t sent, int64_t failed), void *arg,
                struct mb_err *err)
{
	static const char what[] = "counting messages by day";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db,
	                     "SELECT updated_at / 86400000 AS day, sum(state = 'sent'),"
	                     " sum(state = 'failed') FROM messages WHERE state IN ('sent',"
	                     " 'failed') AND updated_at >= ? GROUP BY day ORDER BY day",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_int64(st, 1, since_ms);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		cb(arg, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
		   sqlite3_column_int64(st, 2));
	return store_db_finish(s->db, st, rc, what, err);
}

int
store_metrics(struct store *s, struct mb_buf *out, struct mb_err *err)
{
	sqlite3_stmt *st;
	int64_t counts[STORE_STATE_COUNT] = {0}, oldest = 0;

	if (sqlite3_prepare_v2(s->db, "SELECT state, count(*) FROM messages GROUP BY state", -1,
	                       &st, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, "metrics");
		return -1;
	}
	while (sqlite3_step(st) == SQLITE_ROW) {
		enum store_state state;
		const char *name = (const char *)sqlite3_column_text(st, 0);
		if (name && store_state_parse(name, &state) == 0)
			counts[state] = sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT min(received_at) FROM messages WHERE state IN ('queued',"
	                       " 'deferred', 'sending')",
	                       -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
			oldest = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	mb_buf_puts(out, "# HELP mailbridge_messages Messages in the store by state.\n"
	                 "# TYPE mailbridge_messages gauge\n");
	for (int i = 0; i < STORE_STATE_COUNT; i++)
		mb_buf_printf(out, "mailbridge_messages{state=\"%s\"} %lld\n",
		              store_state_name((enum store_state)i), (long long)counts[i]);
	mb_buf_printf(
	    out,
	    "# HELP mailbridge_queue_depth Messages waiting for delivery.\n"
	    "# TYPE mailbridge_queue_depth gauge\nmailbridge_queue_depth %lld\n"
	    "# HELP mailbridge_queue_oldest_seconds Age of the oldest waiting message.\n"
	    "# TYPE mailbridge_queue_oldest_seconds gauge\n"
	    "mailbridge_queue_oldest_seconds %.3f\n",
	    (long long)(counts[STORE_QUEUED] + counts[STORE_DEFERRED] + counts[STORE_SENDING]),
	    oldest ? (double)(mb_now_ms() - oldest) / 1000.0 : 0.0);
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT name, provider = 'smtp' OR (state = 'authorized' AND"
	                       " last_error IS NULL) FROM connections"
	                       " ORDER BY name",
	                       -1, &st, NULL) == SQLITE_OK) {
		mb_buf_puts(out, "# HELP mailbridge_connection_up 1 when a connection is "
		                 "authorized and its last token request worked.\n"
		                 "# TYPE mailbridge_connection_up gauge\n");
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *name = (const char *)sqlite3_column_text(st, 0);
			mb_buf_printf(out, "mailbridge_connection_up{connection=\"%s\"} %d\n", name,
			              sqlite3_column_int(st, 1));
		}
		sqlite3_finalize(st);
	}
	return 0;
}

bool
store_is_writable(struct store *s)
{
	return sqlite3_exec(s->db, "BEGIN IMMEDIATE; COMMIT", NULL, NULL, NULL) == SQLITE_OK;
}

int64_t
store_conn_usable_count(struct store *s)
{
	sqlite3_stmt *st;
	int64_t n = 0;

	if (sqlite3_prepare_v2(s->db,
	                       "SELECT count(*) FROM connections WHERE provider = 'smtp' OR"
	                       " (state = 'authorized' AND last_error IS NULL)",
	                       -1, &st, NULL) != SQLITE_OK)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

int
store_attempts_list(struct store *s, const char *id,
                    void (*cb)(void *arg, const struct store_attempt *a), void *arg,
                    struct mb_err *err)
{
	static const char what[] = "listing attempts";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db,
	                     "SELECT at, connection, result, detail, upstream_id, latency_ms FROM"
	                     " attempts WHERE message_id = ? ORDER BY id",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_attempt a = {sqlite3_column_int64(st, 0),
		                          (const char *)sqlite3_column_text(st, 1),
		                          (const char *)sqlite3_column_text(st, 2),
		                          (const char *)sqlite3_column_text(st, 3),
		                          (const char *)sqlite3_column_text(st, 4),
		                          sqlite3_column_int64(st, 5)};
		cb(arg, &a);
	}
	return store_db_finish(s->db, st, rc, what, err);
}
