/* /api/v1 sign-in of a connection: browser (the answer is the authorize URL; /oauth/callback
 * completes it) and device code.
 *
 * The device-code sign-in runs on the loop: the devicecode request and every poll go through
 * the daemon's async HTTP client, the polls are paced by a timer, and the store is written
 * from the loop as everywhere else in the admin. Async hops find their sign-in by id. */
#include "admin_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

/* ---- sign-in ---- */

/* An HTTP request of a device sign-in in flight. It belongs to the http client until its
 * callback ran; gone says the sign-in ended meanwhile. */
struct hop {
	struct admin *a;
	uint64_t signin_id;
	uint64_t http_id;
	bool gone;
};

struct signin {
	struct admin *a;
	uint64_t id;
	char *conn;
	const char *status; /* none, pending, connected, declined, expired, failed */
	struct oauth_conn *oc;
	struct oauth_device dev;
	struct ev_timer *timer;
	struct hop *hop;
	struct ev_http *server; /* the POST waiting for the device code, while req_id != 0 */
	uint64_t req_id;
	char account[320];
	int64_t token_valid_min;
	char err_code[32];
	char err_msg[600];
	char err_fix[400];
	struct signin *next;
};

struct admin_signins {
	struct signin *head;
	uint64_t next_id;
};

static struct signin *
signin_find(struct admin *a, const char *conn, uint64_t id)
{
	for (struct signin *s = a->signins ? a->signins->head : NULL; s; s = s->next)
		if (conn ? strcmp(s->conn, conn) == 0 : s->id == id)
			return s;
	return NULL;
}

static void
signin_free(struct admin *a, struct signin *s)
{
	if (s->hop) {
		s->hop->gone = true;
		http_request_cancel(a->d.http, s->hop->http_id);
	}
	ev_timer_free(s->timer);
	oauth_conn_free(s->oc);
	oauth_device_release(&s->dev);
	free(s->conn);
	free(s);
}

/* Ends and forgets the sign-in of conn, if any (the daemon's servers must still exist). */
void
admin_signin_remove(struct admin *a, const char *conn)
{
	struct signin **pp = a->signins ? &a->signins->head : NULL;

	for (; pp && *pp; pp = &(*pp)->next) {
		struct signin *s = *pp;
		struct ev_http_req *req;

		if (strcmp(s->conn, conn) != 0)
			continue;
		*pp = s->next;
		req = s->req_id ? ev_http_deferred(s->server, s->req_id) : NULL;
		if (req)
			admin_reply_error(req, 409, "conflict", "another sign-in replaced this one",
			                  "follow the newest sign-in, or start one again");
		signin_free(a, s);
		return;
	}
}

static void
signin_fail(struct signin *s, const char *status, const char *code, const char *msg,
            const char *fix)
{
	char *f = mb_str_replace(fix, "NAME", s->conn);

	s->status = status;
	snprintf(s->err_code, sizeof(s->err_code), "%s", code);
	snprintf(s->err_msg, sizeof(s->err_msg), "%s", msg);
	snprintf(s->err_fix, sizeof(s->err_fix), "%s", f);
	free(f);
	ev_timer_stop(s->timer);
	mb_warn("admin: device sign-in ended: connection=%s status=%s %s", s->conn, status, msg);
}

static void on_device_answer(void *arg, const struct http_response *resp);

/* Sends the devicecode request (poll false) or a poll, through the daemon's client. */
static void
signin_send(struct admin *a, struct signin *s, bool poll)
{
	static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
	                                   "Accept: application/json", NULL};
	struct http_request hr = {.method = "POST", .headers = hdrs, .timeout_ms = 30000};
	struct mb_buf url = {0}, form = {0};
	struct hop *h = mb_calloc(1, sizeof(*h));

	if (poll)
		oauth_device_poll_request(s->oc, &s->dev, &url, &form);
	else
		oauth_device_code_request(s->oc, &s->dev, &url, &form);
	hr.url = url.data;
	hr.body = form.data;
	hr.body_len = form.len;
	hr.ca_file = s->oc->ca_file;
	h->a = a;
	h->signin_id = s->id;
	s->hop = h;
	h->http_id = http_request_start(a->d.http, &hr, on_device_answer, h);
	mb_buf_wipe(&form);
	mb_buf_release(&url);
}

static void
reply_device_started(struct signin *s)
{
	struct ev_http_req *req = ev_http_deferred(s->server, s->req_id);
	json_t *j;

	s->req_id = 0;
	if (req == NULL)
		return; /* the client left; the sign-in goes on and GET signin tells */
	j = json_object();
	json_object_set_new(j, "user_code", admin_json_str_or_null(s->dev.d.user_code));
	json_object_set_new(j, "verification_uri",
	                    admin_json_str_or_null(s->dev.d.verification_uri));
	json_object_set_new(j, "expires_in", json_integer(s->dev.d.expires_in));
	json_object_set_new(j, "interval", json_integer(s->dev.interval_s));
	json_object_set_new(j, "message", admin_json_str_or_null(s->dev.d.message));
	admin_reply_json(req, 200, j);
}

