/* mailbridge setup microsoft: the app registration through Microsoft Graph (reference §6). */
#include "setup.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "deliver/deliver.h"
#include "deliver/deliver_internal.h"
#include "http/http.h"
#include "setup_graph.h"
#include "store/store.h"

#define GRAPH_APP_ID    SG_GRAPH_APP_ID
#define EXCHANGE_APP_ID SG_EXCHANGE_APP_ID

/* §6.1: who may do what */
#define ROLE_APP   "Application Administrator or Cloud Application Administrator"
#define ROLE_GRANT "Cloud Application Administrator (at least)"
#define ROLE_ROLES "Privileged Role Administrator (or Global Administrator)"
#define ROLE_READ  "Application Administrator or Cloud Application Administrator"

/* a held secret this close to its end is replaced (doctor warns from 30 days on) */
#define SECRET_RENEW_MS (30LL * 24 * 3600 * 1000)

struct ctx {
	const struct config *cfg;
	struct store *st;
	const struct mb_key *key;
	const struct setup_opts *o;
	FILE *out;
	enum oauth_provider prov;
	struct sg g; /* the admin's Graph session: endpoints, token, tenant, last error */
	char admin_id[64];
	char *admin_upn;
	char *sender;
	char *display;
	char graph_sp[64], exo_sp[64];
	struct sg_need needs[SG_MAX_NEEDS];
	size_t nneeds;
	char app_obj[64], client_id[64], sp_id[64];
	bool app_created;
	int failed;
};

static void step(struct ctx *c, const char *name, const char *fmt, ...) MB_PRINTF(3, 4);

static void
step(struct ctx *c, const char *name, const char *fmt, ...)
{
	va_list ap;

	fprintf(c->out, "%-17s ", name);
	va_start(ap, fmt);
	vfprintf(c->out, fmt, ap);
	va_end(ap);
	fputc('\n', c->out);
	fflush(c->out);
}

/* One Graph call with the admin's token (setup_graph.c). */
static long
graph(struct ctx *c, const char *method, const char *path, json_t *body, json_t **out)
{
	return sg_call(&c->g, method, path, body, out);
}

/* Prints the failed step with Graph's words, the cause and fix, and the role it needs. */
static void
fail(struct ctx *c, const char *name, const char *what, const char *role)
{
	struct deliver_outcome oc;

	c->failed++;
	if (c->g.status < 0) {
		step(c, name, "failed: %s: %s could not be reached: %s", what, c->g.ep.graph,
		     c->g.transport ? c->g.transport : "transport error");
		return;
	}
	step(c, name, "failed: %s: HTTP %ld %s: %s", what, c->g.status, c->g.code, c->g.msg);
	if (c->g.status == 403 && strcmp(c->g.code, "Authorization_RequestDenied") == 0) {
		fprintf(c->out,
		        "                  the signed-in admin lacks the directory role or the "
		        "permission for this step\n"
		        "                  fix: sign in as a %s and run setup again\n",
		        role);
		return;
	}
	deliver_classify_graph(c->g.status, c->g.code, c->g.msg, -1, NULL, false, &oc);
	fprintf(c->out, "                  cause: %s\n                  fix: %s\n", oc.cause,
	        oc.fix);
}

#define filter_path sg_filter_path
#define odata_quote sg_odata_quote
#define jstr        sg_jstr
#define parse_iso   sg_parse_iso

/* ---- 1. the admin's device-code sign-in ---- */

static int
admin_sign_in(struct ctx *c)
{
	const char *client = c->o->bootstrap_id ? c->o->bootstrap_id : SETUP_BOOTSTRAP_CLIENT_ID;
	const char *r = c->g.ep.graph_resource;
	struct mb_buf scope = {0};
	struct sg_why why;
	int rc;

	mb_buf_printf(&scope,
	              "openid profile %s/User.Read %s/User.ReadBasic.All "
	              "%s/Application.ReadWrite.All %s/DelegatedPermissionGrant.ReadWrite.All",
	              r, r, r, r);
	if (c->o->app_only)
		mb_buf_printf(&scope, " %s/AppRoleAssignment.ReadWrite.All", r);
	rc = sg_sign_in(&c->g, client, c->o->tenant, scope.data,
	                "An administrator (Application Administrator, Cloud Application "
	                "Administrator or Global Administrator) signs in once:",
	                c->out, &why);
	mb_buf_release(&scope);
	if (rc == 0)
		return 0;
	step(c, "admin sign-in", "failed: %s", why.what);
	if (why.detail[0])
		fprintf(c->out, "                  %s\n", why.detail);
	if (why.cause[0])
		fprintf(c->out, "                  cause: %s\n                  fix: %s\n",
		        why.cause, why.fix);
	return -1;
}

/* ---- 2. who signed in ---- */

