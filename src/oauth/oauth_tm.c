/*
 * The token manager: a valid access token per (connection, resource), on the loop.
 *
 * - Single flight: callers that arrive while a request is out wait for it.
 * - Refresh ahead: when min(10 min, 20 % of the lifetime) remains, in the background.
 * - A refresh at least daily for every signed-in connection, so an idle gateway never loses
 *   its refresh token to the 90-day inactivity limit.
 * - Transport errors and 5xx back off with jitter and keep the refresh token. Only
 *   invalid_grant / interaction_required (the grant is dead) mark the connection
 *   "needs re-authorization", with the AADSTS code and its fix.
 * - A rotated refresh token is stored (with the access token, in one transaction) before the
 *   new access token is handed to anyone.
 */
#include "oauth.h"

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "ev/ev.h"
#include "http/http.h"
#include "store/store.h"

#define REFRESH_RESOURCE "all"
#define DAILY_MS         (24 * 3600 * 1000LL)
#define SWEEP_MS         (15 * 60 * 1000LL)
#define BACKOFF_MAX_MS   (15 * 60 * 1000LL)
/* a token this close to expiry is not handed out */
#define SAFETY_MS 30000

struct waiter {
	oauth_token_cb cb;
	void *arg;
	struct waiter *next;
};

struct entry {
	struct oauth_tm *tm;
	char *conn;
	enum oauth_resource res;
	char *access; /* secret */
	int64_t expires_ms;
	int64_t lifetime_ms;
	uint64_t http_id; /* 0 when no request is out */
	struct waiter *waiters;
	struct ev_timer *timer; /* refresh-ahead, or retry after a back-off */
	int failures;
	int64_t retry_at_ms;
	struct oauth_explain last; /* why the last attempt failed */
	char last_cause[512];
	struct entry *next;
};

struct oauth_tm {
	struct ev_loop *loop;
	struct http_client *http;
	const struct config *cfg;
	struct store *st;
	const struct mb_key *key;
	struct entry *entries;
	struct ev_timer *sweep;
	uint64_t requests;
	uint64_t failures;
};

static void entry_refresh(struct entry *e);

uint64_t
oauth_tm_requests(const struct oauth_tm *tm)
{
	return tm->requests;
}

static void
drop_access(struct entry *e)
{
	mb_secret_free(e->access);
	e->access = NULL;
	e->expires_ms = 0;
}

static bool
access_is_fresh(const struct entry *e)
{
	/* a short-lived token keeps a margin of a tenth of its life, at most 30 s */
	int64_t margin = e->lifetime_ms / 10 < SAFETY_MS ? e->lifetime_ms / 10 : SAFETY_MS;

	return e->access && mb_now_ms() + margin < e->expires_ms;
}

static void
answer(struct entry *e, int status, const struct oauth_explain *ex)
{
	struct waiter *w = e->waiters;

	e->waiters = NULL;
	while (w) {
		struct waiter *next = w->next;
		w->cb(w->arg, status, status == 0 ? e->access : NULL, ex);
		free(w);
		w = next;
	}
}

static int64_t
jitter(int64_t ms)
{
	unsigned char r;

	mb_random_bytes(&r, 1);
	return ms / 2 + (ms * r) / 255; /* 0.5x to 1.5x */
}

/* Schedules the background refresh: ahead of expiry, or after a back-off. */
static void
schedule(struct entry *e, int64_t in_ms)
{
	if (in_ms < 0)
		in_ms = 0;
	ev_timer_start(e->timer, in_ms);
}

static void
schedule_ahead(struct entry *e)
{
	int64_t margin = e->lifetime_ms / 5;

	if (margin > 600000)
		margin = 600000;
	schedule(e, e->expires_ms - margin - mb_now_ms());
}

