/* Connections as the flows see them: from the config file or the store, secrets unsealed. */
#include "oauth.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "store/store.h"

void
oauth_aad_token(const char *conn, enum oauth_resource r, const char *kind, char *out, size_t outlen)
{
	snprintf(out, outlen, "token:%s:%s:%s", conn, oauth_resource_name(r), kind);
}

void
oauth_aad_secret(const char *conn, char *out, size_t outlen)
{
	snprintf(out, outlen, "secret:%s", conn);
}

void
oauth_conn_free(struct oauth_conn *c)
{
	if (c == NULL)
		return;
	free(c->name);
	free(c->sender);
	free(c->tenant);
	free(c->client_id);
	mb_secret_free(c->client_secret);
	free(c->secret_fp);
	free(c->ca_file);
	for (size_t i = 0; i < c->nsenders; i++)
		free(c->senders[i]);
	free(c->senders);
	free(c->fallback);
	free(c);
}

static void
senders_add(char ***v, size_t *n, const char *s)
{
	*v = mb_realloc(*v, (*n + 1) * sizeof(char *));
	(*v)[(*n)++] = mb_strdup(s);
}

/* Reads a secret file: the first line, without its line ending. */
static char *
read_secret_file(const char *path, struct mb_err *err)
{
	FILE *f = fopen(path, "r");
	struct mb_buf b = {0};
	int ch;

	if (f == NULL) {
		mb_err_set(err, MB_EINVAL, "client_secret_file %s: %s", path, strerror(errno));
		return NULL;
	}
	while ((ch = fgetc(f)) != EOF && ch != '\n' && ch != '\r' && b.len < 4096) {
		char c = (char)ch;
		mb_buf_append(&b, &c, 1);
	}
	fclose(f);
	if (b.len == 0) {
		mb_buf_wipe(&b);
		mb_err_set(err, MB_EINVAL, "client_secret_file %s is empty", path);
		return NULL;
	}
	return mb_buf_steal(&b);
}

static void
set_fp(struct oauth_conn *c)
{
	char fp[24];

	if (c->client_secret == NULL)
		return;
	mb_fingerprint(c->client_secret, strlen(c->client_secret), fp);
	c->secret_fp = mb_strdup(fp);
}

static char *
dup_or_null(const char *s)
{
	return s && *s ? mb_strdup(s) : NULL;
}

static int
finish(struct oauth_conn *c, const char *cloud, const char *login_url, const char *graph_url,
       const char *smtp_url, struct mb_err *err)
{
	if (oauth_endpoints_resolve(cloud ? cloud : "global", login_url, graph_url, smtp_url,
	                            &c->ep, err) < 0)
		return -1;
	if (c->provider != OAUTH_PROVIDER_SMTP && c->client_id == NULL) {
		mb_err_set(err, MB_EINVAL,
		           "connection %s has no client_id: set the Application (client) ID of "
		           "the app registration",
		           c->name);
		return -1;
	}
	if (c->tenant == NULL)
		c->tenant = mb_strdup("organizations");
	if (c->auth == OAUTH_AUTH_APP_ONLY &&
	    (strcmp(c->tenant, "organizations") == 0 || strcmp(c->tenant, "common") == 0)) {
		mb_err_set(err, MB_EINVAL,
		           "connection %s: auth = app-only needs the tenant ID or domain, not '%s'",
		           c->name, c->tenant);
		return -1;
	}
	if (c->auth == OAUTH_AUTH_APP_ONLY && c->client_secret == NULL) {
		mb_err_set(err, MB_EINVAL,
		           "connection %s: auth = app-only needs a client secret "
		           "(client_secret_file or client_secret_env)",
		           c->name);
		return -1;
	}
	set_fp(c);
	return 0;
}

