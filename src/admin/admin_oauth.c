/*
 * /oauth/callback: where Microsoft sends the browser back. It completes the sign-in itself:
 * checks the single-use state, redeems the code with the PKCE verifier, stores the tokens,
 * and shows "Connected as user@domain". An error in the redirect is shown with its cause
 * and fix, never as a blank page.
 */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

#define STATE_MAX_AGE_MS (10 * 60 * 1000)

struct redeem {
	struct admin *a;
	struct ev_http *server;
	uint64_t req_id;
	char *state;
	char *conn;
	enum oauth_resource res;
};

/* The link back to the web UI: the connection's page, or the list when conn is NULL. */
static void
back_link(struct mb_buf *b, const char *conn)
{
	struct mb_buf url = {0};

	mb_buf_puts(&url, "/#/connections");
	if (conn && *conn) {
		mb_buf_puts(&url, "/");
		http_url_encode(&url, conn);
	}
	mb_buf_puts(b, "<p><a href=\"");
	admin_html_escape(b, url.data);
	mb_buf_puts(b, "\">Back to mailbridge</a></p>");
	mb_buf_release(&url);
}

static void
page_error(struct ev_http_req *req, int status, const char *title, const char *what,
           const struct oauth_explain *ex, const char *conn)
{
	struct mb_buf b = {0};

	mb_buf_puts(&b, "<h1 class=\"bad\">");
	admin_html_escape(&b, title);
	mb_buf_puts(&b, "</h1><p>");
	admin_html_escape(&b, what);
	mb_buf_puts(&b, "</p>");
	if (ex) {
		mb_buf_puts(&b, "<dl><dt>Cause</dt><dd>");
		if (ex->aadsts)
			mb_buf_printf(&b, "AADSTS%ld: ", ex->aadsts);
		admin_html_escape(&b, ex->cause);
		mb_buf_puts(&b, "</dd><dt>Fix</dt><dd>");
		admin_html_escape(&b, ex->fix);
		mb_buf_puts(&b, "</dd></dl>");
	}
	back_link(&b, conn);
	admin_reply_page(req, status, title, b.data);
	mb_buf_release(&b);
}

static void
finish_state(struct admin *a, const char *state, const char *result, const char *detail)
{
	struct mb_err err;

	if (store_oauth_state_finish(a->d.st, state, result, detail, &err) < 0)
		mb_warn("admin: oauth callback: %s", err.msg);
}

static void
redeem_free(struct redeem *r)
{
	free(r->state);
	free(r->conn);
	free(r);
}

static void
redeemed(void *arg, const struct http_response *resp)
{
	struct redeem *r = arg;
	struct ev_http_req *req = ev_http_deferred(r->server, r->req_id);
	struct oauth_explain ex;
	struct oauth_token_resp t;
	struct oauth_conn *c = NULL;
	struct mb_err err = {0};
	char detail[700];

	if (resp->result != HTTP_OK) {
		ex = (struct oauth_explain){
		    OAUTH_CLASS_TRANSIENT, 0, resp->error ? resp->error : "transport error",
		    "check that this server reaches the login host, then sign "
		    "in again"};
		goto failed;
	}
	if (resp->status != 200) {
		struct oauth_error oe;
		oauth_error_parse(resp->body, resp->body_len, (int)resp->status, &oe);
		oauth_error_explain(&oe, &ex);
		goto failed;
	}
	if (oauth_token_resp_parse(resp->body, resp->body_len, &t, &err) < 0) {
		ex = (struct oauth_explain){OAUTH_CLASS_TRANSIENT, 0, err.msg,
		                            "sign in again; if it repeats, run mailbridge doctor"};
		goto failed;
	}
	c = oauth_conn_load(r->a->d.cfg, r->a->d.st, r->a->d.key, r->conn, &err);
	if (c == NULL || oauth_tokens_save(c, r->a->d.st, r->a->d.key, r->res, &t, &err) < 0) {
		oauth_token_resp_release(&t);
		ex = (struct oauth_explain){
		    OAUTH_CLASS_CONFIG, 0, err.msg,
		    "check the connection and the store, then sign in again"};
		goto failed;
	}
	snprintf(detail, sizeof(detail), "%s", t.account ? t.account : "");
	mb_info("admin: signed in: connection=%s account=%s", r->conn,
	        *detail ? detail : "(unknown)");
	finish_state(r->a, r->state, "ok", detail);
	if (req) {
		struct mb_buf b = {0};
		mb_buf_puts(&b, "<h1 class=\"ok\">Connected</h1><p>Connected as <strong>");
		admin_html_escape(&b, *detail ? detail : "(account not named by Microsoft)");
		mb_buf_printf(&b, "</strong>, token valid for %lld min.</p>",
		              (long long)(t.expires_in / 60));
		mb_buf_puts(&b, "<p>Connection <code>");
		admin_html_escape(&b, r->conn);
		mb_buf_puts(&b, "</code> is ready; mailbridge refreshes its tokens by itself. You "
		                "can close this window.</p>");
		back_link(&b, r->conn);
		admin_reply_page(req, 200, "Connected", b.data);
		mb_buf_release(&b);
	}
	oauth_token_resp_release(&t);
	oauth_conn_free(c);
	redeem_free(r);
	return;
failed:
	oauth_conn_free(c);
	snprintf(detail, sizeof(detail), "%s%s%s Fix: %s", ex.aadsts ? "AADSTS" : "",
	         ex.aadsts ? "" : "", ex.cause, ex.fix);
	if (ex.aadsts)
		snprintf(detail, sizeof(detail), "AADSTS%ld: %s Fix: %s", ex.aadsts, ex.cause,
		         ex.fix);
	mb_warn("admin: sign-in failed: connection=%s %s", r->conn, detail);
	finish_state(r->a, r->state, "error", detail);
	if (req)
		page_error(req, 502, "Sign-in not completed",
		           "Microsoft did not issue tokens for this connection.", &ex, r->conn);
	redeem_free(r);
}

