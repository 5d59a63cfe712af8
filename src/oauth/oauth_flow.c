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

/* POSTs a form to the token (or devicecode) endpoint. Returns 0 with the body in resp when the
 * server answered (any status); -1 with err on a transport failure. */
static int
post_form(const struct oauth_conn *c, const char *what, const struct mb_buf *form,
          struct http_response *resp, struct mb_err *err)
{
	static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
	                                   "Accept: application/json", NULL};
	struct mb_buf url = {0};
	struct http_request req = {.method = "POST", .headers = hdrs, .timeout_ms = 30000};
	int rc;

	oauth_endpoint_url(&c->ep, c->tenant, what, &url);
	req.url = url.data;
	req.body = form->data;
	req.body_len = form->len;
	req.ca_file = c->ca_file;
	rc = http_request_sync(&req, resp, err);
	if (rc < 0)
		mb_err_set(err, MB_ETEMP, "cannot reach %s: %s", c->ep.login,
		           resp->error ? resp->error : "transport error");
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
	mb_buf_printf(&redirect, "%s/oauth/callback", public_url);
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

int
oauth_device_login(const struct oauth_conn *c, struct store *st, const struct mb_key *key,
                   FILE *out, struct oauth_explain *ex, struct mb_err *err)
{
	struct mb_buf form = {0}, scope = {0};
	struct http_response resp;
	struct oauth_device_resp d;
	int64_t deadline, interval;
	int rc = -1;

	bool with_secret = false;

	if (c->auth == OAUTH_AUTH_APP_ONLY)
		return client_credentials(c, st, key, out, ex, err);
	oauth_scopes_authorize(&c->ep, consent_provider(c), c->upload_sessions, &scope);
again:
	http_form_add(&form, "client_id", c->client_id);
	http_form_add(&form, "scope", scope.data);
	if (with_secret)
		http_form_add(&form, "client_secret", c->client_secret);
	rc = post_form(c, "devicecode", &form, &resp, err);
	mb_buf_wipe(&form);
	if (rc < 0) {
		mb_buf_release(&scope);
		http_response_release(&resp);
		return -1;
	}
	/* The device flow is a public-client flow: Entra wants no secret when the app allows
	 * public client flows (AADSTS700025 otherwise). A server that insists on the secret
	 * (AADSTS7000218) gets it, once. */
	if (!with_secret && c->client_secret && wants_secret(&resp)) {
		with_secret = true;
		http_response_release(&resp);
		goto again;
	}
	mb_buf_release(&scope);
	if (resp.status != 200) {
		explain_response(c, &resp, ex, err);
		http_response_release(&resp);
		return -1;
	}
	rc = oauth_device_resp_parse(resp.body, resp.body_len, &d, err);
	http_response_release(&resp);
	if (rc < 0)
		return -1;
	fprintf(out, "%s\n", d.message ? d.message : "");
	fflush(out);
	deadline = mb_mono_ms() + d.expires_in * 1000;
	interval = d.interval > 0 ? d.interval : 5;
	rc = -1;
	for (;;) {
		struct oauth_token_resp t;
		struct oauth_error oe;
		struct oauth_explain e;

		if (mb_mono_ms() + interval * 1000 > deadline + 1000) {
			mb_err_set(err, MB_ETEMP,
			           "the code expired before sign-in finished (after %lld s); run "
			           "the command again",
			           (long long)d.expires_in);
			break;
		}
		sleep((unsigned)interval);
		http_form_add(&form, "grant_type", "urn:ietf:params:oauth:grant-type:device_code");
		http_form_add(&form, "client_id", c->client_id);
		http_form_add(&form, "device_code", d.device_code);
		if (with_secret)
			http_form_add(&form, "client_secret", c->client_secret);
		if (post_form(c, "token", &form, &resp, err) < 0) {
			/* a network blip while polling: keep polling until the code expires */
			mb_buf_wipe(&form);
			http_response_release(&resp);
			continue;
		}
		mb_buf_wipe(&form);
		if (resp.status == 200) {
			rc = oauth_token_resp_parse(resp.body, resp.body_len, &t, err);
			http_response_release(&resp);
			if (rc == 0) {
				/* the authorize scopes list Graph first: that is the token's
				 * audience, whatever the provider needs */
				rc = oauth_tokens_save(c, st, key, OAUTH_RES_GRAPH, &t, err);
				if (rc == 0 && out)
					fprintf(out, "Connected as %s.\n",
					        t.account ? t.account : "(unknown account)");
			}
			oauth_token_resp_release(&t);
			if (rc == 0)
				rc = mint_needed(c, st, key, OAUTH_RES_GRAPH, ex, err);
			break;
		}
		oauth_error_parse(resp.body, resp.body_len, (int)resp.status, &oe);
		if (strcmp(oe.error, "authorization_pending") == 0) {
			http_response_release(&resp);
			continue;
		}
		if (strcmp(oe.error, "slow_down") == 0) {
			interval += 5;
			http_response_release(&resp);
			continue;
		}
		oauth_error_explain(&oe, &e);
		if (ex)
			*ex = e;
		if (strcmp(oe.error, "expired_token") == 0)
			mb_err_set(err, MB_ETEMP,
			           "the code expired before sign-in finished; run the "
			           "command again");
		else if (strcmp(oe.error, "authorization_declined") == 0)
			mb_err_set(err, MB_EINVAL, "sign-in was declined: %s", e.fix);
		else
			explain_response(c, &resp, ex, err);
		http_response_release(&resp);
		break;
	}
	oauth_device_resp_release(&d);
	return rc;
}