static void
reply_device_refused(struct signin *s)
{
	struct ev_http_req *req = ev_http_deferred(s->server, s->req_id);

	s->req_id = 0;
	if (req)
		admin_reply_error(req, 502, s->err_code, s->err_msg, s->err_fix);
}

/* The devicecode answer: the code to show, or why there is none. */
static void
device_code_answered(struct admin *a, struct signin *s, const struct http_response *resp)
{
	struct oauth_explain ex = {OAUTH_CLASS_CONFIG, 0, "", ""};
	struct mb_err err = {0};
	int rc;

	if (resp->result != HTTP_OK) {
		signin_fail(s, "failed", "unreachable",
		            resp->error ? resp->error : "transport error",
		            "check that this server reaches the login host (DNS, firewall, proxy), "
		            "then start the sign-in again");
		reply_device_refused(s);
		return;
	}
	rc = oauth_device_code_answer(s->oc, &s->dev, resp->status, resp->body, resp->body_len, &ex,
	                              &err);
	if (rc == 1) {
		signin_send(a, s, false);
		return;
	}
	if (rc < 0) {
		signin_fail(s, "failed", "signin_failed", err.msg,
		            *ex.fix ? ex.fix : "check the connection's tenant and client_id");
		reply_device_refused(s);
		return;
	}
	mb_info("admin: device sign-in started: connection=%s", s->conn);
	reply_device_started(s);
	ev_timer_start(s->timer, s->dev.interval_s * 1000);
}

static void
ignore_token(void *arg, int status, const char *token, const struct oauth_explain *ex)
{
}

/* Signed in: the token manager starts from the stored tokens, and mints the other resources
 * the provider needs from the refresh token now, so the first message does not wait. */
static void
signin_connected(struct admin *a, struct signin *s)
{
	s->status = "connected";
	snprintf(s->account, sizeof(s->account), "%s", s->dev.account);
	s->token_valid_min = s->dev.expires_in / 60;
	mb_info("admin: signed in: connection=%s account=%s", s->conn,
	        *s->account ? s->account : "(unknown)");
	if (a->d.tm) {
		oauth_tm_forget(a->d.tm, s->conn);
		for (int r = 0; r < OAUTH_RES_COUNT; r++)
			if (r != OAUTH_RES_GRAPH &&
			    oauth_provider_needs(s->oc->provider, (enum oauth_resource)r))
				oauth_tm_get(a->d.tm, s->conn, (enum oauth_resource)r, false,
				             ignore_token, NULL);
	}
	if (a->d.deliver) {
		deliver_conns_changed(a->d.deliver);
		deliver_kick(a->d.deliver);
	}
}

static void
poll_answered(struct admin *a, struct signin *s, const struct http_response *resp)
{
	struct oauth_explain ex = {OAUTH_CLASS_CONFIG, 0, "", ""};
	struct mb_err err = {0};
	long status = resp->result == HTTP_OK ? resp->status : 0;
	enum oauth_device_poll r;

	r = oauth_device_poll_answer(s->oc, a->d.st, a->d.key, &s->dev, status, resp->body,
	                             resp->body_len, &ex, &err);
	switch (r) {
	case OAUTH_DEVICE_PENDING:
		ev_timer_start(s->timer, s->dev.interval_s * 1000);
		break;
	case OAUTH_DEVICE_DONE:
		signin_connected(a, s);
		break;
	case OAUTH_DEVICE_DECLINED:
		signin_fail(s, "declined", "declined", err.msg,
		            *ex.fix ? ex.fix : "sign in again and accept");
		break;
	case OAUTH_DEVICE_EXPIRED:
		signin_fail(s, "expired", "expired", err.msg,
		            "start the sign-in again and enter the code within its lifetime");
		break;
	default:
		signin_fail(s, "failed", "signin_failed", err.msg,
		            *ex.fix ? ex.fix : "check the connection, then sign in again");
		break;
	}
}

static void
on_device_answer(void *arg, const struct http_response *resp)
{
	struct hop *h = arg;
	struct signin *s = h->gone ? NULL : signin_find(h->a, NULL, h->signin_id);

	if (s == NULL || resp->result == HTTP_CANCELLED) {
		if (s)
			s->hop = NULL;
		free(h);
		return;
	}
	s->hop = NULL;
	if (s->dev.d.device_code == NULL)
		device_code_answered(h->a, s, resp);
	else
		poll_answered(h->a, s, resp);
	free(h);
}

/* The poll timer belongs to its sign-in and is freed with it. */
static void
on_timer(void *arg)
{
	struct signin *s = arg;

	if (s->hop == NULL && strcmp(s->status, "pending") == 0)
		signin_send(s->a, s, true);
}

