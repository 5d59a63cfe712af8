/* /api/v1 connections: list, create, read, update, delete, make default. Sign-in is in
 * admin_api_signin.c, settings in admin_api_settings.c.
 *
 * Connections made here are "store" connections, written with the same code as `mailbridge
 * connection add` (oauth_conn_def_*). Those of the config file are shown, never changed: the
 * file is the truth for them. A client secret goes in and never comes out, not even sealed:
 * answers carry its fingerprint only.
 */
#include "admin_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

#define SECRET_MAX 4096

/* ---- what a change must tell the rest of the daemon ---- */

/* The deliverer re-reads connections and the default; the token manager forgets what it holds
 * for the connection, so the next message uses the change without a restart. */
static void
conn_changed(struct admin *a, const char *name)
{
	if (a->d.tm && name)
		oauth_tm_forget(a->d.tm, name);
	if (a->d.deliver)
		deliver_conns_changed(a->d.deliver);
}

/* ---- the callback URL ---- */

/* {public_url}/oauth/callback: the redirect URI the app registration must list, the same one
 * `mailbridge auth login` and `mailbridge setup microsoft` use (docs/config.md). */
char *
admin_callback_url(struct admin *a)
{
	struct mb_buf out = {0};

	oauth_redirect_uri(a->d.cfg->server.public_url, &out);
	return mb_buf_steal(&out);
}

/* ---- errors ---- */

static const struct {
	const char *field;
	const char *fix;
} field_fixes[] = {
    {"name", "use 1 to 64 letters, digits, '-', '_' or '.'"},
    {"provider", "use microsoft-graph, microsoft-smtp or smtp"},
    {"auth", "use delegated or app-only"},
    {"tenant", "use the Directory (tenant) ID from the app registration's Overview page, or a "
               "verified domain such as contoso.onmicrosoft.com"},
    {"client_id", "use the Application (client) ID from the app registration's Overview page"},
    {"client_secret", "paste the secret's Value (not its Secret ID) from the app registration's "
                      "Certificates & secrets page"},
    {"sender", "give the mailbox that sends, such as user@example.com"},
    {"senders", "give a list of mailbox addresses, such as [\"alias@example.com\"]"},
    {"fallback", "name another existing connection, or null for none"},
    {"force_from", "use true or false"},
    {"cloud", "use global, usgov, usgov-dod or china"},
    {"login_url", "use https://host[:port] with no path (http:// only for loopback)"},
    {"graph_url", "use https://host[:port] with no path (http:// only for loopback)"},
    {"smtp_url", "use smtp://host:587 or smtps://host:465"},
    {"ca_file", "give the absolute path of a PEM file mailbridge can read"},
    {"large_messages", "use fail, upload-session or smtp"},
    {"retention_days", "use a whole number of days from 1 to 3650"},
    {"alert_webhook", "use an http:// or https:// URL, or null for none"},
    {"alert_email", "give a mailbox address such as ops@example.com, or null for none"},
    {"default_connection", "name an existing connection, or null for none"},
    {"method", "use \"browser\" or \"device\""},
};

/* admin_reply_invalid_fix with the field's fix from the table above. */
void
admin_reply_invalid(struct ev_http_req *req, const char *field, const char *msg)
{
	const char *fix = "correct the field and send the request again (see docs/api.md)";

	for (size_t i = 0; i < sizeof(field_fixes) / sizeof(field_fixes[0]); i++)
		if (strcmp(field_fixes[i].field, field) == 0)
			fix = field_fixes[i].fix;
	admin_reply_invalid_fix(req, field, msg, fix);
}

void
admin_reply_conn_not_found(struct ev_http_req *req, const char *name)
{
	char *msg = mb_asprintf("no connection named '%s'", name);

	admin_reply_error(req, 404, "not_found", msg,
	                  "see GET /api/v1/connections for the connections there are");
	free(msg);
}

