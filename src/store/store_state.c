/* Small state kept between requests: settings, and the browser sign-in's single-use states. */
#include "store_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- settings ---- */

int
store_setting_get(struct store *s, const char *key, char **value, struct mb_err *err)
{
	static const char what[] = "reading a setting";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db, "SELECT value FROM settings WHERE key = ?", &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*value = store_db_col_text(st, 0);
	else if (rc == SQLITE_DONE)
		mb_err_set(err, MB_ENOTFOUND, "no setting called %s", key);
	else
		store_db_err(s->db, err, what);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

int
store_setting_set(struct store *s, const char *key, const char *value, struct mb_err *err)
{
	static const char what[] = "saving a setting";
	sqlite3_stmt *st;

	if (value == NULL) {
		if (store_db_prepare(s->db, "DELETE FROM settings WHERE key = ?", &st, what, err) <
		    0)
			return -1;
		sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
		return store_db_step_done(s->db, st, what, err);
	}
	if (store_db_prepare(s->db,
	                     "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
	                     " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
	                     " updated_at = excluded.updated_at",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, mb_now_ms());
	return store_db_step_done(s->db, st, what, err);
}

/* ---- OAuth sign-in states ---- */

int
store_oauth_state_put(struct store *s, const char *state, const char *connection,
                      const unsigned char *verifier_ct, size_t len, const char *redirect_uri,
                      struct mb_err *err)
{
	static const char what[] = "saving a sign-in state";
	sqlite3_stmt *st;

	if (state == NULL || state[0] == '\0' || connection == NULL || verifier_ct == NULL ||
	    redirect_uri == NULL) {
		mb_err_set(err, MB_EINVAL,
		           "store: a sign-in state needs a state, a connection, a verifier and a "
		           "redirect URI");
		return -1;
	}
	if (store_db_prepare(
	        s->db,
	        "INSERT INTO oauth_states (state, connection, verifier, redirect_uri, created_at)"
	        " VALUES (?, ?, ?, ?, ?)",
	        &st, what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, connection, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 3, verifier_ct, len, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, redirect_uri, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, mb_now_ms());
	return store_db_step_done(s->db, st, what, err);
}

/* After a take that matched nothing: says whether the state is unknown, used or expired. */
static int
take_refused(struct store *s, const char *state, int64_t max_age_ms, struct mb_err *err)
{
	static const char what[] = "reading a sign-in state";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db, "SELECT used_at FROM oauth_states WHERE state = ?", &st, what,
	                     err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		mb_err_set(err, MB_ENOTFOUND, "unknown state");
	} else if (rc != SQLITE_ROW) {
		store_db_err(s->db, err, what);
	} else if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
		mb_err_set(err, MB_EINVAL, "this sign-in link was already used");
	} else if (max_age_ms >= 60000 && max_age_ms % 60000 == 0) {
		mb_err_set(err, MB_EINVAL, "this sign-in link expired after %lld minute%s",
		           (long long)(max_age_ms / 60000), max_age_ms == 60000 ? "" : "s");
	} else {
		mb_err_set(err, MB_EINVAL, "this sign-in link expired after %lld seconds",
		           (long long)(max_age_ms / 1000));
	}
	sqlite3_finalize(st);
	return -1;
}

int
store_oauth_state_take(struct store *s, const char *state, int64_t max_age_ms, char **connection,
                       unsigned char **verifier_ct, size_t *len, char **redirect_uri,
                       struct mb_err *err)
{
	static const char what[] = "taking a sign-in state";
	sqlite3_stmt *st;
	int64_t now = mb_now_ms();
	int rc;

	/* One statement marks it used and reads it back, so two takers can never both win. */
	if (store_db_prepare(s->db,
	                     "UPDATE oauth_states SET used_at = ?1"
	                     " WHERE state = ?2 AND used_at IS NULL AND created_at > ?1 - ?3"
	                     " RETURNING connection, verifier, redirect_uri",
	                     &st, what, err) < 0)
		return -1;
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, max_age_ms);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const void *p = sqlite3_column_blob(st, 1);
		size_t n = (size_t)sqlite3_column_bytes(st, 1);

		if (connection)
			*connection = store_db_col_text(st, 0);
		if (verifier_ct) {
			*verifier_ct = mb_malloc(n > 0 ? n : 1);
			if (n > 0)
				memcpy(*verifier_ct, p, n);
		}
		if (len)
			*len = n;
		if (redirect_uri)
			*redirect_uri = store_db_col_text(st, 2);
		rc = sqlite3_step(st); /* state is the primary key: no second row */
		if (rc != SQLITE_DONE) {
			/* not reached in practice; give back what we handed out */
			store_db_err(s->db, err, what);
			sqlite3_finalize(st);
			if (connection) {
				free(*connection);
				*connection = NULL;
			}
			if (verifier_ct) {
				mb_secret_wipe(*verifier_ct, n);
				free(*verifier_ct);
				*verifier_ct = NULL;
			}
			if (redirect_uri) {
				free(*redirect_uri);
				*redirect_uri = NULL;
			}
			return -1;
		}
		sqlite3_finalize(st);
		return 0;
	}
	if (rc != SQLITE_DONE) {
		store_db_err(s->db, err, what);
		sqlite3_finalize(st);
		return -1;
	}
	sqlite3_finalize(st);
	return take_refused(s, state, max_age_ms, err);
}

int
store_oauth_state_finish(struct store *s, const char *state, const char *result, const char *detail,
                         struct mb_err *err)
{
	static const char what[] = "saving a sign-in result";
	sqlite3_stmt *st;

	if (result == NULL || (strcmp(result, "ok") != 0 && strcmp(result, "error") != 0)) {
		mb_err_set(err, MB_EINVAL, "store: a sign-in result is \"ok\" or \"error\"");
		return -1;
	}
	if (store_db_prepare(s->db,
	                     "UPDATE oauth_states SET result = ?, detail = ? WHERE state = ?", &st,
	                     what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, result, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, detail, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, state, -1, SQLITE_STATIC);
	if (store_db_step_done(s->db, st, what, err) < 0)
		return -1;
	if (sqlite3_changes(s->db) == 0) {
		mb_err_set(err, MB_ENOTFOUND, "unknown state");
		return -1;
	}
	return 0;
}

int
store_oauth_state_result(struct store *s, const char *state, char **result, char **detail,
                         struct mb_err *err)
{
	static const char what[] = "reading a sign-in result";
	sqlite3_stmt *st;
	int rc;

	if (store_db_prepare(s->db, "SELECT result, detail FROM oauth_states WHERE state = ?", &st,
	                     what, err) < 0)
		return -1;
	sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (result)
			*result = store_db_col_text(st, 0);
		if (detail)
			*detail = store_db_col_text(st, 1);
	} else if (rc == SQLITE_DONE) {
		mb_err_set(err, MB_ENOTFOUND, "unknown state");
	} else {
		store_db_err(s->db, err, what);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

int
store_oauth_state_prune(struct store *s, int64_t older_than_ms, struct mb_err *err)
{
	static const char what[] = "pruning sign-in states";
	sqlite3_stmt *st;

	if (store_db_prepare(s->db, "DELETE FROM oauth_states WHERE created_at < ?", &st, what,
	                     err) < 0)
		return -1;
	sqlite3_bind_int64(st, 1, mb_now_ms() - older_than_ms);
	return store_db_step_done(s->db, st, what, err);
}
