/* /api/v1 messages: the log, one message, resend, queue retry and delete, stats (the test
 * send is in admin_api_test.c).
 *
 * Writes (requeue, copy, delete, the test's record) are single short transactions on the
 * admin's store handle, as the CLI does them; the daemon's writer thread commits in groups,
 * so the wait for its lock is short. After queueing, the deliverer is kicked so the message
 * goes out now rather than at the next tick. */
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

#define DAY_MS         (24 * 3600 * 1000LL)
#define LIST_LIMIT_MAX 200
#define LIST_LIMIT_DEF 50
#define QUERY_MAX      200
#define BULK_MAX       100
#define RCPTS_MAX      100
#define STATS_DAYS_MAX 90

/* ---- small helpers ---- */

/* A string as JSON (made valid UTF-8: a stored header may be 8-bit), or null. */
json_t *
admin_msg_str_json(const char *s)
{
	return s ? admin_json_text(s, false) : json_null();
}

/* An id from a path or a body: the store's own form (16 base32 characters), checked before
 * the store is asked. Replies 400 and returns false when it is not. */
static bool
id_checked(struct ev_http_req *req, const char *id)
{
	if (mb_id_is_valid(id))
		return true;
	admin_reply_invalid_fix(req, "id", "not a message id",
	                        "use the 16-character id from GET /api/v1/messages");
	return false;
}

/* A store failure: 404 for an unknown message, 409 for one in the wrong state, else 503. */
static void
reply_msg_error(struct ev_http_req *req, const struct mb_err *err)
{
	if (err->code == MB_ENOTFOUND)
		admin_reply_error(req, 404, "not_found", err->msg,
		                  "list messages with GET /api/v1/messages (old ones are pruned "
		                  "after retention_days)");
	else if (err->code == MB_EINVAL)
		admin_reply_error(req, 409, "conflict", err->msg,
		                  "wait until the delivery ends, then look at the message again");
	else
		admin_reply_store_error(req, err);
}

/* An e-mail address as the API takes it: local@domain, no spaces, brackets or controls. */
bool
admin_msg_addr_ok(const char *s)
{
	const char *at = s ? strrchr(s, '@') : NULL;
	size_t n = s ? strlen(s) : 0;

	if (at == NULL || at == s || at[1] == '\0' || n > 254)
		return false;
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= ' ' || (unsigned char)*p == 0x7f ||
		    strchr("<>()[],;:\"\\", *p))
			return false;
	return true;
}

/* The request's JSON object; an empty body is an empty object. NULL after replying 400. */
static json_t *
body_json_optional(struct ev_http_req *req)
{
	size_t len = 0;

	ev_http_req_body(req, &len);
	return len == 0 ? json_object() : admin_body_json(req);
}

/* Splits a stored last_error, "CAUSE Fix: FIX (DETAIL)" as the deliverer writes it, into
 * what went wrong ("CAUSE (DETAIL)") and the fix. Other texts are all cause, no fix. */
static void
error_split(const char *text, char **cause, char **fix)
{
	const char *f = text ? strstr(text, " Fix: ") : NULL;
	size_t flen, depth = 0, open;

	*cause = *fix = NULL;
	if (text == NULL)
		return;
	if (f == NULL) {
		*cause = mb_strdup(text);
		return;
	}
	flen = strlen(f + 6);
	open = flen;
	if (flen > 0 && f[6 + flen - 1] == ')') {
		/* the detail: the balanced parenthesis group at the end */
		for (size_t i = flen; i-- > 0;) {
			if (f[6 + i] == ')')
				depth++;
			else if (f[6 + i] == '(' && --depth == 0) {
				open = i;
				break;
			}
		}
	}
	if (open < flen && open > 0) {
		*cause = mb_asprintf("%.*s %s", (int)(f - text), text, f + 6 + open);
		*fix = mb_strndup(f + 6, open - 1);
	} else {
		*cause = mb_strndup(text, (size_t)(f - text));
		*fix = mb_strdup(f + 6);
	}
}

