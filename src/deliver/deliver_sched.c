/*
 * The scheduler and the router.
 *
 * Every tick (and on a kick from intake) the scheduler claims due messages through the
 * store writer, with a lease. Each is routed to a connection and waits in that
 * connection's queue until its caps allow it out: in-flight requests per mailbox, pacing
 * per minute, and a rolling 24-hour recipient budget (over budget, the message is deferred
 * until the budget frees, rather than sent into Microsoft's NDRs). Results go back through
 * the writer, with the attempt's row.
 */
#include "deliver_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config/config.h"
#include "ev/ev.h"
#include "http/http.h"
#include "oauth/oauth.h"

#define TICK_MS   1000
#define RELOAD_MS 30000
#define LEASE_MS  (10 * 60 * 1000)
/* Graph takes requests up to 4 MB; base64 grows the MIME by a third */
#define GRAPH_MAX_RAW    (3 * 1024 * 1024)
#define DAY_MS           (24 * 3600 * 1000LL)
#define NO_CONN_RETRY_MS (60 * 1000)

struct pending {
	struct store_msg *m;
	struct pending *next;
};

struct sent_mark {
	int64_t at_ms;
	int64_t n;
};

#define NBUCKETS 10
static const double buckets[NBUCKETS] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120};

struct conn_rt {
	char *name;
	uint64_t results[3];            /* by enum deliver_result */
	uint64_t hist[2][NBUCKETS + 1]; /* [smtp][bucket], the last is +Inf */
	double hist_sum[2];
	struct oauth_conn *oc; /* NULL when it could not be loaded: why is in load_error */
	char load_error[512];
	struct deliver_addrs senders;
	bool is_default;
	char *fallback;
	bool force_from;
	char *large;
	int cap;
	int inflight;
	int64_t per_minute;
	int64_t daily;
	int64_t fallback_after;
	int64_t timeout_ms;
	bool tls_required;
	char *username;
	char *password; /* provider = smtp; wiped on free */
	int64_t down_until_ms;
	char down_reason[300];
	/* pacing: send times in the last minute */
	int64_t *minute;
	size_t nminute;
	/* budget: sends in the last 24 hours */
	struct sent_mark *day;
	size_t nday, capday;
	int64_t day_total;
	struct pending *head, *tail;
	bool seen;
};

struct deliver {
	struct deliver_deps d;
	struct conn_rt **conns;
	size_t nconns;
	char *default_conn;
	size_t inflight;
	bool claiming;
	bool stopping;
	struct ev_timer *tick;
	int64_t last_reload_ms;
	char owner[128];
	int64_t schedule[32];
	size_t nschedule;
	struct alert_mark {
		char key[160];
		int64_t at_ms;
	} alerts[32];
};

struct attempt {
	struct deliver *d;
	struct conn_rt *c;
	struct store_msg *m;
	int64_t started_ms;
	bool refreshed;
	bool smtp; /* the transport: SMTP (else Graph) */
	struct mb_buf payload;
	deliver_done_cb done; /* test sends */
	void *done_arg;
};

static void pump(struct deliver *d, struct conn_rt *c);
static void claim(struct deliver *d);
static void attempt_token(struct attempt *a, bool force);

size_t
deliver_inflight(const struct deliver *d)
{
	return d->inflight;
}

/* ---- connections ---- */

static void
conn_free(struct conn_rt *c)
{
	if (c == NULL)
		return;
	free(c->name);
	oauth_conn_free(c->oc);
	deliver_addrs_release(&c->senders);
	free(c->fallback);
	free(c->large);
	free(c->username);
	mb_secret_free(c->password);
	free(c->minute);
	free(c->day);
	free(c);
}

static struct conn_rt *
conn_find(struct deliver *d, const char *name)
{
	for (size_t i = 0; i < d->nconns; i++)
		if (strcmp(d->conns[i]->name, name) == 0)
			return d->conns[i];
	return NULL;
}

static char *
secret_from(const char *file, const char *env)
{
	if (file && *file) {
		FILE *f = fopen(file, "r");
		struct mb_buf b = {0};
		int ch;
		if (f == NULL)
			return NULL;
		while ((ch = fgetc(f)) != EOF && ch != '\n' && ch != '\r' && b.len < 4096) {
			char c = (char)ch;
			mb_buf_append(&b, &c, 1);
		}
		fclose(f);
		return b.data ? mb_buf_steal(&b) : NULL;
	}
	if (env && *env && getenv(env))
		return mb_strdup(getenv(env));
	return NULL;
}

