/* mailbridge connection ... and mailbridge auth ...: connections and sign-in. */
#include "cli.h"
#include "cli_internal.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <unistd.h>

#include "oauth/oauth.h"
#include "store/store.h"
#include "util/util.h"

/* What every command here needs: the config, the store and the key. */
struct env {
	struct config *cfg;
	struct store *st;
	struct mb_key key;
};

static int
env_open(const struct cli_opts *o, struct env *e)
{
	struct mb_err err = {0};

	memset(e, 0, sizeof(*e));
	e->cfg = cli_config_load(o);
	if (e->cfg == NULL)
		return EX_CONFIG;
	e->st = store_open(e->cfg->server.data_dir, true, &err);
	if (e->st == NULL) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		config_free(e->cfg);
		return EX_CANTCREAT;
	}
	if (mb_key_load(e->cfg->server.key_file, e->cfg->server.data_dir, true, &e->key, &err) <
	        0 ||
	    oauth_conns_sync(e->cfg, e->st, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		store_close(e->st);
		config_free(e->cfg);
		return EX_CONFIG;
	}
	return EX_OK;
}

static void
env_close(struct env *e)
{
	mb_key_wipe(&e->key);
	store_close(e->st);
	config_free(e->cfg);
}

/* ---- connection add ---- */

static int
read_first_line(const char *path, char **out)
{
	FILE *f = fopen(path, "r");
	struct mb_buf b = {0};
	int ch;

	if (f == NULL) {
		fprintf(stderr, "mailbridge: %s: %m\n", path);
		return -1;
	}
	while ((ch = fgetc(f)) != EOF && ch != '\n' && ch != '\r' && b.len < 4096) {
		char c = (char)ch;
		mb_buf_append(&b, &c, 1);
	}
	fclose(f);
	if (b.len == 0) {
		fprintf(stderr, "mailbridge: %s is empty\n", path);
		mb_buf_wipe(&b);
		return -1;
	}
	*out = mb_buf_steal(&b);
	return 0;
}

/* Sets *field (an owned string of def) to a copy of v. */
static void
def_set(char **field, const char *v)
{
	free(*field);
	*field = mb_strdup(v);
}

/* Fills def from the options of connection add; -1 on an unknown option. */
static int
conn_add_opts(int argc, char **argv, struct oauth_conn_def *def, struct cli_opts *o,
              const char **secret_file, bool *make_default)
{
	static const struct option longopts[] = {
	    {"provider", required_argument, NULL, 'p'},
	    {"sender", required_argument, NULL, 'S'},
	    {"tenant", required_argument, NULL, 't'},
	    {"client-id", required_argument, NULL, 'i'},
	    {"client-secret-file", required_argument, NULL, 'f'},
	    {"auth", required_argument, NULL, 'a'},
	    {"cloud", required_argument, NULL, 'C'},
	    {"login-url", required_argument, NULL, 'L'},
	    {"graph-url", required_argument, NULL, 'G'},
	    {"smtp-url", required_argument, NULL, 'M'},
	    {"ca-file", required_argument, NULL, 'A'},
	    {"large-messages", required_argument, NULL, 'l'},
	    {"default", no_argument, NULL, 'd'},
	    {"config", required_argument, NULL, 'c'},
	    {"set", required_argument, NULL, 's'},
	    {NULL, 0, NULL, 0}};
	char **fields[128] = {NULL};
	int c;

	fields['p'] = &def->provider;
	fields['S'] = &def->sender;
	fields['t'] = &def->tenant;
	fields['i'] = &def->client_id;
	fields['a'] = &def->auth;
	fields['C'] = &def->cloud;
	fields['L'] = &def->login_url;
	fields['G'] = &def->graph_url;
	fields['M'] = &def->smtp_url;
	fields['A'] = &def->ca_file;
	fields['l'] = &def->large_messages;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		if (c > 0 && c < 128 && fields[c]) {
			def_set(fields[c], optarg);
		} else if (c == 'f') {
			*secret_file = optarg;
		} else if (c == 'd') {
			*make_default = true;
		} else if (c == 'c') {
			o->config = optarg;
			o->config_given = true;
		} else if (c == 's') {
			o->sets = mb_realloc(o->sets, (size_t)(o->nsets + 1) * sizeof(char *));
			o->sets[o->nsets++] = optarg;
		} else {
			fprintf(stderr, "mailbridge connection add: unknown option '%s'\n",
			        argv[optind - 1]);
			return -1;
		}
	}
	return 0;
}