static json_t *
summary_json(const struct store_msg *m)
{
	json_t *o = json_object(), *to = json_array();
	char *cause, *fix;

	for (size_t i = 0; i < m->nrcpts; i++)
		json_array_append_new(to, admin_msg_str_json(m->rcpts[i]));
	error_split(m->last_error, &cause, &fix);
	json_object_set_new(o, "id", json_string(m->id));
	json_object_set_new(o, "state", json_string(store_state_name(m->state)));
	json_object_set_new(o, "sender", admin_msg_str_json(m->sender ? m->sender : ""));
	json_object_set_new(o, "from",
	                    m->from_hdr ? admin_json_text(m->from_hdr, true) : json_null());
	json_object_set_new(o, "to", to);
	json_object_set_new(o, "subject",
	                    m->subject ? admin_json_text(m->subject, true) : json_null());
	json_object_set_new(o, "size", json_integer(m->size));
	json_object_set_new(o, "received", admin_json_time(m->received_ms));
	json_object_set_new(o, "updated", admin_json_time(m->updated_ms));
	json_object_set_new(o, "attempts", json_integer(m->attempts));
	json_object_set_new(o, "next_attempt",
	                    m->state == STORE_QUEUED || m->state == STORE_DEFERRED
	                        ? admin_json_time(m->next_attempt_ms)
	                        : json_null());
	json_object_set_new(o, "connection", admin_msg_str_json(m->connection));
	json_object_set_new(o, "last_error", admin_msg_str_json(cause));
	json_object_set_new(o, "fix", admin_msg_str_json(fix));
	free(cause);
	free(fix);
	return o;
}

/* The summary of one stored message, read again; NULL after replying with the error. */
static json_t *
summary_of(struct admin *a, struct ev_http_req *req, const char *id)
{
	struct mb_err err = {0};
	struct store_msg *m = store_msg_get(a->d.st, id, false, &err);
	json_t *o;

	if (m == NULL) {
		reply_msg_error(req, &err);
		return NULL;
	}
	o = summary_json(m);
	store_msg_free(m);
	return o;
}

static void
kick(struct admin *a)
{
	if (a->d.deliver)
		deliver_kick(a->d.deliver);
}

/* ---- GET /api/v1/messages ---- */

struct list_filter {
	enum store_state states[STORE_STATE_COUNT];
	struct store_query q;
	char *text;
};

/* state=all | NAME[,NAME...]; 0, or -1 after replying 400. */
static int
filter_states(struct ev_http_req *req, const char *v, struct list_filter *f)
{
	char *copy, *tok, *save = NULL;
	int rc = 0;

	if (v == NULL || *v == '\0' || strcmp(v, "all") == 0)
		return 0;
	copy = mb_strdup(v);
	for (tok = strtok_r(copy, ",", &save); tok && rc == 0; tok = strtok_r(NULL, ",", &save)) {
		enum store_state s;
		if (store_state_parse(tok, &s) < 0 || f->q.nstates == STORE_STATE_COUNT) {
			admin_reply_invalid_fix(
			    req, "state", "not a message state",
			    "use all, queued, sending, deferred, sent or failed (or several, "
			    "comma-separated)");
			rc = -1;
		} else {
			f->states[f->q.nstates++] = s;
		}
	}
	free(copy);
	f->q.states = f->q.nstates ? f->states : NULL;
	return rc;
}

/* n digits at *p (moved past them) into *out; false when they are not all digits. */
static bool
digits(const char **p, int n, int *out)
{
	*out = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (!isdigit((unsigned char)**p))
			return false;
		*out = *out * 10 + (**p - '0');
	}
	return true;
}

/* "Thh:mm[:ss[.fff]]" then "Z" or "+hh:mm" / "-hh:mm": seconds of the day in *sec (the
 * offset taken off), *ms. false when malformed. */