static void
budget_mark(void *arg, int64_t at_ms, int64_t n)
{
	struct conn_rt *c = arg;

	if (c->nday == c->capday) {
		c->capday = c->capday ? c->capday * 2 : 64;
		c->day = mb_realloc(c->day, c->capday * sizeof(*c->day));
	}
	c->day[c->nday].at_ms = at_ms;
	c->day[c->nday].n = n;
	c->nday++;
	c->day_total += n;
}

static void
senders_copy(struct conn_rt *c, const char *const *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		c->senders.v = mb_realloc(c->senders.v, (c->senders.n + 1) * sizeof(char *));
		c->senders.v[c->senders.n++] = mb_strdup(v[i]);
	}
}

/* (Re)loads one connection's settings; keeps its queue and counters. */
static void
conn_load(struct deliver *d, const char *name)
{
	struct conn_rt *c = conn_find(d, name);
	const struct config_conn *cc = config_conn_find(d->d.cfg, name);
	struct mb_err err = {0};

	if (c == NULL) {
		c = mb_calloc(1, sizeof(*c));
		c->name = mb_strdup(name);
		d->conns = mb_realloc(d->conns, (d->nconns + 1) * sizeof(*d->conns));
		d->conns[d->nconns++] = c;
		store_sent_recipients(d->d.st, name, mb_now_ms() - DAY_MS, budget_mark, c, NULL);
	}
	c->seen = true;
	oauth_conn_free(c->oc);
	c->oc = oauth_conn_load(d->d.cfg, d->d.st, d->d.key, name, &err);
	if (c->oc == NULL)
		snprintf(c->load_error, sizeof(c->load_error), "%s", err.msg);
	deliver_addrs_release(&c->senders);
	free(c->fallback);
	free(c->large);
	free(c->username);
	mb_secret_free(c->password);
	c->fallback = c->large = c->username = c->password = NULL;
	c->is_default = false;
	c->force_from = false;
	c->cap = 0;
	c->per_minute = 0;
	c->daily = 10000;
	c->fallback_after = 3;
	c->timeout_ms = 60000;
	c->tls_required = true;
	if (cc) {
		senders_copy(c, (const char *const *)cc->senders.v, cc->senders.n);
		c->is_default = cc->is_default;
		c->fallback = cc->fallback ? mb_strdup(cc->fallback) : NULL;
		c->force_from = cc->force_from;
		c->large = cc->large_messages ? mb_strdup(cc->large_messages) : NULL;
		c->cap = (int)cc->max_inflight;
		c->per_minute = cc->messages_per_minute;
		c->daily = cc->daily_recipients;
		c->fallback_after = cc->fallback_after;
		c->timeout_ms = cc->request_timeout * 1000;
		c->tls_required = cc->tls == NULL || strcmp(cc->tls, "none") != 0;
		c->username = cc->username ? mb_strdup(cc->username) : NULL;
		c->password = secret_from(cc->password_file, cc->password_env);
	} else if (c->oc) {
		/* made with the command line or the API: routing is in the stored settings */
		senders_copy(c, (const char *const *)c->oc->senders, c->oc->nsenders);
		c->fallback = c->oc->fallback ? mb_strdup(c->oc->fallback) : NULL;
		c->force_from = c->oc->force_from;
	}
	if (c->cap == 0 && c->oc)
		c->cap = c->oc->provider == OAUTH_PROVIDER_GRAPH ? 4 : 3;
	if (c->cap == 0)
		c->cap = 3;
}

static int
load_store_conn(void *arg, const struct store_conn *sc)
{
	conn_load(arg, sc->name);
	return 0;
}

static void
conns_reload(struct deliver *d)
{
	struct mb_err err = {0};

	for (size_t i = 0; i < d->nconns; i++)
		d->conns[i]->seen = false;
	/* the store lists config connections too (mirrored at start) */
	if (store_conn_list(d->d.st, load_store_conn, d, &err) < 0)
		mb_warn("deliver: reading connections: %s", err.msg);
	free(d->default_conn);
	d->default_conn = store_default_connection(d->d.cfg, d->d.st);
	d->last_reload_ms = mb_mono_ms();
}

/* ---- routing ---- */

static struct conn_rt *
usable(struct deliver *d, const char *name)
{
	struct conn_rt *c = name ? conn_find(d, name) : NULL;

	return c && c->seen ? c : NULL;
}

/* The connection whose sender (or senders alias) is the From address, else the default.
 * After fallback_after temporary failures, or while the connection is down, its fallback. */
