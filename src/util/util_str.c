/* String parsing helpers shared by config, the CLI and protocol code. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool
mb_str_has_prefix_ci(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

char *
mb_str_trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int
mb_parse_int(const char *s, int64_t *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* digits, then at most one unit letter (any case); sizes may add a 'B' after it ("64KB") */
static int
parse_scaled(const char *s, int64_t *out, const char *units, const int64_t *scale)
{
	char *end;
	long long v;
	const char *u;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno)
		return -1;
	if (*end == '\0') {
		*out = v * scale[0];
		return 0;
	}
	u = strchr(units, toupper((unsigned char)*end));
	if (u == NULL)
		return -1;
	if (end[1] != '\0' && !(units[0] == 'B' && u != units &&
	                        toupper((unsigned char)end[1]) == 'B' && end[2] == '\0'))
		return -1;
	if (v > INT64_MAX / scale[u - units])
		return -1;
	*out = v * scale[u - units];
	return 0;
}

int
mb_parse_size(const char *s, int64_t *out)
{
	static const int64_t scale[] = {1, 1024, 1024 * 1024, 1024 * 1024 * 1024};

	return parse_scaled(s, out, "BKMG", scale);
}

int
mb_parse_duration(const char *s, int64_t *out)
{
	static const int64_t scale[] = {1, 60, 3600, 86400, 7 * 86400};

	return parse_scaled(s, out, "SMHDW", scale);
}

int
mb_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"yes", "true", "on", "1"};
	static const char *const no[] = {"no", "false", "off", "0"};

	if (s == NULL)
		return -1;

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

void
mb_buf_json_str(struct mb_buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	mb_buf_append(b, "\"", 1);
	for (; *p; p++) {
		switch (*p) {
		case '"':
			mb_buf_puts(b, "\\\"");
			break;
		case '\\':
			mb_buf_puts(b, "\\\\");
			break;
		case '\n':
			mb_buf_puts(b, "\\n");
			break;
		case '\r':
			mb_buf_puts(b, "\\r");
			break;
		case '\t':
			mb_buf_puts(b, "\\t");
			break;
		default:
			if (*p < 0x20)
				mb_buf_printf(b, "\\u%04x", *p);
			else
				mb_buf_append(b, p, 1);
		}
	}
	mb_buf_append(b, "\"", 1);
}

char *
mb_str_replace(const char *s, const char *from, const char *to)
{
	struct mb_buf b = {0};
	size_t flen = strlen(from);
	const char *p;

	if (flen == 0)
		return mb_strdup(s);
	while ((p = strstr(s, from)) != NULL) {
		mb_buf_append(&b, s, (size_t)(p - s));
		mb_buf_puts(&b, to);
		s = p + flen;
	}
	mb_buf_puts(&b, s);
	return mb_buf_steal(&b);
}
