/* mailbridge doctor: the checklist run against reality (see doctor.h); the checks. */
#include "doctor.h"

#include <jansson.h>
#include <stdarg.h>
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

#define DAY_MS      (24LL * 3600 * 1000)
#define SKEW_WARN_S 120

/* The guide's checklist items and errors, as the report names them. */
#define CL_APP      "Created app registration in Azure Portal"
#define CL_SECRET   "Added Client Secret (and copied it)"
#define CL_PERMS    "Added Mail.Send and User.Read permissions"
#define CL_CONSENT  "Granted admin consent in Azure; Added admin account as owner (Error 3)"
#define CL_CONFIG   "Configured with Client ID and Secret"
#define CL_AUTH     "Clicked \"Authenticate with Office365\" (signed in as the sender)"
#define CL_TOKEN    "Access token was generated and saved (Error 5)"
#define CL_DEFAULT  "Set correct default connection (Errors 1 and 2)"
#define CL_MODERN   "Verified Modern Authentication is enabled in Exchange"
#define CL_MAILBOX  "Error 2: \"Not Found\""
#define CL_REACH    "Error 1: \"cURL error 28: Operation timed out\""
#define CL_REDIRECT "Part 1, Step 1.3: Redirect URI"
#define CL_UNVERIF  "Error 4: \"Application is unverified\""

struct doc {
	const struct config *cfg;
	struct store *st;
	const struct mb_key *key;
	int64_t timeout_ms;
	struct doctor_report *r;
	struct oauth_conn *oc;
	const struct config_conn *cc; /* NULL for store-made connections */
	/* the loop, for the token manager */
	struct ev_loop *loop;
	struct http_client *http;
	struct oauth_tm *tm;
	/* what the token check learned */
	char *token[OAUTH_RES_COUNT]; /* clear text, wiped at the end */
	struct oauth_explain tok_ex;
	char tok_cause[512];
	bool tok_failed;
	/* the servers' clocks */
	int64_t skew_s;
	bool skew_known;
	char skew_host[128];
};

static struct doctor_item *
add(struct doc *d, const char *id, const char *title, const char *checklist)
{
	struct doctor_report *r = d->r;
	struct doctor_item *it;

	r->items = mb_realloc(r->items, (r->n + 1) * sizeof(*r->items));
	it = &r->items[r->n++];
	memset(it, 0, sizeof(*it));
	it->id = id;
	it->title = title;
	it->checklist = checklist;
	it->status = DOCTOR_UNKNOWN;
	return it;
}

static void set(struct doctor_item *it, enum doctor_status s, const char *fix, const char *fmt, ...)
    MB_PRINTF(4, 5);

/* Sets the outcome; "NAME" in fix becomes the connection's name at print time. */
static void
set(struct doctor_item *it, enum doctor_status s, const char *fix, const char *fmt, ...)
{
	struct mb_buf b = {0};
	va_list ap;

	va_start(ap, fmt);
	mb_buf_vprintf(&b, fmt, ap);
	va_end(ap);
	free(it->evidence);
	free(it->fix);
	it->status = s;
	it->evidence = mb_buf_steal(&b);
	it->fix = fix ? mb_strdup(fix) : NULL;
}

static struct doctor_item *
find(const struct doctor_report *r, const char *id)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->items[i].id, id) == 0)
			return &r->items[i];
	return NULL;
}

static char *
default_connection(const struct config *cfg, struct store *st)
{
	char *v = NULL;

	for (size_t i = 0; i < cfg->nconns; i++)
		if (cfg->conns[i].is_default)
			return mb_strdup(cfg->conns[i].name);
	if (store_setting_get(st, "default_connection", &v, NULL) < 0)
		return NULL;
	return v;
}

struct names {
	char **v;
	size_t n;
};

static int
collect(void *arg, const struct store_conn *c)
{
	struct names *ns = arg;

	ns->v = mb_realloc(ns->v, (ns->n + 1) * sizeof(char *));
	ns->v[ns->n++] = mb_strdup(c->name);
	return 0;
}

static void
names_free(struct names *ns)
{
	for (size_t i = 0; i < ns->n; i++)
		free(ns->v[i]);
	free(ns->v);
}

