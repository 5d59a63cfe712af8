/* Tokens: sealed refresh and access tokens, per connection, resource and kind. */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

static int
token_bind_step(sqlite3_stmt *st, const struct store_token *t, int64_t now)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	sqlite3_bind_text(st, 1, t->connection, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, t->resource, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, t->kind, -1, SQLITE_STATIC);
	if (t->ct) /* a NULL ct stays NULL and is refused by the schema */
		sqlite3_bind_blob64(st, 4, t->ct, t->ct_len, SQLITE_STATIC);
	if (t->expires_ms != 0)
		sqlite3_bind_int64(st, 5, t->expires_ms);
	sqlite3_bind_text(st, 6, t->scopes, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 7, t->account, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 8, now);
	return sqlite3_step(st) == SQLITE_DONE ? 0 : -1;
}

int
store_token_put_many(struct store *s, const struct store_token *t, size_t n, struct mb_err *err)
{
	static const char what[] = "saving tokens";
	sqlite3_stmt *st = NULL;
	int64_t now = mb_now_ms();
	size_t i;

	if (n == 0)
		return 0;
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, what);
		return -1;
	}
	if (sqlite3_prepare_v2(
	        s->db,
	        "INSERT INTO tokens (connection, resource, kind, ciphertext,"
	        " expires_at, scopes, account, updated_at)"
	        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
	        " ON CONFLICT (connection, resource, kind) DO UPDATE SET"
	        " ciphertext = excluded.ciphertext, expires_at = excluded.expires_at,"
	        " scopes = excluded.scopes, account = excluded.account,"
	        " updated_at = excluded.updated_at",
	        -1, &st, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, what);
		goto fail;
	}
	for (i = 0; i < n; i++) {
		if (token_bind_step(st, &t[i], now) < 0) {
			store_db_err(s->db, err, what);
			goto fail;
		}
	}
	sqlite3_finalize(st);
	st = NULL;
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, what);
		goto fail;
	}
	return 0;
fail:
	sqlite3_finalize(st);
	sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

int
store_token_get(struct store *s, const char *connection, const char *resource, const char *kind,
                unsigned char **ct, size_t *ct_len, int64_t *expires_ms, char **scopes,
                char **account, int64_t *updated_ms, struct mb_err *err)
{
	static const char what[] = "reading a token";
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(s->db,
	                       "SELECT ciphertext, expires_at, scopes, account, updated_at"
	                       " FROM tokens WHERE connection = ? AND resource = ? AND kind = ?",
	                       -1, &st, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, what);
		return -1;
	}
	sqlite3_bind_text(st, 1, connection, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, resource, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		if (rc == SQLITE_DONE)
			mb_err_set(err, MB_ENOTFOUND, "no %s %s token for connection %s",
			           resource ? resource : "?", kind ? kind : "?",
			           connection ? connection : "?");
		else
			store_db_err(s->db, err, what);
		sqlite3_finalize(st);
		return -1;
	}
	if (ct) {
		const void *p = sqlite3_column_blob(st, 0);
		size_t n = (size_t)sqlite3_column_bytes(st, 0);

		*ct = mb_malloc(n > 0 ? n : 1);
		if (n > 0)
			memcpy(*ct, p, n);
		if (ct_len)
			*ct_len = n;
	} else if (ct_len) {
		*ct_len = (size_t)sqlite3_column_bytes(st, 0);
	}
	if (expires_ms)
		*expires_ms = sqlite3_column_int64(st, 1); /* NULL (unknown) reads as 0 */
	if (scopes) {
		const unsigned char *v = sqlite3_column_text(st, 2);
		*scopes = v ? mb_strdup((const char *)v) : NULL;
	}
	if (account) {
		const unsigned char *v = sqlite3_column_text(st, 3);
		*account = v ? mb_strdup((const char *)v) : NULL;
	}
	if (updated_ms)
		*updated_ms = sqlite3_column_int64(st, 4);
	sqlite3_finalize(st);
	return 0;
}

int
store_token_delete(struct store *s, const char *connection, const char *kind, struct mb_err *err)
{
	static const char what[] = "removing tokens";
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(
	        s->db, "DELETE FROM tokens WHERE connection = ?1 AND (?2 IS NULL OR kind = ?2)", -1,
	        &st, NULL) != SQLITE_OK) {
		store_db_err(s->db, err, what);
		return -1;
	}
	sqlite3_bind_text(st, 1, connection, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc != SQLITE_DONE)
		store_db_err(s->db, err, what);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}
