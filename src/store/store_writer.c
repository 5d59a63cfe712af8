/*
 * The one writer: a thread that commits submitted messages in groups.
 *
 * Sessions submit from the loop; the thread takes everything queued (up to batch_max),
 * inserts it in one transaction and commits, which with WAL and synchronous=FULL is one
 * fsync for the whole group. Then the group's callbacks run on the loop. While one group
 * is being synced the next one gathers, so the disk sets the pace, not the sessions.
 *
 * Checkpoints (copying the WAL back into the database file, and its fsync) run on a second
 * thread with its own connection, so they never stall a commit.
 */
#include "store_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum wjob_kind { WJOB_INSERT, WJOB_CLAIM, WJOB_RESULT, WJOB_PRUNE };

struct wjob {
	enum wjob_kind kind;
	struct store_msg *m;    /* INSERT */
	struct store_result *r; /* RESULT */
	size_t claim_max;       /* CLAIM */
	int64_t lease_ms;
	char owner[128];
	struct store_msg **claimed;
	size_t nclaimed;
	int64_t cutoff_ms; /* PRUNE */
	int64_t pruned;
	store_commit_cb cb;
	store_claim_cb claim_cb;
	store_prune_cb prune_cb;
	void *arg;
	int status;
	char errmsg[256];
	struct wjob *next;
};

struct wqueue {
	struct wjob *head, *tail;
};

struct store_writer {
	sqlite3 *db;
	sqlite3_stmt *ins_msg, *ins_rcpt, *ins_body, *claim, *upd_result, *ins_attempt;
	int64_t batch_max;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct wqueue in, done;
	bool stop;
	struct ev_notify *notify;
	/* the checkpointer */
	sqlite3 *ckpt_db;
	pthread_t ckpt_thread;
	pthread_mutex_t ckpt_mu;
	pthread_cond_t ckpt_cv;
	bool ckpt_wanted;
	bool ckpt_stop;
};

/* WAL pages after which a checkpoint is asked for (4 MiB with 4 KiB pages). */
#define CHECKPOINT_PAGES 1000

