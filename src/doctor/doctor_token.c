/* mailbridge doctor: the token, the granted permissions, consent and the signed-in account. */
#include "doctor_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "deliver/deliver.h"
#include "deliver/deliver_internal.h"
#include "ev/ev.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

/* ---- tokens, through the token manager on our own loop ---- */

struct tok_wait {
	struct doc *d;
	bool done;
	int status;
	char *token;
};

static void
on_token(void *arg, int status, const char *token, const struct oauth_explain *ex)
{
	struct tok_wait *w = arg;
	struct doc *d = w->d;

	w->done = true;
	w->status = status;
	if (status == 0 && token) {
		w->token = mb_strdup(token);
	} else if (ex) {
		d->tok_ex = *ex;
		snprintf(d->tok_cause, sizeof(d->tok_cause), "%s", ex->cause ? ex->cause : "");
		d->tok_ex.cause = d->tok_cause;
	}
	if (d->loop)
		ev_loop_stop(d->loop);
}

static int
get_token(struct doc *d, enum oauth_resource res, bool force)
{
	struct tok_wait w = {d, false, -1, NULL};

	oauth_tm_get(d->tm, d->oc->name, res, force, on_token, &w);
	if (!w.done)
		ev_loop_run(d->loop);
	if (w.status == 0)
		d->token[res] = w.token;
	return w.status;
}

/* The claims of a JWT access token (NULL if it is not one: Microsoft may make them opaque). */
static json_t *
jwt_claims(const char *token)
{
	const char *a = strchr(token, '.'), *b;
	struct mb_buf s = {0};
	unsigned char *raw;
	size_t len = 0;
	json_t *j = NULL;

	if (a == NULL || (b = strchr(a + 1, '.')) == NULL)
		return NULL;
	for (const char *p = a + 1; p < b; p++)
		mb_buf_append(&s, *p == '-' ? "+" : *p == '_' ? "/" : p, 1);
	while (s.len % 4)
		mb_buf_puts(&s, "=");
	raw = mb_base64_decode(s.data, s.len, &len);
	mb_buf_release(&s);
	if (raw) {
		j = json_loadb((const char *)raw, len, 0, NULL);
		free(raw);
	}
	return j;
}

/* Whether the space-separated list (scopes, possibly resource-qualified) holds want. */
static bool
has_scope(const char *list, const char *want)
{
	const char *p = list;

	while (p && *p) {
		size_t n = strcspn(p, " ");
		const char *s = p, *slash;

		for (slash = p; slash < p + n; slash++)
			if (*slash == '/')
				s = slash + 1;
		if ((size_t)(p + n - s) == strlen(want) && strncasecmp(s, want, strlen(want)) == 0)
			return true;
		p += n;
		while (*p == ' ')
			p++;
	}
	return false;
}

static const char *
res_label(enum oauth_resource r)
{
	return r == OAUTH_RES_GRAPH ? "Microsoft Graph" : "Exchange Online (SMTP)";
}

static bool
consent_error(const struct oauth_explain *ex)
{
	return ex->aadsts == 65001 || ex->aadsts == 90094 || ex->aadsts == 90008 ||
	       ex->aadsts == 900941 || strstr(ex->cause, "consent") != NULL;
}

/* The access token the store holds for res, if it is still valid for a minute: what a running
 * daemon's token manager keeps fresh. *left_ms gets its remaining life. */
static char *
stored_token(struct doc *d, enum oauth_resource res, int64_t *left_ms)
{
	unsigned char *ct = NULL;
	size_t len = 0;
	int64_t expires = 0;
	char aad[300], *tok;

	*left_ms = 0;
	if (store_token_get(d->st, d->oc->name, oauth_resource_name(res), "access", &ct, &len,
	                    &expires, NULL, NULL, NULL, NULL) < 0)
		return NULL;
	oauth_aad_token(d->oc->name, res, "access", aad, sizeof(aad));
	tok = mb_open(d->key, ct, len, aad, NULL);
	free(ct);
	*left_ms = expires - mb_now_ms();
	if (tok && *left_ms < 60000) {
		mb_secret_free(tok);
		return NULL;
	}
	return tok;
}

