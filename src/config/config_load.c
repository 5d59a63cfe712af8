/*
 * Reading the file with inih. Our reader hands inih one cleaned line at a time and counts
 * lines, so the handler, which inih calls right after reading a line, knows its number. The
 * reader also opens sections itself: inih (built without INI_CALL_HANDLER_ON_NEW_SECTION)
 * would not show us an empty or repeated section header.
 */
#include "config/config_impl.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#define CONFIG_NAME_MAX 64

struct config_parse {
	struct config *c;
	FILE *f;
	char *buf; /* getline's */
	size_t cap;
	int lineno;
	bool in_section;
	enum config_section sec;
	size_t inst; /* index into conns / users */
	int server_line;
	int err_line; /* first error; 0 = none yet */
	char why[CONFIG_WHY_LEN];
};

static const char *const config_section_names[] = {"server", "connection", "user"};

static void config_parse_fail(struct config_parse *ps, const char *fmt, ...) MB_PRINTF(2, 3);

static void
config_parse_fail(struct config_parse *ps, const char *fmt, ...)
{
	va_list ap;

	if (ps->err_line != 0)
		return;
	ps->err_line = ps->lineno;
	va_start(ap, fmt);
	vsnprintf(ps->why, sizeof(ps->why), fmt, ap);
	va_end(ap);
}

static void *
config_base(struct config *c, enum config_section sec, size_t inst)
{
	if (sec == CONFIG_SEC_CONNECTION)
		return &c->conns[inst];
	if (sec == CONFIG_SEC_USER)
		return &c->users[inst];
	return &c->server;
}

static int *
config_lines(struct config *c, enum config_section sec, size_t inst)
{
	if (sec == CONFIG_SEC_CONNECTION)
		return c->conns[inst].lines;
	if (sec == CONFIG_SEC_USER)
		return c->users[inst].lines;
	return c->server_lines;
}

/* Defaults go through config_value_parse like any value; a bad one is a bug in the table. */
static void
config_defaults_apply(enum config_section sec, void *base)
{
	const struct config_param *params;
	char why[CONFIG_WHY_LEN];
	size_t n;

	params = config_params(&n);
	for (size_t i = 0; i < n; i++) {
		if (params[i].section != sec || params[i].def == NULL)
			continue;
		if (config_value_parse(&params[i], params[i].def, base, why, sizeof(why)) < 0) {
			fprintf(stderr, "config: bad default in the parameter table: %s\n", why);
			abort();
		}
	}
}

struct config *
config_new_defaults(void)
{
	struct config *c = mb_calloc(1, sizeof(*c));
	size_t n;

	config_params(&n);
	c->server_lines = mb_calloc(n, sizeof(int));
	config_defaults_apply(CONFIG_SEC_SERVER, &c->server);
	return c;
}

static bool
config_name_is_valid(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > CONFIG_NAME_MAX)
		return false;
	for (const char *p = name; *p; p++) {
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
			return false;
	}
	return true;
}

static size_t
config_conn_add(struct config *c, const char *name, int line)
{
	struct config_conn *cc;
	size_t n;

	config_params(&n);
	c->conns = mb_realloc(c->conns, (c->nconns + 1) * sizeof(*c->conns));
	cc = &c->conns[c->nconns];
	memset(cc, 0, sizeof(*cc));
	cc->name = mb_strdup(name);
	cc->line = line;
	cc->lines = mb_calloc(n, sizeof(int));
	config_defaults_apply(CONFIG_SEC_CONNECTION, cc);
	return c->nconns++;
}

static size_t
config_user_add(struct config *c, const char *name, int line)
{
	struct config_user *u;
	size_t n;

	config_params(&n);
	c->users = mb_realloc(c->users, (c->nusers + 1) * sizeof(*c->users));
	u = &c->users[c->nusers];
	memset(u, 0, sizeof(*u));
	u->name = mb_strdup(name);
	u->line = line;
	u->lines = mb_calloc(n, sizeof(int));
	config_defaults_apply(CONFIG_SEC_USER, u);
	return c->nusers++;
}

/* Index of the named instance, or -1. */
static ssize_t
config_inst_find(const struct config *c, enum config_section sec, const char *name)
{
	if (sec == CONFIG_SEC_CONNECTION) {
		for (size_t i = 0; i < c->nconns; i++) {
			if (strcmp(c->conns[i].name, name) == 0)
				return (ssize_t)i;
		}
	} else if (sec == CONFIG_SEC_USER) {
		for (size_t i = 0; i < c->nusers; i++) {
			if (strcmp(c->users[i].name, name) == 0)
				return (ssize_t)i;
		}
	}
	return -1;
}

