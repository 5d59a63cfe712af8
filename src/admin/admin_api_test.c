/* POST /api/v1/test: the Email Test. One message now through a connection, without fallback;
 * the answer waits for the outcome and the message is kept in the log with its attempt. */
#include "admin_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin_msg.h"
#include "deliver/deliver.h"
#include "deliver/deliver_test.h"
#include "store/store.h"

#define TEST_BODY_MAX  (64 * 1024)
#define TEST_MARGIN_MS 10000

/* ---- POST /api/v1/test ---- */

/* A test send in flight. The deliverer holds it until its callback; the HTTP side (the
 * deferred reply, the timer) may end first: the client left, the bound passed, or the admin
 * was freed (admin_msg_state_free). */
struct test_run {
	struct test_run *next;
	struct admin *a; /* NULL once the admin is gone */
	struct store *st;
	struct ev_http *server;
	uint64_t req_id;
	struct ev_timer *timer;
	struct store_msg *copy; /* what is stored once the outcome is known */
	char *conn;
	int64_t bound_ms;
	bool answered;
};

static struct test_run *tests; /* in flight; one admin per process */

static void
test_unlink(struct test_run *t)
{
	for (struct test_run **p = &tests; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			return;
		}
	}
}

static void
test_free(struct test_run *t)
{
	test_unlink(t);
	ev_timer_free(t->timer);
	store_msg_free(t->copy);
	free(t->conn);
	free(t);
}

static struct store_msg *
msg_dup(const struct store_msg *m)
{
	struct store_msg *c = store_msg_new();

	memcpy(c->id, m->id, sizeof(c->id));
	c->sender = mb_strdup(m->sender);
	for (size_t i = 0; i < m->nrcpts; i++)
		store_msg_add_rcpt(c, m->rcpts[i]);
	c->body = mb_strndup(m->body, m->body_len);
	c->body_len = m->body_len;
	c->size = (int64_t)m->body_len;
	c->received_ms = m->received_ms;
	c->client = mb_strdup("test send (API)");
	c->subject = m->subject ? mb_strdup(m->subject) : NULL;
	c->from_hdr = m->from_hdr ? mb_strdup(m->from_hdr) : NULL;
	return c;
}

/* The test's record: the message with its one attempt, sent or failed. */
static void
test_record(struct test_run *t, const struct deliver_outcome *o, int64_t ms, const char *upstream)
{
	struct store_result *r = store_result_new(t->copy->id);
	struct mb_err err = {0};

	r->state = o->result == DELIVER_OK ? STORE_SENT : STORE_FAILED;
	r->count_attempt = true;
	r->connection = mb_strdup(t->conn);
	r->result = mb_strdup(deliver_result_name(o->result));
	r->detail = mb_strdup(o->detail);
	r->upstream_id = upstream && *upstream ? mb_strdup(upstream) : NULL;
	r->latency_ms = ms;
	if (o->result != DELIVER_OK) /* the deliverer's form, so the log splits it alike */
		r->last_error = mb_asprintf("%s Fix: %s (%s)", o->cause, o->fix, o->detail);
	if (store_msg_record(t->st, t->copy, r, &err) < 0)
		mb_warn("admin: test send %s: the result could not be stored: %s", t->copy->id,
		        err.msg);
	store_result_free(r);
}

static void
test_answer(struct test_run *t, const struct deliver_outcome *o, int64_t ms, const char *upstream)
{
	struct ev_http_req *req = t->server ? ev_http_deferred(t->server, t->req_id) : NULL;
	json_t *j = json_object();

	t->answered = true;
	if (req == NULL) { /* the client left */
		json_decref(j);
		return;
	}
	json_object_set_new(j, "id", json_string(t->copy->id));
	json_object_set_new(j, "ms", json_integer(ms));
	json_object_set_new(j, "connection", json_string(t->conn));
	if (o->result == DELIVER_OK) {
		json_object_set_new(j, "result", json_string("sent"));
		json_object_set_new(j, "upstream_id",
		                    admin_msg_str_json(upstream && *upstream ? upstream : NULL));
		admin_reply_json(req, 200, j);
		return;
	}
	{
		json_t *e = json_object();
		json_object_set_new(e, "code", json_string("not_delivered"));
		json_object_set_new(e, "message", admin_msg_str_json(o->cause));
		json_object_set_new(e, "fix", admin_msg_str_json(o->fix));
		json_object_set_new(e, "detail", admin_msg_str_json(o->detail));
		json_object_set_new(e, "result", json_string(deliver_result_name(o->result)));
		json_object_set_new(j, "error", e);
	}
	admin_reply_json(req, 502, j);
}

