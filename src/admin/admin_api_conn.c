/* /api/v1 connections: list, create, read, update, delete; sign-in (browser and device
 * code); settings. */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

#include "store/store.h"

/* ---- GET /api/v1/connections ---- */

struct conn_ctx {
	struct admin *a;
	json_t *arr;
	char *def;
};

static json_t *
token_valid_min(struct admin *a, const char *conn, const char *resource)
{
	int64_t expires = 0;

	if (store_token_get(a->d.st, conn, resource, "access", NULL, NULL, &expires, NULL, NULL,
	                    NULL, NULL) < 0 ||
	    expires == 0)
		return json_null();
	return json_integer((expires - mb_now_ms()) / 60000);
}

static int
conn_one(void *arg, const struct store_conn *sc)
{
	struct conn_ctx *ctx = arg;
	json_t *o = json_object();
	char date[40] = "";

	/* Only what is safe to show: the secret never leaves the store, not even sealed. */
	json_object_set_new(o, "name", json_string(sc->name));
	json_object_set_new(o, "provider", json_string(sc->provider));
	json_object_set_new(o, "sender", json_string(sc->sender));
	json_object_set_new(o, "source", admin_json_str_or_null(sc->source));
	json_object_set_new(o, "default",
	                    json_boolean(ctx->def && strcmp(ctx->def, sc->name) == 0));
	json_object_set_new(o, "state", admin_json_str_or_null(sc->state));
	json_object_set_new(o, "reason", admin_json_str_or_null(sc->state_reason));
	json_object_set_new(o, "account", admin_json_str_or_null(sc->account));
	json_object_set_new(o, "graph_token_valid_min", token_valid_min(ctx->a, sc->name, "graph"));
	json_object_set_new(o, "outlook_token_valid_min",
	                    token_valid_min(ctx->a, sc->name, "outlook"));
	if (sc->last_refresh_ms)
		mb_iso_date(sc->last_refresh_ms, date, sizeof(date));
	json_object_set_new(o, "last_refresh", *date ? json_string(date) : json_null());
	json_object_set_new(o, "last_error", admin_json_str_or_null(sc->last_error));
	json_object_set_new(o, "fix", admin_json_str_or_null(sc->last_fix));
	json_object_set_new(o, "secret_fingerprint", admin_json_str_or_null(sc->secret_fp));
	date[0] = '\0';
	if (sc->secret_expires_ms)
		mb_iso_date(sc->secret_expires_ms, date, sizeof(date));
	json_object_set_new(o, "secret_expires", *date ? json_string(date) : json_null());
	json_array_append_new(ctx->arr, o);
	return 0;
}

static void
api_connections(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
                const struct api_params *p)
{
	struct conn_ctx ctx = {a, json_array(), admin_default_conn(a)};
	struct mb_err err = {0};
	json_t *j;

	if (store_conn_list(a->d.st, conn_one, &ctx, &err) < 0) {
		json_decref(ctx.arr);
		free(ctx.def);
		admin_reply_store_error(req, &err);
		return;
	}
	free(ctx.def);
	j = json_object();
	json_object_set_new(j, "connections", ctx.arr);
	admin_reply_json(req, 200, j);
}

const struct api_route admin_routes_conn[] = {
    {"GET", "connections", api_connections, false},
    {NULL, NULL, NULL, false},
};

void
admin_conn_state_free(struct admin *a)
{
}