static struct conn_rt *
route(struct deliver *d, const struct store_msg *m, const char **why)
{
	char *from = deliver_from_address(m->from_hdr);
	struct conn_rt *c = NULL, *fb;

	if (from == NULL && m->sender && *m->sender)
		from = mb_strdup(m->sender);
	for (size_t i = 0; from && i < d->nconns && c == NULL; i++) {
		struct conn_rt *x = d->conns[i];
		if (!x->seen)
			continue;
		if (x->oc && x->oc->sender && strcasecmp(x->oc->sender, from) == 0)
			c = x;
		for (size_t k = 0; c == NULL && k < x->senders.n; k++)
			if (strcasecmp(x->senders.v[k], from) == 0)
				c = x;
	}
	free(from);
	if (c == NULL)
		c = usable(d, d->default_conn);
	if (c == NULL) {
		*why = "no connection: the From address matches no connection's sender, and no "
		       "default connection is set. Fix: set a default connection (mailbridge "
		       "connection default NAME, or default = yes) — the guide's Errors 1 and 2";
		return NULL;
	}
	fb = usable(d, c->fallback);
	if (fb && fb != c &&
	    (m->attempts >= c->fallback_after || c->down_until_ms > mb_now_ms() || c->oc == NULL))
		return fb;
	return c;
}

/* ---- results ---- */

static int64_t
jittered(int64_t ms)
{
	unsigned char r;

	mb_random_bytes(&r, 1);
	return ms * 8 / 10 + ms * 4 / 10 * r / 255; /* 0.8x to 1.2x */
}

static void
noted(void *arg, int status, const char *errmsg)
{
	if (status < 0)
		mb_warn("deliver: the result could not be stored: %s (the lease will expire and "
		        "the message will be tried again)",
		        errmsg ? errmsg : "?");
}

static void
alert(struct deliver *d, const char *cause_key, const char *text)
{
	int64_t now = mb_mono_ms();
	struct alert_mark *slot = &d->alerts[0];

	/* the minute's limit first: it costs no store read, and failures come in bursts */
	for (size_t i = 0; i < 32; i++) {
		if (strcmp(d->alerts[i].key, cause_key) == 0) {
			slot = &d->alerts[i];
			break;
		}
		if (d->alerts[i].at_ms < slot->at_ms)
			slot = &d->alerts[i];
	}
	if (strcmp(slot->key, cause_key) == 0 && now - slot->at_ms < 60000)
		return; /* at most one alert per minute per cause */
	snprintf(slot->key, sizeof(slot->key), "%s", cause_key);
	slot->at_ms = now;
	deliver_alert_send(d->d.cfg, d->d.st, d->d.http, d->d.writer, text);
}