static bool
time_part(const char *p, int64_t *sec, int *ms)
{
	int h, mi, s = 0, oh = 0, om = 0, sign = 1;

	if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi) || h > 23 || mi > 59)
		return false;
	if (*p == ':') {
		p++;
		if (!digits(&p, 2, &s) || s > 60)
			return false;
	}
	if (*p == '.') {
		int n = 0;
		for (p++; isdigit((unsigned char)*p); p++, n++)
			if (n < 3)
				*ms = *ms * 10 + (*p - '0');
		if (n == 0)
			return false;
		for (; n < 3; n++)
			*ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '-' ? -1 : 1;
		if (!digits(&p, 2, &oh) || *p++ != ':' || !digits(&p, 2, &om) || oh > 23 || om > 59)
			return false;
	} else {
		return false;
	}
	*sec = (int64_t)h * 3600 + mi * 60 + s - sign * ((int64_t)oh * 3600 + om * 60);
	return *p == '\0';
}

/* "2026-11-27" (a UTC day; as an end, its end) or "2026-11-27T10:00[:00[.000]]" with "Z" or
 * an offset (as an end, that instant included). Unix ms, or -1. */
static int64_t
parse_when(const char *s, bool end)
{
	const char *p = s;
	int y, mo, d, ms = 0;
	int64_t sec = 0;
	struct tm tm = {0}, back;
	time_t t;

	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
	    !digits(&p, 2, &d) || mo < 1 || mo > 12 || d < 1 || d > 31)
		return -1;
	if (*p != '\0' && ((*p != 'T' && *p != 't') || !time_part(p + 1, &sec, &ms)))
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	t = timegm(&tm);
	if (t == (time_t)-1 || gmtime_r(&t, &back) == NULL || back.tm_mday != d)
		return -1; /* 2026-02-30 */
	if (*p == '\0')
		return (int64_t)t * 1000 + (end ? DAY_MS : 0);
	return ((int64_t)t + sec) * 1000 + ms + (end ? 1 : 0);
}

static int
filter_dates(struct ev_http_req *req, const char *from, const char *to, struct list_filter *f)
{
	static const char fix[] = "use a date (2026-11-27) or an ISO 8601 time "
	                          "(2026-11-27T10:00:00Z)";

	if (from && *from && (f->q.from_ms = parse_when(from, false)) < 0) {
		admin_reply_invalid_fix(req, "from", "not a date", fix);
		return -1;
	}
	if (to && *to && (f->q.to_ms = parse_when(to, true)) < 0) {
		admin_reply_invalid_fix(req, "to", "not a date", fix);
		return -1;
	}
	if (f->q.from_ms > 0 && f->q.to_ms > 0 && f->q.to_ms <= f->q.from_ms) {
		admin_reply_invalid_fix(req, "to", "before from",
		                        "give a to date on or after the from date");
		return -1;
	}
	return 0;
}

/* A query integer in [min, max], or def when absent; -1 after replying 400. */
static int
query_int(struct ev_http_req *req, const char *name, int64_t min, int64_t max, int64_t def,
          int64_t *out)
{
	char *v = admin_query_get(req, name);
	int rc = 0;

	*out = def;
	if (v && *v && (mb_parse_int(v, out) < 0 || *out < min || *out > max)) {
		char *fix = mb_asprintf("give a whole number from %lld to %lld", (long long)min,
		                        (long long)max);
		admin_reply_invalid_fix(req, name, "out of range or not a number", fix);
		free(fix);
		rc = -1;
	}
	free(v);
	return rc;
}

/* Reads every filter; 0, or -1 after replying 400. */
static int
filter_parse(struct ev_http_req *req, struct list_filter *f)
{
	char *state = admin_query_get(req, "state"), *from = admin_query_get(req, "from");
	char *to = admin_query_get(req, "to");
	int rc = filter_states(req, state, f);

	if (rc == 0)
		rc = filter_dates(req, from, to, f);
	if (rc == 0)
		rc = query_int(req, "limit", 1, LIST_LIMIT_MAX, LIST_LIMIT_DEF, &f->q.limit);
	if (rc == 0)
		rc = query_int(req, "offset", 0, 1000000000, 0, &f->q.offset);
	if (rc == 0) {
		f->text = admin_query_get(req, "q");
		if (f->text && strlen(mb_str_trim(f->text)) > QUERY_MAX) {
			admin_reply_invalid_fix(
			    req, "q", "longer than 200 characters",
			    "search for a shorter part of an address or subject");
			rc = -1;
		}
		f->q.text = f->text ? mb_str_trim(f->text) : NULL;
	}
	free(state);
	free(from);
	free(to);
	return rc;
}