static int
conn_add(int argc, char **argv)
{
	struct oauth_conn_def def = {0};
	struct cli_opts o = {0};
	struct mb_err err = {0};
	struct env e;
	const char *secret_file = NULL, *field = NULL;
	bool make_default = false;
	char *secret = NULL, fp[24];
	int rc = EX_USAGE;

	def.provider = mb_strdup("microsoft-graph");
	if (conn_add_opts(argc, argv, &def, &o, &secret_file, &make_default) < 0)
		goto out;
	if (optind != argc - 1 || def.sender == NULL) {
		fprintf(stderr,
		        "usage: mailbridge connection add NAME --provider P --sender ADDR "
		        "[--tenant T] [--client-id ID] [--client-secret-file F] [--auth "
		        "delegated|app-only] [--cloud C] [--login-url U] [--graph-url U] "
		        "[--smtp-url U] [--ca-file F] [--large-messages fail|upload-session|smtp] "
		        "[--default]\n");
		goto out;
	}
	def.name = mb_strdup(argv[optind]);
	if (oauth_conn_def_check(&def, secret_file != NULL, &field, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg); /* the message names the field */
		goto out;
	}
	if (secret_file && read_first_line(secret_file, &secret) < 0) {
		rc = EX_NOINPUT;
		goto out;
	}
	rc = env_open(&o, &e);
	if (rc != EX_OK)
		goto out;
	if (config_conn_find(e.cfg, def.name)) {
		fprintf(stderr, "mailbridge: connection %s is defined in %s; change it there\n",
		        def.name, e.cfg->path ? e.cfg->path : "the config file");
		rc = EX_DATAERR;
	} else if (oauth_conn_def_save(e.st, &e.key, &def, secret, &err) < 0 ||
	           (make_default &&
	            store_setting_set(e.st, "default_connection", def.name, &err) < 0)) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = EX_IOERR;
	} else {
		if (secret)
			mb_fingerprint(secret, strlen(secret), fp);
		printf("connection %s saved (%s, %s%s%s)\n", def.name, def.provider, def.sender,
		       secret ? ", client secret " : "", secret ? fp : "");
		if (strcmp(def.provider, "smtp") != 0)
			printf("next: mailbridge auth login %s --device   (or --browser)\n",
			       def.name);
		rc = EX_OK;
	}
	env_close(&e);
out:
	mb_secret_free(secret);
	oauth_conn_def_release(&def);
	free(o.sets);
	return rc;
}

/* ---- connection list / show / remove / default, auth status ---- */

struct show_ctx {
	struct env *e;
	const char *only;
	char *def;
	bool json;
	json_t *arr;
	int count;
};

static int64_t
token_valid_min(struct env *e, const char *conn, const char *resource)
{
	int64_t expires = 0;

	if (store_token_get(e->st, conn, resource, "access", NULL, NULL, &expires, NULL, NULL, NULL,
	                    NULL) < 0)
		return -1;
	return (expires - mb_now_ms()) / 60000;
}

