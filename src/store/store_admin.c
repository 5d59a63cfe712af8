/* Admin API access: browser sessions and API tokens. Both are looked up by the SHA-256 of the
 * secret the client holds, so the database never holds a usable credential. */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- sessions ---- */

int
store_admin_session_put(struct store *s, const char *id_hash, const char *csrf, const char *peer,
                        int64_t expires_ms, struct mb_err *err)
{
	static const char what[] = "saving an admin session";
	sqlite3_stmt *st;

	if (store_db_prepare(
	        s->db,
	        "INSERT INTO admin_sessions (id_hash, csrf, peer, created_at, expires_at)"
	        " VALUES (?, ?, ?, ?, ?)",
	        &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, id_hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, csrf, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, peer, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, mb_now_ms());
	sqlite3_bind_int64(st, 5, expires_ms);
	return store_db_step_done(s->db, st, what, err);
}

int
store_admin_session_get(struct store *s, const char *id_hash, char **csrf, int64_t *expires_ms,
                        struct mb_err *err)
{
	static const char what[] = "reading an admin session";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(
	        s->db,
	        "SELECT csrf, expires_at FROM admin_sessions WHERE id_hash = ? AND expires_at > ?",
	        &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, id_hash, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, mb_now_ms());
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (csrf)
			*csrf = store_db_col_text(st, 0);
		if (expires_ms)
			*expires_ms = sqlite3_column_int64(st, 1);
	} else if (rc == SQLITE_DONE) {
		mb_err_set(err, MB_ENOTFOUND, "no such session, or it expired");
	} else {
		store_db_err(s->db, err, what);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

int
store_admin_session_delete(struct store *s, const char *id_hash, struct mb_err *err)
{
	static const char what[] = "removing an admin session";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db, "DELETE FROM admin_sessions WHERE id_hash = ?", &st, what,
	                     err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, id_hash, -1, SQLITE_STATIC);
	return store_db_step_done(s->db, st, what, err);
}

int
store_admin_session_prune(struct store *s, struct mb_err *err)
{
	static const char what[] = "pruning admin sessions";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db, "DELETE FROM admin_sessions WHERE expires_at <= ?", &st, what,
	                     err) < 0)
		return -1;
	sqlite3_bind_int64(st, 1, mb_now_ms());
	return store_db_step_done(s->db, st, what, err);
}

/* ---- API tokens ---- */

int
store_api_token_put(struct store *s, const char *name, const char *hash, const char *fingerprint,
                    struct mb_err *err)
{
	static const char what[] = "saving an API token";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(
	        s->db,
	        "INSERT INTO api_tokens (name, hash, fingerprint, created_at) VALUES (?, ?, ?, ?)",
	        &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, fingerprint, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, mb_now_ms());
	rc = sqlite3_step(st);
	if (rc == SQLITE_CONSTRAINT ||
	    sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_PRIMARYKEY)
		mb_err_set(err, MB_EINVAL, "an API token called %s exists; revoke it first", name);
	else if (rc != SQLITE_DONE)
		store_db_err(s->db, err, what);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int
store_api_token_find(struct store *s, const char *hash, char **name, struct mb_err *err)
{
	static const char what[] = "looking up an API token";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db, "SELECT name FROM api_tokens WHERE hash = ?", &st, what, err) <
	    0)
		return -1;
	sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (name)
			*name = store_db_col_text(st, 0);
	} else if (rc == SQLITE_DONE) {
		mb_err_set(err, MB_ENOTFOUND, "no such API token");
	} else {
		store_db_err(s->db, err, what);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW)
		return -1;
	/* last use is for `admin token list`; failing to record it is not worth refusing */
	if (store_db_prepare(s->db, "UPDATE api_tokens SET last_used_at = ? WHERE hash = ?", &st,
	                     what, NULL) == 0) {
		sqlite3_bind_int64(st, 1, mb_now_ms());
		sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
		store_db_step_done(s->db, st, what, NULL);
	}
	return 0;
}

int
store_api_token_list(struct store *s, void (*cb)(void *arg, const struct store_api_token *t),
                     void *arg, struct mb_err *err)
{
	static const char what[] = "listing API tokens";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db,
	                     "SELECT name, fingerprint, created_at, last_used_at FROM api_tokens"
	                     " ORDER BY name",
	                     &st, what, err) < 0)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct store_api_token t = {
		    .name = (const char *)sqlite3_column_text(st, 0),
		    .fingerprint = (const char *)sqlite3_column_text(st, 1),
		    .created_ms = sqlite3_column_int64(st, 2),
		    .last_used_ms = sqlite3_column_int64(st, 3),
		};
		cb(arg, &t);
	}
	if (rc != SQLITE_DONE)
		store_db_err(s->db, err, what);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int
store_api_token_delete(struct store *s, const char *name, struct mb_err *err)
{
	static const char what[] = "revoking an API token";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db, "DELETE FROM api_tokens WHERE name = ?", &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	if (store_db_step_done(s->db, st, what, err) < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0) {
		mb_err_set(err, MB_ENOTFOUND, "no API token called %s", name);
		return -1;
	}
	return 0;
}