static int
list_one(void *arg, const struct store_msg *m)
{
	json_array_append_new(arg, summary_json(m));
	return 0;
}

static void
api_messages(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
             const struct api_params *p)
{
	struct list_filter f = {0};
	struct mb_err err = {0};
	json_t *arr, *j;
	int64_t total;

	if (filter_parse(req, &f) < 0) {
		free(f.text);
		return;
	}
	arr = json_array();
	total = store_msg_total(a->d.st, &f.q, &err);
	if (total < 0 || store_msg_list(a->d.st, &f.q, list_one, arr, &err) < 0) {
		json_decref(arr);
		free(f.text);
		admin_reply_store_error(req, &err);
		return;
	}
	j = json_object();
	json_object_set_new(j, "messages", arr);
	json_object_set_new(j, "total", json_integer(total));
	json_object_set_new(j, "limit", json_integer(f.q.limit));
	json_object_set_new(j, "offset", json_integer(f.q.offset));
	free(f.text);
	admin_reply_json(req, 200, j);
}

/* ---- GET /api/v1/messages/ID ---- */

/* The status and code an attempt's detail starts with: "HTTP 403 ErrorSendAsDenied: ..." →
 * "403 ErrorSendAsDenied", "550 5.7.139 ..." → "550 5.7.139"; NULL when it has none. */
static char *
attempt_code(const char *detail)
{
	const char *s = detail, *e;

	if (s == NULL)
		return NULL;
	if (strncmp(s, "HTTP ", 5) == 0)
		s += 5;
	if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) ||
	    !isdigit((unsigned char)s[2]) || (s[3] != ' ' && s[3] != '\0'))
		return NULL;
	e = s + 3;
	if (*e == ' ') {
		/* the next word when it is a code: a Graph error code or an enhanced status */
		const char *w = e + 1, *we = w;
		while (*we && *we != ' ' && *we != ':')
			we++;
		if (we > w && (isupper((unsigned char)*w) ||
		               (isdigit((unsigned char)*w) && memchr(w, '.', (size_t)(we - w)))))
			e = we;
	}
	return mb_strndup(s, (size_t)(e - s));
}

static void
attempt_one(void *arg, const struct store_attempt *at)
{
	json_t *o = json_object();
	char *code = attempt_code(at->detail);

	json_object_set_new(o, "at", admin_json_time(at->at_ms));
	json_object_set_new(o, "connection", admin_msg_str_json(at->connection));
	json_object_set_new(o, "result", admin_msg_str_json(at->result));
	json_object_set_new(o, "code", admin_msg_str_json(code));
	json_object_set_new(o, "detail", admin_msg_str_json(at->detail));
	json_object_set_new(o, "upstream_id", admin_msg_str_json(at->upstream_id));
	json_object_set_new(o, "ms", json_integer(at->latency_ms));
	json_array_append_new(arg, o);
	free(code);
}

static void
api_message(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
            const struct api_params *p)
{
	struct mb_err err = {0};
	struct store_msg *m;
	json_t *o, *attempts;

	if (!id_checked(req, p->v[0]))
		return;
	m = store_msg_get(a->d.st, p->v[0], true, &err);
	if (m == NULL) {
		reply_msg_error(req, &err);
		return;
	}
	o = summary_json(m);
	admin_msg_view(m->body, m->body_len, o);
	store_msg_free(m);
	attempts = json_array();
	if (store_attempts_list(a->d.st, p->v[0], attempt_one, attempts, &err) < 0) {
		json_decref(attempts);
		json_decref(o);
		admin_reply_store_error(req, &err);
		return;
	}
	json_object_set_new(o, "attempts", attempts);
	admin_reply_json(req, 200, o);
}