static int
show_one(void *arg, const struct store_conn *sc)
{
	struct show_ctx *ctx = arg;
	bool is_def = ctx->def && strcmp(ctx->def, sc->name) == 0;
	int64_t graph = token_valid_min(ctx->e, sc->name, "graph");
	int64_t outlook = token_valid_min(ctx->e, sc->name, "outlook");
	char date[40] = "";

	if (ctx->only && strcmp(ctx->only, sc->name) != 0)
		return 0;
	ctx->count++;
	if (sc->last_refresh_ms)
		mb_iso_date(sc->last_refresh_ms, date, sizeof(date));
	if (ctx->json) {
		json_t *o = json_object();
		json_object_set_new(o, "name", json_string(sc->name));
		json_object_set_new(o, "provider", json_string(sc->provider));
		json_object_set_new(o, "sender", json_string(sc->sender));
		json_object_set_new(o, "source", json_string(sc->source));
		json_object_set_new(o, "default", json_boolean(is_def));
		json_object_set_new(o, "state", json_string(sc->state));
		json_object_set_new(o, "reason",
		                    sc->state_reason ? json_string(sc->state_reason) : json_null());
		json_object_set_new(o, "account",
		                    sc->account ? json_string(sc->account) : json_null());
		json_object_set_new(o, "scopes",
		                    sc->scopes ? json_string(sc->scopes) : json_null());
		json_object_set_new(o, "graph_token_valid_min",
		                    graph >= 0 ? json_integer(graph) : json_null());
		json_object_set_new(o, "outlook_token_valid_min",
		                    outlook >= 0 ? json_integer(outlook) : json_null());
		json_object_set_new(o, "last_refresh", *date ? json_string(date) : json_null());
		json_object_set_new(o, "last_error",
		                    sc->last_error ? json_string(sc->last_error) : json_null());
		json_object_set_new(o, "fix",
		                    sc->last_fix ? json_string(sc->last_fix) : json_null());
		json_object_set_new(o, "client_secret",
		                    sc->secret_fp ? json_string(sc->secret_fp) : json_null());
		json_array_append_new(ctx->arr, o);
		return 0;
	}
	printf("%s%s  %s  %s  [%s]\n", sc->name, is_def ? " (default)" : "", sc->provider,
	       sc->sender, sc->source);
	printf("  state:        %s%s%s\n", sc->state, sc->state_reason ? ": " : "",
	       sc->state_reason ? sc->state_reason : "");
	if (sc->account)
		printf("  signed in as: %s\n", sc->account);
	if (graph > 0)
		printf("  graph token:  valid for %lld min\n", (long long)graph);
	else if (graph == 0)
		printf("  graph token:  expired (renewed when needed)\n");
	if (outlook > 0)
		printf("  smtp token:   valid for %lld min\n", (long long)outlook);
	else if (outlook == 0)
		printf("  smtp token:   expired (renewed when needed)\n");
	if (sc->scopes)
		printf("  scopes:       %s\n", sc->scopes);
	if (*date)
		printf("  last refresh: %s\n", date);
	if (sc->secret_fp)
		printf("  secret:       %s\n", sc->secret_fp);
	if (sc->last_error)
		printf("  last error:   %s\n  fix:          %s\n", sc->last_error,
		       sc->last_fix ? sc->last_fix : "-");
	return 0;
}