/* Records an error on the connection; state NULL keeps the state it has. */
static void
note(struct entry *e, const char *state, const char *reason, const char *fix)
{
	struct mb_err err;
	struct store_conn *sc = NULL;
	char *f = mb_str_replace(fix, "NAME", e->conn);

	if (state == NULL) {
		sc = store_conn_get(e->tm->st, e->conn, NULL);
		state = sc && sc->state ? sc->state : "not authorized";
	}
	store_conn_set_state(e->tm->st, e->conn, state,
	                     strcmp(state, "needs re-authorization") == 0 ? reason : NULL, reason,
	                     f, &err);
	store_conn_free(sc);
	free(f);
}

static void
fail(struct entry *e, const struct oauth_explain *ex, const char *detail)
{
	struct mb_err err;
	char reason[700];

	e->tm->failures++;
	e->last = *ex;
	snprintf(e->last_cause, sizeof(e->last_cause), "%s", detail ? detail : ex->cause);
	e->last.cause = e->last_cause;
	if (ex->aadsts)
		snprintf(reason, sizeof(reason), "AADSTS%ld: %s", ex->aadsts, e->last_cause);
	else
		snprintf(reason, sizeof(reason), "%s", e->last_cause);
	switch (ex->cls) {
	case OAUTH_CLASS_REAUTHORIZE:
	case OAUTH_CLASS_USER:
		/* the grant is dead, or the user must act: only a new sign-in helps */
		drop_access(e);
		mb_warn("oauth: needs re-authorization: connection=%s %s fix=\"%s\"", e->conn,
		        reason, ex->fix);
		note(e, "needs re-authorization", reason, ex->fix);
		store_event_add(e->tm->st, "warn", NULL, e->conn, reason, &err);
		break;
	case OAUTH_CLASS_CONFIG:
		/* the app registration or the secret: a new sign-in would not help; the state
		 * stays, the error and its fix are shown */
		mb_warn("oauth: token request refused: connection=%s %s fix=\"%s\"", e->conn,
		        reason, ex->fix);
		note(e, NULL, reason, ex->fix);
		store_event_add(e->tm->st, "warn", NULL, e->conn, reason, &err);
		break;
	case OAUTH_CLASS_TRANSIENT:
	default: {
		int64_t backoff = 5000LL << (e->failures < 8 ? e->failures : 8);

		if (backoff > BACKOFF_MAX_MS)
			backoff = BACKOFF_MAX_MS;
		backoff = jitter(backoff);
		e->failures++;
		e->retry_at_ms = mb_now_ms() + backoff;
		mb_warn("oauth: token request failed: connection=%s resource=%s %s retry_in=%llds "
		        "(the refresh token is kept)",
		        e->conn, oauth_resource_name(e->res), reason, (long long)(backoff / 1000));
		note(e, NULL, reason, ex->fix);
		/* the access token, if still valid, stays usable meanwhile */
		schedule(e, backoff);
		break;
	}
	}
	if (access_is_fresh(e) && ex->cls == OAUTH_CLASS_TRANSIENT)
		answer(e, 0, NULL);
	else
		answer(e, -1, &e->last);
}