static int
who_am_i(struct ctx *c)
{
	json_t *me;

	if (graph(c, "GET", "/v1.0/me?$select=id,userPrincipalName,mail", NULL, &me) != 200) {
		fail(c, "admin", "GET /me", "user with User.Read consented");
		return -1;
	}
	snprintf(c->admin_id, sizeof(c->admin_id), "%s", jstr(me, "id"));
	c->admin_upn = mb_strdup(jstr(me, "userPrincipalName"));
	json_decref(me);
	step(c, "admin", "signed in as %s (tenant %s)", c->admin_upn, c->g.tenant);
	return 0;
}

/* ---- 3. step 0: resource service principals and permission ids ---- */

static int
resolve_resource(struct ctx *c, const char *app_id, char *sp_out, size_t sp_len, bool exchange)
{
	char why[300];
	int rc = sg_resolve(&c->g, app_id, exchange, c->needs, c->nneeds, sp_out, sp_len, why,
	                    sizeof(why));

	if (rc == -1)
		fail(c, "permissions", "look up the resource service principals", ROLE_READ);
	else if (rc < 0) {
		c->failed++;
		step(c, "permissions", "failed: %s", why);
	}
	return rc < 0 ? -1 : 0;
}

static int
resolve_permissions(struct ctx *c)
{
	struct mb_buf b = {0};

	c->nneeds = sg_needs(c->prov, c->o->app_only, SG_NEED_OFFLINE, c->needs);
	if (resolve_resource(c, GRAPH_APP_ID, c->graph_sp, sizeof(c->graph_sp), false) < 0)
		return -1;
	if (c->prov == OAUTH_PROVIDER_MSSMTP &&
	    resolve_resource(c, EXCHANGE_APP_ID, c->exo_sp, sizeof(c->exo_sp), true) < 0)
		return -1;
	for (size_t i = 0; i < c->nneeds; i++)
		mb_buf_printf(&b, "%s%s %s (%s)", i ? ", " : "", c->needs[i].value,
		              c->needs[i].type, c->needs[i].exchange ? "Exchange" : "Graph");
	step(c, "permissions", "resolved: %s", b.data);
	mb_buf_release(&b);
	return 0;
}

/* ---- 4. the application ---- */

static char *
redirect_uri(const struct ctx *c)
{
	const char *pu = c->cfg->server.public_url;
	size_t n = strlen(pu);

	while (n > 0 && pu[n - 1] == '/')
		n--;
	return mb_asprintf("%.*s/oauth/callback", (int)n, pu);
}

static json_t *
rra_entry(json_t *rra, const char *resource_app)
{
	size_t i;
	json_t *e;

	json_array_foreach(rra, i,
	                   e) if (strcmp(jstr(e, "resourceAppId"), resource_app) == 0) return e;
	e = json_pack("{s:s,s:[]}", "resourceAppId", resource_app, "resourceAccess");
	json_array_append_new(rra, e);
	return e;
}

/* Adds to rra what the provider needs; returns how many were missing (names in missing). */
static int
rra_merge(struct ctx *c, json_t *rra, struct mb_buf *missing)
{
	int added = 0;

	for (size_t i = 0; i < c->nneeds; i++) {
		const struct sg_need *n = &c->needs[i];
		json_t *e = rra_entry(rra, n->exchange ? EXCHANGE_APP_ID : GRAPH_APP_ID);
		json_t *ra = json_object_get(e, "resourceAccess"), *x;
		bool found = false;
		size_t k;

		json_array_foreach(ra, k, x) if (strcasecmp(jstr(x, "id"), n->id) == 0 &&
		                                 strcmp(jstr(x, "type"), n->type) == 0) found =
		    true;
		if (found)
			continue;
		json_array_append_new(ra, json_pack("{s:s,s:s}", "id", n->id, "type", n->type));
		if (missing)
			mb_buf_printf(missing, "%s%s", added ? ", " : "", n->value);
		added++;
	}
	return added;
}