static struct oauth_conn *
from_config(const struct config_conn *cc, struct mb_err *err)
{
	struct oauth_conn *c = mb_calloc(1, sizeof(*c));

	c->name = mb_strdup(cc->name);
	c->from_config = true;
	if (oauth_provider_parse(cc->provider, &c->provider) < 0 ||
	    oauth_auth_parse(cc->auth, &c->auth) < 0) {
		mb_err_set(err, MB_EINVAL, "connection %s: bad provider or auth", cc->name);
		goto fail;
	}
	c->sender = dup_or_null(cc->sender);
	c->tenant = dup_or_null(cc->tenant);
	c->client_id = dup_or_null(cc->client_id);
	c->ca_file = dup_or_null(cc->ca_file);
	c->upload_sessions =
	    cc->large_messages && strcmp(cc->large_messages, "upload-session") == 0;
	c->large_by_smtp = cc->large_messages && strcmp(cc->large_messages, "smtp") == 0;
	for (size_t i = 0; i < cc->senders.n; i++)
		senders_add(&c->senders, &c->nsenders, cc->senders.v[i]);
	c->fallback = dup_or_null(cc->fallback);
	c->force_from = cc->force_from;
	if (cc->client_secret_file && *cc->client_secret_file) {
		c->client_secret = read_secret_file(cc->client_secret_file, err);
		if (c->client_secret == NULL)
			goto fail;
	} else if (cc->client_secret_env && *cc->client_secret_env) {
		const char *v = getenv(cc->client_secret_env);
		if (v == NULL || *v == '\0') {
			mb_err_set(err, MB_EINVAL,
			           "connection %s: client_secret_env names %s, which is not set",
			           cc->name, cc->client_secret_env);
			goto fail;
		}
		c->client_secret = mb_strdup(v);
	} else if (cc->client_secret && *cc->client_secret) {
		c->client_secret = mb_strdup(cc->client_secret);
	}
	if (finish(c, cc->cloud, cc->login_url, cc->graph_url, cc->smtp_url, err) < 0)
		goto fail;
	return c;
fail:
	oauth_conn_free(c);
	return NULL;
}

