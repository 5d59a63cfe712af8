/*
 * The sign-in flows for the command line and the callback: device code, the browser flow's
 * first half, code redemption, and saving tokens. Blocking (http_request_sync).
 */
#include "oauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/http.h"
#include "store/store.h"

/* The key refresh tokens are stored under: they belong to the user and client, not to a
 * resource. */
#define REFRESH_RESOURCE "all"

/* What consent covers: a Graph connection that sends its large messages by SMTP needs
 * SMTP.Send too, as a microsoft-smtp connection does. */
static enum oauth_provider
consent_provider(const struct oauth_conn *c)
{
	return c->large_by_smtp ? OAUTH_PROVIDER_MSSMTP : c->provider;
}

static bool
is_confidential(const struct oauth_conn *c)
{
	return c->client_secret != NULL;
}

/* POSTs a form to url. Returns 0 with the body in resp when the server answered (any
 * status); -1 with err on a transport failure. */
static int
post_url(const struct oauth_conn *c, const char *url, const struct mb_buf *form,
         struct http_response *resp, struct mb_err *err)
{
	static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
	                                   "Accept: application/json", NULL};
	struct http_request req = {.method = "POST", .headers = hdrs, .timeout_ms = 30000};
	int rc;

	req.url = url;
	req.body = form->data;
	req.body_len = form->len;
	req.ca_file = c->ca_file;
	rc = http_request_sync(&req, resp, err);
	if (rc < 0)
		mb_err_set(err, MB_ETEMP, "cannot reach %s: %s", c->ep.login,
		           resp->error ? resp->error : "transport error");
	return rc;
}

/* POSTs a form to the token (or devicecode) endpoint, as post_url(). */
static int
post_form(const struct oauth_conn *c, const char *what, const struct mb_buf *form,
          struct http_response *resp, struct mb_err *err)
{
	struct mb_buf url = {0};
	int rc;

	oauth_endpoint_url(&c->ep, c->tenant, what, &url);
	rc = post_url(c, url.data, form, resp, err);
	mb_buf_release(&url);
	return rc;
}

static void
explain_response(const struct oauth_conn *c, const struct http_response *resp,
                 struct oauth_explain *ex, struct mb_err *err)
{
	struct oauth_error oe;
	struct oauth_explain tmp;
	char *fix;

	if (ex == NULL)
		ex = &tmp;
	oauth_error_parse(resp->body, resp->body_len, (int)resp->status, &oe);
	oauth_error_explain(&oe, ex);
	fix = mb_str_replace(ex->fix, "NAME", c->name);
	if (ex->aadsts)
		mb_err_set(err, MB_EINVAL, "AADSTS%ld (%s): %s Fix: %s", ex->aadsts,
		           oe.error[0] ? oe.error : "error", ex->cause, fix);
	else
		mb_err_set(err, MB_EINVAL, "%s (HTTP %ld): %s Fix: %s",
		           oe.error[0] ? oe.error : "error", resp->status, ex->cause, fix);
	free(fix);
}

/* Sends a token request; on 200 parses it into t. */
static int
token_request(const struct oauth_conn *c, const struct mb_buf *form, struct oauth_token_resp *t,
              struct oauth_explain *ex, struct mb_err *err)
{
	struct http_response resp;
	int rc = -1;

	memset(t, 0, sizeof(*t));
	if (post_form(c, "token", form, &resp, err) < 0) {
		if (ex) {
			ex->cls = OAUTH_CLASS_TRANSIENT;
			ex->aadsts = 0;
			ex->cause = "the identity platform could not be reached";
			ex->fix =
			    "check DNS, the firewall and proxies for the login host, then try "
			    "again";
		}
		http_response_release(&resp);
		return -1;
	}
	if (resp.status == 200)
		rc = oauth_token_resp_parse(resp.body, resp.body_len, t, err);
	else
		explain_response(c, &resp, ex, err);
	http_response_release(&resp);
	return rc;
}

