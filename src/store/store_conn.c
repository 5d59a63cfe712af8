/* Connections: definitions, and the state learned while using them. */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

struct store_conn *
store_conn_new(void)
{
	return mb_calloc(1, sizeof(struct store_conn));
}

void
store_conn_free(struct store_conn *c)
{
	if (c == NULL)
		return;
	if (c->secret) {
		mb_secret_wipe(c->secret, c->secret_len);
		free(c->secret);
	}
	free(c->name);
	free(c->provider);
	free(c->sender);
	free(c->settings);
	free(c->source);
	free(c->state);
	free(c->state_reason);
	free(c->account);
	free(c->scopes);
	free(c->last_error);
	free(c->last_fix);
	free(c->secret_fp);
	free(c);
}

/* 0 means unknown and is stored as NULL. */
static void
bind_ms(sqlite3_stmt *st, int i, int64_t ms)
{
	if (ms != 0)
		sqlite3_bind_int64(st, i, ms);
	else
		sqlite3_bind_null(st, i);
}

static bool
conn_state_is_valid(const char *s)
{
	return s &&
	       (strcmp(s, STORE_CONN_NOT_AUTHORIZED) == 0 ||
	        strcmp(s, STORE_CONN_AUTHORIZED) == 0 || strcmp(s, STORE_CONN_NEEDS_REAUTH) == 0);
}

int
store_conn_put(struct store *s, const struct store_conn *c, struct mb_err *err)
{
	static const char what[] = "saving a connection";
	sqlite3_stmt *st;
	int64_t now = mb_now_ms();

	if (c->name == NULL || c->name[0] == '\0' || c->provider == NULL || c->sender == NULL) {
		mb_err_set(err, MB_EINVAL,
		           "store: a connection needs a name, a provider and a sender");
		return -1;
	}
	if (c->source && strcmp(c->source, "store") != 0 && strcmp(c->source, "config") != 0) {
		mb_err_set(err, MB_EINVAL, "store: connection %s: source must be store or config",
		           c->name);
		return -1;
	}
	if (store_db_prepare(
	        s->db,
	        "INSERT INTO connections (name, provider, sender, settings, source, secret,"
	        " secret_fp, secret_expires_at, created_at, updated_at)"
	        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
	        " ON CONFLICT (name) DO UPDATE SET provider = excluded.provider,"
	        " sender = excluded.sender, settings = excluded.settings,"
	        " source = excluded.source, secret = excluded.secret,"
	        " secret_fp = excluded.secret_fp, secret_expires_at = excluded.secret_expires_at,"
	        " updated_at = excluded.updated_at",
	        &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, c->name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, c->provider, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, c->sender, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, c->settings ? c->settings : "{}", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, c->source ? c->source : "store", -1, SQLITE_STATIC);
	if (c->secret)
		sqlite3_bind_blob64(st, 6, c->secret, c->secret_len, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 6);
	sqlite3_bind_text(st, 7, c->secret_fp, -1, SQLITE_STATIC);
	bind_ms(st, 8, c->secret_expires_ms);
	sqlite3_bind_int64(st, 9, now);
	return store_db_step_done(s->db, st, what, err);
}

#define CONN_COLS                                                                                  \
	"name, provider, sender, settings, source, state, state_reason, account, scopes,"          \
	" last_error, last_fix, secret_fp, secret, secret_expires_at, last_refresh_at,"            \
	" created_at, updated_at"

static struct store_conn *
row_to_conn(sqlite3_stmt *st)
{
	struct store_conn *c = store_conn_new();

	c->name = store_db_col_text(st, 0);
	c->provider = store_db_col_text(st, 1);
	c->sender = store_db_col_text(st, 2);
	c->settings = store_db_col_text(st, 3);
	c->source = store_db_col_text(st, 4);
	c->state = store_db_col_text(st, 5);
	c->state_reason = store_db_col_text(st, 6);
	c->account = store_db_col_text(st, 7);
	c->scopes = store_db_col_text(st, 8);
	c->last_error = store_db_col_text(st, 9);
	c->last_fix = store_db_col_text(st, 10);
	c->secret_fp = store_db_col_text(st, 11);
	if (sqlite3_column_type(st, 12) == SQLITE_BLOB) {
		const void *p = sqlite3_column_blob(st, 12);
		int n = sqlite3_column_bytes(st, 12);

		c->secret = mb_malloc(n > 0 ? (size_t)n : 1);
		if (n > 0)
			memcpy(c->secret, p, (size_t)n);
		c->secret_len = (size_t)n;
	}
	c->secret_expires_ms = sqlite3_column_int64(st, 13); /* NULL reads as 0 */
	c->last_refresh_ms = sqlite3_column_int64(st, 14);
	c->created_ms = sqlite3_column_int64(st, 15);
	c->updated_ms = sqlite3_column_int64(st, 16);
	return c;
}

struct store_conn *
store_conn_get(struct store *s, const char *name, struct mb_err *err)
{
	static const char what[] = "reading a connection";
	struct store_conn *c = NULL;
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db, "SELECT " CONN_COLS " FROM connections WHERE name = ?", &st,
	                     what, err) < 0)
		return NULL;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		c = row_to_conn(st);
	else if (rc == SQLITE_DONE)
		mb_err_set(err, MB_ENOTFOUND, "no connection called %s", name);
	else
		store_db_err(s->db, err, what);
	sqlite3_finalize(st);
	return c;
}

