/*
 * mailbridge doctor --admin: an administrator signs in (device code, the bootstrap public
 * client, read-only scopes) and doctor reads the app registration itself through Microsoft
 * Graph (reference §6.2 step 6): the application found by its client id, its redirect URIs,
 * its required permissions, the tenant-wide consent (or the application permissions), its
 * owners and the expiry of the secret mailbridge uses. Without --admin these items are
 * "can't tell" with the hint to run it.
 */
#include "doctor_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "deliver/deliver_internal.h"
#include "setup/setup.h"
#include "setup/setup_graph.h"
#include "store/store.h"

#define FIX_SETUP "(or run mailbridge setup microsoft again: it repairs what is missing)"
#define ROLE_READ                                                                                  \
	"sign in as an Application Administrator, Cloud Application Administrator, Global "        \
	"Reader or Global Administrator (doctor only reads the registration)"

static const char *
admin_hint(const struct doc *d)
{
	return d->o->admin_hint ? d->o->admin_hint
	                        : "run mailbridge doctor NAME --admin: an administrator signs in "
	                          "with a device code and doctor reads the app registration "
	                          "(nothing is changed)";
}

/* The Graph error of the last call, for evidence. */
static void
graph_error(const struct sg *g, const char *what, char *out, size_t outlen)
{
	if (g->status < 0)
		snprintf(out, outlen, "%s: %s could not be reached: %s", what, g->ep.graph,
		         g->transport ? g->transport : "transport error");
	else
		snprintf(out, outlen, "%s: HTTP %ld %s: %s", what, g->status, g->code, g->msg);
}

static const char *
graph_fix(const struct sg *g)
{
	static char fix[600];
	struct deliver_outcome oc;

	if (g->status == 403 || g->status == 401)
		return ROLE_READ;
	deliver_classify_graph(g->status < 0 ? 0 : g->status, g->code, g->msg, -1, g->transport,
	                       false, &oc);
	snprintf(fix, sizeof(fix), "%s", oc.fix);
	return fix;
}

/* ---- the admin's sign-in and the application ---- */

static int
reg_sign_in(struct doc *d, struct sg *g)
{
	const char *client = d->o->bootstrap_id ? d->o->bootstrap_id : SETUP_BOOTSTRAP_CLIENT_ID;
	const char *r = d->oc->ep.graph_resource;
	char *scope =
	    mb_asprintf("openid profile %s/Application.Read.All %s/Directory.Read.All", r, r);
	struct sg_why why;
	int rc;

	g->ep = d->oc->ep;
	g->ca_file = d->oc->ca_file;
	rc = sg_sign_in(g, client, d->oc->tenant, scope,
	                "mailbridge doctor: an administrator (Application Administrator, Cloud "
	                "Application Administrator, Global Reader or Global Administrator) signs "
	                "in to let doctor read the app registration (read-only: "
	                "Application.Read.All, Directory.Read.All):",
	                d->o->prompt ? d->o->prompt : stderr, &why);
	free(scope);
	if (rc == 0) {
		snprintf(d->reg.tenant, sizeof(d->reg.tenant), "%s", g->tenant);
		return 0;
	}
	snprintf(d->reg.why, sizeof(d->reg.why), "can't tell: the admin sign-in failed: %s%s%s",
	         why.what, why.detail[0] ? " — " : "", why.detail);
	snprintf(d->reg.fix, sizeof(d->reg.fix), "%s",
	         why.fix[0] ? why.fix
	                    : "run mailbridge doctor NAME --admin again and finish the sign-in");
	return -1;
}