static int
ensure_application(struct ctx *c, json_t **app_out)
{
	char *q = odata_quote(c->display), *filter = mb_asprintf("displayName eq '%s'", q);
	char *path = filter_path("/v1.0/applications", filter,
	                         "&$select=id,appId,displayName,web,publicClient,"
	                         "isFallbackPublicClient,requiredResourceAccess,"
	                         "passwordCredentials");
	char *redir = redirect_uri(c);
	json_t *res = NULL, *app, *patch = json_object();
	struct mb_buf what = {0}, miss = {0};
	long st = graph(c, "GET", path, NULL, &res);
	size_t n;
	int rc = -1;

	free(q);
	free(filter);
	free(path);
	if (st != 200) {
		fail(c, "application", "look up the application by name", ROLE_READ);
		goto out;
	}
	n = json_array_size(json_object_get(res, "value"));
	if (n > 1) {
		c->failed++;
		step(c, "application",
		     "failed: %zu applications are named \"%s\"; remove the extra ones or pass "
		     "--display-name",
		     n, c->display);
		goto out;
	}
	if (n == 0) {
		json_t *body = json_pack("{s:s,s:s,s:{s:[s]},s:[]}", "displayName", c->display,
		                         "signInAudience", "AzureADMyOrg", "web", "redirectUris",
		                         redir, "requiredResourceAccess");
		rra_merge(c, json_object_get(body, "requiredResourceAccess"), NULL);
		if (!c->o->app_only)
			json_object_set_new(body, "isFallbackPublicClient", json_true());
		st = graph(c, "POST", "/v1.0/applications", body, &app);
		json_decref(body);
		if (st != 201 && st != 200) {
			fail(c, "application", "create the application", ROLE_APP);
			goto out;
		}
		c->app_created = true;
		snprintf(c->app_obj, sizeof(c->app_obj), "%s", jstr(app, "id"));
		snprintf(c->client_id, sizeof(c->client_id), "%s", jstr(app, "appId"));
		step(c, "application",
		     "created: \"%s\", client id %s (single tenant, redirect %s%s)", c->display,
		     c->client_id, redir, c->o->app_only ? "" : ", public client flows allowed");
		*app_out = app;
		rc = 0;
		goto out;
	}
	app = json_array_get(json_object_get(res, "value"), 0);
	snprintf(c->app_obj, sizeof(c->app_obj), "%s", jstr(app, "id"));
	snprintf(c->client_id, sizeof(c->client_id), "%s", jstr(app, "appId"));
	{
		json_t *uris = json_object_get(json_object_get(app, "web"), "redirectUris"), *u;
		json_t *rra = json_deep_copy(json_object_get(app, "requiredResourceAccess"));
		bool have = false;
		size_t i;

		json_array_foreach(uris, i, u) if (json_string_value(u) &&
		                                   strcmp(json_string_value(u), redir) == 0) have =
		    true;
		if (!have) {
			json_t *nu = uris ? json_deep_copy(uris) : json_array();
			json_array_append_new(nu, json_string(redir));
			json_object_set_new(patch, "web", json_pack("{s:o}", "redirectUris", nu));
			mb_buf_printf(&what, "added redirect URI %s", redir);
		}
		if (rra == NULL || !json_is_array(rra)) {
			json_decref(rra);
			rra = json_array();
		}
		if (rra_merge(c, rra, &miss) > 0) {
			json_object_set(patch, "requiredResourceAccess", rra);
			mb_buf_printf(&what, "%sadded permissions %s", what.len ? "; " : "",
			              miss.data);
		}
		json_decref(rra);
		if (!c->o->app_only &&
		    !json_is_true(json_object_get(app, "isFallbackPublicClient"))) {
			json_object_set_new(patch, "isFallbackPublicClient", json_true());
			mb_buf_printf(&what, "%sallowed public client flows", what.len ? "; " : "");
		}
	}
	if (json_object_size(patch) > 0) {
		char *p = mb_asprintf("/v1.0/applications/%s", c->app_obj);
		st = graph(c, "PATCH", p, patch, NULL);
		free(p);
		if (st != 204 && st != 200) {
			fail(c, "application", "update the application", ROLE_APP);
			goto out;
		}
		step(c, "application", "repaired (%s): \"%s\", client id %s", what.data, c->display,
		     c->client_id);
	} else {
		step(c, "application", "already there: \"%s\", client id %s", c->display,
		     c->client_id);
	}
	*app_out = json_incref(app);
	rc = 0;
out:
	mb_buf_release(&what);
	mb_buf_release(&miss);
	json_decref(patch);
	json_decref(res);
	free(redir);
	return rc;
}

/* ---- 5. the client secret ---- */

struct conn_def {
	char *secret; /* clear, wiped */
	char fp[24];
	char key_id[64];
	int64_t expires_ms;
};

/* The connection row as setup writes it. */
static json_t *
conn_settings(const struct ctx *c, const struct conn_def *def)
{
	json_t *s = json_object();

	json_object_set_new(s, "tenant", json_string(c->g.tenant));
	json_object_set_new(s, "client_id", json_string(c->client_id));
	json_object_set_new(s, "auth", json_string(c->o->app_only ? "app-only" : "delegated"));
	json_object_set_new(s, "cloud", json_string(c->o->cloud ? c->o->cloud : "global"));
	json_object_set_new(s, "large_messages", json_string("fail"));
	if (c->o->login_url)
		json_object_set_new(s, "login_url", json_string(c->o->login_url));
	if (c->o->graph_url)
		json_object_set_new(s, "graph_url", json_string(c->o->graph_url));
	if (c->o->smtp_url)
		json_object_set_new(s, "smtp_url", json_string(c->o->smtp_url));
	if (c->o->ca_file)
		json_object_set_new(s, "ca_file", json_string(c->o->ca_file));
	json_object_set_new(s, "setup_app_object_id", json_string(c->app_obj));
	if (*def->key_id)
		json_object_set_new(s, "setup_secret_key_id", json_string(def->key_id));
	return s;
}