int
store_conn_list(struct store *s, int (*cb)(void *arg, const struct store_conn *c), void *arg,
                struct mb_err *err)
{
	static const char what[] = "listing connections";
	struct store_conn **rows = NULL;
	size_t n = 0, i;
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db, "SELECT " CONN_COLS " FROM connections ORDER BY name", &st,
	                     what, err) < 0)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		rows = mb_realloc(rows, (n + 1) * sizeof(*rows));
		rows[n++] = row_to_conn(st);
	}
	if (rc != SQLITE_DONE)
		store_db_err(s->db, err, what);
	sqlite3_finalize(st);
	for (i = 0; rc == SQLITE_DONE && i < n; i++)
		if (cb(arg, rows[i]) != 0)
			break;
	for (i = 0; i < n; i++)
		store_conn_free(rows[i]);
	free(rows);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int
delete_where_conn(struct store *s, const char *sql, const char *name, struct mb_err *err)
{
	static const char what[] = "removing a connection";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db, sql, &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	return store_db_step_done(s->db, st, what, err);
}

int
store_conn_delete(struct store *s, const char *name, struct mb_err *err)
{
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, "removing a connection");
		return -1;
	}
	if (delete_where_conn(s, "DELETE FROM connections WHERE name = ?", name, err) < 0)
		goto fail;
	if (sqlite3_changes(s->db) == 0) {
		mb_err_set(err, MB_ENOTFOUND, "no connection called %s", name);
		goto fail;
	}
	if (delete_where_conn(s, "DELETE FROM tokens WHERE connection = ?", name, err) < 0 ||
	    delete_where_conn(s, "DELETE FROM oauth_states WHERE connection = ?", name, err) < 0)
		goto fail;
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, "removing a connection");
		goto fail;
	}
	return 0;
fail:
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* Finishes an UPDATE ... WHERE name = ? : MB_ENOTFOUND when no row matched. */
static int
update_one(struct store *s, sqlite3_stmt *st, const char *name, const char *what,
           struct mb_err *err)
{
	if (store_db_step_done(s->db, st, what, err) < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0) {
		mb_err_set(err, MB_ENOTFOUND, "no connection called %s", name);
		return -1;
	}
	return 0;
}

int
store_conn_set_state(struct store *s, const char *name, const char *state, const char *reason,
                     const char *last_error, const char *last_fix, struct mb_err *err)
{
	static const char what[] = "saving a connection's state";
	sqlite3_stmt *st;

	if (!conn_state_is_valid(state)) {
		mb_err_set(err, MB_EINVAL,
		           "store: connection %s: state must be \"%s\", \"%s\" or \"%s\"", name,
		           STORE_CONN_NOT_AUTHORIZED, STORE_CONN_AUTHORIZED,
		           STORE_CONN_NEEDS_REAUTH);
		return -1;
	}
	if (store_db_prepare(s->db,
	                     "UPDATE connections SET state = ?, state_reason = ?, last_error = ?,"
	                     " last_fix = ?, updated_at = ? WHERE name = ?",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, reason, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, last_error, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, last_fix, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, mb_now_ms());
	sqlite3_bind_text(st, 6, name, -1, SQLITE_STATIC);
	return update_one(s, st, name, what, err);
}

int
store_conn_set_account(struct store *s, const char *name, const char *account, const char *scopes,
                       int64_t last_refresh_ms, struct mb_err *err)
{
	static const char what[] = "saving a connection's account";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db,
	                     "UPDATE connections SET account = ?, scopes = ?, last_refresh_at = ?,"
	                     " updated_at = ? WHERE name = ?",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, account, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, scopes, -1, SQLITE_STATIC);
	bind_ms(st, 3, last_refresh_ms);
	sqlite3_bind_int64(st, 4, mb_now_ms());
	sqlite3_bind_text(st, 5, name, -1, SQLITE_STATIC);
	return update_one(s, st, name, what, err);
}