/* The host[:port] of a URL, for messages. */
static void
url_host(const char *url, char *out, size_t outlen)
{
	const char *p = strstr(url, "://");
	size_t n;

	p = p ? p + 3 : url;
	n = strcspn(p, "/?#");
	snprintf(out, outlen, "%.*s", (int)n, p);
}

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

/* ---- the checks ---- */

static void
check_config(struct doc *d, const char *name, const char *load_error)
{
	struct doctor_item *it = add(d, "config", "configuration complete", CL_CONFIG);
	struct oauth_conn *c = d->oc;

	if (c == NULL) {
		set(it, DOCTOR_FAIL,
		    "fix the connection's settings: mailbridge connection show NAME (or its "
		    "[connection] section), then run mailbridge doctor again",
		    "connection %s cannot be used: %s", name, load_error);
		return;
	}
	if (c->provider == OAUTH_PROVIDER_SMTP) {
		set(it, DOCTOR_PASS, NULL,
		    "plain SMTP connection (provider smtp) to %s, sender %s: no Microsoft sign-in "
		    "involved",
		    c->ep.smtp, c->sender ? c->sender : "(none)");
		return;
	}
	if (c->sender == NULL || strchr(c->sender, '@') == NULL) {
		set(it, DOCTOR_FAIL, "set sender = the mailbox mail is sent from (user@domain)",
		    "sender is missing or not an address");
		return;
	}
	if (strcmp(c->tenant, "organizations") == 0 || strcmp(c->tenant, "common") == 0) {
		set(it, DOCTOR_WARN,
		    "set tenant = the Directory (tenant) ID from App registrations → your app → "
		    "Overview: a single-tenant app cannot sign in through /organizations",
		    "provider %s, auth %s, client_id %s, tenant '%s' (not a tenant ID), sender %s",
		    oauth_provider_name(c->provider), oauth_auth_name(c->auth), c->client_id,
		    c->tenant, c->sender);
		return;
	}
	if (c->client_secret)
		set(it, DOCTOR_PASS, NULL,
		    "provider %s, auth %s, client_id %s, tenant %s, sender %s, client secret %s",
		    oauth_provider_name(c->provider), oauth_auth_name(c->auth), c->client_id,
		    c->tenant, c->sender, c->secret_fp);
	else
		set(it, DOCTOR_PASS, NULL,
		    "provider %s, auth %s, client_id %s, tenant %s, sender %s, no client secret "
		    "(a public client: device-code sign-in needs \"Allow public client flows\")",
		    oauth_provider_name(c->provider), oauth_auth_name(c->auth), c->client_id,
		    c->tenant, c->sender);
}

static void
check_secret_expiry(struct doc *d)
{
	struct doctor_item *it;
	struct store_conn *sc;
	int64_t now = mb_now_ms(), left;
	char date[64];

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = add(d, "secret_expiry", "client secret not expiring", CL_SECRET);
	if (d->oc->client_secret == NULL) {
		set(it, DOCTOR_PASS, NULL, "no client secret is used, so none can expire");
		return;
	}
	sc = store_conn_get(d->st, d->oc->name, NULL);
	if (sc == NULL || sc->secret_expires_ms <= 0) {
		set(it, DOCTOR_UNKNOWN,
		    "look up the secret's expiry in App registrations → your app → Certificates & "
		    "secrets",
		    "can't tell: mailbridge does not know when secret %s expires",
		    d->oc->secret_fp);
		store_conn_free(sc);
		return;
	}
	mb_iso_date(sc->secret_expires_ms, date, sizeof(date));
	left = sc->secret_expires_ms - now;
	if (left <= 0)
		set(it, DOCTOR_FAIL,
		    "add a new client secret (App registrations → your app → Certificates & "
		    "secrets → New client secret), put its Value into client_secret_file, then "
		    "delete the old one",
		    "secret %s expired on %s", d->oc->secret_fp, date);
	else if (left < 30 * DAY_MS)
		set(it, DOCTOR_WARN,
		    "add a new client secret before then (App registrations → your app → "
		    "Certificates & secrets → New client secret) and put its Value into "
		    "client_secret_file",
		    "secret %s expires on %s, in %lld days", d->oc->secret_fp, date,
		    (long long)(left / DAY_MS));
	else
		set(it, DOCTOR_PASS, NULL, "secret %s expires on %s, in %lld days",
		    d->oc->secret_fp, date, (long long)(left / DAY_MS));
	store_conn_free(sc);
}

