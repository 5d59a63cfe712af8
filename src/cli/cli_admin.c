/* mailbridge admin: the admin password and the API tokens of the JSON API (docs/api.md). Works
 * on the store directly, so it works whether or not the daemon runs. */
#include "cli_internal.h"
#include "cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "admin/admin.h"
#include "store/store.h"

/* Reads one line from stdin without echo when it is a terminal. */

static bool
token_name_is_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static int
admin_password(struct store *st)
{
	struct mb_err err = {0};
	char *pw, *again;
	int rc = EX_OK;

	pw = cli_read_secret("new admin password: ");
	if (strlen(pw) < ADMIN_PASSWORD_MIN) {
		fprintf(stderr, "mailbridge: the admin password needs at least %d characters\n",
		        ADMIN_PASSWORD_MIN);
		mb_secret_free(pw);
		return EX_DATAERR;
	}
	if (isatty(STDIN_FILENO)) {
		again = cli_read_secret("again: ");
		rc = strcmp(pw, again) == 0 ? EX_OK : EX_DATAERR;
		mb_secret_free(again);
		if (rc != EX_OK) {
			fprintf(stderr, "mailbridge: the two passwords differ; nothing changed\n");
			mb_secret_free(pw);
			return rc;
		}
	}
	rc = admin_password_set(st, pw, &err) < 0 ? EX_IOERR : EX_OK;
	mb_secret_free(pw);
	if (rc != EX_OK)
		fprintf(stderr, "mailbridge: %s\n", err.msg);
	else
		printf("admin password set; log in at the web UI or POST /api/v1/login\n");
	return rc;
}

static int
token_create(struct store *st, const char *name)
{
	struct mb_err err = {0};
	char hash[65], fp[24], *token;

	if (!token_name_is_valid(name)) {
		fprintf(stderr, "mailbridge: a token name is 1 to 64 of A-Z a-z 0-9 . _ -\n");
		return EX_USAGE;
	}
	token = admin_token_new();
	admin_secret_hash(token, hash);
	mb_fingerprint(token, strlen(token), fp);
	if (store_api_token_put(st, name, hash, fp, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		mb_secret_free(token);
		return err.code == MB_EINVAL ? EX_DATAERR : EX_IOERR;
	}
	printf("%s\n", token);
	fprintf(stderr,
	        "API token %s (%s) created. It is shown only this once: send it as "
	        "\"Authorization: Bearer TOKEN\".\n",
	        name, fp);
	mb_secret_free(token);
	return EX_OK;
}

struct list_ctx {
	bool json;
	json_t *arr;
	int count;
};

static void
token_list_one(void *arg, const struct store_api_token *t)
{
	struct list_ctx *ctx = arg;
	char created[40], used[40] = "";

	ctx->count++;
	mb_iso_date(t->created_ms, created, sizeof(created));
	if (t->last_used_ms)
		mb_iso_date(t->last_used_ms, used, sizeof(used));
	if (ctx->json) {
		json_t *o = json_object();
		json_object_set_new(o, "name", json_string(t->name));
		json_object_set_new(o, "fingerprint", json_string(t->fingerprint));
		json_object_set_new(o, "created", json_string(created));
		json_object_set_new(o, "last_used", *used ? json_string(used) : json_null());
		json_array_append_new(ctx->arr, o);
		return;
	}
	printf("%-24s %-16s created %s  last used %s\n", t->name, t->fingerprint, created,
	       *used ? used : "never");
}

static int
token_list(struct store *st, bool json)
{
	struct list_ctx ctx = {json, json ? json_array() : NULL, 0};
	struct mb_err err = {0};

	if (store_api_token_list(st, token_list_one, &ctx, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		json_decref(ctx.arr);
		return EX_IOERR;
	}
	if (json) {
		json_dumpf(ctx.arr, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(ctx.arr);
	} else if (ctx.count == 0) {
		printf("no API tokens (mailbridge admin token create NAME makes one)\n");
	}
	return EX_OK;
}

static int
token_revoke(struct store *st, const char *name)
{
	struct mb_err err = {0};

	if (store_api_token_delete(st, name, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		return err.code == MB_ENOTFOUND ? EX_DATAERR : EX_IOERR;
	}
	printf("API token %s revoked\n", name);
	return EX_OK;
}

static int
usage(void)
{
	fprintf(stderr,
	        "usage: mailbridge admin password [-c FILE]\n"
	        "       mailbridge admin token create NAME | list [--json] | revoke NAME\n");
	return EX_USAGE;
}

static int
run(struct store *st, const struct cli_opts *o)
{
	const char *verb = o->args[0];

	if (strcmp(verb, "password") == 0 && o->nargs == 1)
		return admin_password(st);
	if (strcmp(verb, "token") != 0 || o->nargs < 2)
		return usage();
	if (strcmp(o->args[1], "create") == 0 && o->nargs == 3)
		return token_create(st, o->args[2]);
	if (strcmp(o->args[1], "list") == 0 && o->nargs == 2)
		return token_list(st, o->json);
	if (strcmp(o->args[1], "revoke") == 0 && o->nargs == 3)
		return token_revoke(st, o->args[2]);
	return usage();
}

int
cli_admin_main(int argc, char **argv)
{
	struct cli_opts o;
	struct config *c;
	struct store *st;
	struct mb_err err = {0};
	int rc;

	if (cli_opts_parse(argc, argv, "json,set", &o) < 0)
		return EX_USAGE;
	if (o.nargs < 1) {
		cli_opts_free(&o);
		return usage();
	}
	c = cli_config_load(&o);
	if (c == NULL) {
		cli_opts_free(&o);
		return EX_CONFIG;
	}
	st = store_open(c->server.data_dir, true, &err);
	if (st == NULL) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = EX_IOERR;
	} else {
		rc = run(st, &o);
		store_close(st);
	}
	config_free(c);
	cli_opts_free(&o);
	return rc;
}