static int
conn_write(struct ctx *c, const struct conn_def *def, struct mb_err *err)
{
	struct store_conn sc;
	json_t *s = conn_settings(c, def);
	char *js = json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS), aad[300];
	int rc;

	memset(&sc, 0, sizeof(sc));
	sc.name = (char *)(c->o->name ? c->o->name : "microsoft");
	sc.provider = (char *)oauth_provider_name(c->prov);
	sc.sender = c->sender;
	sc.settings = js;
	sc.source = "store";
	oauth_aad_secret(sc.name, aad, sizeof(aad));
	sc.secret = mb_seal(c->key, def->secret, strlen(def->secret), aad, &sc.secret_len);
	sc.secret_fp = (char *)def->fp;
	sc.secret_expires_ms = def->expires_ms;
	rc = store_conn_put(c->st, &sc, err);
	free(sc.secret);
	free(js);
	json_decref(s);
	return rc;
}

/* The secret the store holds for this app, if it is still one of the app's credentials. */
static void
held_secret(struct ctx *c, const struct store_conn *old, json_t *app, struct conn_def *def,
            char *why, size_t whylen)
{
	json_t *settings, *creds, *cr;
	const char *name = c->o->name ? c->o->name : "microsoft", *kid;
	char aad[300];
	size_t len, i;
	char *sec;

	snprintf(why, whylen, "no secret held for this app");
	if (old == NULL || old->secret == NULL)
		return;
	settings = json_loads(old->settings ? old->settings : "{}", 0, NULL);
	if (strcmp(jstr(settings, "client_id"), c->client_id) != 0) {
		json_decref(settings);
		return;
	}
	kid = jstr(settings, "setup_secret_key_id");
	oauth_aad_secret(name, aad, sizeof(aad));
	sec = mb_open(c->key, old->secret, old->secret_len, aad, &len);
	if (sec == NULL) {
		snprintf(why, whylen, "the stored secret cannot be opened with this store key");
		json_decref(settings);
		return;
	}
	snprintf(why, whylen, "the secret mailbridge holds is no longer on the app");
	creds = json_object_get(app, "passwordCredentials");
	json_array_foreach(creds, i, cr)
	{
		const char *hint = jstr(cr, "hint");
		int64_t end = parse_iso(jstr(cr, "endDateTime"));
		bool match = *kid ? strcasecmp(kid, jstr(cr, "keyId")) == 0
		                  : (*hint && strncmp(sec, hint, strlen(hint)) == 0);
		char date[40];

		if (!match)
			continue;
		if (end > 0 && end <= mb_now_ms()) {
			mb_iso_date(end, date, sizeof(date));
			snprintf(why, whylen, "the secret mailbridge holds expired on %s", date);
			continue;
		}
		if (end > 0 && end - mb_now_ms() < SECRET_RENEW_MS) {
			/* doctor warns from here on: a new one now, the old one stays until it
			 * expires (a running daemon may still use it) */
			mb_iso_date(end, date, sizeof(date));
			snprintf(why, whylen,
			         "the secret mailbridge holds expires on %.10s, within 30 days",
			         date);
			continue;
		}
		def->secret = sec;
		mb_fingerprint(sec, len, def->fp);
		snprintf(def->key_id, sizeof(def->key_id), "%s", jstr(cr, "keyId"));
		def->expires_ms = end;
		json_decref(settings);
		return;
	}
	mb_secret_free(sec);
	json_decref(settings);
}

/* After a new secret is stored: removes the app's secrets that setup added (display name
 * "mailbridge ...") and that have expired; never the new one, never one still valid (a running
 * daemon may use it until it expires), never one someone else added. What was done is
 * appended to note ("; removed ..."). */
static void
remove_expired(struct ctx *c, json_t *app, const struct conn_def *def, struct mb_buf *note)
{
	json_t *cr;
	size_t i;
	int64_t now = mb_now_ms();

	json_array_foreach(json_object_get(app, "passwordCredentials"), i, cr)
	{
		const char *kid = jstr(cr, "keyId");
		int64_t end = parse_iso(jstr(cr, "endDateTime"));
		char path[200];
		json_t *body;
		long st;

		if (!*kid || strcasecmp(kid, def->key_id) == 0 || end <= 0 || end > now ||
		    strncmp(jstr(cr, "displayName"), "mailbridge ", 11) != 0)
			continue;
		snprintf(path, sizeof(path), "/v1.0/applications/%s/removePassword", c->app_obj);
		body = json_pack("{s:s}", "keyId", kid);
		st = graph(c, "POST", path, body, NULL);
		json_decref(body);
		if (st == 204 || st == 200)
			mb_buf_printf(note, "; removed the expired secret %s", kid);
		else
			mb_buf_printf(
			    note,
			    "; could not remove the expired secret %s (HTTP %ld %s): remove "
			    "it under App registrations → your app → Certificates & secrets",
			    kid, c->g.status, c->g.code);
	}
}