static void
reply_read_only(struct admin *a, struct ev_http_req *req, const char *name)
{
	const char *path = a->d.cfg->path ? a->d.cfg->path : "mailbridge.conf";
	char *msg = mb_asprintf("connection %s is defined in the config file; it cannot be changed "
	                        "here",
	                        name);
	char *fix = mb_asprintf("edit [connection %s] in %s, then reload (systemctl reload "
	                        "mailbridge)",
	                        name, path);

	admin_reply_error(req, 422, "read_only", msg, fix);
	free(msg);
	free(fix);
}

/* ---- the connection object ---- */

/* Whether the store holds connection name (config ones are mirrored there). */
bool
admin_conn_exists(struct admin *a, const char *name)
{
	struct store_conn *sc = store_conn_get(a->d.st, name, NULL);
	bool yes = sc != NULL;

	store_conn_free(sc);
	return yes;
}

static char *
dup_or_null(const char *s)
{
	return s && *s ? mb_strdup(s) : NULL;
}

/* A config-file connection's definition, in the shape of a stored one. */
static void
def_from_config(const struct config_conn *cc, struct oauth_conn_def *def)
{
	memset(def, 0, sizeof(*def));
	def->name = mb_strdup(cc->name);
	def->provider = dup_or_null(cc->provider);
	def->sender = dup_or_null(cc->sender);
	def->auth = dup_or_null(cc->auth);
	def->cloud = dup_or_null(cc->cloud);
	def->tenant = dup_or_null(cc->tenant);
	def->client_id = dup_or_null(cc->client_id);
	def->fallback = dup_or_null(cc->fallback);
	def->force_from = cc->force_from;
	for (size_t i = 0; i < cc->senders.n; i++) {
		def->senders = mb_realloc(def->senders, (def->nsenders + 1) * sizeof(char *));
		def->senders[def->nsenders++] = mb_strdup(cc->senders.v[i]);
	}
}

static void
obj_definition(json_t *o, const struct oauth_conn_def *def)
{
	bool smtp = def->provider && strcmp(def->provider, "smtp") == 0;
	json_t *senders = json_array();

	json_object_set_new(o, "auth",
	                    smtp ? json_null() : json_string(def->auth ? def->auth : "delegated"));
	json_object_set_new(o, "tenant",
	                    smtp ? json_null()
	                         : json_string(def->tenant ? def->tenant : "organizations"));
	json_object_set_new(o, "client_id", admin_json_str_or_null(def->client_id));
	json_object_set_new(o, "cloud", json_string(def->cloud ? def->cloud : "global"));
	for (size_t i = 0; i < def->nsenders; i++)
		json_array_append_new(senders, json_string(def->senders[i]));
	json_object_set_new(o, "senders", senders);
	json_object_set_new(o, "fallback", admin_json_str_or_null(def->fallback));
	json_object_set_new(o, "force_from", json_boolean(def->force_from));
}

static void
obj_state(struct admin *a, json_t *o, const struct store_conn *sc)
{
	json_object_set_new(o, "state", admin_json_str_or_null(sc->state));
	json_object_set_new(o, "reason", admin_json_str_or_null(sc->state_reason));
	json_object_set_new(o, "account", admin_json_str_or_null(sc->account));
	json_object_set_new(o, "graph_token_valid_min",
	                    admin_token_valid_min(a, sc->name, "graph"));
	json_object_set_new(o, "outlook_token_valid_min",
	                    admin_token_valid_min(a, sc->name, "outlook"));
	json_object_set_new(o, "last_refresh", admin_json_time(sc->last_refresh_ms));
	json_object_set_new(o, "last_error", admin_json_str_or_null(sc->last_error));
	json_object_set_new(o, "fix", admin_json_str_or_null(sc->last_fix));
	/* Only what is safe to show: the secret never leaves the store, not even sealed. */
	json_object_set_new(o, "secret_fingerprint", admin_json_str_or_null(sc->secret_fp));
	json_object_set_new(o, "secret_expires", admin_json_time(sc->secret_expires_ms));
	json_object_set_new(o, "has_secret", json_boolean(sc->secret_len > 0 || sc->secret_fp));
}