static void
finish(struct attempt *a, const struct deliver_outcome *o, const char *upstream)
{
	struct deliver *d = a->d;
	struct conn_rt *c = a->c;
	struct store_msg *m = a->m;
	int64_t now = mb_now_ms(), ms = mb_mono_ms() - a->started_ms;
	struct store_result *r;
	char err[1024];

	c->inflight--;
	d->inflight--;
	c->results[o->result]++;
	{
		size_t b = 0;
		while (b < NBUCKETS && (double)ms / 1000.0 > buckets[b])
			b++;
		c->hist[a->smtp][b]++;
		c->hist_sum[a->smtp] += (double)ms / 1000.0;
	}
	if (a->done) {
		a->done(a->done_arg, o, ms, upstream);
		goto out;
	}
	r = store_result_new(m->id);
	r->connection = mb_strdup(c->name);
	r->count_attempt = true;
	r->result = mb_strdup(deliver_result_name(o->result));
	r->detail = mb_strdup(o->detail);
	r->upstream_id = upstream && *upstream ? mb_strdup(upstream) : NULL;
	r->latency_ms = ms;
	snprintf(err, sizeof(err), "%s Fix: %s (%s)", o->cause, o->fix, o->detail);
	if (o->result == DELIVER_OK) {
		r->state = STORE_SENT;
		if (c->per_minute > 0 || c->daily > 0) {
			budget_mark(c, now, (int64_t)m->nrcpts);
			c->minute = mb_realloc(c->minute, (c->nminute + 1) * sizeof(int64_t));
			c->minute[c->nminute++] = now;
		}
		c->down_until_ms = 0;
	} else if (o->result == DELIVER_PERMFAIL && o->scope == DELIVER_SCOPE_MESSAGE) {
		r->state = STORE_FAILED;
		r->last_error = mb_strdup(err);
	} else {
		int64_t wait = d->schedule[(size_t)m->attempts < d->nschedule ? (size_t)m->attempts
		                                                              : d->nschedule - 1];
		struct conn_rt *fb = usable(d, c->fallback);
		bool fallback_ready = o->scope == DELIVER_SCOPE_CONNECTION && fb && fb != c;

		wait = jittered(wait * 1000);
		if (o->scope == DELIVER_SCOPE_CONNECTION) {
			/* the connection is down for a while; with a fallback, the message need not
			 * wait for it: the router sends the next attempt there */
			int64_t down = o->retry_after_s > 0 ? o->retry_after_s * 1000 : wait;
			c->down_until_ms = now + (down > 60000 ? down : 60000);
			snprintf(c->down_reason, sizeof(c->down_reason), "%s", o->cause);
		}
		if (!fallback_ready && o->retry_after_s > 0 && o->retry_after_s * 1000 > wait)
			wait = o->retry_after_s * 1000; /* never before Retry-After */
		r->state = STORE_DEFERRED;
		r->next_attempt_ms = now + wait;
		r->last_error = mb_strdup(err);
		if (now - m->received_ms > d->d.cfg->server.max_queue_lifetime * 1000) {
			r->state = STORE_FAILED;
			free(r->last_error);
			r->last_error = mb_asprintf(
			    "expired after %lld days in the queue; last "
			    "error: %s",
			    (long long)(d->d.cfg->server.max_queue_lifetime / 86400), err);
		}
	}
	mb_info(
	    "deliver: %s: id=%s connection=%s result=%s upstream=%s latency=%lldms%s%s",
	    r->state == STORE_SENT ? "sent" : store_state_name(r->state), m->id, c->name, r->result,
	    upstream && *upstream ? upstream : "-", (long long)ms,
	    o->result == DELIVER_OK ? "" : " detail=", o->result == DELIVER_OK ? "" : o->detail);
	if (r->state == STORE_FAILED) {
		char key[160];
		snprintf(key, sizeof(key), "permfail:%s:%s", c->name, o->cause);
		alert(d, key, err);
	}
	store_writer_result(d->d.writer, r, noted, NULL);
out:
	store_msg_free(a->m);
	mb_buf_wipe(&a->payload);
	free(a);
	pump(d, c);
	/* keep the pipeline full: claim more as soon as there is room, not at the next tick */
	claim(d);
}

/* A message that cannot be tried now goes back to the queue for later. */
static void
release(struct deliver *d, struct store_msg *m, int64_t at_ms, const char *why, const char *conn)
{
	struct store_result *r;

	if (d->d.writer == NULL) {
		store_msg_free(m);
		return;
	}
	r = store_result_new(m->id);
	r->state = (m->attempts == 0 && strstr(why, "no connection")) || strstr(why, "released")
	               ? STORE_QUEUED
	               : STORE_DEFERRED;
	r->next_attempt_ms = at_ms;
	r->last_error = mb_strdup(why);
	r->connection = conn ? mb_strdup(conn) : NULL;
	store_writer_result(d->d.writer, r, noted, NULL);
	store_msg_free(m);
}

/* Shutting down mid-attempt: the message goes back to the queue, due now (it may have
 * reached Microsoft already: delivery is at-least-once). */
static void
abandon(struct attempt *a)
{
	a->c->inflight--;
	a->d->inflight--;
	if (a->done) {
		struct deliver_outcome o = {DELIVER_TEMPFAIL,
		                            DELIVER_SCOPE_MESSAGE,
		                            false,
		                            -1,
		                            "mailbridge stopped during the attempt",
		                            "try again",
		                            ""};
		a->done(a->done_arg, &o, mb_mono_ms() - a->started_ms, NULL);
		store_msg_free(a->m);
	} else {
		release(a->d, a->m, mb_now_ms(), "released at shutdown", NULL);
	}
	mb_buf_wipe(&a->payload);
	free(a);
}

/* ---- transports ---- */

static void
outcome_from_explain(const struct oauth_explain *ex, struct deliver_outcome *o)
{
	memset(o, 0, sizeof(*o));
	o->result = DELIVER_TEMPFAIL;
	o->scope = DELIVER_SCOPE_CONNECTION;
	o->retry_after_s = ex->cls == OAUTH_CLASS_TRANSIENT ? -1 : 300;
	o->cause = ex->cause;
	o->fix = ex->fix;
	if (ex->aadsts)
		snprintf(o->detail, sizeof(o->detail), "token: AADSTS%ld", ex->aadsts);
	else
		snprintf(o->detail, sizeof(o->detail), "token: %s", ex->cause);
}