static void
wq_push(struct wqueue *q, struct wjob *j)
{
	j->next = NULL;
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static void
wq_append(struct wqueue *q, struct wqueue *more)
{
	if (more->head == NULL)
		return;
	if (q->tail)
		q->tail->next = more->head;
	else
		q->head = more->head;
	q->tail = more->tail;
	more->head = more->tail = NULL;
}

static int
insert_one(struct store_writer *w, struct store_msg *m)
{
	int64_t now = mb_now_ms();

	store_msg_scan_headers(m);
	sqlite3_reset(w->ins_msg);
	sqlite3_bind_text(w->ins_msg, 1, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_text(w->ins_msg, 2, m->sender ? m->sender : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(w->ins_msg, 3, (sqlite3_int64)m->body_len);
	sqlite3_bind_int64(w->ins_msg, 4, m->received_ms);
	sqlite3_bind_int64(w->ins_msg, 5, m->received_ms);
	sqlite3_bind_text(w->ins_msg, 6, m->client, -1, SQLITE_STATIC);
	sqlite3_bind_text(w->ins_msg, 7, m->subject, -1, SQLITE_STATIC);
	sqlite3_bind_text(w->ins_msg, 8, m->from_hdr, -1, SQLITE_STATIC);
	sqlite3_bind_int64(w->ins_msg, 9, now);
	if (sqlite3_step(w->ins_msg) != SQLITE_DONE)
		return -1;
	for (size_t i = 0; i < m->nrcpts; i++) {
		sqlite3_reset(w->ins_rcpt);
		sqlite3_bind_text(w->ins_rcpt, 1, m->id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(w->ins_rcpt, 2, (sqlite3_int64)i);
		sqlite3_bind_text(w->ins_rcpt, 3, m->rcpts[i], -1, SQLITE_STATIC);
		if (sqlite3_step(w->ins_rcpt) != SQLITE_DONE)
			return -1;
	}
	sqlite3_reset(w->ins_body);
	sqlite3_bind_text(w->ins_body, 1, m->id, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(w->ins_body, 2, m->body ? m->body : "", m->body_len, SQLITE_STATIC);
	if (sqlite3_step(w->ins_body) != SQLITE_DONE)
		return -1;
	return 0;
}

static void
drop_claimed(struct wjob *j)
{
	for (size_t i = 0; i < j->nclaimed; i++)
		store_msg_free(j->claimed[i]);
	free(j->claimed);
	j->claimed = NULL;
	j->nclaimed = 0;
}

/* Leases up to claim_max due messages and loads them whole. */
static int
claim_one(struct store_writer *w, struct wjob *j)
{
	struct store tmp = {.db = w->db};
	int64_t now = mb_now_ms();
	char **ids = NULL;
	size_t n = 0;
	int rc;

	sqlite3_reset(w->claim);
	sqlite3_bind_text(w->claim, 1, j->owner, -1, SQLITE_STATIC);
	sqlite3_bind_int64(w->claim, 2, now + j->lease_ms);
	sqlite3_bind_int64(w->claim, 3, now);
	sqlite3_bind_int64(w->claim, 4, (sqlite3_int64)j->claim_max);
	while ((rc = sqlite3_step(w->claim)) == SQLITE_ROW) {
		ids = mb_realloc(ids, (n + 1) * sizeof(char *));
		ids[n++] = mb_strdup((const char *)sqlite3_column_text(w->claim, 0));
	}
	sqlite3_reset(w->claim);
	if (rc != SQLITE_DONE) {
		for (size_t i = 0; i < n; i++)
			free(ids[i]);
		free(ids);
		return -1;
	}
	j->claimed = mb_calloc(n ? n : 1, sizeof(*j->claimed));
	for (size_t i = 0; i < n; i++) {
		struct store_msg *m = store_msg_get(&tmp, ids[i], true, NULL);
		if (m)
			j->claimed[j->nclaimed++] = m;
		free(ids[i]);
	}
	free(ids);
	return 0;
}

static int
prune_one(struct store_writer *w, struct wjob *j)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(
	        w->db,
	        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state"
	        " IN ('sent', 'failed') AND updated_at < ?1 LIMIT ?2)",
	        -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(st, 1, j->cutoff_ms);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)j->claim_max);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return -1;
	j->pruned = sqlite3_changes(w->db);
	if (sqlite3_prepare_v2(w->db,
	                       "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ?1"
	                       " LIMIT ?2)",
	                       -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(st, 1, j->cutoff_ms);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)j->claim_max);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int
result_one(struct store_writer *w, struct store_result *r)
{
	int64_t now = mb_now_ms();
	sqlite3_stmt *u = w->upd_result, *a = w->ins_attempt;

	sqlite3_reset(u);
	sqlite3_bind_text(u, 1, store_state_name(r->state), -1, SQLITE_STATIC);
	sqlite3_bind_int(u, 2, r->count_attempt ? 1 : 0);
	sqlite3_bind_int64(u, 3, r->next_attempt_ms ? r->next_attempt_ms : now);
	sqlite3_bind_text(u, 4, r->last_error, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 5, r->connection, -1, SQLITE_STATIC);
	sqlite3_bind_int64(u, 6, now);
	sqlite3_bind_text(u, 7, r->id, -1, SQLITE_STATIC);
	if (sqlite3_step(u) != SQLITE_DONE)
		return -1;
	/* a message deleted meanwhile has no row to attach an attempt to */
	if (r->result == NULL || sqlite3_changes(w->db) == 0)
		return 0;
	sqlite3_reset(a);
	store_attempt_bind(a, r->id, now, r);
	return sqlite3_step(a) == SQLITE_DONE ? 0 : -1;
}

/* Commits one group; every job gets the same status. */
static void
commit_group(struct store_writer *w, struct wqueue *g)
{
	struct wjob *j;
	const char *why = NULL;
	int status = 0;

	if (sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		why = sqlite3_errmsg(w->db);
		status = -1;
	} else {
		for (j = g->head; j && status == 0; j = j->next) {
			if (j->kind == WJOB_INSERT)
				status = insert_one(w, j->m);
			else if (j->kind == WJOB_CLAIM)
				status = claim_one(w, j);
			else if (j->kind == WJOB_PRUNE)
				status = prune_one(w, j);
			else
				status = result_one(w, j->r);
		}
		if (status == 0 && sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
			status = -1;
		if (status < 0) {
			why = sqlite3_errmsg(w->db);
			sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
		}
	}
	for (j = g->head; j; j = j->next) {
		j->status = status;
		if (why)
			snprintf(j->errmsg, sizeof(j->errmsg), "%s", why);
		if (status < 0)
			drop_claimed(j); /* a claim that did not commit never happened */
	}
	if (status < 0)
		mb_warn("store: commit failed: %s", why ? why : "?");
}

/* Called by SQLite on the writer thread after each commit. */
static int
wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct store_writer *w = arg;

	if (pages >= CHECKPOINT_PAGES) {
		pthread_mutex_lock(&w->ckpt_mu);
		w->ckpt_wanted = true;
		pthread_cond_signal(&w->ckpt_cv);
		pthread_mutex_unlock(&w->ckpt_mu);
	}
	return SQLITE_OK;
}

static void *
checkpointer_main(void *arg)
{
	struct store_writer *w = arg;
	int log, done;

	pthread_mutex_lock(&w->ckpt_mu);
	for (;;) {
		while (!w->ckpt_wanted && !w->ckpt_stop)
			pthread_cond_wait(&w->ckpt_cv, &w->ckpt_mu);
		if (w->ckpt_stop)
			break;
		w->ckpt_wanted = false;
		pthread_mutex_unlock(&w->ckpt_mu);
		/* PASSIVE: copies what no reader needs, never waits for the writer */
		if (sqlite3_wal_checkpoint_v2(w->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
		                              &done) != SQLITE_OK)
			mb_warn("store: checkpoint: %s", sqlite3_errmsg(w->ckpt_db));
		pthread_mutex_lock(&w->ckpt_mu);
	}
	pthread_mutex_unlock(&w->ckpt_mu);
	return NULL;
}

static void *
writer_main(void *arg)
{
	struct store_writer *w = arg;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		struct wqueue g = {0};
		int64_t n = 0;

		while (w->in.head == NULL && !w->stop)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->in.head == NULL && w->stop)
			break;
		while (w->in.head && n < w->batch_max) {
			struct wjob *j = w->in.head;
			w->in.head = j->next;
			if (w->in.head == NULL)
				w->in.tail = NULL;
			wq_push(&g, j);
			n++;
		}
		pthread_mutex_unlock(&w->mu);
		commit_group(w, &g);
		pthread_mutex_lock(&w->mu);
		wq_append(&w->done, &g);
		ev_notify_fire(w->notify);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void
run_done(void *arg)
{
	struct store_writer *w = arg;
	struct wqueue done;
	struct wjob *j, *next;

	pthread_mutex_lock(&w->mu);
	done = w->done;
	w->done.head = w->done.tail = NULL;
	pthread_mutex_unlock(&w->mu);
	for (j = done.head; j; j = next) {
		next = j->next;
		if (j->kind == WJOB_CLAIM) {
			/* the callback adopts the messages and the array */
			j->claim_cb(j->arg, j->claimed, j->nclaimed);
		} else if (j->kind == WJOB_PRUNE) {
			j->prune_cb(j->arg, j->status, j->status ? 0 : j->pruned);
		} else {
			j->cb(j->arg, j->status, j->status ? j->errmsg : NULL);
		}
		store_msg_free(j->m);
		store_result_free(j->r);
		free(j);
	}
}

struct store_writer *
store_writer_new(const char *data_dir, struct ev_loop *loop, int64_t batch_max, struct mb_err *err)
{
	struct store_writer *w;
	sqlite3 *db = store_db_open(data_dir, true, err);

	if (db == NULL)
		return NULL;
	w = mb_calloc(1, sizeof(*w));
	w->db = db;
	w->batch_max = batch_max > 0 ? batch_max : 512;
	if (sqlite3_prepare_v2(db,
	                       "INSERT INTO messages (id, sender, size, received_at, state,"
	                       " next_attempt_at, client, subject, from_hdr, updated_at)"
	                       " VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9)",
	                       -1, &w->ins_msg, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
	                       "INSERT INTO recipients (message_id, idx, address) VALUES (?, ?, ?)",
	                       -1, &w->ins_rcpt, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "INSERT INTO bodies (message_id, data) VALUES (?, ?)", -1,
	                       &w->ins_body, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
	                       "UPDATE messages SET state = 'sending', lease_owner = ?1,"
	                       " lease_until = ?2, updated_at = ?3 WHERE id IN (SELECT id FROM"
	                       " messages WHERE (state IN ('queued', 'deferred') AND"
	                       " next_attempt_at <= ?3) OR (state = 'sending' AND lease_until < ?3)"
	                       " ORDER BY next_attempt_at LIMIT ?4) RETURNING id",
	                       -1, &w->claim, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
	                       "UPDATE messages SET state = ?1, attempts = attempts + ?2,"
	                       " next_attempt_at = ?3, last_error = ?4,"
	                       " connection = coalesce(?5, connection), lease_owner = NULL,"
	                       " lease_until = NULL, updated_at = ?6 WHERE id = ?7",
	                       -1, &w->upd_result, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, STORE_SQL_INSERT_ATTEMPT, -1, &w->ins_attempt, NULL) !=
	        SQLITE_OK) {
		store_db_err(db, err, "preparing statements");
		goto fail;
	}
	w->ckpt_db = store_db_open(data_dir, false, err);
	if (w->ckpt_db == NULL)
		goto fail;
	if (store_db_exec(db, "PRAGMA wal_autocheckpoint = 0", err) < 0)
		goto fail;
	w->notify = ev_notify_new(loop, run_done, w);
	if (w->notify == NULL) {
		mb_err_set(err, MB_EIO, "store: cannot create the writer's notifier");
		goto fail;
	}
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	pthread_mutex_init(&w->ckpt_mu, NULL);
	pthread_cond_init(&w->ckpt_cv, NULL);
	sqlite3_wal_hook(db, wal_hook, w);
	if (pthread_create(&w->ckpt_thread, NULL, checkpointer_main, w) != 0) {
		mb_err_set(err, MB_EIO, "store: cannot start the checkpoint thread");
		ev_notify_free(w->notify);
		goto fail;
	}
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
		mb_err_set(err, MB_EIO, "store: cannot start the writer thread");
		pthread_mutex_lock(&w->ckpt_mu);
		w->ckpt_stop = true;
		pthread_cond_signal(&w->ckpt_cv);
		pthread_mutex_unlock(&w->ckpt_mu);
		pthread_join(w->ckpt_thread, NULL);
		ev_notify_free(w->notify);
		goto fail;
	}
	return w;
fail:
	sqlite3_finalize(w->ins_msg);
	sqlite3_finalize(w->ins_rcpt);
	sqlite3_finalize(w->ins_body);
	sqlite3_finalize(w->claim);
	sqlite3_finalize(w->upd_result);
	sqlite3_finalize(w->ins_attempt);
	sqlite3_close(w->ckpt_db);
	sqlite3_close(db);
	free(w);
	return NULL;
}

/* A new job of kind for the caller's arg; the caller fills in the rest and enqueues it. */
static struct wjob *
wjob_new(enum wjob_kind kind, void *arg)
{
	struct wjob *j = mb_calloc(1, sizeof(*j));

	j->kind = kind;
	j->arg = arg;
	return j;
}

static void
enqueue(struct store_writer *w, struct wjob *j)
{
	pthread_mutex_lock(&w->mu);
	wq_push(&w->in, j);
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

void
store_writer_submit(struct store_writer *w, struct store_msg *m, store_commit_cb cb, void *arg)
{
	struct wjob *j = wjob_new(WJOB_INSERT, arg);

	j->m = m;
	j->cb = cb;
	enqueue(w, j);
}

void
store_writer_claim(struct store_writer *w, size_t max, int64_t lease_ms, const char *owner,
                   store_claim_cb cb, void *arg)
{
	struct wjob *j = wjob_new(WJOB_CLAIM, arg);

	j->claim_max = max;
	j->lease_ms = lease_ms;
	snprintf(j->owner, sizeof(j->owner), "%s", owner);
	j->claim_cb = cb;
	enqueue(w, j);
}

void
store_writer_result(struct store_writer *w, struct store_result *r, store_commit_cb cb, void *arg)
{
	struct wjob *j = wjob_new(WJOB_RESULT, arg);

	j->r = r;
	j->cb = cb;
	enqueue(w, j);
}

void
store_writer_prune(struct store_writer *w, int64_t cutoff_ms, int64_t batch, store_prune_cb cb,
                   void *arg)
{
	struct wjob *j = wjob_new(WJOB_PRUNE, arg);

	j->cutoff_ms = cutoff_ms;
	j->claim_max = (size_t)batch;
	j->prune_cb = cb;
	enqueue(w, j);
}

struct store_result *
store_result_new(const char *id)
{
	struct store_result *r = mb_calloc(1, sizeof(*r));

	snprintf(r->id, sizeof(r->id), "%s", id);
	return r;
}

void
store_result_free(struct store_result *r)
{
	if (r == NULL)
		return;
	free(r->connection);
	free(r->last_error);
	free(r->result);
	free(r->detail);
	free(r->upstream_id);
	free(r);
}

void
store_writer_free(struct store_writer *w)
{
	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	pthread_mutex_lock(&w->ckpt_mu);
	w->ckpt_stop = true;
	pthread_cond_signal(&w->ckpt_cv);
	pthread_mutex_unlock(&w->ckpt_mu);
	pthread_join(w->ckpt_thread, NULL);
	run_done(w);
	ev_notify_free(w->notify);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	sqlite3_finalize(w->ins_msg);
	sqlite3_finalize(w->ins_rcpt);
	sqlite3_finalize(w->ins_body);
	sqlite3_finalize(w->claim);
	sqlite3_finalize(w->upd_result);
	sqlite3_finalize(w->ins_attempt);
	/* leave a small WAL behind: everything into the database file, WAL truncated */
	sqlite3_wal_checkpoint_v2(w->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
	sqlite3_close(w->ckpt_db);
	sqlite3_close(w->db);
	pthread_mutex_destroy(&w->ckpt_mu);
	pthread_cond_destroy(&w->ckpt_cv);
	free(w);
}