/* ---- resend, retry, delete ---- */

/* Queues a copy of id (to rcpts when n > 0, its headers readdressed, as `mailbridge log resend
 * --to` does); new_id gets its id. */
static int
resend_one(struct admin *a, const char *id, const char *const *rcpts, size_t n,
           char new_id[MB_ID_LEN + 1], struct mb_err *err)
{
	struct mb_buf body = {0};
	struct store_msg *orig = NULL;
	int rc;

	if (n > 0) {
		orig = store_msg_get(a->d.st, id, true, err);
		if (orig == NULL)
			return -1;
		if (orig->body == NULL) {
			mb_err_set(err, MB_ENOTFOUND, "the body of message %s was pruned", id);
			store_msg_free(orig);
			return -1;
		}
		deliver_readdress(orig->body, orig->body_len, rcpts, n, &body);
	}
	rc = store_msg_copy(a->d.st, id, rcpts, n, body.data, body.len, new_id, err);
	mb_buf_release(&body);
	store_msg_free(orig);
	return rc;
}

/* body.to: absent, or 1..RCPTS_MAX addresses. *rcpts points into j. -1 after replying 400. */
static int
rcpts_from(struct ev_http_req *req, json_t *j, const char ***rcpts, size_t *n)
{
	json_t *to = json_object_get(j, "to"), *v;
	size_t i;

	*rcpts = NULL;
	*n = 0;
	if (to == NULL || json_is_null(to))
		return 0;
	if (json_is_string(to) && admin_msg_addr_ok(json_string_value(to))) {
		*rcpts = mb_calloc(1, sizeof(char *));
		(*rcpts)[0] = json_string_value(to);
		*n = 1;
		return 0;
	}
	if (!json_is_array(to) || json_array_size(to) == 0 || json_array_size(to) > RCPTS_MAX) {
		admin_reply_invalid_fix(
		    req, "to", "not a list of 1 to 100 addresses",
		    "send {\"to\": [\"someone@example.com\"]}, or no to for the original "
		    "recipients");
		return -1;
	}
	*rcpts = mb_calloc(json_array_size(to), sizeof(char *));
	json_array_foreach(to, i, v)
	{
		if (!json_is_string(v) || !admin_msg_addr_ok(json_string_value(v))) {
			free(*rcpts);
			*rcpts = NULL;
			admin_reply_invalid_fix(req, "to", "an entry is not an e-mail address",
			                        "give plain addresses like someone@example.com");
			return -1;
		}
		(*rcpts)[i] = json_string_value(v);
	}
	*n = json_array_size(to);
	return 0;
}

static void
api_resend(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
           const struct api_params *p)
{
	struct mb_err err = {0};
	char new_id[MB_ID_LEN + 1];
	const char **rcpts = NULL;
	size_t n = 0;
	json_t *j, *o;

	if (!id_checked(req, p->v[0]) || (j = body_json_optional(req)) == NULL)
		return;
	if (rcpts_from(req, j, &rcpts, &n) < 0) {
		json_decref(j);
		return;
	}
	if (resend_one(a, p->v[0], rcpts, n, new_id, &err) < 0) {
		reply_msg_error(req, &err);
	} else {
		mb_info("admin: resend: id=%s new_id=%s%s", p->v[0], new_id,
		        n ? " to other recipients" : "");
		kick(a);
		o = json_object();
		json_object_set_new(o, "id", json_string(new_id));
		json_object_set_new(o, "copy_of", json_string(p->v[0]));
		admin_reply_json(req, 201, o);
	}
	free(rcpts);
	json_decref(j);
}

static json_t *
bulk_error(const char *id, const char *code, const char *message, const char *fix)
{
	json_t *e = json_object();

	json_object_set_new(e, "id", id ? json_string(id) : json_null());
	json_object_set_new(e, "code", json_string(code));
	json_object_set_new(e, "message", json_string(message));
	json_object_set_new(e, "fix", json_string(fix));
	return e;
}