static json_t *
conn_obj(struct admin *a, const struct store_conn *sc, const char *def_name, const char *callback)
{
	const struct config_conn *cc = config_conn_find(a->d.cfg, sc->name);
	struct oauth_conn_def def;
	json_t *o = json_object();

	if (cc)
		def_from_config(cc, &def);
	else if (oauth_conn_def_load(a->d.st, sc->name, &def, NULL) < 0)
		memset(&def, 0, sizeof(def));
	json_object_set_new(o, "name", json_string(sc->name));
	json_object_set_new(o, "provider", json_string(sc->provider));
	json_object_set_new(o, "sender", json_string(sc->sender));
	obj_definition(o, &def);
	json_object_set_new(o, "source", json_string(cc ? "config" : "store"));
	json_object_set_new(o, "editable", json_boolean(cc == NULL));
	json_object_set_new(o, "default",
	                    json_boolean(def_name && strcmp(def_name, sc->name) == 0));
	obj_state(a, o, sc);
	json_object_set_new(o, "callback_url", json_string(callback));
	oauth_conn_def_release(&def);
	return o;
}

/* The object of connection NAME, or NULL after replying 404 / 503. */
static json_t *
conn_obj_get(struct admin *a, struct ev_http_req *req, const char *name)
{
	struct mb_err err = {0};
	struct store_conn *sc = store_conn_get(a->d.st, name, &err);
	char *def, *cb;
	json_t *o;

	if (sc == NULL) {
		if (err.code == MB_ENOTFOUND)
			admin_reply_conn_not_found(req, name);
		else
			admin_reply_store_error(req, &err);
		return NULL;
	}
	def = store_default_connection(a->d.cfg, a->d.st);
	cb = admin_callback_url(a);
	o = conn_obj(a, sc, def, cb);
	free(def);
	free(cb);
	store_conn_free(sc);
	return o;
}

/* ---- GET connections, GET connections/NAME ---- */

struct list_ctx {
	struct admin *a;
	json_t *arr;
	const char *def;
	const char *callback;
};

static int
list_one(void *arg, const struct store_conn *sc)
{
	struct list_ctx *ctx = arg;

	json_array_append_new(ctx->arr, conn_obj(ctx->a, sc, ctx->def, ctx->callback));
	return 0;
}

static void
api_connections(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                const struct api_params *p)
{
	char *def = store_default_connection(a->d.cfg, a->d.st), *cb = admin_callback_url(a);
	struct list_ctx ctx = {a, json_array(), def, cb};
	struct mb_err err = {0};
	json_t *j;

	if (store_conn_list(a->d.st, list_one, &ctx, &err) < 0) {
		json_decref(ctx.arr);
		admin_reply_store_error(req, &err);
	} else {
		j = json_object();
		json_object_set_new(j, "connections", ctx.arr);
		json_object_set_new(j, "callback_url", json_string(cb));
		json_object_set_new(j, "default_connection", admin_json_str_or_null(def));
		admin_reply_json(req, 200, j);
	}
	free(def);
	free(cb);
}

static void
api_connection_get(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                   const struct api_params *p)
{
	json_t *o = conn_obj_get(a, req, p->v[0]);

	if (o)
		admin_reply_json(req, 200, o);
}

/* ---- POST connections, PATCH connections/NAME ---- */

static const struct {
	const char *key;
	size_t off;
} def_strings[] = {
    {"provider", offsetof(struct oauth_conn_def, provider)},
    {"sender", offsetof(struct oauth_conn_def, sender)},
    {"auth", offsetof(struct oauth_conn_def, auth)},
    {"cloud", offsetof(struct oauth_conn_def, cloud)},
    {"tenant", offsetof(struct oauth_conn_def, tenant)},
    {"client_id", offsetof(struct oauth_conn_def, client_id)},
    {"login_url", offsetof(struct oauth_conn_def, login_url)},
    {"graph_url", offsetof(struct oauth_conn_def, graph_url)},
    {"smtp_url", offsetof(struct oauth_conn_def, smtp_url)},
    {"ca_file", offsetof(struct oauth_conn_def, ca_file)},
    {"large_messages", offsetof(struct oauth_conn_def, large_messages)},
    {"fallback", offsetof(struct oauth_conn_def, fallback)},
};