static int
config_inst_line(const struct config *c, enum config_section sec, size_t inst)
{
	return sec == CONFIG_SEC_CONNECTION ? c->conns[inst].line : c->users[inst].line;
}

static bool
config_section_from_name(const char *s, enum config_section *sec)
{
	for (size_t i = 0; i < sizeof(config_section_names) / sizeof(config_section_names[0]);
	     i++) {
		if (strcmp(s, config_section_names[i]) == 0) {
			*sec = (enum config_section)i;
			return true;
		}
	}
	return false;
}

/* Edit distance, for "did you mean"; names longer than 63 are not compared. */
static size_t
config_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= 64 || lb >= 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

static void
config_unknown_key(enum config_section sec, const char *name, char *why, size_t whylen)
{
	const struct config_param *params, *best = NULL;
	size_t n, best_d = 3;

	params = config_params(&n);
	for (size_t i = 0; i < n; i++) {
		size_t d;

		if (params[i].section != sec)
			continue;
		d = config_distance(name, params[i].name);
		if (d < best_d) {
			best_d = d;
			best = &params[i];
		}
	}
	if (best != NULL)
		snprintf(why, whylen, "unknown key '%s' in [%s%s] (did you mean %s?)", name,
		         config_section_names[sec], sec == CONFIG_SEC_SERVER ? "" : " NAME",
		         best->name);
	else
		snprintf(why, whylen, "unknown key '%s' in [%s%s]; see mailbridge.conf(5)", name,
		         config_section_names[sec], sec == CONFIG_SEC_SERVER ? "" : " NAME");
}

/* One key of one section instance, from the file (line > 0) or from --set. */
static int
config_key_apply(struct config *c, enum config_section sec, size_t inst, const char *name,
                 const char *value, int line, char *why, size_t whylen)
{
	const struct config_param *p;
	size_t idx;
	int *lines;

	if (*name == '\0') {
		snprintf(why, whylen, "a key name is missing before '='");
		return -1;
	}
	p = config_param_find(sec, name);
	if (p == NULL) {
		config_unknown_key(sec, name, why, whylen);
		return -1;
	}
	idx = config_param_index(p);
	lines = config_lines(c, sec, inst);
	if (line > 0 && lines[idx] > 0) {
		snprintf(why, whylen, "%s is set twice (first on line %d)", name, lines[idx]);
		return -1;
	}
	if (config_value_parse(p, value, config_base(c, sec, inst), why, whylen) < 0)
		return -1;
	lines[idx] = line;
	return 0;
}

/* "[server]", "[connection NAME]", "[user NAME]": s is the cleaned line. */
static void
config_section_open(struct config_parse *ps, char *s)
{
	char *close = strchr(s, ']'), *inner, *name;
	enum config_section sec;
	ssize_t found;

	ps->in_section = false;
	if (close == NULL) {
		config_parse_fail(ps, "section header without a closing ']'");
		return;
	}
	if (close[1] != '\0') {
		config_parse_fail(ps, "unexpected text after ']' in a section header");
		return;
	}
	*close = '\0';
	inner = mb_str_trim(s + 1);
	name = inner + strcspn(inner, " \t");
	if (*name != '\0')
		*name++ = '\0';
	name = mb_str_trim(name);
	if (!config_section_from_name(inner, &sec)) {
		config_parse_fail(ps,
		                  "unknown section [%s]; allowed: [server], [connection NAME] or "
		                  "[user NAME]",
		                  inner);
		return;
	}
	if (sec == CONFIG_SEC_SERVER) {
		if (*name != '\0')
			config_parse_fail(ps, "[server] takes no name (found '%s')", name);
		else if (ps->server_line != 0)
			config_parse_fail(ps, "[server] appears twice (first on line %d)",
			                  ps->server_line);
		ps->server_line = ps->lineno;
	} else if (*name == '\0') {
		config_parse_fail(ps, "[%s] needs a name, as in [%s NAME]", inner, inner);
	} else if (!config_name_is_valid(name)) {
		config_parse_fail(ps,
		                  "[%s %s]: a name has 1 to %d letters, digits, '-', '_' or '.'",
		                  inner, name, CONFIG_NAME_MAX);
	} else if ((found = config_inst_find(ps->c, sec, name)) >= 0) {
		config_parse_fail(ps, "[%s %s] appears twice (first on line %d)", inner, name,
		                  config_inst_line(ps->c, sec, (size_t)found));
	} else if (sec == CONFIG_SEC_CONNECTION) {
		ps->inst = config_conn_add(ps->c, name, ps->lineno);
	} else {
		ps->inst = config_user_add(ps->c, name, ps->lineno);
	}
	if (ps->err_line == 0) {
		ps->sec = sec;
		ps->in_section = true;
	}
}

