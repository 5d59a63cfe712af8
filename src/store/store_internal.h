/* Shared between the store_*.c files only. */
#ifndef MB_STORE_INTERNAL_H
#define MB_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store.h"

struct store {
	sqlite3 *db;
};

/* Opens the database file with the project's pragmas, creating and migrating if asked. */
sqlite3 *store_db_open(const char *data_dir, bool create, struct mb_err *err);
int store_db_exec(sqlite3 *db, const char *sql, struct mb_err *err);
void store_db_err(sqlite3 *db, struct mb_err *err, const char *what);
/* Prepares sql; on failure fills err with "store: what: ..." and returns -1. */
int store_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *what,
                     struct mb_err *err);
/* Finalizes st, whose last sqlite3_step() returned rc; unless rc is SQLITE_DONE, fills err
 * with "store: what: ..." and returns -1. */
int store_db_finish(sqlite3 *db, sqlite3_stmt *st, int rc, const char *what, struct mb_err *err);
/* Steps a statement that returns no rows, and finalizes it. */
int store_db_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, struct mb_err *err);
/* A column as a new string, or NULL. */
char *store_db_col_text(sqlite3_stmt *st, int i);

/* Fills m->subject and m->from_hdr from the header block of m->body. */
void store_msg_scan_headers(struct store_msg *m);

/* One row of the attempts table: STORE_SQL_INSERT_ATTEMPT, bound by store_attempt_bind() to
 * r's outcome for message id at now. */
#define STORE_SQL_INSERT_ATTEMPT                                                                   \
	"INSERT INTO attempts (message_id, at, connection, result, detail, upstream_id,"           \
	" latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
void store_attempt_bind(sqlite3_stmt *st, const char *id, int64_t now,
                        const struct store_result *r);

#endif
