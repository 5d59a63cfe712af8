/*
 * store: schema and migrations, messages (committed through the real writer), connections,
 * tokens, settings and OAuth sign-in states. Each test gets its own data dir.
 *
 * The test opens the database file with SQLite directly (it is the store's own test) to build a
 * released version-1 database, to backdate rows and to read query plans.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <pthread.h>
#include <sqlite3.h>
#include <unistd.h>

#include "ev/ev.h"
#include "store/store.h"
#include "util/util.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Schema version 1 exactly as released (migration 1 of store_db.c, which is never edited). */
static const char v1_schema[] =
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
    "CREATE INDEX events_msg ON events(message_id);";

struct fx {
	char dir[64];
	struct store *st;
};

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int
setup_dir(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/mb-test-store-XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fx *f = *state;

	if (f == NULL)
		return 0;
	store_close(f->st);
	nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
	free(f);
	*state = NULL;
	return 0;
}

static int
setup_store(void **state)
{
	struct fx *f;
	struct mb_err err = {0};

	if (setup_dir(state) < 0)
		return -1;
	f = *state;
	f->st = store_open(f->dir, true, &err);
	if (f->st == NULL) {
		print_error("store_open: %s\n", err.msg);
		teardown(state);
		return -1;
	}
	return 0;
}

/* ---- raw SQLite access to the same file ---- */

static sqlite3 *
raw_open(const char *dir)
{
	char path[128];
	sqlite3 *db = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
	assert_int_equal(
	    sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
	    SQLITE_OK);
	sqlite3_busy_timeout(db, 10000);
	return db;
}

static void
raw_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		print_error("sql: %s: %s\n", sql, msg ? msg : "?");
		sqlite3_free(msg);
		fail();
	}
}