int
oauth_tokens_save(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                  enum oauth_resource r, const struct oauth_token_resp *t, struct mb_err *err)
{
	struct store_token rows[2];
	unsigned char *ct_access, *ct_refresh = NULL;
	size_t len_access, len_refresh = 0, n = 0;
	char aad[300];
	int64_t expires = mb_now_ms() + t->expires_in * 1000;
	struct store_conn *sc;
	int rc;

	memset(rows, 0, sizeof(rows));
	/* the rotated refresh token first, in the same transaction as the access token */
	if (t->refresh_token) {
		snprintf(aad, sizeof(aad), "token:%s:%s:refresh", c->name, REFRESH_RESOURCE);
		ct_refresh =
		    mb_seal(key, t->refresh_token, strlen(t->refresh_token), aad, &len_refresh);
		rows[n].connection = c->name;
		rows[n].resource = REFRESH_RESOURCE;
		rows[n].kind = "refresh";
		rows[n].ct = ct_refresh;
		rows[n].ct_len = len_refresh;
		rows[n].scopes = t->scope;
		rows[n].account = t->account;
		n++;
	}
	oauth_aad_token(c->name, r, "access", aad, sizeof(aad));
	ct_access = mb_seal(key, t->access_token, strlen(t->access_token), aad, &len_access);
	rows[n].connection = c->name;
	rows[n].resource = oauth_resource_name(r);
	rows[n].kind = "access";
	rows[n].ct = ct_access;
	rows[n].ct_len = len_access;
	rows[n].expires_ms = expires;
	rows[n].scopes = t->scope;
	rows[n].account = t->account;
	n++;
	rc = store_token_put_many(st, rows, n, err);
	free(ct_access);
	free(ct_refresh);
	if (rc < 0)
		return -1;
	sc = store_conn_get(st, c->name, NULL);
	rc = store_conn_set_account(
	    st, c->name, t->account ? t->account : (sc && sc->account ? sc->account : NULL),
	    t->scope ? t->scope : (sc ? sc->scopes : NULL), mb_now_ms(), err);
	store_conn_free(sc);
	if (rc < 0)
		return -1;
	return store_conn_set_state(st, c->name, "authorized", NULL, NULL, NULL, err);
}

/* Mints an access token for r from the stored refresh token. */
static int
mint_from_refresh(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                  enum oauth_resource r, struct oauth_explain *ex, struct mb_err *err)
{
	unsigned char *ct = NULL;
	size_t ct_len = 0;
	char aad[300], *refresh;
	struct mb_buf form = {0}, scope = {0};
	struct oauth_token_resp t;
	int rc;

	if (store_token_get(st, c->name, REFRESH_RESOURCE, "refresh", &ct, &ct_len, NULL, NULL,
	                    NULL, NULL, err) < 0)
		return -1;
	snprintf(aad, sizeof(aad), "token:%s:%s:refresh", c->name, REFRESH_RESOURCE);
	refresh = mb_open(key, ct, ct_len, aad, NULL);
	free(ct);
	if (refresh == NULL) {
		mb_err_set(err, MB_EINVAL, "the stored refresh token cannot be unsealed");
		return -1;
	}
	oauth_scopes_token(&c->ep, c->provider, c->auth, r, c->upload_sessions, &scope);
	http_form_add(&form, "client_id", c->client_id);
	http_form_add(&form, "grant_type", "refresh_token");
	http_form_add(&form, "scope", scope.data);
	http_form_add(&form, "refresh_token", refresh);
	if (is_confidential(c))
		http_form_add(&form, "client_secret", c->client_secret);
	mb_secret_free(refresh);
	rc = token_request(c, &form, &t, ex, err);
	mb_buf_wipe(&form);
	mb_buf_release(&scope);
	if (rc == 0)
		rc = oauth_tokens_save(c, st, key, r, &t, err);
	oauth_token_resp_release(&t);
	return rc;
}

/* After an interactive sign-in: an access token for every resource the provider needs. */
static int
mint_needed(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
            enum oauth_resource have, struct oauth_explain *ex, struct mb_err *err)
{
	for (int r = 0; r < OAUTH_RES_COUNT; r++) {
		if (r == (int)have || !oauth_provider_needs(c->provider, (enum oauth_resource)r))
			continue;
		if (mint_from_refresh(c, st, key, (enum oauth_resource)r, ex, err) < 0)
			return -1;
	}
	return 0;
}

/* The resource the first scope of the authorize list names: what the first token is for. */
static enum oauth_resource
first_resource(const struct oauth_conn *c)
{
	return oauth_provider_needs(c->provider, OAUTH_RES_GRAPH) ? OAUTH_RES_GRAPH
	                                                          : OAUTH_RES_OUTLOOK;
}

void
oauth_redirect_uri(const char *base, struct mb_buf *out)
{
	size_t n = strlen(base);

	while (n > 0 && base[n - 1] == '/')
		n--;
	mb_buf_printf(out, "%.*s/oauth/callback", (int)n, base);
}