static void
on_graph(void *arg, const struct http_response *resp)
{
	struct attempt *a = arg;
	struct deliver_outcome o;
	char code[128] = "", message[256] = "";

	if (resp->result == HTTP_CANCELLED) {
		abandon(a);
		return;
	}
	if (resp->result == HTTP_OK && resp->status >= 300)
		deliver_graph_error(resp->body, resp->body_len, code, sizeof(code), message,
		                    sizeof(message));
	deliver_classify_graph(resp->result == HTTP_OK ? resp->status : 0, *code ? code : NULL,
	                       message, resp->retry_after_s,
	                       resp->result == HTTP_OK ? NULL : resp->error, resp->timed_out, &o);
	if (o.refresh_token && !a->refreshed) {
		a->refreshed = true;
		attempt_token(a, true);
		return;
	}
	finish(a, &o, resp->request_id);
}

static void
on_smtp(void *arg, const struct http_smtp_response *resp)
{
	struct attempt *a = arg;
	struct deliver_outcome o;
	char upstream[300];

	if (resp->result == HTTP_CANCELLED) {
		abandon(a);
		return;
	}
	deliver_classify_smtp(resp->code, *resp->enhanced ? resp->enhanced : NULL, resp->text,
	                      resp->stage, resp->result == HTTP_OK ? NULL : resp->error,
	                      resp->timed_out, &o);
	if (o.refresh_token && !a->refreshed) {
		a->refreshed = true;
		attempt_token(a, true);
		return;
	}
	snprintf(upstream, sizeof(upstream), "%d %s %s", resp->code, resp->enhanced, resp->text);
	finish(a, &o, resp->code ? upstream : NULL);
}

static void
send_graph(struct attempt *a, const char *token)
{
	static const char *const hdrs[] = {"Content-Type: text/plain", NULL};
	struct oauth_conn *oc = a->c->oc;
	struct mb_buf url = {0};
	struct http_request req = {
	    .method = "POST", .headers = hdrs, .timeout_ms = a->c->timeout_ms};

	if (oc->auth == OAUTH_AUTH_APP_ONLY)
		mb_buf_printf(&url, "%s/v1.0/users/%s/sendMail", oc->ep.graph, oc->sender);
	else
		mb_buf_printf(&url, "%s/v1.0/me/sendMail", oc->ep.graph);
	req.url = url.data;
	req.body = a->payload.data;
	req.body_len = a->payload.len;
	req.ca_file = oc->ca_file;
	req.bearer = token;
	http_request_start(a->d->d.http, &req, on_graph, a);
	mb_buf_release(&url);
}

static void
send_smtp(struct attempt *a, const char *token)
{
	struct conn_rt *c = a->c;
	struct oauth_conn *oc = c->oc;
	struct http_smtp_request req = {0};
	char from[320];

	/* the envelope sender: the mailbox, so Exchange accepts it (the original From: stays
	 * in the headers unless force_from) */
	snprintf(from, sizeof(from), "%s", oc->sender ? oc->sender : a->m->sender);
	req.url = oc->ep.smtp;
	req.tls_required = oc->provider != OAUTH_PROVIDER_SMTP || c->tls_required;
	req.username = c->username ? c->username : oc->sender;
	if (token)
		req.bearer = token;
	else
		req.password = c->password;
	req.mail_from = from;
	req.timeout_ms = 2 * c->timeout_ms;
	req.rcpts = (const char *const *)a->m->rcpts;
	req.nrcpts = a->m->nrcpts;
	req.data = a->payload.data;
	req.len = a->payload.len;
	req.ca_file = oc->ca_file;
	http_smtp_start(a->d->d.http, &req, on_smtp, a);
}

static void
on_token(void *arg, int status, const char *token, const struct oauth_explain *ex)
{
	struct attempt *a = arg;
	struct deliver_outcome o;

	if (status < 0) {
		outcome_from_explain(ex, &o);
		finish(a, &o, NULL);
		return;
	}
	if (a->smtp)
		send_smtp(a, token);
	else
		send_graph(a, token);
}

static void
attempt_token(struct attempt *a, bool force)
{
	if (a->smtp && a->c->oc->provider == OAUTH_PROVIDER_SMTP) {
		send_smtp(a, NULL); /* a password, no token */
		return;
	}
	oauth_tm_get(a->d->d.tm, a->c->name, a->smtp ? OAUTH_RES_OUTLOOK : OAUTH_RES_GRAPH, force,
	             on_token, a);
}