static void
bulk_one(struct admin *a, json_t *v, json_t *resent, json_t *errors)
{
	const char *id = json_is_string(v) ? json_string_value(v) : NULL;
	struct mb_err err = {0};
	char new_id[MB_ID_LEN + 1];
	json_t *o;

	if (id == NULL || !mb_id_is_valid(id)) {
		json_array_append_new(
		    errors,
		    bulk_error(id && strlen(id) <= 64 ? id : NULL, "invalid", "not a message id",
		               "use the 16-character ids from GET /api/v1/messages"));
		return;
	}
	if (resend_one(a, id, NULL, 0, new_id, &err) < 0) {
		json_array_append_new(
		    errors,
		    bulk_error(id, err.code == MB_ENOTFOUND ? "not_found" : "store", err.msg,
		               err.code == MB_ENOTFOUND ? "it may have been pruned"
		                                        : "see the daemon's log"));
		return;
	}
	o = json_object();
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "new_id", json_string(new_id));
	json_array_append_new(resent, o);
}

static void
api_resend_bulk(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                const struct api_params *p)
{
	json_t *j = admin_body_json(req), *ids, *v, *out, *resent, *errors;
	size_t i;

	if (j == NULL)
		return;
	ids = json_object_get(j, "ids");
	if (!json_is_array(ids) || json_array_size(ids) == 0 || json_array_size(ids) > BULK_MAX) {
		json_decref(j);
		admin_reply_invalid_fix(req, "ids", "not a list of 1 to 100 message ids",
		                        "send {\"ids\": [\"ID\", ...]}; split longer lists");
		return;
	}
	resent = json_array();
	errors = json_array();
	json_array_foreach(ids, i, v) bulk_one(a, v, resent, errors);
	if (json_array_size(resent) > 0) {
		mb_info("admin: resend: %zu copies queued, %zu refused", json_array_size(resent),
		        json_array_size(errors));
		kick(a);
	}
	out = json_object();
	json_object_set_new(out, "resent", resent);
	json_object_set_new(out, "errors", errors);
	json_decref(j);
	admin_reply_json(req, 200, out);
}

static void
api_retry(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
          const struct api_params *p)
{
	struct mb_err err = {0};
	json_t *o;

	if (!id_checked(req, p->v[0]))
		return;
	if (store_msg_requeue(a->d.st, p->v[0], &err) < 0) {
		if (err.code == MB_EINVAL)
			admin_reply_error(
			    req, 409, "conflict", err.msg,
			    "only failed, deferred or queued messages can be retried; "
			    "resend a sent one instead (POST messages/ID/resend)");
		else
			reply_msg_error(req, &err);
		return;
	}
	mb_info("admin: retry: id=%s queued again", p->v[0]);
	kick(a);
	if ((o = summary_of(a, req, p->v[0])) != NULL)
		admin_reply_json(req, 200, o);
}

static void
api_delete(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
           const struct api_params *p)
{
	struct mb_err err = {0};
	json_t *o;

	if (!id_checked(req, p->v[0]))
		return;
	if (store_msg_delete_idle(a->d.st, p->v[0], &err) < 0) {
		reply_msg_error(req, &err);
		return;
	}
	mb_info("admin: deleted message %s", p->v[0]);
	o = json_object();
	json_object_set_new(o, "deleted", json_string(p->v[0]));
	admin_reply_json(req, 200, o);
}

/* ---- GET /api/v1/stats ---- */

struct days_ctx {
	int64_t first; /* the first day's number */
	int64_t n;
	int64_t (*counts)[2];
};

static void
day_counts(void *arg, int64_t day, int64_t sent, int64_t failed)
{
	struct days_ctx *d = arg;

	if (day >= d->first && day < d->first + d->n) {
		d->counts[day - d->first][0] = sent;
		d->counts[day - d->first][1] = failed;
	}
}