static int
reg_lookup_app(struct doc *d, struct sg *g)
{
	char *q = sg_odata_quote(d->oc->client_id);
	char *filter = mb_asprintf("appId eq '%s'", q);
	char *path = sg_filter_path("/v1.0/applications", filter,
	                            "&$select=id,appId,displayName,signInAudience,web,"
	                            "publicClient,isFallbackPublicClient,requiredResourceAccess,"
	                            "passwordCredentials");
	json_t *res = NULL;
	long st = sg_call(g, "GET", path, NULL, &res);

	free(filter);
	free(q);
	free(path);
	if (st != 200) {
		graph_error(g, "can't tell: GET /v1.0/applications", d->reg.why,
		            sizeof(d->reg.why));
		snprintf(d->reg.fix, sizeof(d->reg.fix), "%s", graph_fix(g));
		json_decref(res);
		return -1;
	}
	d->reg.app = json_incref(json_array_get(json_object_get(res, "value"), 0));
	json_decref(res);
	return 0;
}

/* ---- permissions ---- */

static bool
rra_has(json_t *app, const char *resource_app, const struct sg_need *n)
{
	json_t *rra = json_object_get(app, "requiredResourceAccess"), *e, *x;
	size_t i, k;

	json_array_foreach(rra, i, e)
	{
		if (strcasecmp(sg_jstr(e, "resourceAppId"), resource_app) != 0)
			continue;
		json_array_foreach(json_object_get(e, "resourceAccess"), k, x)
		{
			if (strcasecmp(sg_jstr(x, "id"), n->id) == 0 &&
			    strcmp(sg_jstr(x, "type"), n->type) == 0)
				return true;
		}
	}
	return false;
}

static const char *
need_label(const struct sg_need *n)
{
	return strcmp(n->type, "Role") == 0 ? "application" : "delegated";
}

static void
check_permissions(struct doc *d, struct doctor_item *it, const struct sg_need *needs, size_t n)
{
	struct mb_buf miss = {0}, have = {0};
	char fix[900];

	for (size_t i = 0; i < n; i++) {
		const struct sg_need *x = &needs[i];
		struct mb_buf *b =
		    rra_has(d->reg.app, x->exchange ? SG_EXCHANGE_APP_ID : SG_GRAPH_APP_ID, x)
		        ? &have
		        : &miss;
		mb_buf_printf(b, "%s%s (%s, %s)", b->len ? ", " : "", x->value, need_label(x),
		              x->exchange ? "Office 365 Exchange Online" : "Microsoft Graph");
	}
	if (miss.len == 0) {
		doc_set(it, DOCTOR_PASS, NULL, "the app requests %s", have.data ? have.data : "");
	} else {
		snprintf(fix, sizeof(fix),
		         "App registrations → your app → API permissions → Add a permission: %s; "
		         "then Grant admin consent %s",
		         miss.data, FIX_SETUP);
		doc_set(it, DOCTOR_FAIL, fix,
		        "the app's required permissions (requiredResourceAccess) lack %s%s%s",
		        miss.data, have.len ? "; it has " : "", have.len ? have.data : "");
	}
	mb_buf_release(&miss);
	mb_buf_release(&have);
}

/* ---- consent ---- */