/* An error=… redirect: Microsoft (or the user) stopped the sign-in. */
static void
redirect_error(struct admin *a, struct ev_http_req *req, const char *query, const char *state)
{
	char *error = http_query_get(query, "error");
	char *desc = http_query_get(query, "error_description");
	struct oauth_error oe;
	struct oauth_explain ex;
	struct mb_buf json = {0};
	char detail[700], *conn = NULL;

	/* reuse the token-error parser: it reads AADSTSnnnn from the description */
	mb_buf_puts(&json, "{\"error\":");
	mb_buf_json_str(&json, error);
	mb_buf_puts(&json, ",\"error_description\":");
	mb_buf_json_str(&json, desc ? desc : "");
	mb_buf_puts(&json, "}");
	oauth_error_parse(json.data, json.len, 400, &oe);
	oauth_error_explain(&oe, &ex);
	if (state) {
		char *redirect = NULL;
		unsigned char *v = NULL;
		size_t vlen = 0;
		struct mb_err err;
		if (store_oauth_state_take(a->d.st, state, STATE_MAX_AGE_MS, &conn, &v, &vlen,
		                           &redirect, &err) == 0) {
			snprintf(detail, sizeof(detail), "%s: %s Fix: %s", error, ex.cause, ex.fix);
			finish_state(a, state, "error", detail);
			mb_warn("admin: sign-in refused by Microsoft: connection=%s error=%s "
			        "aadsts=%ld",
			        conn, error, ex.aadsts);
		}
		free(redirect);
		free(v);
	}
	page_error(req, 400, "Sign-in not completed",
	           desc ? desc : "Microsoft returned an error instead of a sign-in.", &ex, conn);
	free(conn);
	free(error);
	free(desc);
	mb_buf_release(&json);
}

void
admin_oauth_callback(struct admin *a, struct ev_http_req *req)
{
	const char *query = ev_http_req_query(req);
	char *state = http_query_get(query, "state");
	char *code = http_query_get(query, "code");
	char *error = http_query_get(query, "error");
	char *conn = NULL, *redirect = NULL, *verifier = NULL;
	unsigned char *vct = NULL;
	size_t vlen = 0;
	struct mb_err err = {0};
	struct oauth_conn *c = NULL;
	char aad[300];

	if (error) {
		redirect_error(a, req, query, state);
		goto out;
	}
	if (state == NULL || code == NULL) {
		page_error(req, 400, "Not a sign-in",
		           "This address completes a Microsoft sign-in started by mailbridge. "
		           "Start one with the Authenticate button or `mailbridge auth login NAME "
		           "--browser`.",
		           NULL, NULL);
		goto out;
	}
	if (store_oauth_state_take(a->d.st, state, STATE_MAX_AGE_MS, &conn, &vct, &vlen, &redirect,
	                           &err) < 0) {
		struct oauth_explain ex = {OAUTH_CLASS_USER, 0, err.msg,
		                           "start the sign-in again: each sign-in link works once, "
		                           "for 10 minutes"};
		mb_warn("admin: oauth callback refused: %s", err.msg);
		page_error(req, 400, "Sign-in link not valid", "This sign-in cannot be completed.",
		           &ex, NULL);
		goto out;
	}
	snprintf(aad, sizeof(aad), "oauth-state:%s", state);
	verifier = mb_open(a->d.key, vct, vlen, aad, NULL);
	c = oauth_conn_load(a->d.cfg, a->d.st, a->d.key, conn, &err);
	if (verifier == NULL || c == NULL) {
		struct oauth_explain ex = {
		    OAUTH_CLASS_CONFIG, 0,
		    c ? "the sign-in's PKCE verifier cannot be unsealed" : err.msg,
		    "check the connection (mailbridge connection show NAME) and "
		    "start the sign-in again"};
		finish_state(a, state, "error", ex.cause);
		page_error(req, 500, "Sign-in not completed", "mailbridge could not go on.", &ex,
		           conn);
		goto out;
	}
	{
		static const char *const hdrs[] = {
		    "Content-Type: application/x-www-form-urlencoded", "Accept: application/json",
		    NULL};
		struct redeem *r = mb_calloc(1, sizeof(*r));
		struct mb_buf form = {0}, url = {0};
		struct http_request hr = {.method = "POST", .headers = hdrs, .timeout_ms = 30000};

		r->a = a;
		r->server = ev_http_req_server(req);
		r->state = mb_strdup(state);
		r->conn = mb_strdup(conn);
		oauth_code_form(c, code, verifier, redirect, &form, &r->res);
		oauth_endpoint_url(&c->ep, c->tenant, "token", &url);
		hr.url = url.data;
		hr.body = form.data;
		hr.body_len = form.len;
		hr.ca_file = c->ca_file;
		r->req_id = ev_http_req_defer(r->server, req);
		http_request_start(a->d.http, &hr, redeemed, r);
		mb_buf_wipe(&form);
		mb_buf_release(&url);
	}
out:
	oauth_conn_free(c);
	mb_secret_free(verifier);
	mb_secret_free(code);
	free(state);
	free(error);
	free(conn);
	free(redirect);
	free(vct);
}
