/* Opening the database, pragmas and numbered migrations. */
#include "store_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Migration N brings the schema from version N-1 to N. Never edit a released one. */
static const char *const migrations[] = {
    /* 1: the queue, its recipients, bodies, attempts; connections, tokens, settings, events */
    "CREATE TABLE messages ("
    " id TEXT PRIMARY KEY,"
    " sender TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " received_at INTEGER NOT NULL,"
    " state TEXT NOT NULL CHECK (state IN ('queued','sending','deferred','sent','failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_at INTEGER NOT NULL,"
    " last_error TEXT,"
    " connection TEXT,"
    " client TEXT,"
    " subject TEXT,"
    " from_hdr TEXT,"
    " lease_owner TEXT,"
    " lease_until INTEGER,"
    " updated_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX messages_due ON messages(state, next_attempt_at);"
    "CREATE INDEX messages_received ON messages(received_at);"
    "CREATE TABLE recipients ("
    " message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
    " idx INTEGER NOT NULL,"
    " address TEXT NOT NULL,"
    " state TEXT NOT NULL DEFAULT 'queued',"
    " last_error TEXT,"
    " PRIMARY KEY (message_id, idx)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE bodies ("
    " message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,"
    " data BLOB NOT NULL"
    ") STRICT;"
    "CREATE TABLE attempts ("
    " id INTEGER PRIMARY KEY,"
    " message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
    " at INTEGER NOT NULL,"
    " connection TEXT,"
    " result TEXT NOT NULL,"
    " detail TEXT,"
    " upstream_id TEXT,"
    " latency_ms INTEGER"
    ") STRICT;"
    "CREATE INDEX attempts_msg ON attempts(message_id);"
    "CREATE TABLE connections ("
    " name TEXT PRIMARY KEY,"
    " provider TEXT NOT NULL,"
    " sender TEXT NOT NULL,"
    " settings TEXT NOT NULL DEFAULT '{}',"
    " state TEXT NOT NULL DEFAULT 'not authorized',"
    " state_reason TEXT,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE tokens ("
    " connection TEXT NOT NULL,"
    " resource TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " ciphertext BLOB NOT NULL,"
    " expires_at INTEGER,"
    " scopes TEXT,"
    " account TEXT,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (connection, resource, kind)"
    ") STRICT;"
    "CREATE TABLE settings ("
    " key TEXT PRIMARY KEY,"
    " value TEXT NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE events ("
    " id INTEGER PRIMARY KEY,"
    " at INTEGER NOT NULL,"
    " level TEXT NOT NULL,"
    " message_id TEXT,"
    " connection TEXT,"
    " text TEXT NOT NULL"
    ") STRICT;"
    "CREATE INDEX events_at ON events(at);"
    "CREATE INDEX events_msg ON events(message_id);",
    /* 2: connections remember their secret, account and last error; OAuth sign-in states.
     * tokens(connection) needs no index of its own: its primary key starts with it. */
    "ALTER TABLE connections ADD COLUMN source TEXT NOT NULL DEFAULT 'store'"
    " CHECK (source IN ('store','config'));"
    "ALTER TABLE connections ADD COLUMN secret BLOB;"
    "ALTER TABLE connections ADD COLUMN secret_fp TEXT;"
    "ALTER TABLE connections ADD COLUMN secret_expires_at INTEGER;"
    "ALTER TABLE connections ADD COLUMN account TEXT;"
    "ALTER TABLE connections ADD COLUMN scopes TEXT;"
    "ALTER TABLE connections ADD COLUMN last_refresh_at INTEGER;"
    "ALTER TABLE connections ADD COLUMN last_error TEXT;"
    "ALTER TABLE connections ADD COLUMN last_fix TEXT;"
    "CREATE TABLE oauth_states ("
    " state TEXT PRIMARY KEY,"
    " connection TEXT NOT NULL,"
    " verifier BLOB NOT NULL,"
    " redirect_uri TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " used_at INTEGER,"
    " result TEXT CHECK (result IN ('ok','error')),"
    " detail TEXT"
    ") STRICT;",
    /* 3: admin API access: browser sessions and API tokens, both kept only as SHA-256 */
    "CREATE TABLE admin_sessions ("
    " id_hash TEXT PRIMARY KEY,"
    " csrf TEXT NOT NULL,"
    " peer TEXT,"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL"
    ") STRICT;"
    "CREATE INDEX admin_sessions_expires ON admin_sessions(expires_at);"
    "CREATE TABLE api_tokens ("
    " name TEXT PRIMARY KEY,"
    " hash TEXT NOT NULL UNIQUE,"
    " fingerprint TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " last_used_at INTEGER"
    ") STRICT;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

void
store_db_err(sqlite3 *db, struct mb_err *err, const char *what)
{
	int rc = sqlite3_extended_errcode(db);
	enum mb_errc code = MB_EIO;

	if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED || (rc & 0xff) == SQLITE_FULL ||
	    (rc & 0xff) == SQLITE_IOERR)
		code = MB_ETEMP;
	mb_err_set(err, code, "store: %s: %s", what, sqlite3_errmsg(db));
}

int
store_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *what,
                 struct mb_err *err)
{
	if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
		store_db_err(db, err, what);
		return -1;
	}
	return 0;
}