static int
ensure_secret(struct ctx *c, const struct store_conn *old, json_t *app, struct conn_def *def)
{
	char why[160], date[40], path[160], dn[64], end_s[40];
	struct mb_buf removed = {0};
	struct mb_err err = {0};
	json_t *body, *res;
	int64_t end = mb_now_ms() + (int64_t)730 * 86400 * 1000; /* 24 months */
	long st;

	held_secret(c, old, app, def, why, sizeof(why));
	if (def->secret) {
		mb_iso_date(def->expires_ms, date, sizeof(date));
		step(c, "client secret", "already there: %s (held by mailbridge, expires %s)",
		     def->fp, def->expires_ms ? date : "never");
		return 0;
	}
	mb_iso_date(mb_now_ms(), date, sizeof(date));
	snprintf(dn, sizeof(dn), "mailbridge %.10s", date);
	mb_iso_date(end, end_s, sizeof(end_s));
	body = json_pack("{s:{s:s,s:s}}", "passwordCredential", "displayName", dn, "endDateTime",
	                 end_s);
	snprintf(path, sizeof(path), "/v1.0/applications/%s/addPassword", c->app_obj);
	st = graph(c, "POST", path, body, &res);
	json_decref(body);
	if (st != 200 && st != 201) {
		fail(c, "client secret", "add a client secret", ROLE_APP);
		return -1;
	}
	if (json_string_value(json_object_get(res, "secretText")) == NULL) {
		c->failed++;
		step(c, "client secret", "failed: addPassword returned no secretText");
		json_decref(res);
		return -1;
	}
	def->secret = mb_strdup(jstr(res, "secretText"));
	mb_fingerprint(def->secret, strlen(def->secret), def->fp);
	snprintf(def->key_id, sizeof(def->key_id), "%s", jstr(res, "keyId"));
	def->expires_ms = parse_iso(jstr(res, "endDateTime"));
	{
		/* the secret text is shown only now: wipe it from the parsed body */
		json_t *s = json_object_get(res, "secretText");
		const char *v = json_string_value(s);
		if (v)
			mb_secret_wipe((void *)v, strlen(v));
	}
	json_decref(res);
	/* store it sealed right away: it cannot be read again */
	if (conn_write(c, def, &err) < 0) {
		c->failed++;
		step(c, "client secret", "failed: the new secret could not be stored: %s", err.msg);
		return -1;
	}
	mb_iso_date(def->expires_ms, date, sizeof(date));
	remove_expired(c, app, def, &removed);
	if (c->app_created || (old == NULL && !strstr(why, "expire")))
		step(c, "client secret", "created: %s, expires %s, stored encrypted%s", def->fp,
		     date, removed.data ? removed.data : "");
	else
		step(c, "client secret",
		     "repaired (%s): new secret %s, expires %s, stored encrypted%s", why, def->fp,
		     date, removed.data ? removed.data : "");
	mb_buf_release(&removed);
	return 0;
}

/* ---- 6. the service principal ---- */

static int
ensure_sp(struct ctx *c)
{
	char *filter = mb_asprintf("appId eq '%s'", c->client_id);
	char *path = filter_path("/v1.0/servicePrincipals", filter, "&$select=id,appId");
	json_t *res = NULL, *sp, *body;
	long st = graph(c, "GET", path, NULL, &res);

	free(filter);
	free(path);
	if (st != 200) {
		fail(c, "service principal", "look up the service principal", ROLE_READ);
		json_decref(res);
		return -1;
	}
	sp = json_array_get(json_object_get(res, "value"), 0);
	if (sp) {
		snprintf(c->sp_id, sizeof(c->sp_id), "%s", jstr(sp, "id"));
		json_decref(res);
		step(c, "service principal", "already there: %s", c->sp_id);
		return 0;
	}
	json_decref(res);
	body = json_pack("{s:s}", "appId", c->client_id);
	/* a new application may take seconds to replicate (§6.1): retry 400/404 a few times */
	for (int i = 0; i < 5; i++) {
		st = graph(c, "POST", "/v1.0/servicePrincipals", body, &res);
		if (st != 400 && st != 404)
			break;
		sleep((unsigned)(i + 1));
	}
	json_decref(body);
	if (st != 201 && st != 200) {
		fail(c, "service principal", "create the service principal", ROLE_APP);
		return -1;
	}
	snprintf(c->sp_id, sizeof(c->sp_id), "%s", jstr(res, "id"));
	json_decref(res);
	step(c, "service principal", "%s: %s",
	     c->app_created ? "created" : "repaired (was missing)", c->sp_id);
	return 0;
}