/* The loaded connection NAME for a sign-in, or NULL after replying. */
static struct oauth_conn *
signin_conn(struct admin *a, struct ev_http_req *req, const char *name)
{
	struct mb_err err = {0};
	struct oauth_conn *c = oauth_conn_load(a->d.cfg, a->d.st, a->d.key, name, &err);

	if (c == NULL) {
		if (err.code == MB_ENOTFOUND)
			admin_reply_conn_not_found(req, name);
		else
			admin_reply_error(req, 422, "not_usable", err.msg,
			                  "fix the connection's settings, then sign in");
		return NULL;
	}
	if (c->provider == OAUTH_PROVIDER_SMTP || c->auth == OAUTH_AUTH_APP_ONLY) {
		admin_reply_error(
		    req, 422, "no_signin",
		    c->provider == OAUTH_PROVIDER_SMTP
		        ? "this connection uses plain SMTP with a password: nobody signs in"
		        : "this connection uses app-only auth: nobody signs in",
		    c->provider == OAUTH_PROVIDER_SMTP
		        ? "nothing to do; send a test message to check the connection"
		        : "mailbridge fetches app-only tokens with the client secret by itself; "
		          "send "
		          "a test message or run the doctor to check it");
		oauth_conn_free(c);
		return NULL;
	}
	return c;
}

static void
signin_browser(struct admin *a, struct ev_http_req *req, struct oauth_conn *c)
{
	struct mb_buf url = {0};
	struct mb_err err = {0};
	char state[64], *cb = admin_callback_url(a), *base;
	json_t *j;

	/* oauth_browser_start appends /oauth/callback itself */
	base = mb_strndup(cb, strlen(cb) - strlen("/oauth/callback"));
	if (oauth_browser_start(c, a->d.st, a->d.key, base, &url, state, sizeof(state), &err) < 0) {
		admin_reply_store_error(req, &err);
	} else {
		j = json_object();
		json_object_set_new(j, "authorize_url", json_string(url.data));
		json_object_set_new(j, "callback_url", json_string(cb));
		admin_reply_json(req, 200, j);
	}
	mb_buf_release(&url);
	free(base);
	free(cb);
}

static void
signin_device(struct admin *a, struct ev_http_req *req, struct oauth_conn *c)
{
	struct signin *s = mb_calloc(1, sizeof(*s));

	if (a->signins == NULL)
		a->signins = mb_calloc(1, sizeof(*a->signins));
	admin_signin_remove(a, c->name);
	s->a = a;
	s->id = ++a->signins->next_id;
	s->conn = mb_strdup(c->name);
	s->status = "pending";
	s->oc = c;
	s->timer = ev_timer_new(a->loop, on_timer, s);
	s->next = a->signins->head;
	a->signins->head = s;
	s->server = ev_http_req_server(req);
	s->req_id = ev_http_req_defer(s->server, req);
	signin_send(a, s, false);
}

void
admin_api_signin_start(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                       const struct api_params *p)
{
	json_t *body = admin_body_json(req);
	const char *method;
	struct oauth_conn *oc;

	if (body == NULL)
		return;
	method = json_string_value(json_object_get(body, "method"));
	if (method == NULL || (strcmp(method, "browser") != 0 && strcmp(method, "device") != 0)) {
		admin_reply_invalid(req, "method", "must be \"browser\" or \"device\"");
	} else if ((oc = signin_conn(a, req, p->v[0])) != NULL) {
		if (strcmp(method, "browser") == 0) {
			signin_browser(a, req, oc);
			oauth_conn_free(oc);
		} else {
			signin_device(a, req, oc); /* adopts oc */
		}
	}
	json_decref(body);
}

void
admin_api_signin_status(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                        const struct api_params *p)
{
	struct signin *s = signin_find(a, p->v[0], 0);
	json_t *j, *e;

	if (!admin_conn_exists(a, p->v[0])) {
		admin_reply_conn_not_found(req, p->v[0]);
		return;
	}
	j = json_object();
	json_object_set_new(j, "status", json_string(s ? s->status : "none"));
	if (s && strcmp(s->status, "pending") == 0 && s->dev.d.user_code) {
		json_object_set_new(j, "user_code", json_string(s->dev.d.user_code));
		json_object_set_new(j, "verification_uri",
		                    admin_json_str_or_null(s->dev.d.verification_uri));
	} else if (s && strcmp(s->status, "connected") == 0) {
		json_object_set_new(j, "account", json_string(s->account));
		json_object_set_new(j, "token_valid_min", json_integer(s->token_valid_min));
	} else if (s && *s->err_code) {
		e = json_object();
		json_object_set_new(e, "code", json_string(s->err_code));
		json_object_set_new(e, "message", json_string(s->err_msg));
		json_object_set_new(e, "fix", json_string(s->err_fix));
		json_object_set_new(j, "error", e);
	}
	admin_reply_json(req, 200, j);
}

void
admin_conn_state_free(struct admin *a)
{
	if (a->signins == NULL)
		return;
	/* the servers are gone: deferred replies with them; requests in flight are cancelled */
	while (a->signins->head) {
		struct signin *s = a->signins->head;
		a->signins->head = s->next;
		signin_free(a, s);
	}
	free(a->signins);
	a->signins = NULL;
}