static void
attempt_start(struct deliver *d, struct conn_rt *c, struct store_msg *m, deliver_done_cb done,
              void *arg)
{
	struct attempt *a = mb_calloc(1, sizeof(*a));
	struct deliver_outcome o;
	struct mb_buf b64src = {0};

	a->d = d;
	a->c = c;
	a->m = m;
	a->done = done;
	a->done_arg = arg;
	a->started_ms = mb_mono_ms();
	c->inflight++;
	d->inflight++;
	if (c->oc == NULL) {
		memset(&o, 0, sizeof(o));
		o.result = DELIVER_TEMPFAIL;
		o.scope = DELIVER_SCOPE_CONNECTION;
		o.retry_after_s = 300;
		o.cause = "the connection's settings are unusable";
		o.fix = "fix the connection (mailbridge connection show NAME; mailbridge config "
		        "check)";
		snprintf(o.detail, sizeof(o.detail), "%.290s", c->load_error);
		finish(a, &o, NULL);
		return;
	}
	a->smtp = c->oc->provider != OAUTH_PROVIDER_GRAPH;
	if (!a->smtp && m->body_len > GRAPH_MAX_RAW) {
		if (c->large && strcmp(c->large, "smtp") == 0) {
			a->smtp = true;
		} else if (c->large && strcmp(c->large, "upload-session") == 0) {
			deliver_graph_large(a->d->d.http, a->d->d.tm, c->oc, c->force_from, m,
			                    attempt_large_done, a);
			return;
		} else {
			memset(&o, 0, sizeof(o));
			o.result = DELIVER_PERMFAIL;
			o.scope = DELIVER_SCOPE_MESSAGE;
			o.retry_after_s = -1;
			o.cause = "the message is larger than one Microsoft Graph request allows "
			          "(4 MB, about 3 MB of message)";
			o.fix = "set large_messages = upload-session (Graph upload sessions, needs "
			        "Mail.ReadWrite) or large_messages = smtp on the connection";
			snprintf(o.detail, sizeof(o.detail), "%zu bytes", m->body_len);
			finish(a, &o, NULL);
			return;
		}
	}
	deliver_prepare(m, !a->smtp, c->force_from, c->oc->sender, &b64src);
	if (a->smtp) {
		a->payload = b64src;
	} else {
		char *b64 = mb_base64_encode(b64src.data, b64src.len);
		mb_buf_wipe(&b64src);
		a->payload.data = b64;
		a->payload.len = strlen(b64);
		a->payload.cap = a->payload.len + 1;
	}
	attempt_token(a, false);
}

/* The large-message path ended (upload session): its outcome is the attempt's. */
void
attempt_large_done(void *arg, const struct deliver_outcome *o, const char *upstream)
{
	finish(arg, o, upstream);
}

/* ---- pacing and budget ---- */

static bool
pacing_allows(struct conn_rt *c, int64_t now)
{
	size_t keep = 0;

	for (size_t i = 0; i < c->nminute; i++)
		if (c->minute[i] > now - 60000)
			c->minute[keep++] = c->minute[i];
	c->nminute = keep;
	return c->per_minute <= 0 || (int64_t)c->nminute < c->per_minute;
}

/* Recipients left in the rolling day, and when the oldest send ages out. */
static int64_t
budget_left(struct conn_rt *c, int64_t now, int64_t *frees_at)
{
	size_t keep = 0;

	for (size_t i = 0; i < c->nday; i++) {
		if (c->day[i].at_ms > now - DAY_MS)
			c->day[keep++] = c->day[i];
		else
			c->day_total -= c->day[i].n;
	}
	c->nday = keep;
	*frees_at = c->nday ? c->day[0].at_ms + DAY_MS : now;
	return c->daily <= 0 ? INT64_MAX : c->daily - c->day_total;
}