static void
test_done(void *arg, const struct deliver_outcome *o, int64_t ms, const char *upstream)
{
	struct test_run *t = arg;

	mb_info(
	    "admin: test send: id=%s connection=%s result=%s latency=%lldms%s%s", t->copy->id,
	    t->conn, deliver_result_name(o->result), (long long)ms,
	    o->result == DELIVER_OK ? "" : " detail=", o->result == DELIVER_OK ? "" : o->detail);
	test_record(t, o, ms, upstream);
	if (!t->answered)
		test_answer(t, o, ms, upstream);
	test_free(t);
}

static void
test_timeout(void *arg)
{
	struct test_run *t = arg;
	struct ev_http_req *req = t->server ? ev_http_deferred(t->server, t->req_id) : NULL;
	char msg[160];
	json_t *j, *e;

	t->answered = true;
	if (req == NULL)
		return;
	snprintf(msg, sizeof(msg), "no outcome within %lld s", (long long)(t->bound_ms / 1000));
	j = json_object();
	e = json_object();
	json_object_set_new(e, "code", json_string("timeout"));
	json_object_set_new(e, "message", json_string(msg));
	json_object_set_new(e, "fix",
	                    json_string("the attempt goes on: its outcome appears in the "
	                                "Email Logs under this id "
	                                "(GET /api/v1/messages/ID)"));
	json_object_set_new(j, "error", e);
	json_object_set_new(j, "id", json_string(t->copy->id));
	admin_reply_json(req, 504, j);
}

void
admin_msg_state_free(struct admin *a)
{
	/* the deliverer still calls back (it ends attempts after the admin is gone): only what
	 * belongs to the HTTP side goes now */
	for (struct test_run *t = tests, *next; t; t = next) {
		next = t->next;
		if (t->a != a)
			continue;
		test_unlink(t);
		t->next = NULL;
		t->a = NULL;
		t->server = NULL;
		ev_timer_free(t->timer);
		t->timer = NULL;
	}
}

struct test_args {
	const char *to, *from, *conn, *subject, *body;
	bool html;
};

/* An optional string field of at most max bytes, one line when line; -1 after replying. */
static int
opt_string(struct ev_http_req *req, json_t *j, const char *name, size_t max, bool line,
           const char **out)
{
	json_t *v = json_object_get(j, name);
	const char *s;

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	s = json_string_value(v);
	if (s == NULL || strlen(s) > max || (line && strpbrk(s, "\r\n")) ||
	    strlen(s) != json_string_length(v)) {
		char *what = mb_asprintf("not a string%s of at most %zu bytes",
		                         line ? " on one line" : "", max);
		admin_reply_invalid_fix(req, name, what, "see docs/api.md, POST /api/v1/test");
		free(what);
		return -1;
	}
	*out = s;
	return 0;
}

static int
test_args_parse(struct ev_http_req *req, json_t *j, struct test_args *t)
{
	json_t *html = json_object_get(j, "html");

	if (opt_string(req, j, "to", 254, true, &t->to) < 0 ||
	    opt_string(req, j, "from", 254, true, &t->from) < 0 ||
	    opt_string(req, j, "connection", 64, true, &t->conn) < 0 ||
	    opt_string(req, j, "subject", 200, true, &t->subject) < 0 ||
	    opt_string(req, j, "body", TEST_BODY_MAX, false, &t->body) < 0)
		return -1;
	if (t->to == NULL || !admin_msg_addr_ok(t->to)) {
		admin_reply_invalid_fix(req, "to", "missing or not an e-mail address",
		                        "send {\"to\": \"someone@example.com\"}");
		return -1;
	}
	if (t->from && !admin_msg_addr_ok(t->from)) {
		admin_reply_invalid_fix(req, "from", "not an e-mail address",
		                        "leave it out to send as the connection's mailbox");
		return -1;
	}
	if (html && !json_is_boolean(html)) {
		admin_reply_invalid_fix(req, "html", "not true or false",
		                        "send \"html\": true for HTML");
		return -1;
	}
	t->html = json_is_true(html);
	return 0;
}

