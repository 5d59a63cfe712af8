/* Option parsing and config loading shared by the subcommands. */
#include "cli_internal.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/util.h"

static bool
allowed_has(const char *allowed, const char *name)
{
	size_t n = strlen(name);
	const char *p = allowed;

	while ((p = strstr(p, name)) != NULL) {
		if ((p == allowed || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
			return true;
		p += n;
	}
	return false;
}

int
cli_opts_parse(int argc, char **argv, const char *allowed, struct cli_opts *o)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},     {"json", no_argument, NULL, 'j'},
	    {"set", required_argument, NULL, 's'},        {"status", required_argument, NULL, 'S'},
	    {"limit", required_argument, NULL, 'n'},      {"raw", no_argument, NULL, 'r'},
	    {"to", required_argument, NULL, 't'},         {"from", required_argument, NULL, 'f'},
	    {"connection", required_argument, NULL, 'C'}, {NULL, 0, NULL, 0}};
	int c, idx;

	memset(o, 0, sizeof(*o));
	o->limit = -1;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "c:n:", longopts, &idx)) != -1) {
		const char *name = NULL;
		int64_t v;

		switch (c) {
		case 'c':
			o->config = optarg;
			o->config_given = true;
			continue;
		case 'j':
			name = "json";
			o->json = true;
			break;
		case 's':
			name = "set";
			o->sets = mb_realloc(o->sets, (size_t)(o->nsets + 1) * sizeof(char *));
			o->sets[o->nsets++] = optarg;
			break;
		case 'S':
			name = "status";
			o->status = optarg;
			break;
		case 'n':
			name = "limit";
			if (mb_parse_int(optarg, &v) < 0 || v < 1) {
				fprintf(stderr, "mailbridge: --limit needs a positive number\n");
				return -1;
			}
			o->limit = v;
			break;
		case 'r':
			name = "raw";
			o->raw = true;
			break;
		case 't':
			name = "to";
			o->to = mb_realloc(o->to, (size_t)(o->nto + 1) * sizeof(char *));
			o->to[o->nto++] = optarg;
			break;
		case 'f':
			name = "from";
			o->from = optarg;
			break;
		case 'C':
			name = "connection";
			o->connection = optarg;
			break;
		default:
			fprintf(stderr, "mailbridge %s: unknown option '%s'\n", argv[0],
			        argv[optind - 1]);
			return -1;
		}
		if (!allowed_has(allowed, name)) {
			fprintf(stderr, "mailbridge %s: option --%s does not apply here\n", argv[0],
			        name);
			return -1;
		}
	}
	o->args = argv + optind;
	o->nargs = argc - optind;
	return 0;
}

void
cli_opts_free(struct cli_opts *o)
{
	free(o->to);
	free(o->sets);
}

struct config *
cli_config_load_err(const struct cli_opts *o, struct mb_err *err)
{
	const char *path = config_default_path(o->config);
	struct config *c;

	if (!o->config_given && getenv("MAILBRIDGE_CONFIG") == NULL && access(path, F_OK) != 0)
		c = config_new_defaults();
	else
		c = config_load(path, err);
	if (c == NULL)
		return NULL;
	for (int i = 0; i < o->nsets; i++) {
		const char *eq = strchr(o->sets[i], '=');
		char *key;
		int rc;

		if (eq == NULL) {
			mb_err_set(err, MB_EINVAL, "--set %s: expected KEY=VALUE", o->sets[i]);
			config_free(c);
			return NULL;
		}
		key = mb_strndup(o->sets[i], (size_t)(eq - o->sets[i]));
		rc = config_set(c, key, eq + 1, err);
		free(key);
		if (rc < 0) {
			char why[sizeof(err->msg)];
			snprintf(why, sizeof(why), "%s", err->msg);
			mb_err_set(err, MB_EINVAL, "--set %s: %.400s", o->sets[i], why);
			config_free(c);
			return NULL;
		}
	}
	if (config_validate(c, err) < 0) {
		config_free(c);
		return NULL;
	}
	return c;
}

struct config *
cli_config_load(const struct cli_opts *o)
{
	struct mb_err err = {0};
	struct config *c = cli_config_load_err(o, &err);

	if (c == NULL)
		fprintf(stderr, "mailbridge: %s\n", err.msg);
	return c;
}