static int
show(const struct cli_opts *o, const char *only)
{
	struct env e;
	struct show_ctx ctx = {.e = &e, .only = only, .json = o->json};
	struct mb_err err = {0};
	int rc = env_open(o, &e);

	if (rc != EX_OK)
		return rc;
	ctx.def = store_default_connection(e.cfg, e.st);
	if (o->json)
		ctx.arr = json_array();
	if (store_conn_list(e.st, show_one, &ctx, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = EX_IOERR;
	} else if (only && ctx.count == 0) {
		fprintf(stderr, "mailbridge: no connection named '%s'\n", only);
		rc = EX_NOINPUT;
	} else if (o->json) {
		json_dumpf(ctx.arr, stdout, JSON_INDENT(2));
		printf("\n");
	} else if (ctx.count == 0) {
		printf("(no connections: add one with mailbridge connection add, or a [connection "
		       "NAME] section)\n");
	}
	json_decref(ctx.arr);
	free(ctx.def);
	env_close(&e);
	return rc;
}

static int
conn_remove(const struct cli_opts *o, const char *name)
{
	struct env e;
	struct mb_err err = {0};
	int rc = env_open(o, &e);

	if (rc != EX_OK)
		return rc;
	if (config_conn_find(e.cfg, name)) {
		fprintf(stderr, "mailbridge: connection %s is defined in %s; remove it there\n",
		        name, e.cfg->path ? e.cfg->path : "the config file");
		rc = EX_DATAERR;
	} else if (store_conn_delete(e.st, name, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = err.code == MB_ENOTFOUND ? EX_NOINPUT : EX_IOERR;
	} else {
		char *def = store_default_connection(e.cfg, e.st);
		if (def && strcmp(def, name) == 0)
			store_setting_set(e.st, "default_connection", NULL, NULL);
		free(def);
		printf("connection %s removed, with its tokens\n", name);
	}
	env_close(&e);
	return rc;
}

static int
conn_default(const struct cli_opts *o, const char *name)
{
	struct env e;
	struct mb_err err = {0};
	struct store_conn *sc;
	int rc = env_open(o, &e);

	if (rc != EX_OK)
		return rc;
	for (size_t i = 0; i < e.cfg->nconns; i++) {
		if (e.cfg->conns[i].is_default && strcmp(e.cfg->conns[i].name, name) != 0) {
			fprintf(stderr,
			        "mailbridge: %s sets default = yes on connection %s; change "
			        "it there\n",
			        e.cfg->path ? e.cfg->path : "the config file",
			        e.cfg->conns[i].name);
			env_close(&e);
			return EX_DATAERR;
		}
	}
	sc = store_conn_get(e.st, name, &err);
	if (sc == NULL) {
		fprintf(stderr, "mailbridge: no connection named '%s'\n", name);
		rc = EX_NOINPUT;
	} else if (store_setting_set(e.st, "default_connection", name, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = EX_IOERR;
	} else {
		printf("default connection: %s\n", name);
	}
	store_conn_free(sc);
	env_close(&e);
	return rc;
}

int
cli_connection_main(int argc, char **argv)
{
	struct cli_opts o;
	const char *verb = argc > 1 ? argv[1] : "list";
	int rc;

	if (strcmp(verb, "add") == 0)
		return conn_add(argc - 1, argv + 1);
	if (cli_opts_parse(argc, argv, "json,set", &o) < 0)
		return EX_USAGE;
	verb = o.nargs > 0 ? o.args[0] : "list";
	if (strcmp(verb, "list") == 0 && o.nargs == 1)
		rc = show(&o, NULL);
	else if (strcmp(verb, "show") == 0 && o.nargs == 2)
		rc = show(&o, o.args[1]);
	else if (strcmp(verb, "remove") == 0 && o.nargs == 2)
		rc = conn_remove(&o, o.args[1]);
	else if (strcmp(verb, "default") == 0 && o.nargs == 2)
		rc = conn_default(&o, o.args[1]);
	else {
		fprintf(stderr, "usage: mailbridge connection list|show NAME|remove NAME|default "
		                "NAME|add NAME ... [--json] [-c FILE]\n");
		rc = EX_USAGE;
	}
	cli_opts_free(&o);
	return rc;
}

/* ---- auth login / status ---- */

static int
login_browser(struct env *e, const struct oauth_conn *c)
{
	struct mb_buf url = {0};
	struct mb_err err = {0};
	char state[64];
	int64_t deadline = mb_mono_ms() + 10 * 60 * 1000;
	int rc = EX_TEMPFAIL;

	if (oauth_browser_start(c, e->st, &e->key, e->cfg->server.public_url, &url, state,
	                        sizeof(state), &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		return EX_DATAERR;
	}
	printf("Open this address in a browser and sign in as %s:\n\n  %s\n\n", c->sender,
	       url.data);
	printf("Microsoft then returns to %s/oauth/callback, which mailbridge serve answers "
	       "(it must be running).\nWaiting up to 10 minutes...\n",
	       e->cfg->server.public_url);
	fflush(stdout);
	mb_buf_release(&url);
	while (mb_mono_ms() < deadline) {
		char *result = NULL, *detail = NULL;
		if (store_oauth_state_result(e->st, state, &result, &detail, &err) < 0) {
			fprintf(stderr, "mailbridge: %s\n", err.msg);
			return EX_IOERR;
		}
		if (result) {
			if (strcmp(result, "ok") == 0) {
				printf("Connected as %s.\n",
				       detail && *detail ? detail : "(unknown)");
				rc = EX_OK;
			} else {
				fprintf(stderr, "mailbridge: sign-in failed: %s\n",
				        detail ? detail : "");
				rc = EX_NOPERM;
			}
			free(result);
			free(detail);
			return rc;
		}
		sleep(1);
	}
	fprintf(stderr, "mailbridge: the sign-in did not finish within 10 minutes; run the "
	                "command again\n");
	return rc;
}

static int
auth_login(int argc, char **argv)
{
	static const struct option longopts[] = {{"device", no_argument, NULL, 'd'},
	                                         {"browser", no_argument, NULL, 'b'},
	                                         {"config", required_argument, NULL, 'c'},
	                                         {"set", required_argument, NULL, 's'},
	                                         {NULL, 0, NULL, 0}};
	struct cli_opts o = {0};
	bool browser = false;
	struct env e;
	struct oauth_conn *c;
	struct mb_err err = {0};
	int ch, rc;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		if (ch == 'd')
			browser = false;
		else if (ch == 'b')
			browser = true;
		else if (ch == 'c') {
			o.config = optarg;
			o.config_given = true;
		} else if (ch == 's') {
			o.sets = mb_realloc(o.sets, (size_t)(o.nsets + 1) * sizeof(char *));
			o.sets[o.nsets++] = optarg;
		} else {
			fprintf(stderr,
			        "usage: mailbridge auth login NAME [--device | --browser]\n");
			free(o.sets);
			return EX_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: mailbridge auth login NAME [--device | --browser]\n");
		free(o.sets);
		return EX_USAGE;
	}
	rc = env_open(&o, &e);
	free(o.sets);
	if (rc != EX_OK)
		return rc;
	c = oauth_conn_load(e.cfg, e.st, &e.key, argv[optind], &err);
	if (c == NULL) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		env_close(&e);
		return err.code == MB_ENOTFOUND ? EX_NOINPUT : EX_CONFIG;
	}
	if (c->provider == OAUTH_PROVIDER_SMTP) {
		fprintf(stderr,
		        "mailbridge: connection %s uses plain SMTP with a password; there "
		        "is nothing to sign in to\n",
		        c->name);
		rc = EX_USAGE;
	} else if (browser && c->auth == OAUTH_AUTH_DELEGATED) {
		rc = login_browser(&e, c);
	} else if (oauth_device_login(c, e.st, &e.key, stdout, NULL, &err) < 0) {
		fprintf(stderr, "mailbridge: sign-in failed: %s\n", err.msg);
		rc = err.code == MB_ETEMP ? EX_TEMPFAIL : EX_NOPERM;
	} else {
		rc = EX_OK;
	}
	oauth_conn_free(c);
	env_close(&e);
	return rc;
}

int
cli_auth_main(int argc, char **argv)
{
	struct cli_opts o;
	int rc;

	if (argc > 1 && strcmp(argv[1], "login") == 0)
		return auth_login(argc - 1, argv + 1);
	if (cli_opts_parse(argc, argv, "json,set", &o) < 0)
		return EX_USAGE;
	if (o.nargs >= 1 && strcmp(o.args[0], "status") == 0 && o.nargs <= 2) {
		rc = show(&o, o.nargs == 2 ? o.args[1] : NULL);
	} else {
		fprintf(stderr, "usage: mailbridge auth login NAME [--device | --browser]\n"
		                "       mailbridge auth status [NAME] [--json]\n");
		rc = EX_USAGE;
	}
	cli_opts_free(&o);
	return rc;
}