static bool
word_in(const char *list, const char *w)
{
	size_t n = strlen(w);

	for (const char *p = list; (p = strcasestr(p, w)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
			return true;
	return false;
}

/* The tenant-wide delegated grants of the app's service principal: their scopes, joined. */
static int
granted_scopes(struct sg *g, const char *sp, struct mb_buf *scopes)
{
	char *filter = mb_asprintf("clientId eq '%s' and consentType eq 'AllPrincipals'", sp);
	char *path = sg_filter_path("/v1.0/oauth2PermissionGrants", filter, NULL);
	json_t *res = NULL, *gr;
	size_t i;
	long st = sg_call(g, "GET", path, NULL, &res);

	free(filter);
	free(path);
	if (st != 200) {
		json_decref(res);
		return -1;
	}
	json_array_foreach(json_object_get(res, "value"), i, gr)
	{
		mb_buf_printf(scopes, "%s%s", scopes->len ? " " : "", sg_jstr(gr, "scope"));
	}
	json_decref(res);
	return 0;
}

/* The application permissions assigned to the app's service principal ("resource role"
 * pairs), from the principal's side: far fewer than the resource's appRoleAssignedTo. */
static int
assigned_roles(struct sg *g, const char *sp, json_t **out)
{
	char *path = mb_asprintf("/v1.0/servicePrincipals/%s/appRoleAssignments", sp);
	long st = sg_call(g, "GET", path, NULL, out);

	free(path);
	return st == 200 ? 0 : -1;
}

static bool
role_assigned(json_t *res, const char *resource_sp, const char *role_id)
{
	json_t *a;
	size_t i;

	json_array_foreach(json_object_get(res, "value"), i, a)
	{
		if (strcasecmp(sg_jstr(a, "resourceId"), resource_sp) == 0 &&
		    strcasecmp(sg_jstr(a, "appRoleId"), role_id) == 0)
			return true;
	}
	return false;
}

static void
check_admin_consent(struct doc *d, struct sg *g, struct doctor_item *it,
                    const struct sg_need *needs, size_t n, const char *graph_sp, const char *exo_sp)
{
	char *filter = mb_asprintf("appId eq '%s'", d->oc->client_id);
	char *path = sg_filter_path("/v1.0/servicePrincipals", filter, "&$select=id,appId");
	json_t *res = NULL;
	char sp[64], why[700];
	struct mb_buf miss = {0}, have = {0};
	bool app_only = d->oc->auth == OAUTH_AUTH_APP_ONLY;
	long st = sg_call(g, "GET", path, NULL, &res);
	static const char fix_grant[] =
	    "App registrations → your app → API permissions → Grant admin consent for your "
	    "tenant " FIX_SETUP;

	free(filter);
	free(path);
	if (st != 200) {
		graph_error(g, "can't tell: GET /v1.0/servicePrincipals", why, sizeof(why));
		doc_set(it, DOCTOR_UNKNOWN, graph_fix(g), "%s", why);
		json_decref(res);
		return;
	}
	snprintf(sp, sizeof(sp), "%s",
	         sg_jstr(json_array_get(json_object_get(res, "value"), 0), "id"));
	json_decref(res);
	res = NULL;
	if (!sp[0]) {
		doc_set(it, DOCTOR_FAIL, fix_grant,
		        "the app has no service principal (enterprise application) in this tenant: "
		        "nobody has consented to it");
		return;
	}
	if (app_only ? assigned_roles(g, sp, &res) < 0 : granted_scopes(g, sp, &have) < 0) {
		graph_error(g, "can't tell: reading the consent", why, sizeof(why));
		doc_set(it, DOCTOR_UNKNOWN, graph_fix(g), "%s", why);
		json_decref(res);
		mb_buf_release(&have);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct sg_need *x = &needs[i];
		bool ok = app_only ? role_assigned(res, x->exchange ? exo_sp : graph_sp, x->id)
		                   : word_in(have.data ? have.data : "", x->value);
		if (!ok)
			mb_buf_printf(&miss, "%s%s", miss.len ? ", " : "", x->value);
	}
	json_decref(res);
	if (miss.len == 0)
		doc_set(it, DOCTOR_PASS, NULL, "%s (service principal %s)",
		        app_only ? "the application permissions are granted"
		                 : "tenant-wide admin consent is granted",
		        sp);
	else if (!app_only && have.len == 0)
		doc_set(it, DOCTOR_FAIL, fix_grant,
		        "no tenant-wide admin consent (oauth2PermissionGrants with consentType "
		        "AllPrincipals) for service principal %s: users would be asked to consent, "
		        "and most may not",
		        sp);
	else
		doc_set(it, DOCTOR_FAIL, fix_grant, "%s lacks %s%s%s%s",
		        app_only ? "the app's application permission grants"
		                 : "the tenant-wide admin consent",
		        miss.data, have.len ? " (granted: " : "", have.len ? have.data : "",
		        have.len ? ")" : "");
	mb_buf_release(&miss);
	mb_buf_release(&have);
}

/* ---- owners ---- */

static void
check_owners(struct doc *d, struct sg *g, struct doctor_item *it)
{
	char *path = mb_asprintf("/v1.0/applications/%s/owners?$select=id,userPrincipalName,mail,"
	                         "displayName",
	                         sg_jstr(d->reg.app, "id"));
	json_t *res = NULL, *o;
	struct mb_buf names = {0};
	bool sender = false;
	size_t i, n;
	char why[700];
	static const char fix[] =
	    "App registrations → your app → Owners → Add owners: the admin account (the guide's "
	    "Part 5; Error 3) and the sender " FIX_SETUP;
	long st = sg_call(g, "GET", path, NULL, &res);

	free(path);
	if (st != 200) {
		graph_error(g, "can't tell: GET owners", why, sizeof(why));
		doc_set(it, DOCTOR_UNKNOWN, graph_fix(g), "%s", why);
		json_decref(res);
		return;
	}
	n = json_array_size(json_object_get(res, "value"));
	json_array_foreach(json_object_get(res, "value"), i, o)
	{
		const char *upn = sg_jstr(o, "userPrincipalName"), *mail = sg_jstr(o, "mail");
		const char *label = *upn ? upn : *mail ? mail : sg_jstr(o, "displayName");

		mb_buf_printf(&names, "%s%s", names.len ? ", " : "", *label ? label : "?");
		if (strcasecmp(upn, d->oc->sender) == 0 || strcasecmp(mail, d->oc->sender) == 0)
			sender = true;
	}
	json_decref(res);
	if (n == 0)
		doc_set(
		    it, DOCTOR_FAIL, fix,
		    "the app has no owners: nobody but a directory administrator can maintain it "
		    "(the guide's Error 3 fix adds the admin account as owner)");
	else if (!sender)
		doc_set(it, DOCTOR_WARN, fix, "owners: %s; the sender %s is not an owner",
		        names.data, d->oc->sender);
	else
		doc_set(it, DOCTOR_PASS, NULL, "owners: %s", names.data);
	mb_buf_release(&names);
}

/* ---- the secret on the app ---- */

/* The keyId setup recorded for the secret it stored (store connections it wrote). */
static char *
recorded_key_id(struct doc *d)
{
	struct store_conn *sc = store_conn_get(d->st, d->oc->name, NULL);
	json_t *s = sc && sc->settings ? json_loads(sc->settings, 0, NULL) : NULL;
	char *v = NULL;

	if (*sg_jstr(s, "setup_secret_key_id"))
		v = mb_strdup(sg_jstr(s, "setup_secret_key_id"));
	json_decref(s);
	store_conn_free(sc);
	return v;
}

static void
check_app_secret(struct doc *d, struct doctor_item *it)
{
	json_t *creds = json_object_get(d->reg.app, "passwordCredentials"), *cr, *match = NULL;
	char *kid;
	size_t i;
	int64_t end, left;
	char date[40];
	static const char fix_new[] =
	    "add a new client secret (App registrations → your app → Certificates & secrets → "
	    "New client secret), put its Value into client_secret_file, then delete the old "
	    "one " FIX_SETUP;

	if (d->oc->client_secret == NULL) {
		doc_set(it, DOCTOR_PASS, NULL, "no client secret is used, so none can expire");
		return;
	}
	kid = recorded_key_id(d);
	json_array_foreach(creds, i, cr)
	{
		const char *hint = sg_jstr(cr, "hint");
		bool m = kid ? strcasecmp(kid, sg_jstr(cr, "keyId")) == 0
		             : (*hint && strncmp(d->oc->client_secret, hint, strlen(hint)) == 0);
		if (m)
			match = cr;
	}
	free(kid);
	if (match == NULL) {
		doc_set(
		    it, DOCTOR_FAIL, fix_new,
		    "none of the app's %zu client secret(s) is the one mailbridge uses (%s): it "
		    "was deleted or belongs to another app",
		    json_array_size(creds), d->oc->secret_fp);
		return;
	}
	end = sg_parse_iso(sg_jstr(match, "endDateTime"));
	if (end <= 0) {
		doc_set(it, DOCTOR_PASS, NULL, "secret %s (keyId %s) has no end date",
		        d->oc->secret_fp, sg_jstr(match, "keyId"));
		return;
	}
	mb_iso_date(end, date, sizeof(date));
	left = end - mb_now_ms();
	if (left <= 0)
		doc_set(it, DOCTOR_FAIL, fix_new, "secret %s (keyId %s) expired on %s on the app",
		        d->oc->secret_fp, sg_jstr(match, "keyId"), date);
	else if (left < 30 * DAY_MS)
		doc_set(it, DOCTOR_WARN, fix_new,
		        "secret %s (keyId %s) expires on %s, in %lld days", d->oc->secret_fp,
		        sg_jstr(match, "keyId"), date, (long long)(left / DAY_MS));
	else
		doc_set(it, DOCTOR_PASS, NULL, "secret %s (keyId %s) expires on %s, in %lld days",
		        d->oc->secret_fp, sg_jstr(match, "keyId"), date,
		        (long long)(left / DAY_MS));
}

/* ---- the whole registration ---- */

static void
all_unknown(struct doctor_item **its, size_t n, const char *fix, const char *why)
{
	for (size_t i = 0; i < n; i++)
		if (its[i])
			doc_set(its[i], DOCTOR_UNKNOWN, fix, "%s", why);
}

static void
check_found(struct doc *d, struct sg *g, struct doctor_item **its)
{
	struct sg_need needs[SG_MAX_NEEDS];
	unsigned flags = (d->oc->upload_sessions ? SG_NEED_READWRITE : 0) |
	                 (d->oc->large_by_smtp ? SG_NEED_SMTP : 0);
	size_t n = sg_needs(d->oc->provider, d->oc->auth == OAUTH_AUTH_APP_ONLY, flags, needs);
	char graph_sp[64] = "", exo_sp[64] = "", why[700];
	bool exchange = false;
	int rc;

	doc_set(its[0], DOCTOR_PASS, NULL, "\"%s\" (object id %s, client id %s, %s) in tenant %s",
	        sg_jstr(d->reg.app, "displayName"), sg_jstr(d->reg.app, "id"), d->oc->client_id,
	        sg_jstr(d->reg.app, "signInAudience"), d->reg.tenant);
	for (size_t i = 0; i < n; i++)
		exchange = exchange || needs[i].exchange;
	rc = sg_resolve(g, SG_GRAPH_APP_ID, false, needs, n, graph_sp, sizeof(graph_sp), why,
	                sizeof(why));
	if (rc == 0 && exchange)
		rc = sg_resolve(g, SG_EXCHANGE_APP_ID, true, needs, n, exo_sp, sizeof(exo_sp), why,
		                sizeof(why));
	if (rc == -1) {
		char e[700];
		graph_error(g, "can't tell: looking up the permission ids", e, sizeof(e));
		all_unknown(its + 1, 2, graph_fix(g), e);
	} else if (rc < 0) {
		char *e = mb_asprintf("can't tell: %s", why);
		all_unknown(its + 1, 2, NULL, e);
		free(e);
	} else {
		check_permissions(d, its[1], needs, n);
		check_admin_consent(d, g, its[2], needs, n, graph_sp, exo_sp);
	}
	check_owners(d, g, its[3]);
	check_app_secret(d, its[4]);
}

void
doc_check_registration(struct doc *d)
{
	struct doctor_item *its[5];
	struct sg g;

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	memset(&g, 0, sizeof(g));
	doc_add(d, "app", "app registration found", CL_APP);
	doc_add(d, "permissions", "required permissions registered", CL_PERMS);
	doc_add(d, "admin_consent", "admin consent granted", CL_CONSENT);
	doc_add(d, "owners", "owners present", CL_OWNERS);
	doc_add(d, "app_secret", "client secret on the app not expiring", CL_SECRET);
	/* the items array moves as it grows: take the pointers once all five are in */
	for (size_t i = 0; i < 5; i++)
		its[i] = &d->r->items[d->r->n - 5 + i];
	if (!d->o->admin) {
		all_unknown(its, 5, admin_hint(d), "can't tell without an admin sign-in");
		return;
	}
	d->reg.tried = true;
	if (reg_sign_in(d, &g) < 0 || reg_lookup_app(d, &g) < 0) {
		all_unknown(its, 5, d->reg.fix, d->reg.why);
	} else if (d->reg.app == NULL) {
		char fix[700];
		snprintf(fix, sizeof(fix),
		         "check client_id (App registrations → your app → Overview → Application "
		         "(client) ID) and tenant (Directory (tenant) ID); or create the app: "
		         "mailbridge setup microsoft");
		doc_set(its[0], DOCTOR_FAIL, fix,
		        "no application with client id %s in tenant %s (signed in as an admin of "
		        "that tenant)",
		        d->oc->client_id, d->reg.tenant);
		all_unknown(its + 1, 4, NULL, "can't tell: the app was not found");
	} else {
		d->reg.ok = true;
		check_found(d, &g, its);
	}
	sg_release(&g);
}

void
doc_reg_free(struct doc *d)
{
	json_decref(d->reg.app);
	d->reg.app = NULL;
}

/* ---- the redirect URI ---- */

static bool
redirect_registered(json_t *app, const char *uri)
{
	json_t *u;
	size_t i;

	json_array_foreach(json_object_get(json_object_get(app, "web"), "redirectUris"), i, u)
	{
		if (json_string_value(u) && strcmp(json_string_value(u), uri) == 0)
			return true;
	}
	return false;
}

void
doc_check_redirect(struct doc *d)
{
	struct doctor_item *it;
	const char *pu = d->cfg->server.public_url;
	size_t n;
	char fix[800], uri[600];

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = doc_add(d, "redirect_uri", "redirect URI registered", CL_REDIRECT);
	if (d->oc->auth == OAUTH_AUTH_APP_ONLY) {
		doc_set(it, DOCTOR_PASS, NULL, "app-only connections use no redirect URI");
		return;
	}
	if (pu == NULL || *pu == '\0') {
		doc_set(
		    it, DOCTOR_UNKNOWN,
		    "set public_url in [server] to use the browser sign-in; device-code sign-in "
		    "(mailbridge auth login NAME --device) needs no redirect URI",
		    "can't tell: public_url is not set, so there is no redirect URI to check");
		return;
	}
	n = strlen(pu);
	while (n > 0 && pu[n - 1] == '/')
		n--;
	snprintf(uri, sizeof(uri), "%.*s/oauth/callback", (int)n, pu);
	snprintf(fix, sizeof(fix),
	         "App registrations → your app (client_id %s) → Authentication → Web → Redirect "
	         "URIs: add exactly %s " FIX_SETUP,
	         d->oc->client_id, uri);
	if (d->reg.ok && redirect_registered(d->reg.app, uri))
		doc_set(it, DOCTOR_PASS, NULL, "the app's Web redirect URIs include %s", uri);
	else if (d->reg.ok)
		doc_set(it, DOCTOR_FAIL, fix,
		        "the app's Web redirect URIs lack %s, which the browser sign-in uses "
		        "(AADSTS50011 at sign-in)",
		        uri);
	else if (d->reg.tried)
		doc_set(it, DOCTOR_UNKNOWN, fix, "%s; the browser sign-in uses %s", d->reg.why,
		        uri);
	else
		doc_set(it, DOCTOR_UNKNOWN, admin_hint(d),
		        "can't tell without an admin sign-in: the browser sign-in uses %s", uri);
}