/* The connection to test: the named one or the default; its sender in *sender. NULL after
 * replying (404 unknown, 409 none). */
static char *
test_conn(struct admin *a, struct ev_http_req *req, const char *named, char **sender)
{
	struct mb_err err = {0};
	char *name = named ? mb_strdup(named) : store_default_connection(a->d.cfg, a->d.st);
	struct store_conn *sc;

	if (name == NULL) {
		admin_reply_error(
		    req, 409, "no_connection",
		    "no connection was named and no default connection is set",
		    "set a default connection (POST /api/v1/connections/NAME/default, "
		    "mailbridge connection default NAME, or default = yes) — the "
		    "guide's Errors 1 and 2; or name one in \"connection\"");
		return NULL;
	}
	sc = store_conn_get(a->d.st, name, &err);
	if (sc == NULL) {
		char *msg = mb_asprintf("no connection named %s", name);
		if (err.code == MB_ENOTFOUND)
			admin_reply_error(
			    req, 404, "not_found", msg,
			    named ? "pick one from GET /api/v1/connections"
			          : "the default connection is gone: set a default "
			            "connection (POST /api/v1/connections/NAME/default)");
		else
			admin_reply_store_error(req, &err);
		free(msg);
		free(name);
		return NULL;
	}
	*sender = mb_strdup(sc->sender);
	store_conn_free(sc);
	return name;
}

static int64_t
test_bound_ms(struct admin *a, const char *conn)
{
	const struct config_conn *cc = config_conn_find(a->d.cfg, conn);
	int64_t timeout = cc && cc->request_timeout > 0 ? cc->request_timeout * 1000 : 60000;

	/* a token request and the send (SMTP: twice the request timeout), then a margin */
	return 2 * timeout + TEST_MARGIN_MS;
}

static void
test_start(struct admin *a, struct ev_http_req *req, const struct test_args *ta, char *conn,
           const char *sender)
{
	struct deliver_test_spec spec = {
	    ta->from ? ta->from : sender, ta->to, conn, ta->subject, ta->body, ta->html};
	struct test_run *t = mb_calloc(1, sizeof(*t));
	struct store_msg *m = deliver_test_message(&spec);

	t->a = a;
	t->st = a->d.st;
	t->conn = conn;
	t->copy = msg_dup(m);
	t->server = admin_server_of(a, req);
	t->bound_ms = test_bound_ms(a, conn);
	t->timer = ev_timer_new(a->loop, test_timeout, t);
	t->next = tests;
	tests = t;
	t->req_id = ev_http_req_defer(t->server, req);
	ev_timer_start(t->timer, t->bound_ms);
	mb_info("admin: test send: id=%s connection=%s to=%s", m->id, conn, ta->to);
	/* the deliverer rereads connections every 30 s: one changed by the CLI a moment ago
	 * must be known now */
	deliver_conns_changed(a->d.deliver);
	deliver_send_now(a->d.deliver, conn, m, test_done, t); /* may call back at once */
}

void
admin_api_test(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
               const struct api_params *p)
{
	struct test_args ta = {0};
	char *conn, *sender = NULL;
	json_t *j;

	if (a->d.deliver == NULL) {
		admin_reply_error(req, 503, "unavailable", "this server does not deliver mail",
		                  "run the test against mailbridge serve");
		return;
	}
	if ((j = admin_body_json(req)) == NULL)
		return;
	if (test_args_parse(req, j, &ta) == 0 &&
	    (conn = test_conn(a, req, ta.conn, &sender)) != NULL)
		test_start(a, req, &ta, conn, sender);
	free(sender);
	json_decref(j);
}