/* ---- 7. consent ---- */

static bool
has_word(const char *list, const char *w)
{
	size_t n = strlen(w);

	for (const char *p = list; (p = strstr(p, w)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
			return true;
	return false;
}

static int
ensure_grant(struct ctx *c)
{
	char *filter = mb_asprintf("clientId eq '%s' and consentType eq 'AllPrincipals'", c->sp_id);
	char *path = filter_path("/v1.0/oauth2PermissionGrants", filter, NULL);
	struct mb_buf want = {0}, scope = {0}, added = {0};
	json_t *res = NULL, *g, *grant = NULL, *body;
	size_t i;
	long st = graph(c, "GET", path, NULL, &res);
	int rc = -1;

	free(filter);
	free(path);
	for (size_t k = 0; k < c->nneeds; k++)
		mb_buf_printf(&want, "%s%s", k ? " " : "", c->needs[k].value);
	if (st != 200) {
		fail(c, "consent", "read the admin consent", ROLE_GRANT);
		goto out;
	}
	json_array_foreach(json_object_get(res, "value"), i,
	                   g) if (strcasecmp(jstr(g, "resourceId"), c->graph_sp) == 0) grant = g;
	if (grant == NULL) {
		body = json_pack("{s:s,s:s,s:s,s:s}", "clientId", c->sp_id, "consentType",
		                 "AllPrincipals", "resourceId", c->graph_sp, "scope", want.data);
		st = graph(c, "POST", "/v1.0/oauth2PermissionGrants", body, NULL);
		json_decref(body);
		if (st != 201 && st != 200) {
			fail(c, "consent", "grant tenant-wide admin consent", ROLE_GRANT);
			goto out;
		}
		step(c, "consent", "%s: tenant-wide consent to %s",
		     c->app_created ? "created" : "repaired (was missing)", want.data);
		rc = 0;
		goto out;
	}
	mb_buf_printf(&scope, "%s", jstr(grant, "scope"));
	for (size_t k = 0; k < c->nneeds; k++) {
		if (has_word(scope.data, c->needs[k].value))
			continue;
		mb_buf_printf(&scope, "%s%s", scope.len ? " " : "", c->needs[k].value);
		mb_buf_printf(&added, "%s%s", added.len ? ", " : "", c->needs[k].value);
	}
	if (added.len == 0) {
		step(c, "consent", "already there: tenant-wide consent to %s", scope.data);
		rc = 0;
		goto out;
	}
	path = mb_asprintf("/v1.0/oauth2PermissionGrants/%s", jstr(grant, "id"));
	body = json_pack("{s:s}", "scope", scope.data);
	st = graph(c, "PATCH", path, body, NULL);
	json_decref(body);
	free(path);
	if (st != 204 && st != 200) {
		fail(c, "consent", "add the missing scopes to the admin consent", ROLE_GRANT);
		goto out;
	}
	step(c, "consent", "repaired (added %s): tenant-wide consent to %s", added.data,
	     scope.data);
	rc = 0;
out:
	mb_buf_release(&want);
	mb_buf_release(&scope);
	mb_buf_release(&added);
	json_decref(res);
	return rc;
}

static int
ensure_roles(struct ctx *c)
{
	for (size_t k = 0; k < c->nneeds; k++) {
		const struct sg_need *n = &c->needs[k];
		const char *res_sp = n->exchange ? c->exo_sp : c->graph_sp;
		char *path = mb_asprintf("/v1.0/servicePrincipals/%s/appRoleAssignedTo", res_sp);
		json_t *res = NULL, *a, *body;
		bool found = false;
		size_t i;
		long st = graph(c, "GET", path, NULL, &res);

		if (st != 200) {
			fail(c, "consent", "read the application permissions", ROLE_ROLES);
			free(path);
			json_decref(res);
			return -1;
		}
		json_array_foreach(json_object_get(res, "value"), i,
		                   a) if (strcasecmp(jstr(a, "principalId"), c->sp_id) == 0 &&
		                          strcasecmp(jstr(a, "appRoleId"), n->id) == 0) found =
		    true;
		json_decref(res);
		if (found) {
			step(c, "consent", "already there: application permission %s (%s)",
			     n->value,
			     n->exchange ? "Office 365 Exchange Online" : "Microsoft Graph");
			free(path);
			continue;
		}
		body = json_pack("{s:s,s:s,s:s}", "principalId", c->sp_id, "resourceId", res_sp,
		                 "appRoleId", n->id);
		st = graph(c, "POST", path, body, NULL);
		json_decref(body);
		free(path);
		if (st != 201 && st != 200) {
			fail(c, "consent", "grant the application permission", ROLE_ROLES);
			return -1;
		}
		step(c, "consent", "%s: application permission %s (%s)",
		     c->app_created ? "created" : "repaired (was missing)", n->value,
		     n->exchange ? "Office 365 Exchange Online" : "Microsoft Graph");
	}
	return 0;
}

/* ---- 8. owners ---- */

static int
ensure_owners(struct ctx *c)
{
	char *path = mb_asprintf("/v1.0/applications/%s/owners?$select=id", c->app_obj);
	json_t *res = NULL, *u, *ow;
	struct mb_buf added = {0}, there = {0};
	const char *who[2] = {c->admin_upn, c->sender};
	char ids[2][64];
	size_t i;
	long st = graph(c, "GET", path, NULL, &res);
	int rc = 0;

	free(path);
	if (st != 200) {
		fail(c, "owners", "read the owners", ROLE_APP);
		json_decref(res);
		return -1;
	}
	snprintf(ids[0], sizeof(ids[0]), "%s", c->admin_id);
	ids[1][0] = '\0';
	if (strcasecmp(c->sender, c->admin_upn) != 0) {
		struct mb_buf p = {0};
		mb_buf_printf(&p, "/v1.0/users/");
		http_url_encode(&p, c->sender);
		mb_buf_printf(&p, "?$select=id");
		st = graph(c, "GET", p.data, NULL, &u);
		mb_buf_release(&p);
		if (st == 200) {
			snprintf(ids[1], sizeof(ids[1]), "%s", jstr(u, "id"));
			json_decref(u);
		} else if (st == 404) {
			c->failed++;
			step(c, "owners", "failed: the sender %s is not a user of this tenant",
			     c->sender);
		} else {
			fail(c, "owners", "look up the sender",
			     "User Administrator or Global Reader");
		}
	}
	for (int k = 0; k < 2; k++) {
		bool found = false;
		json_t *body;

		if (!ids[k][0])
			continue;
		json_array_foreach(json_object_get(res, "value"), i,
		                   ow) if (strcasecmp(jstr(ow, "id"), ids[k]) == 0) found = true;
		if (found) {
			mb_buf_printf(&there, "%s%s", there.len ? ", " : "", who[k]);
			continue;
		}
		path = mb_asprintf("/v1.0/applications/%s/owners/$ref", c->app_obj);
		{
			char *ref =
			    mb_asprintf("%s/v1.0/directoryObjects/%s", c->g.ep.graph, ids[k]);
			body = json_pack("{s:s}", "@odata.id", ref);
			free(ref);
		}
		st = graph(c, "POST", path, body, NULL);
		json_decref(body);
		free(path);
		if (st != 204 && st != 200 && st != 201) {
			fail(c, "owners", "add an owner", ROLE_APP);
			rc = -1;
			continue;
		}
		mb_buf_printf(&added, "%s%s", added.len ? ", " : "", who[k]);
	}
	if (added.len == 0 && there.len)
		step(c, "owners", "already there: %s", there.data);
	else if (added.len && (c->app_created || there.len == 0))
		step(c, "owners", "created: %s", added.data);
	else if (added.len)
		step(c, "owners", "repaired (added %s; %s already there)", added.data, there.data);
	json_decref(res);
	mb_buf_release(&added);
	mb_buf_release(&there);
	return rc;
}

/* ---- 9. the connection ---- */

static int
write_connection(struct ctx *c, const struct store_conn *old, const struct conn_def *def)
{
	const char *name = c->o->name ? c->o->name : "microsoft";
	struct mb_err err = {0};
	json_t *s = conn_settings(c, def);
	char *js = json_dumps(s, JSON_COMPACT | JSON_SORT_KEYS), *def_name;
	bool same = old && old->settings && strcmp(old->settings, js) == 0 &&
	            strcmp(old->provider, oauth_provider_name(c->prov)) == 0 &&
	            strcasecmp(old->sender, c->sender) == 0 && old->secret_fp &&
	            strcmp(old->secret_fp, def->fp) == 0 &&
	            old->secret_expires_ms == def->expires_ms;

	json_decref(s);
	free(js);
	if (!same && conn_write(c, def, &err) < 0) {
		c->failed++;
		step(c, "connection", "failed: %s", err.msg);
		return -1;
	}
	def_name = store_default_connection(c->cfg, c->st);
	if (def_name == NULL) {
		store_setting_set(c->st, "default_connection", name, NULL);
		def_name = mb_strdup(name);
	}
	if (same)
		step(c, "connection", "already there: %s (%s, %s, %s)%s", name,
		     oauth_provider_name(c->prov), c->o->app_only ? "app-only" : "delegated",
		     c->sender, strcmp(def_name, name) == 0 ? ", the default" : "");
	else
		step(c, "connection", "%s: %s (%s, %s, %s)%s",
		     old ? "repaired (updated)" : "created", name, oauth_provider_name(c->prov),
		     c->o->app_only ? "app-only" : "delegated", c->sender,
		     strcmp(def_name, name) == 0 ? ", the default" : "");
	free(def_name);
	return 0;
}

int
setup_microsoft(const struct config *cfg, struct store *st, const struct mb_key *key,
                const struct setup_opts *o, struct setup_result *r, FILE *out)
{
	struct ctx c;
	struct mb_err err = {0};
	struct store_conn *old = NULL;
	struct conn_def def;
	json_t *app = NULL;
	const char *name = o->name ? o->name : "microsoft";
	int rc = -1;

	memset(&c, 0, sizeof(c));
	memset(&def, 0, sizeof(def));
	memset(r, 0, sizeof(*r));
	c.cfg = cfg;
	c.st = st;
	c.key = key;
	c.o = o;
	c.g.ca_file = o->ca_file;
	c.out = out;
	if (oauth_provider_parse(o->provider ? o->provider : "microsoft-graph", &c.prov) < 0 ||
	    c.prov == OAUTH_PROVIDER_SMTP) {
		fprintf(out, "mailbridge: --provider must be microsoft-graph or microsoft-smtp\n");
		return -1;
	}
	if (config_conn_find(cfg, name)) {
		fprintf(out,
		        "mailbridge: connection %s is defined in %s; setup writes connections to "
		        "the store: pick another --name\n",
		        name, cfg->path ? cfg->path : "the config file");
		return -1;
	}
	if (oauth_endpoints_resolve(o->cloud ? o->cloud : "global", o->login_url, o->graph_url,
	                            o->smtp_url, &c.g.ep, &err) < 0) {
		fprintf(out, "mailbridge: %s\n", err.msg);
		return -1;
	}
	old = store_conn_get(st, name, NULL);
	if (admin_sign_in(&c) < 0 || who_am_i(&c) < 0)
		goto out;
	c.sender = mb_strdup(o->sender ? o->sender : c.admin_upn);
	c.display =
	    o->display_name ? mb_strdup(o->display_name) : mb_asprintf("mailbridge %s", c.sender);
	if (resolve_permissions(&c) < 0 || ensure_application(&c, &app) < 0 ||
	    ensure_secret(&c, old, app, &def) < 0 || ensure_sp(&c) < 0)
		goto out;
	/* consent and owners are independent: do both, then write the connection */
	if (o->app_only)
		ensure_roles(&c);
	else
		ensure_grant(&c);
	ensure_owners(&c);
	{
		/* the secret step may have written the row already: compare with the start */
		if (write_connection(&c, old, &def) < 0)
			goto out;
	}
	r->conn = mb_strdup(name);
	r->sender = mb_strdup(c.sender);
	r->tenant = mb_strdup(c.g.tenant);
	r->client_id = mb_strdup(c.client_id);
	r->sp_id = mb_strdup(c.sp_id);
	r->provider = c.prov;
	r->app_only = o->app_only;
	rc = 0;
out:
	r->failed = c.failed;
	store_conn_free(old);
	json_decref(app);
	mb_secret_free(def.secret);
	sg_release(&c.g); /* the admin's token ends with the run */
	free(c.admin_upn);
	free(c.sender);
	free(c.display);
	return rc;
}

void
setup_result_free(struct setup_result *r)
{
	free(r->conn);
	free(r->sender);
	free(r->tenant);
	free(r->client_id);
	free(r->sp_id);
	memset(r, 0, sizeof(*r));
}

void
setup_microsoft_powershell(const struct setup_result *r, FILE *out)
{
	if (r->provider != OAUTH_PROVIDER_MSSMTP) {
		fprintf(out, "powershell        nothing to run: Microsoft Graph needs no Exchange "
		             "step\n");
		return;
	}
	fprintf(out, "powershell        what Graph cannot do; an Exchange Administrator runs "
	             "(Exchange Online PowerShell):\n\n");
	fprintf(out,
	        "  Install-Module -Name ExchangeOnlineManagement\n"
	        "  Import-Module ExchangeOnlineManagement\n"
	        "  Connect-ExchangeOnline -Organization %s\n",
	        r->tenant);
	if (r->app_only)
		fprintf(out,
		        "  New-ServicePrincipal -AppId %s -ObjectId %s -DisplayName \"mailbridge "
		        "%s\"\n"
		        "  Add-MailboxPermission -Identity \"%s\" -User (Get-ServicePrincipal "
		        "-Identity %s).Identity -AccessRights FullAccess\n",
		        r->client_id, r->sp_id, r->sender, r->sender, r->sp_id);
	fprintf(out,
	        "  Set-CASMailbox -Identity %s -SmtpClientAuthenticationDisabled $false\n"
	        "  Get-CASMailbox -Identity %s | Format-List SmtpClientAuthenticationDisabled\n\n",
	        r->sender, r->sender);
}
