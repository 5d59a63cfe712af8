/* /api/v1/settings: the default connection, log retention and alerts. A key set in the
 * config file wins (and is read-only here); else the stored setting; else the default. */
#include "admin_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/deliver.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

/* ---- settings ---- */

static const char *const source_names[] = {
    [STORE_SETTING_CONFIG] = "config",
    [STORE_SETTING_STORE] = "store",
    [STORE_SETTING_DEFAULT] = "default",
};

/* API key -> [server] key (and store setting) */
static const struct {
	const char *api;
	const char *key;
	bool integer;
} settings[] = {
    {"retention_days", "log_retention_days", true},
    {"alert_webhook", "alert_webhook", false},
    {"alert_email", "alert_email", false},
};

#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static json_t *
settings_obj(struct admin *a)
{
	json_t *j = json_object(), *src = json_object();
	char *def = store_default_connection(a->d.cfg, a->d.st), *stored = NULL;

	json_object_set_new(j, "default_connection", admin_json_str_or_null(def));
	if (admin_config_default(a))
		json_object_set_new(src, "default_connection", json_string("config"));
	else if (store_setting_get(a->d.st, "default_connection", &stored, NULL) == 0)
		json_object_set_new(src, "default_connection", json_string("store"));
	else
		json_object_set_new(src, "default_connection", json_string("default"));
	for (size_t i = 0; i < NSETTINGS; i++) {
		enum store_setting_source from;
		char *v = store_server_setting(a->d.st, a->d.cfg, settings[i].key, &from);
		json_object_set_new(j, settings[i].api,
		                    v == NULL             ? json_null()
		                    : settings[i].integer ? json_integer(strtoll(v, NULL, 10))
		                                          : json_string(v));
		json_object_set_new(src, settings[i].api, json_string(source_names[from]));
		free(v);
	}
	json_object_set_new(j, "sources", src);
	free(def);
	free(stored);
	return j;
}

void
admin_api_settings_get(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                       const struct api_params *p)
{
	admin_reply_json(req, 200, settings_obj(a));
}

static bool
is_http_url(const char *s)
{
	const char *host;

	if (mb_str_has_prefix_ci(s, "https://"))
		host = s + 8;
	else if (mb_str_has_prefix_ci(s, "http://"))
		host = s + 7;
	else
		return false;
	if (*host == '\0' || *host == '/' || strlen(s) > 2048)
		return false;
	for (const char *q = s; *q; q++)
		if ((unsigned char)*q <= ' ' || *q == 0x7f)
			return false;
	return true;
}

/* Checks one setting's new value; its text for the store (a new string, NULL to clear) in
 * *out. -1 after replying. */
static int
setting_check(struct admin *a, struct ev_http_req *req, size_t i, json_t *v, char **out)
{
	const char *api = settings[i].api, *s = json_string_value(v);

	*out = NULL;
	if (store_server_setting_in_config(a->d.cfg, settings[i].key)) {
		char *msg = mb_asprintf("%s is set in the config file (%s)", api, settings[i].key);
		char *fix = mb_asprintf(
		    "change %s in [server] of %s and reload, or remove it there "
		    "to manage it here",
		    settings[i].key, a->d.cfg->path ? a->d.cfg->path : "mailbridge.conf");
		admin_reply_error(req, 422, "read_only", msg, fix);
		free(msg);
		free(fix);
		return -1;
	}
	if (settings[i].integer) {
		if (!json_is_integer(v) || json_integer_value(v) < 1 ||
		    json_integer_value(v) > 3650) {
			admin_reply_invalid(req, api, "must be a whole number from 1 to 3650");
			return -1;
		}
		*out = mb_asprintf("%lld", (long long)json_integer_value(v));
		return 0;
	}
	if (json_is_null(v) || (s && *s == '\0'))
		return 0;
	if (s == NULL ||
	    (strcmp(api, "alert_webhook") == 0 ? !is_http_url(s) : !oauth_addr_is_valid(s))) {
		admin_reply_invalid(req, api,
		                    strcmp(api, "alert_webhook") == 0
		                        ? "must be an http:// or https:// URL"
		                        : "must be a mailbox address such as ops@example.com");
		return -1;
	}
	*out = mb_strdup(s);
	return 0;
}

/* default_connection: null, or a connection that exists. -1 after replying. */
static int
default_check(struct admin *a, struct ev_http_req *req, json_t *v)
{
	if (json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		admin_reply_invalid(req, "default_connection", "must be a connection name or null");
		return -1;
	}
	if (!admin_conn_exists(a, json_string_value(v))) {
		admin_reply_invalid(req, "default_connection", "names no existing connection");
		return -1;
	}
	return 0;
}

/* Checks every key of body; the store texts go into vals[] (owned). -1 after replying. */
static int
settings_check(struct admin *a, struct ev_http_req *req, json_t *body, char **vals, bool *set)
{
	const char *key;
	json_t *v;

	json_object_foreach(body, key, v)
	{
		size_t i;

		if (strcmp(key, "default_connection") == 0) {
			if (default_check(a, req, v) < 0)
				return -1;
			continue;
		}
		for (i = 0; i < NSETTINGS && strcmp(settings[i].api, key) != 0; i++)
			;
		if (i == NSETTINGS) {
			char *msg = mb_asprintf("%s is not a setting", key);
			admin_reply_error(req, 400, "invalid", msg,
			                  "send default_connection, retention_days, alert_webhook "
			                  "or alert_email");
			free(msg);
			return -1;
		}
		if (setting_check(a, req, i, v, &vals[i]) < 0)
			return -1;
		set[i] = true;
	}
	return 0;
}

void
admin_api_settings_patch(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                         const struct api_params *p)
{
	json_t *body = admin_body_json(req), *def;
	char *vals[NSETTINGS] = {NULL};
	bool set[NSETTINGS] = {false};
	struct mb_err err = {0};
	size_t i;

	if (body == NULL)
		return;
	if (settings_check(a, req, body, vals, set) < 0)
		goto out;
	def = json_object_get(body, "default_connection");
	if (def && admin_default_set(a, req, json_string_value(def)) < 0)
		goto out;
	for (i = 0; i < NSETTINGS; i++) {
		if (set[i] && store_setting_set(a->d.st, settings[i].key, vals[i], &err) < 0) {
			admin_reply_store_error(req, &err);
			goto out;
		}
		if (set[i])
			mb_info("admin: setting changed: %s", settings[i].key);
	}
	admin_reply_json(req, 200, settings_obj(a));
out:
	for (i = 0; i < NSETTINGS; i++)
		free(vals[i]);
	json_decref(body);
}