int
oauth_browser_start(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                    const char *public_url, struct mb_buf *url, char *state_out, size_t state_len,
                    struct mb_err *err)
{
	unsigned char rnd[24];
	char verifier[OAUTH_VERIFIER_LEN + 1], challenge[44], aad[300];
	struct mb_buf state = {0}, redirect = {0}, scope = {0};
	unsigned char *ct;
	size_t ct_len;
	int rc;

	if (c->auth == OAUTH_AUTH_APP_ONLY) {
		mb_err_set(err, MB_EINVAL,
		           "connection %s uses app-only auth: nobody signs in; run mailbridge auth "
		           "login %s to fetch a token with the client secret",
		           c->name, c->name);
		return -1;
	}
	mb_random_bytes(rnd, sizeof(rnd));
	oauth_base64url(rnd, sizeof(rnd), &state);
	oauth_pkce_verifier(verifier);
	oauth_pkce_challenge(verifier, challenge);
	oauth_redirect_uri(public_url, &redirect);
	snprintf(aad, sizeof(aad), "oauth-state:%s", state.data);
	ct = mb_seal(key, verifier, strlen(verifier), aad, &ct_len);
	mb_secret_wipe(verifier, sizeof(verifier));
	rc = store_oauth_state_put(st, state.data, c->name, ct, ct_len, redirect.data, err);
	free(ct);
	if (rc == 0) {
		struct mb_buf q = {0};

		oauth_scopes_authorize(&c->ep, consent_provider(c), c->upload_sessions, &scope);

		http_form_add(&q, "client_id", c->client_id);
		http_form_add(&q, "response_type", "code");
		http_form_add(&q, "redirect_uri", redirect.data);
		http_form_add(&q, "response_mode", "query");
		http_form_add(&q, "scope", scope.data);
		http_form_add(&q, "state", state.data);
		http_form_add(&q, "code_challenge", challenge);
		http_form_add(&q, "code_challenge_method", "S256");
		if (c->sender)
			http_form_add(&q, "login_hint", c->sender);
		mb_buf_reset(url);
		oauth_endpoint_url(&c->ep, c->tenant, "authorize", url);
		mb_buf_printf(url, "?%s", q.data);
		mb_buf_release(&q);
		snprintf(state_out, state_len, "%s", state.data);
	}
	mb_buf_release(&state);
	mb_buf_release(&redirect);
	mb_buf_release(&scope);
	return rc;
}

void
oauth_code_form(const struct oauth_conn *c, const char *code, const char *verifier,
                const char *redirect_uri, struct mb_buf *form, enum oauth_resource *r)
{
	struct mb_buf scope = {0};

	*r = first_resource(c);
	oauth_scopes_token(&c->ep, c->provider, c->auth, *r, c->upload_sessions, &scope);
	/* openid + profile too, so the id_token names the account */
	mb_buf_puts(&scope, " openid profile");
	http_form_add(form, "client_id", c->client_id);
	http_form_add(form, "grant_type", "authorization_code");
	http_form_add(form, "code", code);
	http_form_add(form, "redirect_uri", redirect_uri);
	http_form_add(form, "code_verifier", verifier);
	http_form_add(form, "scope", scope.data);
	if (is_confidential(c))
		http_form_add(form, "client_secret", c->client_secret);
	mb_buf_release(&scope);
}

int
oauth_code_redeem(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                  const char *code, const char *verifier, const char *redirect_uri, char *account,
                  size_t account_len, int64_t *expires_in, struct oauth_explain *ex,
                  struct mb_err *err)
{
	struct mb_buf form = {0};
	struct oauth_token_resp t;
	enum oauth_resource r;
	int rc;

	oauth_code_form(c, code, verifier, redirect_uri, &form, &r);
	rc = token_request(c, &form, &t, ex, err);
	mb_buf_wipe(&form);
	if (rc == 0) {
		rc = oauth_tokens_save(c, st, key, r, &t, err);
		snprintf(account, account_len, "%s", t.account ? t.account : "");
		*expires_in = t.expires_in;
	}
	oauth_token_resp_release(&t);
	if (rc == 0)
		rc = mint_needed(c, st, key, r, ex, err);
	return rc;
}