#define NDEF_STRINGS (sizeof(def_strings) / sizeof(def_strings[0]))

/* One string field: a string (null or "" clears it). -1 after replying 400. */
static int
apply_string(struct ev_http_req *req, const char *key, json_t *v, char **dst)
{
	if (!json_is_string(v) && !json_is_null(v)) {
		admin_reply_invalid(req, key, "must be a string");
		return -1;
	}
	free(*dst);
	*dst = json_is_string(v) && json_string_length(v) ? mb_strdup(json_string_value(v)) : NULL;
	return 0;
}

static int
apply_senders(struct ev_http_req *req, json_t *v, struct oauth_conn_def *def)
{
	json_t *s;
	size_t i;

	if (!json_is_array(v) && !json_is_null(v)) {
		admin_reply_invalid(req, "senders", "must be a list of mailbox addresses");
		return -1;
	}
	for (i = 0; i < def->nsenders; i++)
		free(def->senders[i]);
	def->nsenders = 0;
	json_array_foreach(v, i, s)
	{
		if (!json_is_string(s)) {
			admin_reply_invalid(req, "senders", "must be a list of mailbox addresses");
			return -1;
		}
		def->senders = mb_realloc(def->senders, (def->nsenders + 1) * sizeof(char *));
		def->senders[def->nsenders++] = mb_strdup(json_string_value(s));
	}
	return 0;
}

static int
apply_secret(struct ev_http_req *req, json_t *v, const char **secret)
{
	const char *s = json_is_string(v) ? json_string_value(v) : NULL;

	if (s == NULL || *s == '\0' || json_string_length(v) > SECRET_MAX) {
		admin_reply_invalid(
		    req, "client_secret",
		    "must be the secret's value: a non-empty string (to keep the stored "
		    "secret, leave the field out)");
		return -1;
	}
	for (const char *q = s; *q; q++) {
		if ((unsigned char)*q < ' ' || *q == 0x7f) {
			admin_reply_invalid(req, "client_secret", "holds a control character");
			return -1;
		}
	}
	*secret = s;
	return 0;
}

static int
apply_one(struct ev_http_req *req, const char *key, json_t *v, struct oauth_conn_def *def,
          const char **secret)
{
	for (size_t i = 0; i < NDEF_STRINGS; i++)
		if (strcmp(def_strings[i].key, key) == 0)
			return apply_string(req, key, v,
			                    (char **)((char *)def + def_strings[i].off));
	if (strcmp(key, "senders") == 0)
		return apply_senders(req, v, def);
	if (strcmp(key, "client_secret") == 0)
		return apply_secret(req, v, secret);
	if (strcmp(key, "force_from") == 0) {
		if (!json_is_boolean(v)) {
			admin_reply_invalid(req, "force_from", "must be true or false");
			return -1;
		}
		def->force_from = json_is_true(v);
		return 0;
	}
	if (strcmp(key, "name") == 0) {
		if (!json_is_string(v) ||
		    strcmp(json_string_value(v), def->name ? def->name : "")) {
			admin_reply_invalid(
			    req, "name",
			    "a connection cannot be renamed; create one with the new name and "
			    "delete this one");
			return -1;
		}
		return 0;
	}
	{
		char *msg = mb_asprintf("%s is not a field of a connection", key);
		admin_reply_error(req, 400, "invalid", msg,
		                  "send only the fields docs/api.md lists for connections");
		free(msg);
	}
	return -1;
}