static void
on_token(void *arg, const struct http_response *resp)
{
	struct entry *e = arg;
	struct oauth_explain ex;
	struct oauth_token_resp t;
	struct oauth_conn *c;
	struct mb_err err = {0};

	e->http_id = 0;
	if (resp->result == HTTP_CANCELLED) {
		ex = (struct oauth_explain){OAUTH_CLASS_TRANSIENT, 0, "the request was cancelled",
		                            "try again"};
		answer(e, -1, &ex);
		return;
	}
	if (resp->result == HTTP_TRANSPORT) {
		ex = (struct oauth_explain){
		    OAUTH_CLASS_TRANSIENT, 0, resp->error,
		    resp->timed_out ? "the identity platform did not answer in time; mailbridge "
		                      "retries with back-off"
		                    : "check DNS, the firewall and proxies for the login host; "
		                      "mailbridge retries with back-off"};
		fail(e, &ex, resp->error);
		return;
	}
	if (resp->status != 200) {
		struct oauth_error oe;
		oauth_error_parse(resp->body, resp->body_len, (int)resp->status, &oe);
		oauth_error_explain(&oe, &ex);
		if (resp->status >= 500 || resp->status == 429)
			ex.cls = OAUTH_CLASS_TRANSIENT;
		fail(e, &ex, oe.description[0] ? ex.cause : NULL);
		return;
	}
	if (oauth_token_resp_parse(resp->body, resp->body_len, &t, &err) < 0) {
		ex = (struct oauth_explain){OAUTH_CLASS_TRANSIENT, 0, err.msg,
		                            "the identity platform answered with an unusable token "
		                            "response; mailbridge retries with back-off"};
		fail(e, &ex, err.msg);
		return;
	}
	c = oauth_conn_load(e->tm->cfg, e->tm->st, e->tm->key, e->conn, &err);
	/* persist first: the rotated refresh token must survive before the access token is
	 * used */
	if (c == NULL || oauth_tokens_save(c, e->tm->st, e->tm->key, e->res, &t, &err) < 0) {
		ex = (struct oauth_explain){OAUTH_CLASS_TRANSIENT, 0, err.msg,
		                            "the store could not save the new tokens; mailbridge "
		                            "retries"};
		oauth_token_resp_release(&t);
		oauth_conn_free(c);
		fail(e, &ex, err.msg);
		return;
	}
	oauth_conn_free(c);
	drop_access(e);
	e->access = mb_strdup(t.access_token);
	e->lifetime_ms = t.expires_in * 1000;
	e->expires_ms = mb_now_ms() + e->lifetime_ms;
	e->failures = 0;
	e->retry_at_ms = 0;
	oauth_token_resp_release(&t);
	mb_info("oauth: token refreshed: connection=%s resource=%s valid_for=%llds", e->conn,
	        oauth_resource_name(e->res), (long long)(e->lifetime_ms / 1000));
	schedule_ahead(e);
	answer(e, 0, NULL);
}

static char *
load_refresh(struct entry *e, struct mb_err *err)
{
	unsigned char *ct = NULL;
	size_t len = 0;
	char aad[300], *rt;

	if (store_token_get(e->tm->st, e->conn, REFRESH_RESOURCE, "refresh", &ct, &len, NULL, NULL,
	                    NULL, NULL, err) < 0)
		return NULL;
	snprintf(aad, sizeof(aad), "token:%s:%s:refresh", e->conn, REFRESH_RESOURCE);
	rt = mb_open(e->tm->key, ct, len, aad, NULL);
	free(ct);
	if (rt == NULL)
		mb_err_set(err, MB_EINVAL, "the stored refresh token cannot be unsealed with %s",
		           e->tm->key->source);
	return rt;
}

