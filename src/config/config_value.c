/* Typed values: text -> field with bounds, field -> text. Defaults, the file and --set all come
 * through config_value_parse, so a bad default fails the same way a bad file does. */
#include "config/config_impl.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

struct config_unit {
	char suffix;
	int64_t scale;
};

/* Largest first, for config_num_format. */
static const struct config_unit config_size_units[] = {
    {'G', INT64_C(1) << 30}, {'M', INT64_C(1) << 20}, {'K', INT64_C(1) << 10}, {0, 0}};
static const struct config_unit config_duration_units[] = {
    {'w', INT64_C(7) * 86400}, {'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}, {0, 0}};

void
config_num_format(enum config_type type, int64_t v, char *out, size_t outlen)
{
	const struct config_unit *u = NULL;

	if (type == CONFIG_SIZE)
		u = config_size_units;
	else if (type == CONFIG_DURATION)
		u = config_duration_units;
	for (; u != NULL && u->suffix != 0 && v != 0; u++) {
		if (v % u->scale == 0) {
			snprintf(out, outlen, "%" PRId64 "%c", v / u->scale, u->suffix);
			return;
		}
	}
	snprintf(out, outlen, "%" PRId64, v);
}

/* "a|b|c" -> "a, b or c" */
static void
config_choices_format(const char *choices, char *out, size_t outlen)
{
	struct mb_buf b = {0};
	const char *p = choices, *bar;

	while ((bar = strchr(p, '|')) != NULL) {
		if (p != choices)
			mb_buf_puts(&b, ", ");
		mb_buf_append(&b, p, (size_t)(bar - p));
		p = bar + 1;
	}
	if (p != choices)
		mb_buf_puts(&b, " or ");
	mb_buf_puts(&b, p);
	snprintf(out, outlen, "%s", b.data);
	mb_buf_release(&b);
}

static bool
config_choice_is_valid(const char *choices, const char *value)
{
	size_t vlen = strlen(value);
	const char *p = choices;

	for (;;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);

		if (len == vlen && strncmp(p, value, len) == 0)
			return true;
		if (bar == NULL)
			return false;
		p = bar + 1;
	}
}

static int
config_num_parse(const struct config_param *p, const char *value, int64_t *out, char *why,
                 size_t whylen)
{
	char lo[32], hi[32];
	const char *what;
	int rc;

	config_num_format(p->type, p->min, lo, sizeof(lo));
	config_num_format(p->type, p->max, hi, sizeof(hi));
	if (p->type == CONFIG_SIZE) {
		rc = mb_parse_size(value, out);
		what = "a size (a number with an optional K, M or G suffix)";
	} else if (p->type == CONFIG_DURATION) {
		rc = mb_parse_duration(value, out);
		what = "a duration (a number with an optional s, m, h, d or w suffix)";
	} else {
		rc = mb_parse_int(value, out);
		what = "a whole number";
	}
	if (rc < 0 && strspn(value, "0123456789") > 18) {
		snprintf(why, whylen, "%s = %s is above the maximum %s", p->name, value, hi);
		return -1;
	}
	if (rc < 0) {
		snprintf(why, whylen, "%s = %s is not %s; allowed: %s to %s", p->name, value, what,
		         lo, hi);
		return -1;
	}
	if (*out < p->min) {
		snprintf(why, whylen, "%s = %s is below the minimum %s", p->name, value, lo);
		return -1;
	}
	if (*out > p->max) {
		snprintf(why, whylen, "%s = %s is above the maximum %s", p->name, value, hi);
		return -1;
	}
	return 0;
}

/* Comma-separated, items trimmed, empty items dropped. */
static void
config_list_parse(const char *value, struct config_list *out)
{
	char *copy = mb_strdup(value), *p = copy, *comma;

	out->v = NULL;
	out->n = 0;
	for (;;) {
		char *item;

		comma = strchr(p, ',');
		if (comma != NULL)
			*comma = '\0';
		item = mb_str_trim(p);
		if (*item != '\0') {
			out->v = mb_realloc(out->v, (out->n + 1) * sizeof(*out->v));
			out->v[out->n++] = mb_strdup(item);
		}
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	free(copy);
}

static void
config_list_clear(struct config_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

void
config_value_clear(const struct config_param *p, void *base)
{
	void *f = config_field(base, p);

	switch (p->type) {
	case CONFIG_SECRET:
		mb_secret_free(*(char **)f);
		*(char **)f = NULL;
		break;
	case CONFIG_STR:
	case CONFIG_ENUM:
		free(*(char **)f);
		*(char **)f = NULL;
		break;
	case CONFIG_LIST:
		config_list_clear(f);
		break;
	case CONFIG_INT:
	case CONFIG_SIZE:
	case CONFIG_DURATION:
		*(int64_t *)f = 0;
		break;
	case CONFIG_BOOL:
		*(bool *)f = false;
		break;
	}
}

int
config_value_parse(const struct config_param *p, const char *value, void *base, char *why,
                   size_t whylen)
{
	void *f = config_field(base, p);
	struct config_list list;
	char *str;
	int64_t num;
	bool b;

	switch (p->type) {
	case CONFIG_STR:
	case CONFIG_SECRET:
		/* "key =" unsets, as in "ca_file =". Copy before clearing: value may be the old
		 * one. */
		str = *value != '\0' ? mb_strdup(value) : NULL;
		config_value_clear(p, base);
		*(char **)f = str;
		return 0;
	case CONFIG_INT:
	case CONFIG_SIZE:
	case CONFIG_DURATION:
		if (config_num_parse(p, value, &num, why, whylen) < 0)
			return -1;
		*(int64_t *)f = num;
		return 0;
	case CONFIG_BOOL:
		if (mb_parse_bool(value, &b) < 0) {
			snprintf(why, whylen,
			         "%s = %s is not a boolean; allowed: yes or no (also true/false, "
			         "on/off, 1/0)",
			         p->name, value);
			return -1;
		}
		*(bool *)f = b;
		return 0;
	case CONFIG_ENUM:
		if (!config_choice_is_valid(p->choices, value)) {
			char allowed[200];

			config_choices_format(p->choices, allowed, sizeof(allowed));
			snprintf(why, whylen, "%s = %s is not allowed; allowed: %s", p->name, value,
			         allowed);
			return -1;
		}
		str = mb_strdup(value);
		config_value_clear(p, base);
		*(char **)f = str;
		return 0;
	case CONFIG_LIST:
		config_list_parse(value, &list);
		config_value_clear(p, base);
		*(struct config_list *)f = list;
		return 0;
	}
	snprintf(why, whylen, "%s: unknown parameter type", p->name);
	return -1;
}

void
config_value_format(const struct config_param *p, const void *base, struct mb_buf *out)
{
	const void *f = config_field_const(base, p);
	const struct config_list *l;
	char num[32];

	switch (p->type) {
	case CONFIG_STR:
	case CONFIG_SECRET:
	case CONFIG_ENUM:
		if (*(char *const *)f != NULL)
			mb_buf_puts(out, *(char *const *)f);
		break;
	case CONFIG_INT:
	case CONFIG_SIZE:
	case CONFIG_DURATION:
		config_num_format(p->type, *(const int64_t *)f, num, sizeof(num));
		mb_buf_puts(out, num);
		break;
	case CONFIG_BOOL:
		mb_buf_puts(out, *(const bool *)f ? "yes" : "no");
		break;
	case CONFIG_LIST:
		l = f;
		for (size_t i = 0; i < l->n; i++) {
			/* ", ;x" would read back as a comment */
			if (i > 0)
				mb_buf_puts(out, l->v[i][0] == ';' ? "," : ", ");
			mb_buf_puts(out, l->v[i]);
		}
		break;
	}
}
