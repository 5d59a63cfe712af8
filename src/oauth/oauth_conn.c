/* Connections as the flows see them: from the config file or the store, secrets unsealed. */
#include "oauth.h"

#include <errno.h>
#include <jansson.h>
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
	free(c);
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
	json_t *o = json_loads(sc->settings ? sc->settings : "{}", 0, NULL);
	const char *auth;

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