static void
entry_refresh(struct entry *e)
{
	static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
	                                   "Accept: application/json", NULL};
	struct mb_err err = {0};
	struct oauth_conn *c;
	struct mb_buf form = {0}, scope = {0}, url = {0};
	struct http_request req = {.method = "POST", .headers = hdrs, .timeout_ms = 30000};
	struct oauth_explain ex;

	if (e->http_id)
		return; /* single flight */
	c = oauth_conn_load(e->tm->cfg, e->tm->st, e->tm->key, e->conn, &err);
	if (c == NULL) {
		ex = (struct oauth_explain){OAUTH_CLASS_CONFIG, 0, err.msg,
		                            "fix the connection's settings (mailbridge connection "
		                            "show NAME)"};
		e->last = ex;
		snprintf(e->last_cause, sizeof(e->last_cause), "%s", err.msg);
		e->last.cause = e->last_cause;
		answer(e, -1, &e->last);
		return;
	}
	oauth_scopes_token(&c->ep, c->provider, c->auth, e->res, c->upload_sessions, &scope);
	http_form_add(&form, "client_id", c->client_id);
	http_form_add(&form, "scope", scope.data);
	if (c->auth == OAUTH_AUTH_APP_ONLY) {
		http_form_add(&form, "grant_type", "client_credentials");
	} else {
		char *rt = load_refresh(e, &err);
		if (rt == NULL) {
			ex = (struct oauth_explain){
			    OAUTH_CLASS_REAUTHORIZE, 0,
			    "nobody has signed in to this connection yet",
			    "run: mailbridge auth login NAME --device (or "
			    "--browser), or use the UI's Authenticate button"};
			if (err.code != MB_ENOTFOUND)
				ex.cause = err.msg;
			e->last = ex;
			snprintf(e->last_cause, sizeof(e->last_cause), "%s", ex.cause);
			e->last.cause = e->last_cause;
			mb_buf_release(&scope);
			mb_buf_wipe(&form);
			oauth_conn_free(c);
			answer(e, -1, &e->last);
			return;
		}
		http_form_add(&form, "grant_type", "refresh_token");
		http_form_add(&form, "refresh_token", rt);
		mb_secret_free(rt);
	}
	if (c->client_secret)
		http_form_add(&form, "client_secret", c->client_secret);
	oauth_endpoint_url(&c->ep, c->tenant, "token", &url);
	req.url = url.data;
	req.body = form.data;
	req.body_len = form.len;
	req.ca_file = c->ca_file;
	e->tm->requests++;
	e->http_id = http_request_start(e->tm->http, &req, on_token, e);
	mb_buf_wipe(&form);
	mb_buf_release(&scope);
	mb_buf_release(&url);
	oauth_conn_free(c);
}

static void
on_timer(void *arg)
{
	struct entry *e = arg;

	entry_refresh(e);
}

static struct entry *
entry_get(struct oauth_tm *tm, const char *conn, enum oauth_resource r)
{
	struct entry *e;

	for (e = tm->entries; e; e = e->next)
		if (e->res == r && strcmp(e->conn, conn) == 0)
			return e;
	e = mb_calloc(1, sizeof(*e));
	e->tm = tm;
	e->conn = mb_strdup(conn);
	e->res = r;
	e->timer = ev_timer_new(tm->loop, on_timer, e);
	e->next = tm->entries;
	tm->entries = e;
	return e;
}

/* An access token saved by another process (the CLI's sign-in) or an earlier run. */
static void
load_access(struct entry *e)
{
	unsigned char *ct = NULL;
	size_t len = 0;
	int64_t expires = 0, updated = 0;
	char aad[300], *tok;

	if (store_token_get(e->tm->st, e->conn, oauth_resource_name(e->res), "access", &ct, &len,
	                    &expires, NULL, NULL, &updated, NULL) < 0)
		return;
	oauth_aad_token(e->conn, e->res, "access", aad, sizeof(aad));
	tok = mb_open(e->tm->key, ct, len, aad, NULL);
	free(ct);
	if (tok == NULL)
		return;
	drop_access(e);
	e->access = tok;
	e->expires_ms = expires;
	e->lifetime_ms = expires - updated > 0 ? expires - updated : 3600000;
	if (access_is_fresh(e))
		schedule_ahead(e);
}

void
oauth_tm_get(struct oauth_tm *tm, const char *conn, enum oauth_resource r, bool force,
             oauth_token_cb cb, void *arg)
{
	struct entry *e = entry_get(tm, conn, r);
	struct waiter *w;

	if (!force && !access_is_fresh(e))
		load_access(e);
	if (!force && access_is_fresh(e)) {
		cb(arg, 0, e->access, NULL);
		return;
	}
	if (!e->http_id && e->retry_at_ms > mb_now_ms() && !force) {
		/* backing off after a failure: answer now, the retry is scheduled */
		cb(arg, -1, NULL, &e->last);
		return;
	}
	if (force && !e->http_id)
		drop_access(e);
	w = mb_calloc(1, sizeof(*w));
	w->cb = cb;
	w->arg = arg;
	w->next = e->waiters;
	e->waiters = w;
	entry_refresh(e);
}