static void
pump(struct deliver *d, struct conn_rt *c)
{
	int64_t now = mb_now_ms(), frees_at;

	if (d->stopping)
		return;
	while (c->head && c->inflight < c->cap &&
	       d->inflight < (size_t)d->d.cfg->server.delivery_concurrency) {
		struct pending *p = c->head;

		if (!pacing_allows(c, now))
			return; /* the tick tries again */
		if (budget_left(c, now, &frees_at) < (int64_t)p->m->nrcpts) {
			char why[300];
			snprintf(why, sizeof(why),
			         "deferred: the daily recipient budget of %lld for %s is used up "
			         "(Exchange allows 10,000 a day); it frees from the oldest send on",
			         (long long)c->daily, c->name);
			c->head = p->next;
			if (c->head == NULL)
				c->tail = NULL;
			release(d, p->m, frees_at, why, c->name);
			free(p);
			continue;
		}
		c->head = p->next;
		if (c->head == NULL)
			c->tail = NULL;
		attempt_start(d, c, p->m, NULL, NULL);
		free(p);
	}
}

/* ---- claims ---- */

static void
on_claimed(void *arg, struct store_msg **msgs, size_t n)
{
	struct deliver *d = arg;

	d->claiming = false;
	if (d->stopping) {
		/* claimed as we stopped: their leases are given back at the next start */
		for (size_t i = 0; i < n; i++)
			store_msg_free(msgs[i]);
		free(msgs);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const char *why = NULL;
		struct conn_rt *c = route(d, msgs[i], &why);
		struct pending *p;

		if (c == NULL) {
			release(d, msgs[i], mb_now_ms() + NO_CONN_RETRY_MS, why, NULL);
			continue;
		}
		p = mb_calloc(1, sizeof(*p));
		p->m = msgs[i];
		if (c->tail)
			c->tail->next = p;
		else
			c->head = p;
		c->tail = p;
	}
	free(msgs);
	for (size_t i = 0; i < d->nconns; i++)
		pump(d, d->conns[i]);
	if (n > 0)
		claim(d); /* there may be more due */
}

static size_t
queued_locally(const struct deliver *d)
{
	size_t n = 0;

	for (size_t i = 0; i < d->nconns; i++)
		for (struct pending *p = d->conns[i]->head; p; p = p->next)
			n++;
	return n;
}

static void
claim(struct deliver *d)
{
	size_t room = (size_t)d->d.cfg->server.delivery_concurrency * 2;
	size_t held = d->inflight + queued_locally(d);

	if (d->claiming || d->stopping || d->d.writer == NULL || held >= room)
		return;
	d->claiming = true;
	store_writer_claim(d->d.writer, room - held, LEASE_MS, d->owner, on_claimed, d);
}

static void
on_tick(void *arg)
{
	struct deliver *d = arg;

	if (mb_mono_ms() - d->last_reload_ms > RELOAD_MS)
		conns_reload(d);
	for (size_t i = 0; i < d->nconns; i++)
		pump(d, d->conns[i]);
	claim(d);
	ev_timer_start(d->tick, TICK_MS);
}

void
deliver_kick(struct deliver *d)
{
	claim(d);
}

/* ---- life cycle ---- */

static int
parse_schedule(const struct config *cfg, int64_t *out, size_t *n, struct mb_err *err)
{
	const struct config_list *rs = &cfg->server.retry_schedule;

	*n = 0;
	for (size_t i = 0; i < rs->n && i < 32; i++) {
		if (mb_parse_duration(rs->v[i], &out[i]) < 0 || out[i] < 1) {
			mb_err_set(err, MB_EINVAL,
			           "retry_schedule: '%s' is not a duration (e.g. 30s, 5m, 1h)",
			           rs->v[i]);
			return -1;
		}
		(*n)++;
	}
	if (*n == 0)
		out[(*n)++] = 300;
	return 0;
}

void
deliver_conns_changed(struct deliver *d)
{
	conns_reload(d);
}

int
deliver_set_config(struct deliver *d, const struct config *cfg, struct mb_err *err)
{
	int64_t schedule[32];
	size_t n;

	if (parse_schedule(cfg, schedule, &n, err) < 0)
		return -1;
	memcpy(d->schedule, schedule, sizeof(schedule));
	d->nschedule = n;
	d->d.cfg = cfg;
	conns_reload(d);
	return 0;
}