/* What the daemon's token manager last recorded on the connection, as tok_ex. */
static void
stored_failure(struct doc *d)
{
	struct store_conn *sc = store_conn_get(d->st, d->oc->name, NULL);
	const char *e = sc && sc->last_error ? sc->last_error : NULL;
	const char *a = e ? strstr(e, "AADSTS") : NULL;

	d->tok_failed = true;
	d->tok_ex.cls = OAUTH_CLASS_REAUTHORIZE;
	d->tok_ex.aadsts = a ? strtol(a + 6, NULL, 10) : 0;
	snprintf(d->tok_cause, sizeof(d->tok_cause), "%s",
	         e ? e
	           : "no access token is stored (nobody has signed in, or the daemon has not "
	             "fetched one yet)");
	snprintf(d->tok_fix, sizeof(d->tok_fix), "%s",
	         sc && sc->last_fix ? sc->last_fix
	         : d->oc->auth == OAUTH_AUTH_APP_ONLY
	             ? "check the daemon's log; run mailbridge doctor NAME on the command line "
	               "for a forced token request"
	             : "sign in: mailbridge auth login NAME --device (or the UI's Authenticate "
	               "button)");
	d->tok_ex.cause = d->tok_cause;
	d->tok_ex.fix = d->tok_fix;
	store_conn_free(sc);
}

/* Under the daemon (no_refresh): the stored access tokens, no token request of our own. */
static void
check_token_stored(struct doc *d, struct doctor_item *it)
{
	struct mb_buf ev = {0};

	for (int r = 0; r < OAUTH_RES_COUNT; r++) {
		int64_t left;
		char fp[24];

		if (!oauth_provider_needs(d->oc->provider, (enum oauth_resource)r))
			continue;
		d->token[r] = stored_token(d, (enum oauth_resource)r, &left);
		if (d->token[r] == NULL) {
			stored_failure(d);
			doc_set(it, DOCTOR_FAIL, d->tok_ex.fix,
			        "no valid %s access token is held: %s",
			        res_label((enum oauth_resource)r), d->tok_ex.cause);
			mb_buf_release(&ev);
			return;
		}
		mb_fingerprint(d->token[r], strlen(d->token[r]), fp);
		mb_buf_printf(&ev, "%s%s access token %s, valid for %lld more min",
		              ev.len ? "; " : "", res_label((enum oauth_resource)r), fp,
		              (long long)(left / 60000));
	}
	doc_set(
	    it, DOCTOR_PASS, NULL,
	    "the daemon's token manager holds %s (run under the daemon, doctor does not force a "
	    "refresh of its own: it would race the daemon's refresh-token rotation; "
	    "`mailbridge doctor` on the command line forces one)",
	    ev.data ? ev.data : "");
	mb_buf_release(&ev);
}

void
doc_check_token(struct doc *d)
{
	struct doctor_item *it;
	struct mb_buf ev = {0};

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = doc_add(d, "token", "a token is held and refreshable", CL_TOKEN);
	{
		const struct doctor_item *login = doc_find(d->r, "reach_login");
		if (login && login->status == DOCTOR_FAIL) {
			d->tok_failed = true;
			d->tok_ex = (struct oauth_explain){OAUTH_CLASS_TRANSIENT, 0,
			                                   "the login host is unreachable", ""};
			doc_set(it, DOCTOR_FAIL, login->fix,
			        "can't refresh: the login host is unreachable (see above)");
			return;
		}
	}
	if (d->o->no_refresh) {
		check_token_stored(d, it);
		return;
	}
	for (int r = 0; r < OAUTH_RES_COUNT; r++) {
		char fp[24];

		if (!oauth_provider_needs(d->oc->provider, (enum oauth_resource)r))
			continue;
		if (get_token(d, (enum oauth_resource)r, true) < 0) {
			struct mb_buf why = {0};

			d->tok_failed = true;
			if (d->tok_ex.aadsts)
				mb_buf_printf(&why, "AADSTS%ld: ", d->tok_ex.aadsts);
			mb_buf_puts(&why, d->tok_ex.cause);
			doc_set(
			    it, DOCTOR_FAIL, d->tok_ex.fix, "a forced %s for %s failed (%s): %s",
			    d->oc->auth == OAUTH_AUTH_APP_ONLY ? "client-credentials token request"
			                                       : "refresh",
			    res_label((enum oauth_resource)r), oauth_class_name(d->tok_ex.cls),
			    why.data);
			mb_buf_release(&why);
			mb_buf_release(&ev);
			return;
		}
		mb_fingerprint(d->token[r], strlen(d->token[r]), fp);
		mb_buf_printf(&ev, "%snew %s access token %s", ev.len ? "; " : "",
		              res_label((enum oauth_resource)r), fp);
	}
	doc_set(it, DOCTOR_PASS, NULL,
	        "a forced %s worked: %s. An expired access token needs no action (the guide's "
	        "Error 5): they last about 60-90 minutes and mailbridge refreshes them itself",
	        d->oc->auth == OAUTH_AUTH_APP_ONLY ? "client-credentials token request" : "refresh",
	        ev.data ? ev.data : "");
	mb_buf_release(&ev);
}