static int
client_credentials(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                   FILE *out, struct oauth_explain *ex, struct mb_err *err)
{
	for (int r = 0; r < OAUTH_RES_COUNT; r++) {
		struct mb_buf form = {0}, scope = {0};
		struct oauth_token_resp t;
		int rc;

		if (!oauth_provider_needs(c->provider, (enum oauth_resource)r))
			continue;
		oauth_scopes_token(&c->ep, c->provider, c->auth, (enum oauth_resource)r,
		                   c->upload_sessions, &scope);
		http_form_add(&form, "client_id", c->client_id);
		http_form_add(&form, "grant_type", "client_credentials");
		http_form_add(&form, "scope", scope.data);
		http_form_add(&form, "client_secret", c->client_secret);
		rc = token_request(c, &form, &t, ex, err);
		mb_buf_wipe(&form);
		mb_buf_release(&scope);
		if (rc == 0)
			rc = oauth_tokens_save(c, st, key, (enum oauth_resource)r, &t, err);
		if (rc == 0 && out)
			fprintf(out, "Got an app-only %s token, valid for %lld min.\n",
			        oauth_resource_name((enum oauth_resource)r),
			        (long long)(t.expires_in / 60));
		oauth_token_resp_release(&t);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* invalid_client AADSTS7000218: the client secret was expected */
static bool
wants_secret(const struct http_response *resp)
{
	struct oauth_error oe;

	if (resp->status == 200 ||
	    oauth_error_parse(resp->body, resp->body_len, (int)resp->status, &oe) < 0)
		return false;
	for (int i = 0; i < oe.ncodes; i++)
		if (oe.codes[i] == 7000218)
			return true;
	return false;
}

/* ---- the device flow ---- */

#define DEVICE_GRANT "urn:ietf:params:oauth:grant-type:device_code"

void
oauth_device_code_request(const struct oauth_conn *c, const struct oauth_device *dev,
                          struct mb_buf *url, struct mb_buf *form)
{
	struct mb_buf scope = {0};

	oauth_scopes_authorize(&c->ep, consent_provider(c), c->upload_sessions, &scope);
	http_form_add(form, "client_id", c->client_id);
	http_form_add(form, "scope", scope.data);
	if (dev->with_secret)
		http_form_add(form, "client_secret", c->client_secret);
	oauth_endpoint_url(&c->ep, c->tenant, "devicecode", url);
	mb_buf_release(&scope);
}

int
oauth_device_code_answer(const struct oauth_conn *c, struct oauth_device *dev, long status,
                         const char *body, size_t len, struct oauth_explain *ex, struct mb_err *err)
{
	struct http_response resp = {
	    .result = HTTP_OK, .status = status, .body = body, .body_len = len};

	/* The device flow is a public-client flow: Entra wants no secret when the app allows
	 * public client flows (AADSTS700025 otherwise). A server that insists on the secret
	 * (AADSTS7000218) gets it, once. */
	if (!dev->with_secret && c->client_secret && wants_secret(&resp)) {
		dev->with_secret = true;
		return 1;
	}
	if (status != 200) {
		explain_response(c, &resp, ex, err);
		return -1;
	}
	if (oauth_device_resp_parse(body, len, &dev->d, err) < 0)
		return -1;
	dev->interval_s = dev->d.interval > 0 ? dev->d.interval : 5;
	dev->deadline_ms = mb_mono_ms() + dev->d.expires_in * 1000;
	return 0;
}

void
oauth_device_poll_request(const struct oauth_conn *c, const struct oauth_device *dev,
                          struct mb_buf *url, struct mb_buf *form)
{
	http_form_add(form, "grant_type", DEVICE_GRANT);
	http_form_add(form, "client_id", c->client_id);
	http_form_add(form, "device_code", dev->d.device_code);
	if (dev->with_secret)
		http_form_add(form, "client_secret", c->client_secret);
	oauth_endpoint_url(&c->ep, c->tenant, "token", url);
}

/* Whether the code expires before the next poll could be answered. */
static enum oauth_device_poll
device_wait(const struct oauth_device *dev, struct mb_err *err)
{
	if (mb_mono_ms() + dev->interval_s * 1000 <= dev->deadline_ms + 1000)
		return OAUTH_DEVICE_PENDING;
	mb_err_set(err, MB_ETEMP,
	           "the code expired before sign-in finished (after %lld s); start the sign-in "
	           "again",
	           (long long)dev->d.expires_in);
	return OAUTH_DEVICE_EXPIRED;
}

static enum oauth_device_poll
device_signed_in(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                 struct oauth_device *dev, const char *body, size_t len, struct mb_err *err)
{
	struct oauth_token_resp t;
	int rc = oauth_token_resp_parse(body, len, &t, err);

	/* the authorize scopes list Graph first: that is the token's audience, whatever the
	 * provider needs */
	if (rc == 0)
		rc = oauth_tokens_save(c, st, key, OAUTH_RES_GRAPH, &t, err);
	if (rc == 0) {
		snprintf(dev->account, sizeof(dev->account), "%s", t.account ? t.account : "");
		dev->expires_in = t.expires_in;
	}
	oauth_token_resp_release(&t);
	return rc == 0 ? OAUTH_DEVICE_DONE : OAUTH_DEVICE_FAILED;
}

enum oauth_device_poll
oauth_device_poll_answer(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                         struct oauth_device *dev, long status, const char *body, size_t len,
                         struct oauth_explain *ex, struct mb_err *err)
{
	struct http_response resp = {
	    .result = HTTP_OK, .status = status, .body = body, .body_len = len};
	struct oauth_error oe;
	struct oauth_explain e;

	if (status == 0) /* a network blip while polling: keep polling until the code expires */
		return device_wait(dev, err);
	if (status == 200)
		return device_signed_in(c, st, key, dev, body, len, err);
	oauth_error_parse(body, len, (int)status, &oe);
	if (strcmp(oe.error, "authorization_pending") == 0)
		return device_wait(dev, err);
	if (strcmp(oe.error, "slow_down") == 0) {
		dev->interval_s += 5;
		return device_wait(dev, err);
	}
	oauth_error_explain(&oe, &e);
	if (ex)
		*ex = e;
	if (strcmp(oe.error, "expired_token") == 0) {
		mb_err_set(err, MB_ETEMP,
		           "the code expired before sign-in finished; start the sign-in again");
		return OAUTH_DEVICE_EXPIRED;
	}
	if (strcmp(oe.error, "authorization_declined") == 0) {
		mb_err_set(err, MB_EINVAL, "sign-in was declined: %s", e.fix);
		return OAUTH_DEVICE_DECLINED;
	}
	explain_response(c, &resp, ex, err);
	return OAUTH_DEVICE_FAILED;
}

void
oauth_device_release(struct oauth_device *dev)
{
	oauth_device_resp_release(&dev->d);
	memset(dev, 0, sizeof(*dev));
}

/* One request of the device flow, blocking: returns the HTTP status, or 0 when the server
 * could not be reached (err says why). */
static long
device_post(const struct oauth_conn *c, const struct oauth_device *dev, bool poll,
            struct http_response *resp, struct mb_err *err)
{
	struct mb_buf url = {0}, form = {0};
	long status;

	if (poll)
		oauth_device_poll_request(c, dev, &url, &form);
	else
		oauth_device_code_request(c, dev, &url, &form);
	status = post_url(c, url.data, &form, resp, err) < 0 ? 0 : resp->status;
	mb_buf_wipe(&form);
	mb_buf_release(&url);
	return status;
}

/* Steps 1 and 2: the device code, asked again once with the secret if the server wants it. */
static int
device_begin(const struct oauth_conn *c, struct oauth_device *dev, struct oauth_explain *ex,
             struct mb_err *err)
{
	int rc;

	do {
		struct http_response resp;
		long status = device_post(c, dev, false, &resp, err);

		rc = status == 0 ? -1
		                 : oauth_device_code_answer(c, dev, status, resp.body,
		                                            resp.body_len, ex, err);
		http_response_release(&resp);
	} while (rc == 1);
	return rc;
}

int
oauth_device_login(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                   FILE *out, struct oauth_explain *ex, struct mb_err *err)
{
	struct oauth_device dev;
	enum oauth_device_poll p;
	int rc;

	if (c->auth == OAUTH_AUTH_APP_ONLY)
		return client_credentials(c, st, key, out, ex, err);
	memset(&dev, 0, sizeof(dev));
	if (device_begin(c, &dev, ex, err) < 0) {
		oauth_device_release(&dev);
		return -1;
	}
	fprintf(out, "%s\n", dev.d.message ? dev.d.message : "");
	fflush(out);
	p = device_wait(&dev, err);
	while (p == OAUTH_DEVICE_PENDING) {
		struct http_response resp;
		long status;

		sleep((unsigned)dev.interval_s);
		status = device_post(c, &dev, true, &resp, err);
		p = oauth_device_poll_answer(c, st, key, &dev, status, resp.body, resp.body_len, ex,
		                             err);
		http_response_release(&resp);
	}
	rc = p == OAUTH_DEVICE_DONE ? 0 : -1;
	if (rc == 0 && out)
		fprintf(out, "Connected as %s.\n",
		        *dev.account ? dev.account : "(unknown account)");
	if (rc == 0)
		rc = mint_needed(c, st, key, OAUTH_RES_GRAPH, ex, err);
	oauth_device_release(&dev);
	return rc;
}