static json_t *
days_json(const struct days_ctx *d)
{
	json_t *arr = json_array();

	for (int64_t i = 0; i < d->n; i++) {
		json_t *o = json_object();
		char date[40];
		mb_iso_date((d->first + i) * DAY_MS, date, sizeof(date));
		date[10] = '\0'; /* the day of "2026-11-27T00:00:00Z" */
		json_object_set_new(o, "date", json_string(date));
		json_object_set_new(o, "sent", json_integer(d->counts[i][0]));
		json_object_set_new(o, "failed", json_integer(d->counts[i][1]));
		json_array_append_new(arr, o);
	}
	return arr;
}

struct health_ctx {
	struct admin *a;
	json_t *arr;
};

static json_t *
valid_min(struct admin *a, const char *conn, const char *provider)
{
	const char *res = strcmp(provider, "microsoft-graph") == 0  ? "graph"
	                  : strcmp(provider, "microsoft-smtp") == 0 ? "outlook"
	                                                            : NULL;

	return res ? admin_token_valid_min(a, conn, res) : json_null();
}
static int
health_one(void *arg, const struct store_conn *sc)
{
	struct health_ctx *h = arg;
	json_t *o = json_object();
	bool smtp = strcmp(sc->provider, "smtp") == 0;
	bool ok = smtp || (sc->state && strcmp(sc->state, STORE_CONN_AUTHORIZED) == 0 &&
	                   sc->last_error == NULL);

	/* the same test as store_conn_usable_count() */
	json_object_set_new(o, "name", json_string(sc->name));
	json_object_set_new(o, "state", admin_msg_str_json(sc->state));
	json_object_set_new(o, "token_valid_min", valid_min(h->a, sc->name, sc->provider));
	json_object_set_new(o, "ok", json_boolean(ok));
	json_array_append_new(h->arr, o);
	return 0;
}

static int
stats_counts(struct admin *a, json_t *j, struct mb_err *err)
{
	json_t *by = json_object();
	int64_t queue = 0;

	for (int s = 0; s < STORE_STATE_COUNT; s++) {
		int64_t n = store_msg_count(a->d.st, (enum store_state)s, err);
		if (n < 0) {
			json_decref(by);
			return -1;
		}
		if (s == STORE_QUEUED || s == STORE_SENDING || s == STORE_DEFERRED)
			queue += n;
		json_object_set_new(by, store_state_name((enum store_state)s), json_integer(n));
	}
	json_object_set_new(j, "messages", by);
	json_object_set_new(j, "queue", json_integer(queue));
	json_object_set_new(j, "usable_connections",
	                    json_integer(store_conn_usable_count(a->d.st)));
	return 0;
}

static void
api_stats(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
          const struct api_params *p)
{
	struct mb_err err = {0};
	struct days_ctx d = {0};
	struct health_ctx h = {a, NULL};
	json_t *j;

	if (query_int(req, "days", 1, STATS_DAYS_MAX, 7, &d.n) < 0)
		return;
	d.first = mb_now_ms() / DAY_MS - d.n + 1;
	d.counts = mb_calloc((size_t)d.n, sizeof(*d.counts));
	j = json_object();
	h.arr = json_array();
	if (stats_counts(a, j, &err) < 0 ||
	    store_msg_daily(a->d.st, d.first * DAY_MS, day_counts, &d, &err) < 0 ||
	    store_conn_list(a->d.st, health_one, &h, &err) < 0) {
		json_decref(j);
		json_decref(h.arr);
		free(d.counts);
		admin_reply_store_error(req, &err);
		return;
	}
	json_object_set_new(j, "days", days_json(&d));
	json_object_set_new(j, "connections", h.arr);
	free(d.counts);
	admin_reply_json(req, 200, j);
}

const struct api_route admin_routes_msg[] = {
    {"GET", "stats", api_stats, false},
    {"GET", "messages", api_messages, false},
    {"POST", "messages/resend", api_resend_bulk, false},
    {"GET", "messages/*", api_message, false},
    {"DELETE", "messages/*", api_delete, false},
    {"POST", "messages/*/resend", api_resend, false},
    {"POST", "messages/*/retry", api_retry, false},
    {"POST", "test", admin_api_test, false},
    {NULL, NULL, NULL, false},
};