void
doc_check_scopes(struct doc *d)
{
	struct doctor_item *it;
	const char *need[3];
	size_t nneed = 0;
	enum oauth_resource res;
	char *scopes = NULL, *claims_text = NULL;
	struct mb_buf missing = {0};
	const char *from;

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = doc_add(d, "scopes", "granted permissions cover the provider", CL_PERMS);
	res = d->oc->provider == OAUTH_PROVIDER_GRAPH ? OAUTH_RES_GRAPH : OAUTH_RES_OUTLOOK;
	if (d->oc->provider == OAUTH_PROVIDER_GRAPH) {
		need[nneed++] = "Mail.Send";
		if (d->oc->auth == OAUTH_AUTH_DELEGATED)
			need[nneed++] = "User.Read";
		if (d->oc->upload_sessions)
			need[nneed++] = "Mail.ReadWrite";
	} else {
		need[nneed++] =
		    d->oc->auth == OAUTH_AUTH_DELEGATED ? "SMTP.Send" : "SMTP.SendAsApp";
	}
	if (d->token[res] == NULL) {
		doc_set(it, DOCTOR_UNKNOWN, NULL,
		        "can't tell: no token could be had (see the token item)");
		return;
	}
	if (d->oc->auth == OAUTH_AUTH_DELEGATED) {
		store_token_get(d->st, d->oc->name, oauth_resource_name(res), "access", NULL, NULL,
		                NULL, &scopes, NULL, NULL, NULL);
		from = "the scopes Microsoft granted";
	} else {
		json_t *c = jwt_claims(d->token[res]), *roles = json_object_get(c, "roles");
		struct mb_buf b = {0};
		size_t i;
		json_t *v;

		json_array_foreach(roles, i, v)
		{
			if (json_is_string(v))
				mb_buf_printf(&b, "%s%s", b.len ? " " : "", json_string_value(v));
		}
		if (json_is_array(roles))
			scopes = mb_buf_steal(&b);
		mb_buf_release(&b);
		json_decref(c);
		from = "the application roles in the access token";
	}
	if (scopes == NULL) {
		doc_set(it, DOCTOR_UNKNOWN,
		        "check App registrations → your app → API permissions (with admin consent)",
		        "can't tell: %s are not known", from);
		return;
	}
	for (size_t i = 0; i < nneed; i++)
		if (!has_scope(scopes, need[i]))
			mb_buf_printf(&missing, "%s%s", missing.len ? ", " : "", need[i]);
	if (missing.len)
		doc_set(
		    it, DOCTOR_FAIL,
		    "add the missing permissions under App registrations → your app → API "
		    "permissions, click Grant admin consent, then run `mailbridge auth login NAME` "
		    "(delegated) so the token carries them",
		    "%s (%s) lack %s", from, scopes[0] ? scopes : "none", missing.data);
	else
		doc_set(it, DOCTOR_PASS, NULL, "%s: %s", from, scopes);
	free(claims_text);
	free(scopes);
	mb_buf_release(&missing);
}

void
doc_check_consent(struct doc *d)
{
	struct doctor_item *it, *sc;

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = doc_add(d, "consent", "admin consent granted, owners present", CL_CONSENT);
	sc = doc_find(d->r, "scopes");
	if (d->tok_failed && consent_error(&d->tok_ex)) {
		doc_set(it, DOCTOR_FAIL, d->tok_ex.fix,
		        "Microsoft refused the token for want of consent (%s%ld): \"SMTP needs "
		        "permission to access resources\" in the guide's words",
		        d->tok_ex.aadsts ? "AADSTS" : "code ", d->tok_ex.aadsts);
		return;
	}
	if (!d->tok_failed && sc && sc->status == DOCTOR_PASS) {
		doc_set(it, DOCTOR_PASS, NULL,
		        "the token carries the permissions, so consent is in place; owners: %s",
		        d->o->admin ? "see the owners item below"
		                    : "can't tell without an admin sign-in (mailbridge doctor "
		                      "--admin; add the admin and the sender under App "
		                      "registrations → your app → Owners if not done)");
		return;
	}
	doc_set(it, DOCTOR_UNKNOWN,
	        "check App registrations → your app → API permissions (Grant admin consent) and "
	        "Owners",
	        "can't tell: the token check did not get far enough");
}