int
store_db_finish(sqlite3 *db, sqlite3_stmt *st, int rc, const char *what, struct mb_err *err)
{
	if (rc != SQLITE_DONE)
		store_db_err(db, err, what);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int
store_db_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, struct mb_err *err)
{
	return store_db_finish(db, st, sqlite3_step(st), what, err);
}

char *
store_db_col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	return t ? mb_strdup((const char *)t) : NULL;
}

int
store_db_exec(sqlite3 *db, const char *sql, struct mb_err *err)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		mb_err_set(err, MB_EIO, "store: %s", msg ? msg : "error");
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int
user_version(sqlite3 *db)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int
migrate(sqlite3 *db, struct mb_err *err)
{
	int v = user_version(db);
	char sql[64];

	if (v < 0) {
		store_db_err(db, err, "reading the schema version");
		return -1;
	}
	if (v > NMIGRATIONS) {
		mb_err_set(err, MB_EINVAL,
		           "store: the database has schema version %d, newer than this mailbridge "
		           "knows (%d): run the newer mailbridge, or restore a backup",
		           v, NMIGRATIONS);
		return -1;
	}
	for (; v < NMIGRATIONS; v++) {
		if (store_db_exec(db, "BEGIN IMMEDIATE", err) < 0)
			return -1;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if (store_db_exec(db, migrations[v], err) < 0 || store_db_exec(db, sql, err) < 0 ||
		    store_db_exec(db, "COMMIT", err) < 0) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return -1;
		}
		mb_info("store: migrated: schema version %d", v + 1);
	}
	return 0;
}

sqlite3 *
store_db_open(const char *data_dir, bool create, struct mb_err *err)
{
	sqlite3 *db = NULL;
	char *path;
	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;

	if (create) {
		if (mkdir(data_dir, 0700) < 0 && errno != EEXIST) {
			mb_err_set(err, MB_EIO, "store: cannot create data_dir %s: %s", data_dir,
			           strerror(errno));
			return NULL;
		}
		flags |= SQLITE_OPEN_CREATE;
	}
	path = mb_asprintf("%s/%s", data_dir, STORE_DB_NAME);
	if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
		mb_err_set(err, MB_EIO, "store: cannot open %s: %s", path,
		           db ? sqlite3_errmsg(db) : "out of memory");
		sqlite3_close(db);
		free(path);
		return NULL;
	}
	free(path);
	sqlite3_busy_timeout(db, 10000);
	sqlite3_extended_result_codes(db, 1);
	if (store_db_exec(db,
	                  "PRAGMA journal_mode = WAL;"
	                  "PRAGMA synchronous = FULL;"
	                  "PRAGMA foreign_keys = ON;"
	                  "PRAGMA secure_delete = ON;",
	                  err) < 0 ||
	    (create && migrate(db, err) < 0)) {
		sqlite3_close(db);
		return NULL;
	}
	if (!create && user_version(db) < 1) {
		mb_err_set(err, MB_EINVAL, "store: %s/%s has no schema yet: start the daemon once",
		           data_dir, STORE_DB_NAME);
		sqlite3_close(db);
		return NULL;
	}
	return db;
}

struct store *
store_open(const char *data_dir, bool create, struct mb_err *err)
{
	struct store *st;
	sqlite3 *db = store_db_open(data_dir, create, err);

	if (db == NULL)
		return NULL;
	st = mb_calloc(1, sizeof(*st));
	st->db = db;
	return st;
}

void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	sqlite3_close(st->db);
	free(st);
}

int
store_schema_version(struct store *st)
{
	return user_version(st->db);
}

int
store_backup(const char *data_dir, const char *dest, struct mb_err *err)
{
	sqlite3 *src = store_db_open(data_dir, false, err), *dst = NULL;
	sqlite3_backup *b;
	int rc;

	if (src == NULL)
		return -1;
	if (sqlite3_open_v2(dest, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		mb_err_set(err, MB_EIO, "backup: cannot create %s: %s", dest,
		           dst ? sqlite3_errmsg(dst) : "out of memory");
		sqlite3_close(dst);
		sqlite3_close(src);
		return -1;
	}
	b = sqlite3_backup_init(dst, "main", src, "main");
	if (b == NULL) {
		mb_err_set(err, MB_EIO, "backup: %s", sqlite3_errmsg(dst));
		sqlite3_close(dst);
		sqlite3_close(src);
		return -1;
	}
	/* All pages in one step, i.e. one read transaction on the source: in WAL mode a reader
	 * never holds off the daemon's writer. (In several steps, every commit by the daemon
	 * between two steps restarted the copy from the first page: on a busy gateway the
	 * backup never finished.) */
	do {
		rc = sqlite3_backup_step(b, -1);
		if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
			sqlite3_sleep(20);
	} while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
	sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE) {
		mb_err_set(err, MB_EIO, "backup: %s", sqlite3_errstr(rc));
		sqlite3_close(dst);
		sqlite3_close(src);
		return -1;
	}
	rc = sqlite3_exec(dst, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		mb_err_set(err, MB_EIO, "backup: %s", sqlite3_errmsg(dst));
	sqlite3_close(dst);
	sqlite3_close(src);
	return rc == SQLITE_OK ? 0 : -1;
}