static int64_t
raw_int(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int64_t v;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Every schema object as "type name sql" lines, for comparing two databases. */
static char *
raw_schema(sqlite3 *db)
{
	struct mb_buf b = {0};
	sqlite3_stmt *st;

	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "SELECT type, name, tbl_name, sql FROM sqlite_schema"
	                                    " ORDER BY type, name",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	while (sqlite3_step(st) == SQLITE_ROW)
		mb_buf_printf(&b, "%s %s %s %s\n", sqlite3_column_text(st, 0),
		              sqlite3_column_text(st, 1), sqlite3_column_text(st, 2),
		              sqlite3_column_text(st, 3) ? (const char *)sqlite3_column_text(st, 3)
		                                         : "-");
	sqlite3_finalize(st);
	return mb_buf_steal(&b);
}

/* ---- schema ---- */

static void
test_open_fresh(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	struct store *st;
	sqlite3 *db;

	assert_int_equal(store_schema_version(f->st), 3);
	/* reopening without create finds the same version */
	st = store_open(f->dir, false, &err);
	assert_non_null(st);
	assert_int_equal(store_schema_version(st), 3);
	store_close(st);

	/* a database from a newer mailbridge is refused, not downgraded */
	db = raw_open(f->dir);
	raw_exec(db, "PRAGMA user_version = 4");
	sqlite3_close(db);
	st = store_open(f->dir, true, &err);
	assert_null(st);
	assert_int_equal(err.code, MB_EINVAL);
	assert_non_null(strstr(err.msg, "newer"));
}

static void
test_migrate_v1(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	void *fresh = NULL;
	struct store_msg *m;
	struct store_conn *c;
	struct store *st;
	unsigned char *ct = NULL;
	size_t ct_len = 0;
	char *v = NULL, *s1, *s2;
	sqlite3 *db, *a, *b;

	/* a version-1 database with a deferred message, a connection, a token and a setting */
	db = raw_open(f->dir);
	raw_exec(db, "PRAGMA journal_mode = WAL");
	raw_exec(db, v1_schema);
	raw_exec(db, "PRAGMA user_version = 1");
	raw_exec(
	    db,
	    "INSERT INTO messages (id, sender, size, received_at, state, attempts,"
	    " next_attempt_at, last_error, client, subject, from_hdr, updated_at)"
	    " VALUES ('0000000001AAAAAA', 'a@example.com', 40, 1000, 'deferred', 2, 5000,"
	    " '451 try later', '[127.0.0.1]', 'old one', 'A <a@example.com>', 3000);"
	    "INSERT INTO recipients (message_id, idx, address) VALUES"
	    " ('0000000001AAAAAA', 0, 'b@example.com'), ('0000000001AAAAAA', 1, 'c@example.com');"
	    "INSERT INTO bodies (message_id, data) VALUES ('0000000001AAAAAA',"
	    " CAST('Subject: old one\r\n\r\nhello\r\n' AS BLOB));"
	    "INSERT INTO connections (name, provider, sender, state, state_reason, created_at,"
	    " updated_at) VALUES ('office365', 'microsoft-graph', 'a@example.com',"
	    " 'authorized', NULL, 1, 2);"
	    "INSERT INTO tokens (connection, resource, kind, ciphertext, expires_at, scopes,"
	    " account, updated_at) VALUES ('office365', 'graph', 'refresh', x'00ff01', NULL,"
	    " 'Mail.Send', 'a@example.com', 7);"
	    "INSERT INTO settings (key, value, updated_at) VALUES ('default_connection',"
	    " 'office365', 9);");
	sqlite3_close(db);

	/* opening without create does not migrate */
	st = store_open(f->dir, false, &err);
	assert_non_null(st);
	assert_int_equal(store_schema_version(st), 1);
	store_close(st);

	f->st = store_open(f->dir, true, &err);
	assert_non_null(f->st);
	assert_int_equal(store_schema_version(f->st), 3);

	m = store_msg_get(f->st, "0000000001AAAAAA", true, &err);
	assert_non_null(m);
	assert_int_equal(m->state, STORE_DEFERRED);
	assert_int_equal(m->attempts, 2);
	assert_string_equal(m->last_error, "451 try later");
	assert_int_equal(m->nrcpts, 2);
	assert_string_equal(m->rcpts[1], "c@example.com");
	assert_int_equal(m->body_len, strlen("Subject: old one\r\n\r\nhello\r\n"));
	assert_memory_equal(m->body, "Subject: old one\r\n\r\nhello\r\n", m->body_len);
	store_msg_free(m);
	assert_int_equal(store_msg_count(f->st, STORE_DEFERRED, &err), 1);

	c = store_conn_get(f->st, "office365", &err);
	assert_non_null(c);
	assert_string_equal(c->state, STORE_CONN_AUTHORIZED);
	assert_string_equal(c->source, "store");
	assert_string_equal(c->settings, "{}");
	assert_null(c->secret);
	assert_int_equal(c->secret_len, 0);
	assert_null(c->account);
	assert_int_equal(c->last_refresh_ms, 0);
	assert_int_equal(c->created_ms, 1);
	store_conn_free(c);

	assert_int_equal(store_token_get(f->st, "office365", "graph", "refresh", &ct, &ct_len, NULL,
	                                 NULL, NULL, NULL, &err),
	                 0);
	assert_int_equal(ct_len, 3);
	assert_memory_equal(ct, "\x00\xff\x01", 3);
	free(ct);
	assert_int_equal(store_setting_get(f->st, "default_connection", &v, &err), 0);
	assert_string_equal(v, "office365");
	free(v);

	/* the migrated schema is exactly a fresh one: this also proves the fixture above is
	 * the released migration 1 */
	assert_int_equal(setup_store(&fresh), 0);
	a = raw_open(f->dir);
	b = raw_open(((struct fx *)fresh)->dir);
	s1 = raw_schema(a);
	s2 = raw_schema(b);
	assert_string_equal(s1, s2);
	assert_int_equal(raw_int(a, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
	free(s1);
	free(s2);
	sqlite3_close(a);
	sqlite3_close(b);
	teardown(&fresh);
}

static void
test_token_lookup_uses_primary_key(void **state)
{
	struct fx *f = *state;
	sqlite3 *db = raw_open(f->dir);
	sqlite3_stmt *st;
	const char *detail;

	/* why migration 2 adds no index on tokens(connection) */
	assert_int_equal(sqlite3_prepare_v2(db,
	                                    "EXPLAIN QUERY PLAN DELETE FROM tokens"
	                                    " WHERE connection = 'x'",
	                                    -1, &st, NULL),
	                 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	detail = (const char *)sqlite3_column_text(st, 3);
	assert_non_null(strstr(detail, "SEARCH tokens USING INDEX"));
	assert_non_null(strstr(detail, "(connection=?)"));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* ---- messages, committed through the real writer ---- */

struct submit {
	struct ev_loop *loop;
	int pending;
	int failed;
	bool timed_out;
};

static void
on_commit(void *arg, int status, const char *errmsg)
{
	struct submit *s = arg;

	if (status != 0) {
		print_error("commit: %s\n", errmsg ? errmsg : "?");
		s->failed++;
	}
	if (--s->pending == 0)
		ev_loop_stop(s->loop);
}

static void
on_timeout(void *arg)
{
	struct submit *s = arg;

	s->timed_out = true;
	ev_loop_stop(s->loop);
}

struct ids {
	char id[8][MB_ID_LEN + 1];
	size_t n;
};

static int
collect_id(void *arg, const struct store_msg *m)
{
	struct ids *ids = arg;

	snprintf(ids->id[ids->n++], MB_ID_LEN + 1, "%s", m->id);
	return 0;
}

static void
test_messages(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	struct submit s = {0};
	struct store_writer *w;
	struct ev_timer *t;
	struct store_msg *m;
	char id[3][MB_ID_LEN + 1];
	enum store_state queued = STORE_QUEUED;
	struct store_query q = {0};
	struct ids got = {0};
	sqlite3 *db;
	char sql[160];

	s.loop = ev_loop_new();
	assert_non_null(s.loop);
	w = store_writer_new(f->dir, s.loop, 0, &err);
	assert_non_null(w);
	for (int i = 0; i < 3; i++) {
		m = store_msg_new();
		mb_id_new(m->id);
		snprintf(id[i], sizeof(id[i]), "%s", m->id);
		m->sender = mb_strdup("a@example.com");
		store_msg_add_rcpt(m, "b@example.com");
		store_msg_add_rcpt(m, "c@example.com");
		m->body =
		    mb_asprintf("From: A <a@example.com>\r\nSubject: hello %d\r\n\r\nbody\r\n", i);
		m->body_len = strlen(m->body);
		m->received_ms = 1000 * (i + 1);
		m->client = mb_strdup("[127.0.0.1] helo=test");
		s.pending++;
		store_writer_submit(w, m, on_commit, &s);
	}
	t = ev_timer_new(s.loop, on_timeout, &s);
	ev_timer_start(t, 10000);
	ev_loop_run(s.loop);
	ev_timer_free(t);
	assert_false(s.timed_out);
	assert_int_equal(s.failed, 0);

	/* the handle works while the writer holds its own connection */
	assert_int_equal(store_setting_set(f->st, "k", "v", &err), 0);

	assert_int_equal(store_msg_list(f->st, &q, collect_id, &got, &err), 0);
	assert_int_equal(got.n, 3);
	assert_string_equal(got.id[0], id[2]); /* newest first */
	assert_string_equal(got.id[2], id[0]);
	got.n = 0;
	q.oldest_first = true;
	q.limit = 2;
	q.states = &queued;
	q.nstates = 1;
	assert_int_equal(store_msg_list(f->st, &q, collect_id, &got, &err), 0);
	assert_int_equal(got.n, 2);
	assert_string_equal(got.id[0], id[0]);
	assert_string_equal(got.id[1], id[1]);

	m = store_msg_get(f->st, id[1], true, &err);
	assert_non_null(m);
	assert_string_equal(m->subject, "hello 1");
	assert_string_equal(m->from_hdr, "A <a@example.com>");
	assert_int_equal(m->nrcpts, 2);
	assert_string_equal(m->rcpts[0], "b@example.com");
	assert_int_equal(m->size, (int64_t)m->body_len);
	assert_memory_equal(m->body, "From: A <a@example.com>\r\nSubject: hello 1\r\n", 43);
	assert_int_equal(m->state, STORE_QUEUED);
	store_msg_free(m);
	m = store_msg_get(f->st, id[1], false, &err);
	assert_non_null(m);
	assert_null(m->body);
	store_msg_free(m);

	assert_int_equal(store_msg_count(f->st, STORE_QUEUED, &err), 3);
	assert_int_equal(store_msg_count(f->st, STORE_SENT, &err), 0);
	assert_int_equal(store_msg_delete(f->st, id[1], &err), 0);
	assert_int_equal(store_msg_delete(f->st, id[1], &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_null(store_msg_get(f->st, id[1], true, &err));
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_msg_count(f->st, STORE_QUEUED, &err), 2);
	/* recipients and body went with it */
	db = raw_open(f->dir);
	snprintf(sql, sizeof(sql),
	         "SELECT (SELECT count(*) FROM recipients WHERE message_id = '%s')"
	         " + (SELECT count(*) FROM bodies WHERE message_id = '%s')",
	         id[1], id[1]);
	assert_int_equal(raw_int(db, sql), 0);
	sqlite3_close(db);

	store_writer_free(w);
	ev_loop_free(s.loop);
}

/* ---- connections ---- */

static const unsigned char sealed[] = {'m', 'b', '1', 0x00, 0x9a, 0xff, 0x00, 0x42};

static void
put_conn(struct store *st, const char *name, const char *sender, const char *source,
         bool with_secret)
{
	struct store_conn c = {0};
	struct mb_err err = {0};

	c.name = (char *)name;
	c.provider = (char *)"microsoft-graph";
	c.sender = (char *)sender;
	c.settings = (char *)"{\"tenant\":\"contoso.onmicrosoft.com\"}";
	c.source = (char *)source;
	c.state = (char *)STORE_CONN_AUTHORIZED; /* ignored by put */
	if (with_secret) {
		c.secret = (unsigned char *)sealed;
		c.secret_len = sizeof(sealed);
		c.secret_fp = (char *)"sha256:0badf00d";
		c.secret_expires_ms = 1893456000000;
	}
	if (store_conn_put(st, &c, &err) < 0) {
		print_error("store_conn_put: %s\n", err.msg);
		fail();
	}
}

struct names {
	char name[8][32];
	size_t n;
	int stop_after;
	struct store *st;
};

static int
collect_name(void *arg, const struct store_conn *c)
{
	struct names *ns = arg;

	snprintf(ns->name[ns->n++], sizeof(ns->name[0]), "%s", c->name);
	if (ns->st) /* the rows were read first, so the callback may change the store */
		assert_int_equal(store_conn_delete(ns->st, c->name, NULL), 0);
	return ns->stop_after > 0 && (int)ns->n >= ns->stop_after;
}

static void
test_conn_crud(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	struct store_conn *c, bad = {0};
	struct names ns = {0};
	int64_t created;

	store_conn_free(NULL);
	assert_null(store_conn_get(f->st, "office365", &err));
	assert_int_equal(err.code, MB_ENOTFOUND);

	put_conn(f->st, "office365", "a@example.com", "config", true);
	c = store_conn_get(f->st, "office365", &err);
	assert_non_null(c);
	assert_string_equal(c->provider, "microsoft-graph");
	assert_string_equal(c->sender, "a@example.com");
	assert_string_equal(c->settings, "{\"tenant\":\"contoso.onmicrosoft.com\"}");
	assert_string_equal(c->source, "config");
	assert_string_equal(c->state, STORE_CONN_NOT_AUTHORIZED);
	assert_null(c->state_reason);
	assert_int_equal(c->secret_len, sizeof(sealed));
	assert_memory_equal(c->secret, sealed, sizeof(sealed));
	assert_string_equal(c->secret_fp, "sha256:0badf00d");
	assert_int_equal(c->secret_expires_ms, 1893456000000);
	assert_true(c->created_ms > 0);
	assert_int_equal(c->created_ms, c->updated_ms);
	created = c->created_ms;
	store_conn_free(c);

	assert_int_equal(store_conn_set_account(f->st, "office365", "user@example.com",
	                                        "Mail.Send User.Read offline_access", 1234, &err),
	                 0);
	assert_int_equal(store_conn_set_state(f->st, "office365", STORE_CONN_NEEDS_REAUTH,
	                                      "AADSTS700082", "the refresh token expired",
	                                      "run mailbridge auth login office365", &err),
	                 0);

	/* a second put changes the definition and keeps what was learned */
	put_conn(f->st, "office365", "b@example.com", NULL, false);
	c = store_conn_get(f->st, "office365", &err);
	assert_non_null(c);
	assert_string_equal(c->sender, "b@example.com");
	assert_string_equal(c->source, "store");
	assert_null(c->secret);
	assert_int_equal(c->secret_len, 0);
	assert_null(c->secret_fp);
	assert_int_equal(c->secret_expires_ms, 0);
	assert_string_equal(c->state, STORE_CONN_NEEDS_REAUTH);
	assert_string_equal(c->state_reason, "AADSTS700082");
	assert_string_equal(c->last_error, "the refresh token expired");
	assert_string_equal(c->last_fix, "run mailbridge auth login office365");
	assert_string_equal(c->account, "user@example.com");
	assert_string_equal(c->scopes, "Mail.Send User.Read offline_access");
	assert_int_equal(c->last_refresh_ms, 1234);
	assert_int_equal(c->created_ms, created);
	assert_true(c->updated_ms >= created);
	store_conn_free(c);

	/* NULLs store NULL */
	assert_int_equal(
	    store_conn_set_state(f->st, "office365", STORE_CONN_AUTHORIZED, NULL, NULL, NULL, &err),
	    0);
	assert_int_equal(store_conn_set_account(f->st, "office365", NULL, NULL, 0, &err), 0);
	c = store_conn_get(f->st, "office365", &err);
	assert_non_null(c);
	assert_string_equal(c->state, STORE_CONN_AUTHORIZED);
	assert_null(c->state_reason);
	assert_null(c->last_error);
	assert_null(c->last_fix);
	assert_null(c->account);
	assert_int_equal(c->last_refresh_ms, 0);
	store_conn_free(c);

	/* refusals */
	assert_int_equal(
	    store_conn_set_state(f->st, "office365", "authorised", NULL, NULL, NULL, &err), -1);
	assert_int_equal(err.code, MB_EINVAL);
	assert_int_equal(
	    store_conn_set_state(f->st, "nope", STORE_CONN_AUTHORIZED, NULL, NULL, NULL, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_conn_set_account(f->st, "nope", "x", "y", 1, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_conn_put(f->st, &bad, &err), -1);
	assert_int_equal(err.code, MB_EINVAL);
	bad.name = (char *)"x";
	bad.provider = (char *)"smtp";
	bad.sender = (char *)"x@example.com";
	bad.source = (char *)"file";
	assert_int_equal(store_conn_put(f->st, &bad, &err), -1);
	assert_int_equal(err.code, MB_EINVAL);
	assert_null(store_conn_get(f->st, "x", &err));

	/* list: ordered by name; a non-zero return stops */
	put_conn(f->st, "zeta", "z@example.com", "store", false);
	put_conn(f->st, "alpha", "a@example.com", "config", true);
	assert_int_equal(store_conn_list(f->st, collect_name, &ns, &err), 0);
	assert_int_equal(ns.n, 3);
	assert_string_equal(ns.name[0], "alpha");
	assert_string_equal(ns.name[1], "office365");
	assert_string_equal(ns.name[2], "zeta");
	memset(&ns, 0, sizeof(ns));
	ns.stop_after = 2;
	assert_int_equal(store_conn_list(f->st, collect_name, &ns, &err), 0);
	assert_int_equal(ns.n, 2);
	/* a callback that removes each row */
	memset(&ns, 0, sizeof(ns));
	ns.st = f->st;
	assert_int_equal(store_conn_list(f->st, collect_name, &ns, &err), 0);
	assert_int_equal(ns.n, 3);
	memset(&ns, 0, sizeof(ns));
	assert_int_equal(store_conn_list(f->st, collect_name, &ns, &err), 0);
	assert_int_equal(ns.n, 0);
}

static void
put_token(struct store *st, const char *conn, const char *resource, const char *kind,
          const char *ct)
{
	struct store_token t = {conn,       resource, kind, (const unsigned char *)ct,
	                        strlen(ct), 0,        NULL, NULL};
	struct mb_err err = {0};

	assert_int_equal(store_token_put_many(st, &t, 1, &err), 0);
}

static bool
token_exists(struct store *st, const char *conn, const char *resource, const char *kind)
{
	struct mb_err err = {0};

	if (store_token_get(st, conn, resource, kind, NULL, NULL, NULL, NULL, NULL, NULL, &err) ==
	    0)
		return true;
	assert_int_equal(err.code, MB_ENOTFOUND);
	return false;
}

static void
test_conn_delete(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	struct store_conn *c;
	char *r = NULL;

	put_conn(f->st, "office365", "a@example.com", "store", true);
	put_conn(f->st, "backup", "b@example.com", "config", false);
	put_token(f->st, "office365", "graph", "refresh", "r");
	put_token(f->st, "office365", "graph", "access", "a");
	put_token(f->st, "office365", "outlook", "access", "o");
	put_token(f->st, "backup", "graph", "refresh", "r2");
	put_token(f->st, "ghost", "graph", "refresh", "r3"); /* no connection row */
	assert_int_equal(store_oauth_state_put(f->st, "st-1", "office365",
	                                       (const unsigned char *)"v", 1, "http://x/cb", &err),
	                 0);

	assert_int_equal(store_conn_delete(f->st, "office365", &err), 0);
	assert_null(store_conn_get(f->st, "office365", &err));
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_false(token_exists(f->st, "office365", "graph", "refresh"));
	assert_false(token_exists(f->st, "office365", "graph", "access"));
	assert_false(token_exists(f->st, "office365", "outlook", "access"));
	assert_int_equal(store_oauth_state_result(f->st, "st-1", &r, NULL, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	/* others untouched */
	assert_true(token_exists(f->st, "backup", "graph", "refresh"));
	c = store_conn_get(f->st, "backup", &err);
	assert_non_null(c);
	store_conn_free(c);

	assert_int_equal(store_conn_delete(f->st, "office365", &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	/* a missing row changes nothing, not even stray tokens under its name */
	assert_int_equal(store_conn_delete(f->st, "ghost", &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_true(token_exists(f->st, "ghost", "graph", "refresh"));
	/* and no transaction was left open */
	put_token(f->st, "ghost", "graph", "access", "a3");
}

/* ---- tokens ---- */

static void
assert_token(struct store *st, const char *conn, const char *resource, const char *kind,
             const char *want_ct, int64_t want_expires)
{
	struct mb_err err = {0};
	unsigned char *ct = NULL;
	size_t len = 0;
	int64_t exp = -1, upd = 0;

	if (store_token_get(st, conn, resource, kind, &ct, &len, &exp, NULL, NULL, &upd, &err) <
	    0) {
		print_error("token %s/%s/%s: %s\n", conn, resource, kind, err.msg);
		fail();
	}
	assert_int_equal(len, strlen(want_ct));
	assert_memory_equal(ct, want_ct, len);
	assert_int_equal(exp, want_expires);
	assert_true(upd > 0);
	mb_secret_wipe(ct, len);
	free(ct);
}

static void
test_tokens(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	char *scopes = NULL, *account = NULL;
	size_t len = 99;
	int64_t exp = -1;
	const struct store_token first[] = {
	    {"office365", "graph", "refresh", (const unsigned char *)"R1", 2, 0, "Mail.Send",
	     "u@example.com"},
	    {"office365", "graph", "access", (const unsigned char *)"A1", 2, 1000, "Mail.Send",
	     "u@example.com"},
	};
	/* a rotation whose third row is broken: nothing of it may land */
	const struct store_token broken[] = {
	    {"office365", "graph", "refresh", (const unsigned char *)"R2", 2, 0, NULL, NULL},
	    {"other", "outlook", "access", (const unsigned char *)"O1", 2, 5, NULL, NULL},
	    {"office365", NULL, "access", (const unsigned char *)"A2", 2, 2000, NULL, NULL},
	};
	const struct store_token no_ct[] = {
	    {"other", "outlook", "access", (const unsigned char *)"O1", 2, 5, NULL, NULL},
	    {"office365", "graph", "access", NULL, 0, 2000, NULL, NULL},
	};
	const struct store_token rotated[] = {
	    {"office365", "graph", "refresh", (const unsigned char *)"R2", 2, 0, NULL, NULL},
	    {"office365", "graph", "access", (const unsigned char *)"A2", 2, 2000, "Mail.Send",
	     "u@example.com"},
	};

	assert_false(token_exists(f->st, "office365", "graph", "refresh"));
	assert_int_equal(store_token_put_many(f->st, first, 0, &err), 0);
	assert_int_equal(store_token_put_many(f->st, first, NELEM(first), &err), 0);
	assert_token(f->st, "office365", "graph", "refresh", "R1", 0);
	assert_token(f->st, "office365", "graph", "access", "A1", 1000);
	assert_int_equal(store_token_get(f->st, "office365", "graph", "access", NULL, &len, &exp,
	                                 &scopes, &account, NULL, &err),
	                 0);
	assert_int_equal(len, 2);
	assert_int_equal(exp, 1000);
	assert_string_equal(scopes, "Mail.Send");
	assert_string_equal(account, "u@example.com");
	free(scopes);
	free(account);

	assert_int_equal(store_token_put_many(f->st, broken, NELEM(broken), &err), -1);
	assert_non_null(strstr(err.msg, "NOT NULL"));
	assert_int_equal(store_token_put_many(f->st, no_ct, NELEM(no_ct), &err), -1);
	assert_non_null(strstr(err.msg, "tokens.ciphertext"));
	assert_token(f->st, "office365", "graph", "refresh", "R1", 0);
	assert_token(f->st, "office365", "graph", "access", "A1", 1000);
	assert_false(token_exists(f->st, "other", "outlook", "access"));

	/* the rotation that works replaces both rows, and a NULL account replaces the old one */
	assert_int_equal(store_token_put_many(f->st, rotated, NELEM(rotated), &err), 0);
	assert_token(f->st, "office365", "graph", "refresh", "R2", 0);
	assert_token(f->st, "office365", "graph", "access", "A2", 2000);
	account = (char *)"sentinel";
	assert_int_equal(store_token_get(f->st, "office365", "graph", "refresh", NULL, NULL, NULL,
	                                 NULL, &account, NULL, &err),
	                 0);
	assert_null(account);

	assert_int_equal(store_token_get(f->st, "office365", "outlook", "access", NULL, NULL, NULL,
	                                 NULL, NULL, NULL, &err),
	                 -1);
	assert_int_equal(err.code, MB_ENOTFOUND);

	assert_int_equal(store_token_delete(f->st, "office365", "access", &err), 0);
	assert_false(token_exists(f->st, "office365", "graph", "access"));
	assert_true(token_exists(f->st, "office365", "graph", "refresh"));
	assert_int_equal(store_token_delete(f->st, "office365", NULL, &err), 0);
	assert_false(token_exists(f->st, "office365", "graph", "refresh"));
	assert_int_equal(store_token_delete(f->st, "office365", NULL, &err), 0);
}

/* ---- settings ---- */

static void
test_settings(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	char *v = NULL;

	assert_int_equal(store_setting_get(f->st, "default_connection", &v, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_setting_set(f->st, "default_connection", "office365", &err), 0);
	assert_int_equal(store_setting_get(f->st, "default_connection", &v, &err), 0);
	assert_string_equal(v, "office365");
	free(v);
	assert_int_equal(store_setting_set(f->st, "default_connection", "backup", &err), 0);
	assert_int_equal(store_setting_get(f->st, "default_connection", &v, &err), 0);
	assert_string_equal(v, "backup");
	free(v);
	assert_int_equal(store_setting_set(f->st, "ui.theme", "", &err), 0);
	assert_int_equal(store_setting_get(f->st, "ui.theme", &v, &err), 0);
	assert_string_equal(v, "");
	free(v);
	assert_int_equal(store_setting_set(f->st, "default_connection", NULL, &err), 0);
	assert_int_equal(store_setting_get(f->st, "default_connection", &v, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_setting_set(f->st, "default_connection", NULL, &err), 0);
}

/* ---- OAuth sign-in states ---- */

#define REDIRECT "http://localhost:8025/oauth/callback"

static const unsigned char verifier[] = {'m', 'b', '1', 0x00, 0x01, 0xfe};

static void
put_state(struct store *st, const char *state)
{
	struct mb_err err = {0};

	if (store_oauth_state_put(st, state, "office365", verifier, sizeof(verifier), REDIRECT,
	                          &err) < 0) {
		print_error("store_oauth_state_put: %s\n", err.msg);
		fail();
	}
}

static void
backdate_state(const char *dir, const char *state, int64_t ms)
{
	sqlite3 *db = raw_open(dir);
	char sql[160];

	snprintf(sql, sizeof(sql),
	         "UPDATE oauth_states SET created_at = created_at - %lld WHERE state = '%s'",
	         (long long)ms, state);
	raw_exec(db, sql);
	sqlite3_close(db);
}

static void
test_oauth_take(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	char *conn = NULL, *redirect = NULL, *result = NULL, *detail = NULL;
	unsigned char *v = NULL;
	size_t len = 0;

	put_state(f->st, "s1");
	assert_int_equal(store_oauth_state_result(f->st, "s1", &result, &detail, &err), 0);
	assert_null(result);
	assert_null(detail);

	assert_int_equal(store_oauth_state_take(f->st, "s1", STORE_OAUTH_STATE_MAX_AGE_MS, &conn,
	                                        &v, &len, &redirect, &err),
	                 0);
	assert_string_equal(conn, "office365");
	assert_string_equal(redirect, REDIRECT);
	assert_int_equal(len, sizeof(verifier));
	assert_memory_equal(v, verifier, len);
	free(conn);
	free(redirect);
	mb_secret_wipe(v, len);
	free(v);

	/* taken, still pending until finished */
	assert_int_equal(store_oauth_state_result(f->st, "s1", &result, &detail, &err), 0);
	assert_null(result);
	assert_int_equal(
	    store_oauth_state_finish(f->st, "s1", "ok", "Connected as u@example.com", &err), 0);
	assert_int_equal(store_oauth_state_result(f->st, "s1", &result, &detail, &err), 0);
	assert_string_equal(result, "ok");
	assert_string_equal(detail, "Connected as u@example.com");
	free(result);
	free(detail);
	assert_int_equal(store_oauth_state_finish(f->st, "s1", "error", NULL, &err), 0);
	assert_int_equal(store_oauth_state_result(f->st, "s1", &result, NULL, &err), 0);
	assert_string_equal(result, "error");
	free(result);

	/* refusals */
	assert_int_equal(store_oauth_state_finish(f->st, "s1", "done", NULL, &err), -1);
	assert_int_equal(err.code, MB_EINVAL);
	assert_int_equal(store_oauth_state_finish(f->st, "nope", "ok", NULL, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_oauth_state_result(f->st, "nope", &result, &detail, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_oauth_state_put(f->st, "s1", "office365", verifier, sizeof(verifier),
	                                       REDIRECT, &err),
	                 -1); /* states are unique */
	assert_int_equal(store_oauth_state_put(f->st, "s9", "office365", NULL, 0, REDIRECT, &err),
	                 -1);
	assert_int_equal(err.code, MB_EINVAL);
}

struct take_case {
	const char *name;
	const char *state;
	int64_t backdate_ms;
	int64_t max_age_ms;
	enum mb_errc want_code;
	const char *want_msg;
};

static void
test_oauth_take_refused(void **state)
{
	static const struct take_case cases[] = {
	    {"unknown", "nope", 0, STORE_OAUTH_STATE_MAX_AGE_MS, MB_ENOTFOUND, "unknown state"},
	    {"used", "used", 0, STORE_OAUTH_STATE_MAX_AGE_MS, MB_EINVAL,
	     "this sign-in link was already used"},
	    {"11 minutes old", "old", 11 * 60 * 1000, STORE_OAUTH_STATE_MAX_AGE_MS, MB_EINVAL,
	     "this sign-in link expired after 10 minutes"},
	    {"max age 0", "fresh", 0, 0, MB_EINVAL, "this sign-in link expired after 0 seconds"},
	    {"used and old", "used-old", 11 * 60 * 1000, STORE_OAUTH_STATE_MAX_AGE_MS, MB_EINVAL,
	     "this sign-in link was already used"},
	};
	struct fx *f = *state;
	struct mb_err err = {0};

	put_state(f->st, "used");
	put_state(f->st, "used-old");
	assert_int_equal(store_oauth_state_take(f->st, "used", 1000, NULL, NULL, NULL, NULL, &err),
	                 0);
	assert_int_equal(
	    store_oauth_state_take(f->st, "used-old", 1000, NULL, NULL, NULL, NULL, &err), 0);
	put_state(f->st, "old");
	put_state(f->st, "fresh");
	for (size_t i = 0; i < NELEM(cases); i++) {
		const struct take_case *tc = &cases[i];
		char *conn = NULL;

		if (tc->backdate_ms)
			backdate_state(f->dir, tc->state, tc->backdate_ms);
		memset(&err, 0, sizeof(err));
		if (store_oauth_state_take(f->st, tc->state, tc->max_age_ms, &conn, NULL, NULL,
		                           NULL, &err) != -1 ||
		    err.code != tc->want_code || strcmp(err.msg, tc->want_msg) != 0) {
			print_error("case %s: code %d \"%s\", want %d \"%s\"\n", tc->name,
			            (int)err.code, err.msg, (int)tc->want_code, tc->want_msg);
			fail();
		}
		assert_null(conn);
	}
	/* refusing for age does not use the state up */
	assert_int_equal(store_oauth_state_take(f->st, "fresh", STORE_OAUTH_STATE_MAX_AGE_MS, NULL,
	                                        NULL, NULL, NULL, &err),
	                 0);
}

struct racer {
	const char *dir;
	pthread_barrier_t *go;
	int rc;
	struct mb_err err;
};

static void *
race_take(void *arg)
{
	struct racer *r = arg;
	struct store *st = store_open(r->dir, false, &r->err);

	pthread_barrier_wait(r->go);
	r->rc = st ? store_oauth_state_take(st, "race", STORE_OAUTH_STATE_MAX_AGE_MS, NULL, NULL,
	                                    NULL, NULL, &r->err)
	           : -2;
	store_close(st);
	return NULL;
}

static void
test_oauth_take_race(void **state)
{
	struct fx *f = *state;
	struct racer r[8];
	pthread_t th[8];
	pthread_barrier_t go;
	int wins = 0, used = 0;

	put_state(f->st, "race");
	pthread_barrier_init(&go, NULL, NELEM(r));
	for (size_t i = 0; i < NELEM(r); i++) {
		r[i] = (struct racer){.dir = f->dir, .go = &go};
		assert_int_equal(pthread_create(&th[i], NULL, race_take, &r[i]), 0);
	}
	for (size_t i = 0; i < NELEM(r); i++) {
		pthread_join(th[i], NULL);
		if (r[i].rc == 0)
			wins++;
		else if (r[i].rc == -1 &&
		         strcmp(r[i].err.msg, "this sign-in link was already used") == 0)
			used++;
		else
			print_error("racer %zu: rc %d: %s\n", i, r[i].rc, r[i].err.msg);
	}
	pthread_barrier_destroy(&go);
	assert_int_equal(wins, 1);
	assert_int_equal(used, (int)NELEM(r) - 1);
}

static void
test_oauth_prune(void **state)
{
	struct fx *f = *state;
	struct mb_err err = {0};
	char *result = NULL;

	put_state(f->st, "new");
	put_state(f->st, "old-pending");
	put_state(f->st, "old-done");
	assert_int_equal(store_oauth_state_take(f->st, "old-done", STORE_OAUTH_STATE_MAX_AGE_MS,
	                                        NULL, NULL, NULL, NULL, &err),
	                 0);
	backdate_state(f->dir, "old-pending", 2 * 60 * 60 * 1000);
	backdate_state(f->dir, "old-done", 2 * 60 * 60 * 1000);

	assert_int_equal(store_oauth_state_prune(f->st, 60 * 60 * 1000, &err), 0);
	assert_int_equal(store_oauth_state_result(f->st, "new", &result, NULL, &err), 0);
	assert_int_equal(store_oauth_state_result(f->st, "old-pending", &result, NULL, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_int_equal(store_oauth_state_result(f->st, "old-done", &result, NULL, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
}

/* ---- retention: store_writer_prune ---- */

struct prune_wait {
	struct ev_loop *loop;
	int status;
	int64_t deleted;
	bool called, timed_out;
};

static void
on_pruned(void *arg, int status, int64_t deleted)
{
	struct prune_wait *p = arg;

	p->called = true;
	p->status = status;
	p->deleted = deleted;
	ev_loop_stop(p->loop);
}

static void
on_prune_timeout(void *arg)
{
	struct prune_wait *p = arg;

	p->timed_out = true;
	ev_loop_stop(p->loop);
}

/* One prune through the real writer thread; returns how many messages it reported. */
static int64_t
prune(struct ev_loop *loop, struct store_writer *w, int64_t cutoff, int64_t batch)
{
	struct prune_wait p = {.loop = loop, .status = -2};
	struct ev_timer *t = ev_timer_new(loop, on_prune_timeout, &p);

	store_writer_prune(w, cutoff, batch, on_pruned, &p);
	ev_timer_start(t, 10000);
	ev_loop_run(loop);
	ev_timer_free(t);
	assert_false(p.timed_out);
	assert_true(p.called);
	assert_int_equal(p.status, 0);
	return p.deleted;
}

static int64_t
rows_of(sqlite3 *db, const char *table, const char *col, const char *id)
{
	char sql[200];

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE %s = '%s'", table, col, id);
	return raw_int(db, sql);
}

#define PRUNE_DAY_MS (86400LL * 1000)

/* Messages in every state, updated just before, at and after the cutoff: only sent and
 * failed ones updated before the cutoff go, with their recipients, bodies and attempts; events
 * before the cutoff go; both in batches of at most `batch`. */
static void
test_prune(void **state)
{
	static const char *const states[] = {"queued", "sending", "deferred", "sent", "failed"};
	/* updated_at relative to the cutoff */
	static const int64_t ages[] = {-30 * PRUNE_DAY_MS, -1, 0, 1, 5 * PRUNE_DAY_MS};
	enum { NSTATES = NELEM(states), NAGES = NELEM(ages), NEXTRA = 2 };
	struct fx *f = *state;
	struct mb_err err = {0};
	struct submit s = {0};
	struct store_writer *w;
	struct ev_timer *t;
	char id[NSTATES * NAGES + NEXTRA][MB_ID_LEN + 1];
	bool gone[NSTATES * NAGES + NEXTRA] = {0};
	size_t n = NSTATES * NAGES + NEXTRA;
	int64_t now = mb_now_ms(), cutoff = now - 14 * PRUNE_DAY_MS, total;
	sqlite3 *db;
	char sql[1024];

	s.loop = ev_loop_new();
	assert_non_null(s.loop);
	w = store_writer_new(f->dir, s.loop, 0, &err);
	assert_non_null(w);
	for (size_t i = 0; i < n; i++) {
		struct store_msg *m = store_msg_new();
		mb_id_new(m->id);
		snprintf(id[i], sizeof(id[i]), "%s", m->id);
		m->sender = mb_strdup("a@example.com");
		store_msg_add_rcpt(m, "b@example.com");
		store_msg_add_rcpt(m, "c@example.com");
		m->body = mb_asprintf("Subject: prune %zu\r\n\r\nbody\r\n", i);
		m->body_len = strlen(m->body);
		m->received_ms = cutoff - 40 * PRUNE_DAY_MS; /* received long ago: irrelevant */
		m->client = mb_strdup("[127.0.0.1] helo=test");
		s.pending++;
		store_writer_submit(w, m, on_commit, &s);
	}
	t = ev_timer_new(s.loop, on_timeout, &s);
	ev_timer_start(t, 10000);
	ev_loop_run(s.loop);
	ev_timer_free(t);
	assert_false(s.timed_out);
	assert_int_equal(s.failed, 0);

	/* states, ages, two attempts each, and events: with a raw handle on the same file */
	db = raw_open(f->dir);
	raw_exec(db, "BEGIN");
	for (size_t i = 0; i < n; i++) {
		/* the extra ones: sent and failed, older than the cutoff */
		const char *st = i < NSTATES * NAGES ? states[i / NAGES] : states[3 + (i % 2)];
		int64_t upd = cutoff + (i < NSTATES * NAGES ? ages[i % NAGES] : -2 * PRUNE_DAY_MS);
		snprintf(sql, sizeof(sql),
		         "UPDATE messages SET state = '%s', updated_at = %lld WHERE id = '%s'", st,
		         (long long)upd, id[i]);
		raw_exec(db, sql);
		for (int a = 0; a < 2; a++) {
			snprintf(sql, sizeof(sql),
			         "INSERT INTO attempts (message_id, at, connection, result, detail)"
			         " VALUES ('%s', %lld, 'office365', 'tempfail', 'try %d')",
			         id[i], (long long)(upd - 1000 + a), a);
			raw_exec(db, sql);
		}
		gone[i] = (strcmp(st, "sent") == 0 || strcmp(st, "failed") == 0) && upd < cutoff;
	}
	/* events: 3 before the cutoff, one at it, one after; one tied to a kept message */
	snprintf(sql, sizeof(sql),
	         "INSERT INTO events (at, level, message_id, text) VALUES"
	         " (%lld, 'info', NULL, 'old 1'), (%lld, 'info', NULL, 'old 2'),"
	         " (%lld, 'warn', '%s', 'old 3'), (%lld, 'info', NULL, 'at cutoff'),"
	         " (%lld, 'info', '%s', 'new')",
	         (long long)(cutoff - 30 * PRUNE_DAY_MS), (long long)(cutoff - 1),
	         (long long)(cutoff - 1000), id[0], (long long)cutoff, (long long)(now), id[0]);
	raw_exec(db, sql);
	raw_exec(db, "COMMIT");
	assert_int_equal(raw_int(db, "SELECT count(*) FROM messages"), (int64_t)n);
	/* 2 (sent, failed) x 2 ages before the cutoff + the 2 extra ones */
	total = 0;
	for (size_t i = 0; i < n; i++)
		total += gone[i];
	assert_int_equal(total, 6);

	/* batch 2: two messages and two events go, and it says 2 */
	assert_int_equal(prune(s.loop, w, cutoff, 2), 2);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM messages"), (int64_t)n - 2);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM events"), 3);
	/* the rest, in batches of 3: 3 then 1 (less than the batch: done) */
	assert_int_equal(prune(s.loop, w, cutoff, 3), 3);
	assert_int_equal(prune(s.loop, w, cutoff, 3), 1);
	assert_int_equal(prune(s.loop, w, cutoff, 500), 0);

	for (size_t i = 0; i < n; i++) {
		int64_t want = gone[i] ? 0 : 1;
		if (rows_of(db, "messages", "id", id[i]) != want)
			print_error("message %zu (%s): expected %s\n", i, id[i],
			            gone[i] ? "gone" : "kept");
		assert_int_equal(rows_of(db, "messages", "id", id[i]), want);
		assert_int_equal(rows_of(db, "bodies", "message_id", id[i]), want);
		assert_int_equal(rows_of(db, "recipients", "message_id", id[i]), 2 * want);
		assert_int_equal(rows_of(db, "attempts", "message_id", id[i]), 2 * want);
	}
	assert_int_equal(raw_int(db, "SELECT count(*) FROM messages"), (int64_t)n - 6);
	/* nothing orphaned anywhere */
	assert_int_equal(raw_int(db,
	                         "SELECT (SELECT count(*) FROM bodies WHERE message_id NOT IN"
	                         " (SELECT id FROM messages)) + (SELECT count(*) FROM"
	                         " recipients WHERE message_id NOT IN (SELECT id FROM messages))"
	                         " + (SELECT count(*) FROM attempts WHERE message_id NOT IN"
	                         " (SELECT id FROM messages))"),
	                 0);
	/* events: exactly those before the cutoff went */
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM events WHERE at < %lld",
	         (long long)cutoff);
	assert_int_equal(raw_int(db, sql), 0);
	assert_int_equal(raw_int(db, "SELECT count(*) FROM events"), 2);
	assert_int_equal(
	    raw_int(db, "SELECT count(*) FROM events WHERE text IN ('at cutoff', 'new')"), 2);
	/* the store still works: the kept messages are counted by state */
	assert_int_equal(store_msg_count(f->st, STORE_QUEUED, &err), NAGES);
	assert_int_equal(store_msg_count(f->st, STORE_SENDING, &err), NAGES);
	assert_int_equal(store_msg_count(f->st, STORE_DEFERRED, &err), NAGES);
	assert_int_equal(store_msg_count(f->st, STORE_SENT, &err), NAGES - 2);
	assert_int_equal(store_msg_count(f->st, STORE_FAILED, &err), NAGES - 2);
	sqlite3_close(db);

	store_writer_free(w);
	ev_loop_free(s.loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_fresh, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_migrate_v1, setup_dir, teardown),
	    cmocka_unit_test_setup_teardown(test_token_lookup_uses_primary_key, setup_store,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_messages, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_conn_crud, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_conn_delete, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_tokens, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_settings, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_oauth_take, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_oauth_take_refused, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_oauth_take_race, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_oauth_prune, setup_store, teardown),
	    cmocka_unit_test_setup_teardown(test_prune, setup_store, teardown),
	};

	mb_log_setup(MB_LOG_WARN, MB_LOG_TEXT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