static const char *
json_str(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static struct oauth_conn *
from_store(const struct store_conn *sc, const struct mb_key *key, struct mb_err *err)
{
	struct oauth_conn *c = mb_calloc(1, sizeof(*c));
	json_t *o = json_loads(sc->settings ? sc->settings : "{}", 0, NULL), *v;
	const char *auth;
	size_t i;

	c->name = mb_strdup(sc->name);
	if (o == NULL || oauth_provider_parse(sc->provider, &c->provider) < 0) {
		mb_err_set(err, MB_EINVAL, "connection %s: its stored settings are unreadable",
		           sc->name);
		goto fail;
	}
	auth = json_str(o, "auth");
	if (oauth_auth_parse(auth ? auth : "delegated", &c->auth) < 0) {
		mb_err_set(err, MB_EINVAL, "connection %s: bad auth '%s'", sc->name, auth);
		goto fail;
	}
	c->sender = dup_or_null(sc->sender);
	c->tenant = dup_or_null(json_str(o, "tenant"));
	c->client_id = dup_or_null(json_str(o, "client_id"));
	c->ca_file = dup_or_null(json_str(o, "ca_file"));
	c->upload_sessions = json_str(o, "large_messages") &&
	                     strcmp(json_str(o, "large_messages"), "upload-session") == 0;
	c->large_by_smtp =
	    json_str(o, "large_messages") && strcmp(json_str(o, "large_messages"), "smtp") == 0;
	json_array_foreach(json_object_get(o, "senders"), i, v)
	{
		if (json_is_string(v))
			senders_add(&c->senders, &c->nsenders, json_string_value(v));
	}
	c->fallback = dup_or_null(json_str(o, "fallback"));
	c->force_from = json_is_true(json_object_get(o, "force_from"));
	if (sc->secret && sc->secret_len > 0) {
		char aad[300];
		oauth_aad_secret(sc->name, aad, sizeof(aad));
		c->client_secret = mb_open(key, sc->secret, sc->secret_len, aad, NULL);
		if (c->client_secret == NULL) {
			mb_err_set(
			    err, MB_EINVAL,
			    "connection %s: its client secret cannot be unsealed with the key "
			    "in %s (was the key file replaced?); set the secret again",
			    sc->name, key->source);
			goto fail;
		}
	}
	if (finish(c, json_str(o, "cloud"), json_str(o, "login_url"), json_str(o, "graph_url"),
	           json_str(o, "smtp_url"), err) < 0)
		goto fail;
	json_decref(o);
	return c;
fail:
	json_decref(o);
	oauth_conn_free(c);
	return NULL;
}

struct oauth_conn *
oauth_conn_load(const struct config *cfg, struct store *st, const struct mb_key *key,
                const char *name, struct mb_err *err)
{
	const struct config_conn *cc = config_conn_find(cfg, name);
	struct store_conn *sc;
	struct oauth_conn *c;

	if (cc)
		return from_config(cc, err);
	sc = store_conn_get(st, name, err);
	if (sc == NULL) {
		if (err && err->code == MB_ENOTFOUND)
			mb_err_set(err, MB_ENOTFOUND,
			           "no connection named '%s' (see: mailbridge connection list)",
			           name);
		return NULL;
	}
	c = from_store(sc, key, err);
	store_conn_free(sc);
	return c;
}

int
oauth_conns_sync(const struct config *cfg, struct store *st, struct mb_err *err)
{
	for (size_t i = 0; i < cfg->nconns; i++) {
		const struct config_conn *cc = &cfg->conns[i];
		struct oauth_conn *c;
		struct store_conn sc;
		int rc;

		if (cc->client_secret && *cc->client_secret)
			mb_warn(
			    "config: connection %s: client_secret is written in the config file; "
			    "prefer client_secret_file (mode 0600) or client_secret_env",
			    cc->name);
		/* the secret's fingerprint, so status can show which secret is in use */
		c = from_config(cc, NULL);
		memset(&sc, 0, sizeof(sc));
		sc.name = cc->name;
		sc.provider = cc->provider;
		sc.sender = cc->sender ? cc->sender : "";
		sc.settings = "{}";
		sc.source = "config";
		sc.secret_fp = c ? c->secret_fp : NULL;
		rc = store_conn_put(st, &sc, err);
		oauth_conn_free(c);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* ---- connections made with the command line or the API ---- */

bool
oauth_conn_name_is_valid(const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0 || len > OAUTH_CONN_NAME_MAX)
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return false;
	return true;
}

bool
oauth_addr_is_valid(const char *addr)
{
	const char *at = addr ? strrchr(addr, '@') : NULL;
	size_t len = addr ? strlen(addr) : 0;

	if (at == NULL || at == addr || at[1] == '\0' || len > 320 || strchr(at + 1, '.') == NULL)
		return false;
	for (const char *p = addr; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f || strchr("<>()[],;:\\\"", *p))
			return false;
	return strchr(addr, '@') == at;
}

/* 8-4-4-4-12 hexadecimal digits, as Entra writes tenant and application ids. */
static bool
is_guid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

/* A DNS name with at least two labels: a verified domain such as contoso.onmicrosoft.com. */
static bool
is_domain(const char *s)
{
	size_t label = 0, labels = 1;

	if (*s == '\0' || strlen(s) > 253)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p == '.') {
			if (label == 0 || p[-1] == '-')
				return false;
			label = 0;
			labels++;
		} else if (isalnum((unsigned char)*p) || (*p == '-' && label > 0)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0 && labels >= 2 && s[strlen(s) - 1] != '-';
}

static bool
is_multi_tenant(const char *t)
{
	return strcmp(t, "organizations") == 0 || strcmp(t, "common") == 0 ||
	       strcmp(t, "consumers") == 0;
}

void
oauth_conn_def_release(struct oauth_conn_def *def)
{
	char **fields[] = {&def->name,      &def->provider, &def->sender,    &def->auth,
	                   &def->cloud,     &def->tenant,   &def->client_id, &def->login_url,
	                   &def->graph_url, &def->smtp_url, &def->ca_file,   &def->large_messages,
	                   &def->fallback};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		free(*fields[i]);
	for (size_t i = 0; i < def->nsenders; i++)
		free(def->senders[i]);
	free(def->senders);
	memset(def, 0, sizeof(*def));
}

int
oauth_conn_def_load(struct store *st, const char *name, struct oauth_conn_def *def,
                    struct mb_err *err)
{
	struct store_conn *sc = store_conn_get(st, name, err);
	json_t *o, *v;
	size_t i;

	memset(def, 0, sizeof(*def));
	if (sc == NULL)
		return -1;
	o = json_loads(sc->settings ? sc->settings : "{}", 0, NULL);
	if (o == NULL) {
		mb_err_set(err, MB_EINVAL, "connection %s: its stored settings are unreadable",
		           name);
		store_conn_free(sc);
		return -1;
	}
	def->name = mb_strdup(sc->name);
	def->provider = mb_strdup(sc->provider);
	def->sender = dup_or_null(sc->sender);
	def->auth = dup_or_null(json_str(o, "auth"));
	def->cloud = dup_or_null(json_str(o, "cloud"));
	def->tenant = dup_or_null(json_str(o, "tenant"));
	def->client_id = dup_or_null(json_str(o, "client_id"));
	def->login_url = dup_or_null(json_str(o, "login_url"));
	def->graph_url = dup_or_null(json_str(o, "graph_url"));
	def->smtp_url = dup_or_null(json_str(o, "smtp_url"));
	def->ca_file = dup_or_null(json_str(o, "ca_file"));
	def->large_messages = dup_or_null(json_str(o, "large_messages"));
	def->fallback = dup_or_null(json_str(o, "fallback"));
	def->force_from = json_is_true(json_object_get(o, "force_from"));
	json_array_foreach(json_object_get(o, "senders"), i, v)
	{
		if (json_is_string(v))
			senders_add(&def->senders, &def->nsenders, json_string_value(v));
	}
	json_decref(o);
	store_conn_free(sc);
	return 0;
}

static int def_fail(const char **field, const char *name, struct mb_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
def_fail(const char **field, const char *name, struct mb_err *err, const char *fmt, ...)
{
	va_list ap;
	char msg[400];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	*field = name;
	mb_err_set(err, MB_EINVAL, "%s", msg);
	return -1;
}

static int
def_check_ids(const struct oauth_conn_def *def, enum oauth_provider p, bool app_only,
              const char **field, struct mb_err *err)
{
	if (def->tenant && !is_guid(def->tenant) && !is_domain(def->tenant) &&
	    !is_multi_tenant(def->tenant))
		return def_fail(field, "tenant", err,
		                "tenant '%s' is not a tenant ID (a GUID), a verified domain "
		                "(contoso.onmicrosoft.com) or organizations",
		                def->tenant);
	if (app_only && (def->tenant == NULL || is_multi_tenant(def->tenant)))
		return def_fail(field, "tenant", err,
		                "app-only auth needs the tenant ID or domain, not '%s'",
		                def->tenant ? def->tenant : "organizations");
	if (p != OAUTH_PROVIDER_SMTP && def->client_id == NULL)
		return def_fail(field, "client_id", err,
		                "client_id is missing: give the Application (client) ID of the app "
		                "registration");
	if (def->client_id && !is_guid(def->client_id))
		return def_fail(field, "client_id", err,
		                "client_id '%s' is not an Application (client) ID: a GUID such as "
		                "00001111-aaaa-2222-bbbb-3333cccc4444",
		                def->client_id);
	return 0;
}

static int
def_check_routing(const struct oauth_conn_def *def, const char **field, struct mb_err *err)
{
	if (def->sender == NULL || !oauth_addr_is_valid(def->sender))
		return def_fail(field, "sender", err,
		                "sender '%s' is not a mailbox address (user@example.com)",
		                def->sender ? def->sender : "");
	for (size_t i = 0; i < def->nsenders; i++)
		if (!oauth_addr_is_valid(def->senders[i]))
			return def_fail(field, "senders", err,
			                "senders: '%s' is not a mailbox address (user@example.com)",
			                def->senders[i]);
	if (def->fallback && !oauth_conn_name_is_valid(def->fallback))
		return def_fail(field, "fallback", err, "fallback '%s' is not a connection name",
		                def->fallback);
	if (def->fallback && strcmp(def->fallback, def->name) == 0)
		return def_fail(field, "fallback", err,
		                "fallback names this connection itself; name another one");
	return 0;
}

int
oauth_conn_def_check(const struct oauth_conn_def *def, bool has_secret, const char **field,
                     struct mb_err *err)
{
	struct oauth_endpoints ep;
	enum oauth_provider p;
	enum oauth_auth a;
	const char *large = def->large_messages ? def->large_messages : "fail";

	if (!oauth_conn_name_is_valid(def->name))
		return def_fail(field, "name", err,
		                "name '%s' is not valid: 1 to %d letters, digits, '-', '_' or '.'",
		                def->name ? def->name : "", OAUTH_CONN_NAME_MAX);
	if (oauth_provider_parse(def->provider, &p) < 0)
		return def_fail(field, "provider", err,
		                "provider must be microsoft-graph, microsoft-smtp or smtp");
	if (oauth_auth_parse(def->auth ? def->auth : "delegated", &a) < 0)
		return def_fail(field, "auth", err, "auth must be delegated or app-only");
	if (strcmp(large, "fail") != 0 && strcmp(large, "upload-session") != 0 &&
	    strcmp(large, "smtp") != 0)
		return def_fail(field, "large_messages", err,
		                "large_messages must be fail, upload-session or smtp");
	if (oauth_endpoints_resolve(def->cloud ? def->cloud : "global", def->login_url,
	                            def->graph_url, def->smtp_url, &ep, err) < 0) {
		static const char *const keys[] = {"cloud", "graph_url", "smtp_url"};
		*field = "login_url";
		for (size_t i = 0; err && i < sizeof(keys) / sizeof(keys[0]); i++)
			if (strncmp(err->msg, keys[i], strlen(keys[i])) == 0)
				*field = keys[i];
		return -1;
	}
	if (def_check_ids(def, p, a == OAUTH_AUTH_APP_ONLY, field, err) < 0 ||
	    def_check_routing(def, field, err) < 0)
		return -1;
	if (a == OAUTH_AUTH_APP_ONLY && !has_secret)
		return def_fail(field, "client_secret", err,
		                "app-only auth needs a client secret: give the secret's Value from "
		                "Certificates & secrets");
	return 0;
}

static void
set_str(json_t *o, const char *key, const char *v)
{
	if (v)
		json_object_set_new(o, key, json_string(v));
}

static char *
def_settings_json(const struct oauth_conn_def *def)
{
	json_t *o = json_object(), *senders = json_array();
	char *text;

	set_str(o, "auth", def->auth ? def->auth : "delegated");
	set_str(o, "cloud", def->cloud ? def->cloud : "global");
	set_str(o, "tenant", def->tenant);
	set_str(o, "client_id", def->client_id);
	set_str(o, "login_url", def->login_url);
	set_str(o, "graph_url", def->graph_url);
	set_str(o, "smtp_url", def->smtp_url);
	set_str(o, "ca_file", def->ca_file);
	set_str(o, "large_messages", def->large_messages ? def->large_messages : "fail");
	set_str(o, "fallback", def->fallback);
	if (def->force_from)
		json_object_set_new(o, "force_from", json_true());
	for (size_t i = 0; i < def->nsenders; i++)
		json_array_append_new(senders, json_string(def->senders[i]));
	if (def->nsenders)
		json_object_set(o, "senders", senders);
	json_decref(senders);
	text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return text;
}

int
oauth_conn_def_save(struct store *st, const struct mb_key *key, const struct oauth_conn_def *def,
                    const char *secret, struct mb_err *err)
{
	struct store_conn *old = NULL, sc;
	char aad[300], fp[24];
	int rc;

	memset(&sc, 0, sizeof(sc));
	sc.name = def->name;
	sc.provider = def->provider;
	sc.sender = def->sender;
	sc.settings = def_settings_json(def);
	sc.source = "store";
	if (secret) {
		oauth_aad_secret(sc.name, aad, sizeof(aad));
		sc.secret = mb_seal(key, secret, strlen(secret), aad, &sc.secret_len);
		mb_fingerprint(secret, strlen(secret), fp);
		sc.secret_fp = fp;
	} else if ((old = store_conn_get(st, def->name, NULL)) != NULL) {
		/* the sealed secret is bound to the name, which a save never changes */
		sc.secret = old->secret;
		sc.secret_len = old->secret_len;
		sc.secret_fp = old->secret_fp;
		sc.secret_expires_ms = old->secret_expires_ms;
	}
	rc = store_conn_put(st, &sc, err);
	if (secret)
		free(sc.secret);
	store_conn_free(old);
	free(sc.settings);
	return rc;
}
