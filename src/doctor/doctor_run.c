/* mailbridge doctor: the checklist run against reality (see doctor.h); the checks. */
#include "doctor_internal.h"

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

struct doctor_item *
doc_add(struct doc *d, const char *id, const char *title, const char *checklist)
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

void
doc_set(struct doctor_item *it, enum doctor_status s, const char *fix, const char *fmt, ...)
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

struct doctor_item *
doc_find(const struct doctor_report *r, const char *id)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->items[i].id, id) == 0)
			return &r->items[i];
	return NULL;
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

/* ---- the checks ---- */

static void
check_config(struct doc *d, const char *name, const char *load_error)
{
	struct doctor_item *it = doc_add(d, "config", "configuration complete", CL_CONFIG);
	struct oauth_conn *c = d->oc;

	if (c == NULL) {
		doc_set(it, DOCTOR_FAIL,
		        "fix the connection's settings: mailbridge connection show NAME (or its "
		        "[connection] section), then run mailbridge doctor again",
		        "connection %s cannot be used: %s", name, load_error);
		return;
	}
	if (c->provider == OAUTH_PROVIDER_SMTP) {
		doc_set(
		    it, DOCTOR_PASS, NULL,
		    "plain SMTP connection (provider smtp) to %s, sender %s: no Microsoft sign-in "
		    "involved",
		    c->ep.smtp, c->sender ? c->sender : "(none)");
		return;
	}
	if (c->sender == NULL || strchr(c->sender, '@') == NULL) {
		doc_set(it, DOCTOR_FAIL, "set sender = the mailbox mail is sent from (user@domain)",
		        "sender is missing or not an address");
		return;
	}
	if (strcmp(c->tenant, "organizations") == 0 || strcmp(c->tenant, "common") == 0) {
		doc_set(
		    it, DOCTOR_WARN,
		    "set tenant = the Directory (tenant) ID from App registrations → your app → "
		    "Overview: a single-tenant app cannot sign in through /organizations",
		    "provider %s, auth %s, client_id %s, tenant '%s' (not a tenant ID), sender %s",
		    oauth_provider_name(c->provider), oauth_auth_name(c->auth), c->client_id,
		    c->tenant, c->sender);
		return;
	}
	if (c->client_secret)
		doc_set(
		    it, DOCTOR_PASS, NULL,
		    "provider %s, auth %s, client_id %s, tenant %s, sender %s, client secret %s",
		    oauth_provider_name(c->provider), oauth_auth_name(c->auth), c->client_id,
		    c->tenant, c->sender, c->secret_fp);
	else
		doc_set(
		    it, DOCTOR_PASS, NULL,
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
	it = doc_add(d, "secret_expiry", "client secret not expiring", CL_SECRET);
	if (d->oc->client_secret == NULL) {
		doc_set(it, DOCTOR_PASS, NULL, "no client secret is used, so none can expire");
		return;
	}
	sc = store_conn_get(d->st, d->oc->name, NULL);
	if (sc == NULL || sc->secret_expires_ms <= 0) {
		doc_set(
		    it, DOCTOR_UNKNOWN,
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
		doc_set(it, DOCTOR_FAIL,
		        "add a new client secret (App registrations → your app → Certificates & "
		        "secrets → New client secret), put its Value into client_secret_file, then "
		        "delete the old one",
		        "secret %s expired on %s", d->oc->secret_fp, date);
	else if (left < 30 * DAY_MS)
		doc_set(it, DOCTOR_WARN,
		        "add a new client secret before then (App registrations → your app → "
		        "Certificates & secrets → New client secret) and put its Value into "
		        "client_secret_file",
		        "secret %s expires on %s, in %lld days", d->oc->secret_fp, date,
		        (long long)(left / DAY_MS));
	else
		doc_set(it, DOCTOR_PASS, NULL, "secret %s expires on %s, in %lld days",
		        d->oc->secret_fp, date, (long long)(left / DAY_MS));
	store_conn_free(sc);
}

static void
check_unverified(struct doc *d)
{
	struct doctor_item *it;
	const struct oauth_explain *ex = oauth_explain_unverified();

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = doc_add(d, "unverified", "\"Application is unverified\"", CL_UNVERIF);
	doc_set(it, DOCTOR_INFO, NULL, "%s %s", ex->cause, ex->fix);
}

static void
check_default(struct doc *d, const char *dflt, bool dflt_exists, const char *dflt_provider)
{
	struct doctor_item *it =
	    doc_add(d, "default", "a default connection exists and works", CL_DEFAULT);
	static const char fix_none[] =
	    "make your Microsoft connection the default: mailbridge connection default NAME (or "
	    "default = yes in its [connection] section) — the guide's Errors 1 and 2 (Default "
	    "Connection)";

	if (dflt == NULL) {
		doc_set(it, DOCTOR_FAIL, fix_none,
		        "no default connection is set: mail whose From matches no connection has "
		        "nowhere "
		        "to go (what the guide's Error 1, \"cURL error 28\", and Error 2, \"Not "
		        "Found\", "
		        "come from)");
		return;
	}
	if (!dflt_exists) {
		doc_set(it, DOCTOR_FAIL, fix_none, "the default connection '%s' does not exist",
		        dflt);
		return;
	}
	if (d->oc && strcmp(dflt, d->oc->name) != 0) {
		if (dflt_provider && strcmp(dflt_provider, "smtp") == 0 &&
		    d->oc->provider != OAUTH_PROVIDER_SMTP)
			doc_set(
			    it, DOCTOR_WARN, fix_none,
			    "the default connection is '%s', a plain SMTP server, not this "
			    "Microsoft "
			    "connection: the guide's Error 2 (\"Not Found\": default connection "
			    "set to "
			    "the wrong SMTP server)",
			    dflt);
		else
			doc_set(
			    it, DOCTOR_PASS, NULL,
			    "the default connection is '%s' (%s); this report checks '%s' — run "
			    "mailbridge doctor %s for the default",
			    dflt, dflt_provider ? dflt_provider : "?", d->oc->name, dflt);
		return;
	}
	/* the default is the connection checked: does it work? */
	for (size_t i = 0; i < d->r->n; i++) {
		const struct doctor_item *x = &d->r->items[i];
		if (x->status == DOCTOR_FAIL && x != it) {
			doc_set(it, DOCTOR_FAIL, "fix the failed item above (its own fix line)",
			        "the default connection '%s' exists but does not work: %s failed",
			        dflt, x->title);
			return;
		}
	}
	doc_set(it, DOCTOR_PASS, NULL, "the default connection is '%s' and its checks passed",
	        dflt);
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
	char *dflt = store_default_connection(cfg, st);
	const char *name = o->connection;
	char load_error[512] = "";
	struct mb_err lerr = {0};

	memset(out, 0, sizeof(*out));
	memset(&d, 0, sizeof(d));
	d.cfg = cfg;
	d.st = st;
	d.key = key;
	d.o = o;
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
		struct doctor_item *it =
		    doc_add(&d, "connection", "a connection to check", CL_CONFIG);
		if (ns.n == 0)
			doc_set(
			    it, DOCTOR_FAIL,
			    "add one: mailbridge connection add NAME --provider microsoft-graph "
			    "--sender ADDR --tenant T --client-id ID --client-secret-file F",
			    "no connection is configured");
		else
			doc_set(it, DOCTOR_UNKNOWN, "name one: mailbridge doctor NAME",
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
		doc_check_reach(&d);
		doc_check_clock(&d);
		if (d.oc->provider != OAUTH_PROVIDER_SMTP) {
			if (!o->no_refresh) {
				d.loop = ev_loop_new();
				d.http = http_client_new(d.loop);
				d.tm = oauth_tm_new(d.loop, d.http, cfg, st, key);
			}
			doc_check_token(&d);
			doc_check_scopes(&d);
			doc_check_consent(&d);
			doc_check_account(&d);
			doc_check_mailbox(&d);
			doc_check_smtp_auth(&d);
			doc_check_registration(&d);
			doc_check_redirect(&d);
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
	doc_reg_free(&d);
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