struct deliver *
deliver_new(const struct deliver_deps *deps, struct mb_err *err)
{
	struct deliver *d = mb_calloc(1, sizeof(*d));
	char host[100];

	d->d = *deps;
	if (parse_schedule(deps->cfg, d->schedule, &d->nschedule, err) < 0) {
		free(d);
		return NULL;
	}
	if (gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	snprintf(d->owner, sizeof(d->owner), "%s", host);
	if (deps->writer && store_leases_release(deps->st, d->owner, err) < 0) {
		free(d);
		return NULL;
	}
	conns_reload(d);
	if (deps->writer) {
		d->tick = ev_timer_new(deps->loop, on_tick, d);
		ev_timer_start(d->tick, 0);
	}
	return d;
}

void
deliver_send_now(struct deliver *d, const char *conn, struct store_msg *m, deliver_done_cb cb,
                 void *arg)
{
	struct conn_rt *c = usable(d, conn);

	if (c == NULL) {
		struct deliver_outcome o = {
		    DELIVER_PERMFAIL,     DELIVER_SCOPE_CONNECTION,         false, -1,
		    "no such connection", "see mailbridge connection list", ""};
		snprintf(o.detail, sizeof(o.detail), "%s", conn);
		cb(arg, &o, 0, NULL);
		store_msg_free(m);
		return;
	}
	attempt_start(d, c, m, cb, arg);
}

void
deliver_stop(struct deliver *d)
{
	if (d == NULL || d->stopping)
		return;
	d->stopping = true;
	if (d->tick)
		ev_timer_stop(d->tick);
	/* what waits in the connection queues goes back to the store's queue now */
	for (size_t i = 0; i < d->nconns; i++) {
		struct pending *p, *next;
		for (p = d->conns[i]->head; p; p = next) {
			next = p->next;
			release(d, p->m, mb_now_ms(), "released at shutdown", NULL);
			free(p);
		}
		d->conns[i]->head = d->conns[i]->tail = NULL;
	}
}

void
deliver_free(struct deliver *d)
{
	if (d == NULL)
		return;
	ev_timer_free(d->tick);
	for (size_t i = 0; i < d->nconns; i++) {
		struct pending *p = d->conns[i]->head, *next;
		for (; p; p = next) {
			next = p->next;
			store_msg_free(p->m); /* leased; given back at the next start */
			free(p);
		}
		conn_free(d->conns[i]);
	}
	free(d->conns);
	free(d->default_conn);
	free(d);
}

void
deliver_metrics(const struct deliver *d, struct mb_buf *out)
{
	static const char *const transports[2] = {"graph", "smtp"};

	mb_buf_puts(out, "# HELP mailbridge_deliveries_total Delivery attempts by result.\n"
	                 "# TYPE mailbridge_deliveries_total counter\n");
	for (size_t i = 0; i < d->nconns; i++)
		for (int r = 0; r < 3; r++)
			mb_buf_printf(
			    out,
			    "mailbridge_deliveries_total{connection=\"%s\",result=\"%s\"} "
			    "%llu\n",
			    d->conns[i]->name, deliver_result_name((enum deliver_result)r),
			    (unsigned long long)d->conns[i]->results[r]);
	mb_buf_puts(out, "# HELP mailbridge_deliveries_in_flight Delivery attempts in flight.\n"
	                 "# TYPE mailbridge_deliveries_in_flight gauge\n");
	for (size_t i = 0; i < d->nconns; i++)
		mb_buf_printf(out, "mailbridge_deliveries_in_flight{connection=\"%s\"} %d\n",
		              d->conns[i]->name, d->conns[i]->inflight);
	mb_buf_puts(out, "# HELP mailbridge_delivery_seconds Time from the start of an attempt to "
	                 "its answer.\n# TYPE mailbridge_delivery_seconds histogram\n");
	for (int t = 0; t < 2; t++) {
		for (size_t i = 0; i < d->nconns; i++) {
			const struct conn_rt *c = d->conns[i];
			uint64_t cum = 0;
			for (size_t b = 0; b <= NBUCKETS; b++) {
				cum += c->hist[t][b];
				if (b < NBUCKETS)
					mb_buf_printf(
					    out,
					    "mailbridge_delivery_seconds_bucket{transport=\"%s\","
					    "connection=\"%s\",le=\"%g\"} %llu\n",
					    transports[t], c->name, buckets[b],
					    (unsigned long long)cum);
				else
					mb_buf_printf(
					    out,
					    "mailbridge_delivery_seconds_bucket{transport=\"%s\","
					    "connection=\"%s\",le=\"+Inf\"} %llu\n",
					    transports[t], c->name, (unsigned long long)cum);
			}
			mb_buf_printf(
			    out,
			    "mailbridge_delivery_seconds_sum{transport=\"%s\",connection=\"%s\"} "
			    "%.3f\nmailbridge_delivery_seconds_count{transport=\"%s\","
			    "connection=\"%s\"} %llu\n",
			    transports[t], c->name, c->hist_sum[t], transports[t], c->name,
			    (unsigned long long)cum);
		}
	}
}