static bool
consent_error(const struct oauth_explain *ex)
{
	return ex->aadsts == 65001 || ex->aadsts == 90094 || ex->aadsts == 90008 ||
	       ex->aadsts == 900941 || strstr(ex->cause, "consent") != NULL;
}

static void
check_token(struct doc *d)
{
	struct doctor_item *it;
	struct mb_buf ev = {0};

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = add(d, "token", "a token is held and refreshable", CL_TOKEN);
	{
		const struct doctor_item *login = find(d->r, "reach_login");
		if (login && login->status == DOCTOR_FAIL) {
			d->tok_failed = true;
			d->tok_ex = (struct oauth_explain){OAUTH_CLASS_TRANSIENT, 0,
			                                   "the login host is unreachable", ""};
			set(it, DOCTOR_FAIL, login->fix,
			    "can't refresh: the login host is unreachable (see above)");
			return;
		}
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
			set(it, DOCTOR_FAIL, d->tok_ex.fix, "a forced %s for %s failed (%s): %s",
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
	set(it, DOCTOR_PASS, NULL,
	    "a forced %s worked: %s. An expired access token needs no action (the guide's "
	    "Error 5): they last about 60-90 minutes and mailbridge refreshes them itself",
	    d->oc->auth == OAUTH_AUTH_APP_ONLY ? "client-credentials token request" : "refresh",
	    ev.data ? ev.data : "");
	mb_buf_release(&ev);
}

static void
check_scopes(struct doc *d)
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
	it = add(d, "scopes", "granted permissions cover the provider", CL_PERMS);
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
		set(it, DOCTOR_UNKNOWN, NULL,
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
		set(it, DOCTOR_UNKNOWN,
		    "check App registrations → your app → API permissions (with admin consent)",
		    "can't tell: %s are not known", from);
		return;
	}
	for (size_t i = 0; i < nneed; i++)
		if (!has_scope(scopes, need[i]))
			mb_buf_printf(&missing, "%s%s", missing.len ? ", " : "", need[i]);
	if (missing.len)
		set(it, DOCTOR_FAIL,
		    "add the missing permissions under App registrations → your app → API "
		    "permissions, click Grant admin consent, then run `mailbridge auth login NAME` "
		    "(delegated) so the token carries them",
		    "%s (%s) lack %s", from, scopes[0] ? scopes : "none", missing.data);
	else
		set(it, DOCTOR_PASS, NULL, "%s: %s", from, scopes);
	free(claims_text);
	free(scopes);
	mb_buf_release(&missing);
}

static void
check_consent(struct doc *d)
{
	struct doctor_item *it, *sc;

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = add(d, "consent", "admin consent granted, owners present", CL_CONSENT);
	sc = find(d->r, "scopes");
	if (d->tok_failed && consent_error(&d->tok_ex)) {
		set(it, DOCTOR_FAIL, d->tok_ex.fix,
		    "Microsoft refused the token for want of consent (%s%ld): \"SMTP needs "
		    "permission to access resources\" in the guide's words",
		    d->tok_ex.aadsts ? "AADSTS" : "code ", d->tok_ex.aadsts);
		return;
	}
	if (!d->tok_failed && sc && sc->status == DOCTOR_PASS) {
		set(it, DOCTOR_PASS, NULL,
		    "the token carries the permissions, so consent is in place; owners: can't tell "
		    "without an admin sign-in (add the admin and the sender under App "
		    "registrations "
		    "→ your app → Owners if not done)");
		return;
	}
	set(it, DOCTOR_UNKNOWN,
	    "check App registrations → your app → API permissions (Grant admin consent) and "
	    "Owners",
	    "can't tell: the token check did not get far enough");
}

/* GET {graph}/v1.0/me (delegated) and compare with the sender. */
static void
check_account(struct doc *d)
{
	struct doctor_item *it;
	struct oauth_conn *c = d->oc;

	if (c == NULL || c->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = add(d, "account", "signed-in account is the sender", CL_AUTH);
	if (c->auth == OAUTH_AUTH_APP_ONLY) {
		set(it, DOCTOR_UNKNOWN, NULL,
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
			set(it, DOCTOR_UNKNOWN, "sign in as the sender: mailbridge auth login NAME",
			    "can't tell: no signed-in account is recorded");
		else if (strcasecmp(acct, c->sender) == 0)
			set(it, DOCTOR_PASS, NULL, "signed in as %s, the sender", acct);
		else
			set(it, DOCTOR_WARN,
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
		set(it, DOCTOR_UNKNOWN, NULL, "can't tell: no Graph token (see the token item)");
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
			set(it, DOCTOR_UNKNOWN, NULL, "can't tell: GET /v1.0/me got no answer: %s",
			    err.msg);
		} else if (resp.status != 200) {
			char code[128], msg[256];
			deliver_graph_error(resp.body, resp.body_len, code, sizeof(code), msg,
			                    sizeof(msg));
			set(it, DOCTOR_UNKNOWN,
			    "User.Read lets mailbridge read who signed in: add it under API "
			    "permissions",
			    "can't tell: GET /v1.0/me answered %ld %s %s", resp.status, code, msg);
		} else {
			json_t *j = json_loadb(resp.body, resp.body_len, 0, NULL);
			const char *mail = json_string_value(json_object_get(j, "mail"));
			const char *upn =
			    json_string_value(json_object_get(j, "userPrincipalName"));

			if ((mail && strcasecmp(mail, c->sender) == 0) ||
			    (upn && strcasecmp(upn, c->sender) == 0))
				set(it, DOCTOR_PASS, NULL,
				    "GET /v1.0/me: signed in as %s, the sender", upn ? upn : mail);
			else
				set(it, DOCTOR_WARN,
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

/* POST sendMail with no recipients: Graph checks the mailbox before the message, so a 400
 * ErrorInvalidRecipients proves the mailbox takes Graph mail requests, and nothing is sent. */
static void
check_mailbox(struct doc *d)
{
	static const char body[] = "{\"message\":{\"subject\":\"mailbridge doctor probe (no "
	                           "recipients: never sent)\"},\"saveToSentItems\":false}";
	static const char *const hdrs[] = {"Content-Type: application/json",
	                                   "Accept: application/json", NULL};
	struct doctor_item *it;
	struct oauth_conn *c = d->oc;
	struct mb_buf url = {0};
	struct http_request req = {
	    .method = "POST", .headers = hdrs, .body = body, .body_len = sizeof(body) - 1};
	struct http_response resp = {0};
	struct mb_err err = {0};
	struct deliver_outcome o;
	char code[128] = "", msg[256] = "", path[400];

	if (c == NULL || c->provider != OAUTH_PROVIDER_GRAPH)
		return;
	it = add(d, "mailbox", "mailbox enabled for Graph", CL_MAILBOX);
	if (d->token[OAUTH_RES_GRAPH] == NULL) {
		set(it, DOCTOR_UNKNOWN, NULL, "can't tell: no Graph token (see the token item)");
		return;
	}
	if (c->auth == OAUTH_AUTH_APP_ONLY) {
		struct mb_buf enc = {0};
		http_url_encode(&enc, c->sender);
		snprintf(path, sizeof(path), "/v1.0/users/%s/sendMail", enc.data);
		mb_buf_release(&enc);
	} else {
		snprintf(path, sizeof(path), "/v1.0/me/sendMail");
	}
	mb_buf_printf(&url, "%s%s", c->ep.graph, path);
	req.url = url.data;
	req.timeout_ms = d->timeout_ms;
	req.ca_file = c->ca_file;
	req.bearer = d->token[OAUTH_RES_GRAPH];
	if (http_request_sync(&req, &resp, &err) < 0) {
		deliver_classify_graph(0, NULL, NULL, -1, resp.error ? resp.error : err.msg,
		                       resp.timed_out, &o);
		set(it, DOCTOR_FAIL, o.fix, "POST %s: %s%s: %s", path,
		    resp.timed_out ? "no answer within the timeout, " : "",
		    resp.error ? resp.error : err.msg, o.cause);
		goto out;
	}
	deliver_graph_error(resp.body, resp.body_len, code, sizeof(code), msg, sizeof(msg));
	if (resp.status == 400 && strstr(code, "Recipient")) {
		set(it, DOCTOR_PASS, NULL,
		    "POST %s without recipients answered 400 %s: the mailbox takes Graph mail "
		    "requests (nothing was sent)",
		    path, code);
	} else if (resp.status >= 200 && resp.status < 300) {
		set(it, DOCTOR_WARN, NULL,
		    "POST %s without recipients answered %ld: the mailbox takes Graph mail "
		    "requests",
		    path, resp.status);
	} else {
		deliver_classify_graph(resp.status, code[0] ? code : NULL, msg, resp.retry_after_s,
		                       NULL, false, &o);
		set(it, DOCTOR_FAIL, o.fix, "POST %s answered %ld %s \"%s\": %s", path, resp.status,
		    code, msg, o.cause);
	}
out:
	http_response_release(&resp);
	mb_buf_release(&url);
}

static void
check_smtp_auth(struct doc *d)
{
	struct doctor_item *it;
	struct oauth_conn *c = d->oc;
	struct http_probe_result pr;
	struct deliver_outcome o;
	const char *user;
	char *fix;

	if (c == NULL || c->provider != OAUTH_PROVIDER_MSSMTP)
		return;
	it = add(d, "smtp_auth", "SMTP AUTH enabled for the mailbox", CL_MODERN);
	if (d->token[OAUTH_RES_OUTLOOK] == NULL) {
		set(it, DOCTOR_UNKNOWN, NULL,
		    "can't tell: no Exchange Online token (see the token item)");
		return;
	}
	user = d->cc && d->cc->username ? d->cc->username : c->sender;
	http_smtp_probe_sync(c->ep.smtp, true, user, d->token[OAUTH_RES_OUTLOOK], c->ca_file,
	                     d->timeout_ms, &pr);
	if (pr.result != HTTP_OK) {
		deliver_classify_smtp(0, NULL, NULL, "connect", pr.error, pr.timed_out, &o);
		set(it, DOCTOR_FAIL, o.fix, "%s: %s: %s", c->ep.smtp, pr.error, o.cause);
		return;
	}
	if (pr.status == 235) {
		set(it, DOCTOR_PASS, NULL,
		    "%s: AUTH XOAUTH2 as %s accepted (235 %s %s); QUIT before MAIL FROM, nothing "
		    "sent",
		    c->ep.smtp, user, pr.enhanced, pr.text);
		return;
	}
	deliver_classify_smtp((int)pr.status, pr.enhanced[0] ? pr.enhanced : NULL, pr.text, "auth",
	                      NULL, false, &o);
	fix = mb_str_replace(o.fix, "<mailbox>", c->sender);
	set(it, DOCTOR_FAIL, fix, "%s: AUTH XOAUTH2 as %s refused: %ld %s %s: %s", c->ep.smtp, user,
	    pr.status, pr.enhanced, pr.text, o.cause);
	free(fix);
}

static void
note_clock(struct doc *d, const struct http_probe_result *pr, const char *host)
{
	if (pr->date_s <= 0 || d->skew_known)
		return;
	d->skew_known = true;
	d->skew_s = pr->local_s - pr->date_s;
	snprintf(d->skew_host, sizeof(d->skew_host), "%s", host);
}

static void
reach_http(struct doc *d, const char *id, const char *title, const char *what, const char *url)
{
	struct doctor_item *it = add(d, id, title, CL_REACH);
	struct http_probe_result pr;
	char host[128], fix[600];

	url_host(url, host, sizeof(host));
	http_probe_sync("GET", url, d->oc->ca_file, d->timeout_ms, &pr);
	if (pr.result == HTTP_OK) {
		note_clock(d, &pr, host);
		set(it, DOCTOR_PASS, NULL, "%s (%s) answered HTTP %ld in %lld ms over valid TLS",
		    host, what, pr.status, (long long)pr.elapsed_ms);
		return;
	}
	if (pr.timed_out)
		snprintf(
		    fix, sizeof(fix),
		    "the network path to %s is blocked or slow: check DNS, the firewall "
		    "(outbound 443) and any proxy. The guide's Error 1 fix applies too: make "
		    "sure the default connection is your Microsoft connection (see the default "
		    "connection item)",
		    host);
	else if (pr.tls_error)
		snprintf(fix, sizeof(fix),
		         "the TLS certificate of %s was not accepted: a TLS-inspecting proxy needs "
		         "its CA in ca_file; check the system clock and CA bundle",
		         host);
	else
		snprintf(
		    fix, sizeof(fix),
		    "mailbridge cannot connect to %s: check DNS, the firewall (outbound 443) and "
		    "any proxy",
		    host);
	set(it, DOCTOR_FAIL, fix, "%s (%s): %s%s", host, what,
	    pr.timed_out ? "no answer within the timeout — " : "", pr.error);
}

static void
check_reach(struct doc *d)
{
	struct oauth_conn *c = d->oc;
	struct mb_buf url = {0};

	if (c == NULL)
		return;
	if (c->provider != OAUTH_PROVIDER_SMTP) {
		struct mb_buf enc = {0};
		http_url_encode(&enc, c->tenant);
		mb_buf_printf(&url, "%s/%s/v2.0/.well-known/openid-configuration", c->ep.login,
		              enc.data);
		mb_buf_release(&enc);
		reach_http(d, "reach_login", "login host reachable", "sign-in", url.data);
		mb_buf_reset(&url);
	}
	if (c->provider == OAUTH_PROVIDER_GRAPH) {
		mb_buf_printf(&url, "%s/v1.0/", c->ep.graph);
		reach_http(d, "reach_graph", "Graph host reachable", "Microsoft Graph", url.data);
	}
	if (c->provider != OAUTH_PROVIDER_GRAPH) {
		struct doctor_item *it = add(d, "reach_smtp", "SMTP host reachable", CL_REACH);
		struct http_probe_result pr;
		bool tls = c->provider != OAUTH_PROVIDER_SMTP ||
		           (d->cc == NULL || d->cc->tls == NULL || strcmp(d->cc->tls, "none") != 0);

		http_smtp_probe_sync(c->ep.smtp, tls, NULL, NULL, c->ca_file, d->timeout_ms, &pr);
		if (pr.result == HTTP_OK && pr.status < 400)
			set(it, DOCTOR_PASS, NULL, "%s answered (%ld)%s in %lld ms", c->ep.smtp,
			    pr.status, tls ? " and STARTTLS worked with a valid certificate" : "",
			    (long long)pr.elapsed_ms);
		else if (pr.result == HTTP_OK)
			set(it, DOCTOR_FAIL,
			    "check smtp_url and that the server accepts connections",
			    "%s refused: %ld %s %s", c->ep.smtp, pr.status, pr.enhanced, pr.text);
		else
			set(it, DOCTOR_FAIL,
			    pr.timed_out ? "the network path to the SMTP host is blocked or slow: "
			                   "check DNS, the firewall (outbound 587) and any proxy"
			    : pr.tls_error ? "the SMTP server's TLS certificate was not accepted: "
			                     "check ca_file and the system clock"
			                   : "check smtp_url, DNS and the firewall (outbound 587)",
			    "%s: %s%s", c->ep.smtp,
			    pr.timed_out ? "no answer within the timeout — " : "", pr.error);
	}
	mb_buf_release(&url);
}

static void
check_clock(struct doc *d)
{
	struct doctor_item *it;

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = add(d, "clock", "clock not skewed",
	         "tokens are time-limited: a skewed clock breaks them");
	if (!d->skew_known)
		set(it, DOCTOR_UNKNOWN, "check that NTP runs (timedatectl)",
		    "can't tell: no server answered with a Date header");
	else if (d->skew_s > SKEW_WARN_S || d->skew_s < -SKEW_WARN_S)
		set(it, DOCTOR_WARN,
		    "synchronise the clock (timedatectl set-ntp true; chrony or systemd-timesyncd)",
		    "our clock is %lld s %s %s's",
		    (long long)(d->skew_s < 0 ? -d->skew_s : d->skew_s),
		    d->skew_s < 0 ? "behind" : "ahead of", d->skew_host);
	else
		set(it, DOCTOR_PASS, NULL, "within %lld s of %s's Date header",
		    (long long)(d->skew_s < 0 ? -d->skew_s : d->skew_s), d->skew_host);
}

static void
check_redirect(struct doc *d)
{
	struct doctor_item *it;
	const char *pu = d->cfg->server.public_url;

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = add(d, "redirect_uri", "redirect URI registered", CL_REDIRECT);
	if (d->oc->auth == OAUTH_AUTH_APP_ONLY) {
		set(it, DOCTOR_PASS, NULL, "app-only connections use no redirect URI");
		return;
	}
	if (pu == NULL || *pu == '\0') {
		set(it, DOCTOR_UNKNOWN,
		    "set public_url in [server] to use the browser sign-in; device-code sign-in "
		    "(mailbridge auth login NAME --device) needs no redirect URI",
		    "can't tell: public_url is not set, so there is no redirect URI to check");
		return;
	}
	{
		size_t n = strlen(pu);
		char fix[800];

		while (n > 0 && pu[n - 1] == '/')
			n--;
		snprintf(
		    fix, sizeof(fix),
		    "check that App registrations → your app (client_id %s) → Authentication → "
		    "Web → Redirect URIs lists exactly %.*s/oauth/callback",
		    d->oc->client_id, (int)n, pu);
		set(it, DOCTOR_UNKNOWN, fix,
		    "can't tell without an admin sign-in: the browser sign-in uses "
		    "%.*s/oauth/callback",
		    (int)n, pu);
	}
}

static void
check_unverified(struct doc *d)
{
	struct doctor_item *it;
	const struct oauth_explain *ex = oauth_explain_unverified();

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = add(d, "unverified", "\"Application is unverified\"", CL_UNVERIF);
	set(it, DOCTOR_INFO, NULL, "%s %s", ex->cause, ex->fix);
}

static void
check_default(struct doc *d, const char *dflt, bool dflt_exists, const char *dflt_provider)
{
	struct doctor_item *it =
	    add(d, "default", "a default connection exists and works", CL_DEFAULT);
	static const char fix_none[] =
	    "make your Microsoft connection the default: mailbridge connection default NAME (or "
	    "default = yes in its [connection] section) — the guide's Errors 1 and 2 (Default "
	    "Connection)";

	if (dflt == NULL) {
		set(it, DOCTOR_FAIL, fix_none,
		    "no default connection is set: mail whose From matches no connection has "
		    "nowhere "
		    "to go (what the guide's Error 1, \"cURL error 28\", and Error 2, \"Not "
		    "Found\", "
		    "come from)");
		return;
	}
	if (!dflt_exists) {
		set(it, DOCTOR_FAIL, fix_none, "the default connection '%s' does not exist", dflt);
		return;
	}
	if (d->oc && strcmp(dflt, d->oc->name) != 0) {
		if (dflt_provider && strcmp(dflt_provider, "smtp") == 0 &&
		    d->oc->provider != OAUTH_PROVIDER_SMTP)
			set(it, DOCTOR_WARN, fix_none,
			    "the default connection is '%s', a plain SMTP server, not this "
			    "Microsoft "
			    "connection: the guide's Error 2 (\"Not Found\": default connection "
			    "set to "
			    "the wrong SMTP server)",
			    dflt);
		else
			set(it, DOCTOR_PASS, NULL,
			    "the default connection is '%s' (%s); this report checks '%s' — run "
			    "mailbridge doctor %s for the default",
			    dflt, dflt_provider ? dflt_provider : "?", d->oc->name, dflt);
		return;
	}
	/* the default is the connection checked: does it work? */
	for (size_t i = 0; i < d->r->n; i++) {
		const struct doctor_item *x = &d->r->items[i];
		if (x->status == DOCTOR_FAIL && x != it) {
			set(it, DOCTOR_FAIL, "fix the failed item above (its own fix line)",
			    "the default connection '%s' exists but does not work: %s failed", dflt,
			    x->title);
			return;
		}
	}
	set(it, DOCTOR_PASS, NULL, "the default connection is '%s' and its checks passed", dflt);
}

struct dflt_find {
	const char *name;
	bool found;
	char *provider;
};

static int
dflt_cb(void *arg, const struct store_conn *c)
{
	struct dflt_find *f = arg;

	if (strcmp(c->name, f->name) == 0) {
		f->found = true;
		f->provider = mb_strdup(c->provider);
		return 1;
	}
	return 0;
}

int
doctor_run(const struct config *cfg, struct store *st, const struct mb_key *key,
           const struct doctor_opts *o, struct doctor_report *out, struct mb_err *err)
{
	struct doc d;
	struct names ns = {0};
	struct dflt_find df = {0};
	char *dflt = default_connection(cfg, st);
	const char *name = o->connection;
	char load_error[512] = "";
	struct mb_err lerr = {0};

	memset(out, 0, sizeof(*out));
	memset(&d, 0, sizeof(d));
	d.cfg = cfg;
	d.st = st;
	d.key = key;
	d.r = out;
	d.timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 10000;
	if (store_conn_list(st, collect, &ns, err) < 0) {
		free(dflt);
		return -1;
	}
	if (dflt) {
		df.name = dflt;
		store_conn_list(st, dflt_cb, &df, NULL);
	}
	if (name == NULL)
		name = dflt && df.found ? dflt : ns.n == 1 ? ns.v[0] : NULL;
	if (name == NULL) {
		struct doctor_item *it = add(&d, "connection", "a connection to check", CL_CONFIG);
		if (ns.n == 0)
			set(it, DOCTOR_FAIL,
			    "add one: mailbridge connection add NAME --provider microsoft-graph "
			    "--sender ADDR --tenant T --client-id ID --client-secret-file F",
			    "no connection is configured");
		else
			set(it, DOCTOR_UNKNOWN, "name one: mailbridge doctor NAME",
			    "%zu connections and no default: which one to check?", ns.n);
		check_default(&d, dflt, df.found, df.provider);
		goto done;
	}
	out->connection = mb_strdup(name);
	d.cc = config_conn_find(cfg, name);
	d.oc = oauth_conn_load(cfg, st, key, name, &lerr);
	if (d.oc == NULL)
		snprintf(load_error, sizeof(load_error), "%s", lerr.msg);
	check_config(&d, name, load_error);
	if (d.oc) {
		check_secret_expiry(&d);
		check_reach(&d);
		check_clock(&d);
		if (d.oc->provider != OAUTH_PROVIDER_SMTP) {
			d.loop = ev_loop_new();
			d.http = http_client_new(d.loop);
			d.tm = oauth_tm_new(d.loop, d.http, cfg, st, key);
			check_token(&d);
			check_scopes(&d);
			check_consent(&d);
			check_account(&d);
			check_mailbox(&d);
			check_smtp_auth(&d);
			check_redirect(&d);
			check_unverified(&d);
		}
	}
	check_default(&d, dflt, df.found, df.provider);
done:
	if (d.http)
		http_client_free(d.http);
	if (d.tm)
		oauth_tm_free(d.tm);
	if (d.loop)
		ev_loop_free(d.loop);
	for (int r = 0; r < OAUTH_RES_COUNT; r++)
		if (d.token[r])
			mb_secret_free(d.token[r]);
	oauth_conn_free(d.oc);
	names_free(&ns);
	free(df.provider);
	free(dflt);
	/* "NAME" in the fixes is the connection's name */
	for (size_t i = 0; i < out->n && out->connection; i++) {
		if (out->items[i].fix && strstr(out->items[i].fix, "NAME")) {
			char *f = mb_str_replace(out->items[i].fix, "NAME", out->connection);
			free(out->items[i].fix);
			out->items[i].fix = f;
		}
	}
	return 0;
}