struct sweep_ctx {
	struct oauth_tm *tm;
	int64_t now;
};

static void
ignore_token(void *arg, int status, const char *token, const struct oauth_explain *ex)
{
}

static int
sweep_one(void *arg, const struct store_conn *sc)
{
	struct sweep_ctx *ctx = arg;
	enum oauth_provider p;
	enum oauth_resource r;

	if (sc->state == NULL || strcmp(sc->state, "authorized") != 0)
		return 0;
	if (sc->last_refresh_ms > ctx->now - DAILY_MS)
		return 0;
	if (oauth_provider_parse(sc->provider, &p) < 0 || p == OAUTH_PROVIDER_SMTP)
		return 0;
	r = oauth_provider_needs(p, OAUTH_RES_GRAPH) ? OAUTH_RES_GRAPH : OAUTH_RES_OUTLOOK;
	mb_info("oauth: daily refresh: connection=%s", sc->name);
	oauth_tm_get(ctx->tm, sc->name, r, true, ignore_token, NULL);
	return 0;
}

/* Every signed-in connection gets a refresh at least daily, used or not. */
static void
on_sweep(void *arg)
{
	struct oauth_tm *tm = arg;
	struct sweep_ctx ctx = {tm, mb_now_ms()};
	struct mb_err err;

	if (store_conn_list(tm->st, sweep_one, &ctx, &err) < 0)
		mb_warn("oauth: daily refresh: %s", err.msg);
	ev_timer_start(tm->sweep, jitter(SWEEP_MS));
}

struct oauth_tm *
oauth_tm_new(struct ev_loop *loop, struct http_client *http, const struct config *cfg,
             struct store *st, const struct mb_key *key)
{
	struct oauth_tm *tm = mb_calloc(1, sizeof(*tm));

	tm->loop = loop;
	tm->http = http;
	tm->cfg = cfg;
	tm->st = st;
	tm->key = key;
	tm->sweep = ev_timer_new(loop, on_sweep, tm);
	ev_timer_start(tm->sweep, 5000);
	return tm;
}

void
oauth_tm_set_config(struct oauth_tm *tm, const struct config *cfg)
{
	tm->cfg = cfg;
}

void
oauth_tm_forget(struct oauth_tm *tm, const char *conn)
{
	for (struct entry *e = tm->entries; e; e = e->next) {
		if (strcmp(e->conn, conn) != 0)
			continue;
		drop_access(e);
		e->failures = 0;
		e->retry_at_ms = 0;
		/* a request in flight finishes and answers its waiters; only the back-off goes */
		if (!e->http_id)
			ev_timer_stop(e->timer);
	}
}

void
oauth_tm_free(struct oauth_tm *tm)
{
	struct entry *e, *next;

	if (tm == NULL)
		return;
	/* the http client was freed first, so no request is out and no waiter is left */
	for (e = tm->entries; e; e = next) {
		next = e->next;
		ev_timer_free(e->timer);
		drop_access(e);
		free(e->conn);
		free(e);
	}
	ev_timer_free(tm->sweep);
	free(tm);
}

void
oauth_tm_metrics(const struct oauth_tm *tm, struct mb_buf *out)
{
	mb_buf_printf(out,
	              "# HELP mailbridge_token_requests_total Requests to the token endpoint.\n"
	              "# TYPE mailbridge_token_requests_total counter\n"
	              "mailbridge_token_requests_total %llu\n"
	              "# HELP mailbridge_token_failures_total Token requests that failed.\n"
	              "# TYPE mailbridge_token_failures_total counter\n"
	              "mailbridge_token_failures_total %llu\n",
	              (unsigned long long)tm->requests, (unsigned long long)tm->failures);
}