/* Applies the body's fields to def and checks the result. -1 after replying. */
static int
apply_body(struct admin *a, struct ev_http_req *req, json_t *body, struct oauth_conn_def *def,
           bool had_secret, const char **secret)
{
	const char *key, *field = "name";
	struct mb_err err = {0};
	json_t *v;

	json_object_foreach(body, key, v)
	{
		if (apply_one(req, key, v, def, secret) < 0)
			return -1;
	}
	if (oauth_conn_def_check(def, had_secret || *secret, &field, &err) < 0) {
		admin_reply_invalid(req, field, err.msg);
		return -1;
	}
	if (def->fallback && !admin_conn_exists(a, def->fallback)) {
		admin_reply_invalid(req, "fallback", "names no existing connection");
		return -1;
	}
	return 0;
}

static void
reply_saved(struct admin *a, struct ev_http_req *req, const char *name, int status)
{
	json_t *o;

	conn_changed(a, name);
	o = conn_obj_get(a, req, name);
	if (o)
		admin_reply_json(req, status, o);
}

static void
api_connection_create(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                      const struct api_params *p)
{
	json_t *body = admin_body_json(req), *name;
	struct oauth_conn_def def = {0};
	struct mb_err err = {0};
	const char *secret = NULL;

	if (body == NULL)
		return;
	name = json_object_get(body, "name");
	if (!json_is_string(name) || !oauth_conn_name_is_valid(json_string_value(name))) {
		admin_reply_invalid(req, "name",
		                    "must be 1 to 64 letters, digits, '-', '_' or '.'");
		goto out;
	}
	def.name = mb_strdup(json_string_value(name));
	if (config_conn_find(a->d.cfg, def.name) || admin_conn_exists(a, def.name)) {
		char *msg = mb_asprintf("a connection named %s exists already", def.name);
		admin_reply_error(req, 409, "exists", msg,
		                  "choose another name, or change that connection with PATCH");
		free(msg);
		goto out;
	}
	def.provider = mb_strdup("microsoft-graph");
	if (apply_body(a, req, body, &def, false, &secret) < 0)
		goto out;
	if (oauth_conn_def_save(a->d.st, a->d.key, &def, secret, &err) < 0) {
		admin_reply_store_error(req, &err);
		goto out;
	}
	mb_info("admin: connection created: name=%s provider=%s", def.name, def.provider);
	reply_saved(a, req, def.name, 201);
out:
	oauth_conn_def_release(&def);
	json_decref(body);
}

/* The stored definition of an editable connection, or -1 after replying 404/422/503. */
static int
editable_def(struct admin *a, struct ev_http_req *req, const char *name, struct oauth_conn_def *def,
             bool *has_secret)
{
	struct mb_err err = {0};
	struct store_conn *sc;

	if (config_conn_find(a->d.cfg, name)) {
		reply_read_only(a, req, name);
		return -1;
	}
	sc = store_conn_get(a->d.st, name, &err);
	if (sc == NULL || oauth_conn_def_load(a->d.st, name, def, &err) < 0) {
		store_conn_free(sc);
		if (err.code == MB_ENOTFOUND)
			admin_reply_conn_not_found(req, name);
		else
			admin_reply_store_error(req, &err);
		return -1;
	}
	*has_secret = sc->secret_len > 0;
	store_conn_free(sc);
	return 0;
}

static void
api_connection_update(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                      const struct api_params *p)
{
	json_t *body = admin_body_json(req);
	struct oauth_conn_def def = {0};
	struct mb_err err = {0};
	const char *secret = NULL;
	bool had_secret = false;

	if (body == NULL)
		return;
	if (editable_def(a, req, p->v[0], &def, &had_secret) < 0 ||
	    apply_body(a, req, body, &def, had_secret, &secret) < 0)
		goto out;
	if (oauth_conn_def_save(a->d.st, a->d.key, &def, secret, &err) < 0) {
		admin_reply_store_error(req, &err);
		goto out;
	}
	mb_info("admin: connection changed: name=%s%s", def.name,
	        secret ? " (new client secret)" : "");
	reply_saved(a, req, def.name, 200);
out:
	oauth_conn_def_release(&def);
	json_decref(body);
}