/*
 * Strips what inih would strip, and more: leading blanks (so an indented key is never taken as
 * a continuation line), comments, trailing blanks. Returns the cleaned line inside buf.
 */
static char *
config_line_clean(char *s, bool first)
{
	char *p;

	if (first && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
		s += 3;
	while (isspace((unsigned char)*s))
		s++;
	if (*s == ';' || *s == '#') {
		*s = '\0';
		return s;
	}
	for (p = s; *p; p++) {
		if (*p == ';' && p > s && isspace((unsigned char)p[-1])) {
			*p = '\0';
			break;
		}
	}
	return mb_str_trim(s);
}

static char *
config_reader(char *str, int num, void *stream)
{
	struct config_parse *ps = stream;
	ssize_t n;
	size_t len;
	char *s;

	if (ps->err_line != 0)
		return NULL;
	n = getline(&ps->buf, &ps->cap, ps->f);
	if (n < 0)
		return NULL;
	ps->lineno++;
	if (memchr(ps->buf, '\0', (size_t)n) != NULL) {
		config_parse_fail(ps, "the line contains a NUL byte");
		return NULL;
	}
	s = config_line_clean(ps->buf, ps->lineno == 1);
	len = strlen(s);
	if (len + 1 > (size_t)num) {
		config_parse_fail(ps, "the line is longer than %d characters (comments excluded)",
		                  num - 1);
		return NULL;
	}
	if (*s == '[') {
		config_section_open(ps, s);
		if (ps->err_line != 0)
			return NULL;
		/* inih must still see a header, to reset its idea of the previous key */
		snprintf(str, (size_t)num, "[s]");
		return str;
	}
	if (*s != '\0' && strpbrk(s, "=:") == NULL) {
		config_parse_fail(ps, "expected 'key = value', a [section] header or a comment");
		return NULL;
	}
	memcpy(str, s, len + 1);
	return str;
}

static int
config_handler(void *user, const char *section, const char *name, const char *value)
{
	struct config_parse *ps = user;

	(void)section; /* ours, from config_section_open, is authoritative */
	if (ps->err_line != 0)
		return 0;
	if (!ps->in_section) {
		config_parse_fail(ps,
		                  "%s is outside any section; put it under [server], "
		                  "[connection NAME] or [user NAME]",
		                  name);
		return 0;
	}
	if (config_key_apply(ps->c, ps->sec, ps->inst, name, value, ps->lineno, ps->why,
	                     sizeof(ps->why)) < 0) {
		ps->err_line = ps->lineno;
		return 0;
	}
	return 1;
}

static struct config *
config_parse_file(FILE *f, const char *name, struct mb_err *err)
{
	struct config_parse ps;
	int rc;

	memset(&ps, 0, sizeof(ps));
	ps.c = config_new_defaults();
	ps.c->path = mb_strdup(name);
	ps.f = f;
	rc = ini_parse_stream(config_reader, &ps, config_handler, &ps);
	free(ps.buf);
	if (ps.err_line == 0 && rc > 0) {
		/* inih saw a syntax error that the reader did not */
		ps.err_line = rc;
		snprintf(ps.why, sizeof(ps.why),
		         "expected 'key = value', a [section] header or a comment");
	}
	if (ps.err_line != 0) {
		mb_err_set(err, MB_EINVAL, "%s:%d: %s", name, ps.err_line, ps.why);
		config_free(ps.c);
		return NULL;
	}
	if (rc < 0 || ferror(f)) {
		mb_err_set(err, MB_EIO, "%s: cannot read: %s", name,
		           rc < 0 ? "out of memory" : strerror(errno));
		config_free(ps.c);
		return NULL;
	}
	return ps.c;
}

struct config *
config_parse_string(const char *text, const char *name, struct mb_err *err)
{
	struct config *c;
	size_t len = strlen(text);
	FILE *f;

	if (name == NULL)
		name = "(string)";
	if (len == 0) {
		c = config_new_defaults();
		c->path = mb_strdup(name);
		return c;
	}
	f = fmemopen((void *)text, len, "r");
	if (f == NULL) {
		mb_err_set(err, MB_EIO, "%s: cannot read: %s", name, strerror(errno));
		return NULL;
	}
	c = config_parse_file(f, name, err);
	fclose(f);
	return c;
}

struct config *
config_load(const char *path, struct mb_err *err)
{
	struct config *c;
	FILE *f;

	f = fopen(path, "re");
	if (f == NULL) {
		mb_err_set(err, errno == ENOENT ? MB_ENOTFOUND : MB_EIO, "%s: cannot open: %s",
		           path, strerror(errno));
		return NULL;
	}
	c = config_parse_file(f, path, err);
	fclose(f);
	return c;
}

/* The instance that --set names, created when the key exists; -1 with why set otherwise. */
static ssize_t
config_set_inst(struct config *c, enum config_section sec, const char *name, const char *key,
                char *why, size_t whylen)
{
	ssize_t inst;

	if (!config_name_is_valid(name)) {
		snprintf(why, whylen,
		         "[%s %s]: a name has 1 to %d letters, digits, '-', '_' or '.'",
		         config_section_names[sec], name, CONFIG_NAME_MAX);
		return -1;
	}
	inst = config_inst_find(c, sec, name);
	if (inst >= 0)
		return inst;
	if (config_param_find(sec, key) == NULL) {
		config_unknown_key(sec, key, why, whylen);
		return -1;
	}
	if (sec == CONFIG_SEC_CONNECTION)
		return (ssize_t)config_conn_add(c, name, CONFIG_LINE_SET);
	return (ssize_t)config_user_add(c, name, CONFIG_LINE_SET);
}

int
config_set(struct config *c, const char *dotted_key, const char *value, struct mb_err *err)
{
	const char *dot = strchr(dotted_key, '.'), *key = strrchr(dotted_key, '.');
	char why[CONFIG_WHY_LEN], *secname, *name = NULL, *val;
	enum config_section sec;
	ssize_t inst = 0;
	int rc = -1;

	if (dot == NULL) {
		mb_err_set(err, MB_EINVAL,
		           "--set %s: expected server.KEY, connection.NAME.KEY or user.NAME.KEY",
		           dotted_key);
		return -1;
	}
	key++;
	secname = mb_strndup(dotted_key, (size_t)(dot - dotted_key));
	if (!config_section_from_name(secname, &sec) ||
	    (sec == CONFIG_SEC_SERVER) != (key == dot + 1)) {
		mb_err_set(err, MB_EINVAL,
		           "--set %s: expected server.KEY, connection.NAME.KEY or user.NAME.KEY",
		           dotted_key);
		free(secname);
		return -1;
	}
	if (sec != CONFIG_SEC_SERVER) {
		name = mb_strndup(dot + 1, (size_t)(key - 1 - (dot + 1)));
		inst = config_set_inst(c, sec, name, key, why, sizeof(why));
	}
	val = mb_strdup(value);
	if (inst >= 0 && config_key_apply(c, sec, (size_t)inst, key, mb_str_trim(val),
	                                  CONFIG_LINE_SET, why, sizeof(why)) == 0)
		rc = 0;
	if (rc < 0)
		mb_err_set(err, MB_EINVAL, "--set %s: %s", dotted_key, why);
	free(val);
	free(name);
	free(secname);
	return rc;
}

const struct config_conn *
config_conn_find(const struct config *c, const char *name)
{
	ssize_t i = config_inst_find(c, CONFIG_SEC_CONNECTION, name);

	return i < 0 ? NULL : &c->conns[i];
}

const struct config_user *
config_user_find(const struct config *c, const char *name)
{
	ssize_t i = config_inst_find(c, CONFIG_SEC_USER, name);

	return i < 0 ? NULL : &c->users[i];
}

const char *
config_default_path(const char *explicit_path)
{
	const char *env;

	if (explicit_path != NULL)
		return explicit_path;
	env = getenv("MAILBRIDGE_CONFIG");
	if (env != NULL && *env != '\0')
		return env;
	return CONFIG_DEFAULT_PATH;
}

static void
config_section_free(enum config_section sec, void *base)
{
	const struct config_param *params;
	size_t n;

	params = config_params(&n);
	for (size_t i = 0; i < n; i++) {
		if (params[i].section == sec)
			config_value_clear(&params[i], base);
	}
}

void
config_free(struct config *c)
{
	if (c == NULL)
		return;
	config_section_free(CONFIG_SEC_SERVER, &c->server);
	for (size_t i = 0; i < c->nconns; i++) {
		config_section_free(CONFIG_SEC_CONNECTION, &c->conns[i]);
		free(c->conns[i].name);
		free(c->conns[i].lines);
	}
	for (size_t i = 0; i < c->nusers; i++) {
		config_section_free(CONFIG_SEC_USER, &c->users[i]);
		free(c->users[i].name);
		free(c->users[i].lines);
	}
	free(c->conns);
	free(c->users);
	free(c->server_lines);
	free(c->path);
	free(c);
}