/* GET {graph}/v1.0/me (delegated) and compare with the sender. */
void
doc_check_account(struct doc *d)
{
	struct doctor_item *it;
	struct oauth_conn *c = d->oc;

	if (c == NULL || c->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = doc_add(d, "account", "signed-in account is the sender", CL_AUTH);
	if (c->auth == OAUTH_AUTH_APP_ONLY) {
		doc_set(
		    it, DOCTOR_UNKNOWN, NULL,
		    "can't tell: app-only connections sign in as the app, which may send as any "
		    "mailbox its permissions (and any application access policy) allow; the "
		    "mailbox "
		    "item below probes %s",
		    c->sender);
		return;
	}
	if (c->provider == OAUTH_PROVIDER_MSSMTP) {
		struct store_conn *sc = store_conn_get(d->st, c->name, NULL);
		const char *acct = sc && sc->account ? sc->account : NULL;

		if (acct == NULL)
			doc_set(it, DOCTOR_UNKNOWN,
			        "sign in as the sender: mailbridge auth login NAME",
			        "can't tell: no signed-in account is recorded");
		else if (strcasecmp(acct, c->sender) == 0)
			doc_set(it, DOCTOR_PASS, NULL, "signed in as %s, the sender", acct);
		else
			doc_set(
			    it, DOCTOR_WARN,
			    "sign in as the sender (mailbridge auth login NAME), or give the "
			    "account "
			    "Send As on it (Add-RecipientPermission -Identity <sender> -Trustee "
			    "<account> -AccessRights SendAs)",
			    "signed in as %s but the sender is %s: Exchange refuses unless %s has "
			    "Send "
			    "As on %s",
			    acct, c->sender, acct, c->sender);
		store_conn_free(sc);
		return;
	}
	if (d->token[OAUTH_RES_GRAPH] == NULL) {
		doc_set(it, DOCTOR_UNKNOWN, NULL,
		        "can't tell: no Graph token (see the token item)");
		return;
	}
	{
		struct mb_buf url = {0};
		static const char *const hdrs[] = {"Accept: application/json", NULL};
		struct http_request req = {.method = "GET",
		                           .headers = hdrs,
		                           .timeout_ms = d->timeout_ms,
		                           .ca_file = c->ca_file,
		                           .bearer = d->token[OAUTH_RES_GRAPH]};
		struct http_response resp = {0};
		struct mb_err err = {0};

		mb_buf_printf(&url, "%s/v1.0/me?$select=mail,userPrincipalName", c->ep.graph);
		req.url = url.data;
		if (http_request_sync(&req, &resp, &err) < 0) {
			doc_set(it, DOCTOR_UNKNOWN, NULL,
			        "can't tell: GET /v1.0/me got no answer: %s", err.msg);
		} else if (resp.status != 200) {
			char code[128], msg[256];
			deliver_graph_error(resp.body, resp.body_len, code, sizeof(code), msg,
			                    sizeof(msg));
			doc_set(it, DOCTOR_UNKNOWN,
			        "User.Read lets mailbridge read who signed in: add it under API "
			        "permissions",
			        "can't tell: GET /v1.0/me answered %ld %s %s", resp.status, code,
			        msg);
		} else {
			json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
			const char *mail = json_string_value(json_object_get(j, "mail"));
			const char *upn =
			    json_string_value(json_object_get(j, "userPrincipalName"));

			if ((mail && strcasecmp(mail, c->sender) == 0) ||
			    (upn && strcasecmp(upn, c->sender) == 0))
				doc_set(it, DOCTOR_PASS, NULL,
				        "GET /v1.0/me: signed in as %s, the sender",
				        upn ? upn : mail);
			else
				doc_set(
				    it, DOCTOR_WARN,
				    "sign in as the sender (mailbridge auth login NAME), or give "
				    "the "
				    "account Send As on the sender (Add-RecipientPermission "
				    "-Identity "
				    "<sender> -Trustee <account> -AccessRights SendAs) and the "
				    "Mail.Send.Shared permission",
				    "GET /v1.0/me: signed in as %s (mail %s), but the sender is "
				    "%s: "
				    "Graph refuses unless that account may send as it",
				    upn ? upn : "?", mail ? mail : "none", c->sender);
			json_decref(j);
		}
		http_response_release(&resp);
		mb_buf_release(&url);
	}
}