static void
api_connection_delete(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                      const struct api_params *p)
{
	struct oauth_conn_def def = {0};
	struct mb_err err = {0};
	bool had_secret;
	char *def_name;
	json_t *j;

	if (editable_def(a, req, p->v[0], &def, &had_secret) < 0)
		return;
	oauth_conn_def_release(&def);
	admin_signin_remove(a, p->v[0]);
	if (store_conn_delete(a->d.st, p->v[0], &err) < 0) {
		admin_reply_store_error(req, &err);
		return;
	}
	def_name = store_default_connection(a->d.cfg, a->d.st);
	if (def_name && strcmp(def_name, p->v[0]) == 0)
		store_setting_set(a->d.st, "default_connection", NULL, NULL);
	free(def_name);
	mb_info("admin: connection removed, with its tokens: name=%s", p->v[0]);
	conn_changed(a, p->v[0]);
	j = json_object();
	json_object_set_new(j, "deleted", json_string(p->v[0]));
	admin_reply_json(req, 200, j);
}

/* ---- the default connection ---- */

/* The connection that has default = yes in the config file, or NULL. */
const char *
admin_config_default(struct admin *a)
{
	for (size_t i = 0; i < a->d.cfg->nconns; i++)
		if (a->d.cfg->conns[i].is_default)
			return a->d.cfg->conns[i].name;
	return NULL;
}

static void
reply_default_read_only(struct admin *a, struct ev_http_req *req, const char *cfg_def)
{
	char *msg =
	    mb_asprintf("the config file makes %s the default connection (default = yes)", cfg_def);
	char *fix = mb_asprintf("remove default = yes from [connection %s] in %s and reload, "
	                        "then choose the default here",
	                        cfg_def, a->d.cfg->path ? a->d.cfg->path : "mailbridge.conf");

	admin_reply_error(req, 422, "read_only", msg, fix);
	free(msg);
	free(fix);
}

/* Makes name (NULL: none) the default. -1 after replying. */
int
admin_default_set(struct admin *a, struct ev_http_req *req, const char *name)
{
	const char *cfg_def = admin_config_default(a);
	struct mb_err err = {0};

	if (cfg_def && (name == NULL || strcmp(cfg_def, name) != 0)) {
		reply_default_read_only(a, req, cfg_def);
		return -1;
	}
	if (cfg_def == NULL && store_setting_set(a->d.st, "default_connection", name, &err) < 0) {
		admin_reply_store_error(req, &err);
		return -1;
	}
	mb_info("admin: default connection: %s", name ? name : "(none)");
	conn_changed(a, NULL);
	return 0;
}

static void
api_connection_default(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                       const struct api_params *p)
{
	json_t *o;

	if (!admin_conn_exists(a, p->v[0])) {
		admin_reply_conn_not_found(req, p->v[0]);
		return;
	}
	if (admin_default_set(a, req, p->v[0]) < 0)
		return;
	o = conn_obj_get(a, req, p->v[0]);
	if (o)
		admin_reply_json(req, 200, o);
}

const struct api_route admin_routes_conn[] = {
    {"GET", "connections", api_connections, false},
    {"POST", "connections", api_connection_create, false},
    {"GET", "connections/*", api_connection_get, false},
    {"PATCH", "connections/*", api_connection_update, false},
    {"DELETE", "connections/*", api_connection_delete, false},
    {"POST", "connections/*/default", api_connection_default, false},
    {"POST", "connections/*/signin", admin_api_signin_start, false},
    {"GET", "connections/*/signin", admin_api_signin_status, false},
    {"GET", "settings", admin_api_settings_get, false},
    {"PATCH", "settings", admin_api_settings_patch, false},
    {NULL, NULL, NULL, false},
};
