/* The command and address parsers: pure functions over one line. */
#include "smtp.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const verb_names[SMTP_VERB_COUNT] = {"",     "HELO", "EHLO",     "MAIL", "RCPT",
                                                        "DATA", "RSET", "NOOP",     "QUIT", "VRFY",
                                                        "EXPN", "HELP", "STARTTLS", "AUTH", "BDAT"};

const char *
smtp_verb_name(enum smtp_verb v)
{
	return v < SMTP_VERB_COUNT ? verb_names[v] : "";
}

void
smtp_cmd_parse(const char *line, struct smtp_cmd *cmd)
{
	size_t n = strcspn(line, " ");

	cmd->verb = SMTP_VERB_UNKNOWN;
	cmd->arg = line[n] == ' ' ? line + n + 1 : line + n;
	for (int v = 1; v < SMTP_VERB_COUNT; v++) {
		if (strlen(verb_names[v]) == n && strncasecmp(line, verb_names[v], n) == 0) {
			cmd->verb = (enum smtp_verb)v;
			break;
		}
	}
}

/* Length of one well-formed UTF-8 sequence at p (non-ASCII), or 0. */
static size_t
utf8_seq(const unsigned char *p, size_t len)
{
	size_t n;
	unsigned int cp;

	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		n = 2, cp = p[0] & 0x1f;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		n = 3, cp = p[0] & 0x0f;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		n = 4, cp = p[0] & 0x07;
	else
		return 0;
	if (n > len)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

static bool
is_atext(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static bool
local_part_ok(const unsigned char *p, size_t len, bool utf8, const char **why)
{
	size_t i = 0;

	if (len == 0) {
		*why = "empty local part";
		return false;
	}
	if (len > SMTP_LOCAL_MAX) {
		*why = "local part longer than 64 bytes";
		return false;
	}
	if (p[0] == '"') {
		if (len < 2 || p[len - 1] != '"') {
			*why = "unterminated quoted local part";
			return false;
		}
		for (i = 1; i < len - 1; i++) {
			if (p[i] == '\\') {
				if (++i >= len - 1 || p[i] < 32 || p[i] > 126) {
					*why = "bad quoted pair";
					return false;
				}
			} else if (p[i] >= 0x80) {
				size_t n = utf8 ? utf8_seq(p + i, len - 1 - i) : 0;
				if (n == 0) {
					*why =
					    utf8 ? "invalid UTF-8" : "non-ASCII without SMTPUTF8";
					return false;
				}
				i += n - 1;
			} else if (p[i] < 32 || p[i] == '"' || p[i] > 126) {
				*why = "bad character in quoted local part";
				return false;
			}
		}
		return true;
	}
	for (i = 0; i < len; i++) {
		if (p[i] == '.') {
			if (i == 0 || i == len - 1 || p[i - 1] == '.') {
				*why = "misplaced dot in local part";
				return false;
			}
		} else if (p[i] >= 0x80) {
			size_t n = utf8 ? utf8_seq(p + i, len - i) : 0;
			if (n == 0) {
				*why = utf8 ? "invalid UTF-8" : "non-ASCII without SMTPUTF8";
				return false;
			}
			i += n - 1;
		} else if (!is_atext(p[i])) {
			*why = "bad character in local part";
			return false;
		}
	}
	return true;
}

static bool
domain_ok(const unsigned char *p, size_t len, bool utf8, const char **why)
{
	size_t label = 0;

	if (len == 0) {
		*why = "empty domain";
		return false;
	}
	if (len > SMTP_DOMAIN_MAX) {
		*why = "domain longer than 255 bytes";
		return false;
	}
	if (p[0] == '[') {
		/* address literal: [1.2.3.4], [IPv6:...], [tag:content] */
		if (p[len - 1] != ']' || len < 3) {
			*why = "bad address literal";
			return false;
		}
		for (size_t i = 1; i < len - 1; i++) {
			if (p[i] < 33 || p[i] > 126 || p[i] == '[' || p[i] == ']' || p[i] == '\\') {
				*why = "bad address literal";
				return false;
			}
		}
		return true;
	}
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '.') {
			if (label == 0 || p[i - 1] == '-' || i == len - 1) {
				*why = "bad domain";
				return false;
			}
			label = 0;
			continue;
		}
		if (p[i] >= 0x80) {
			size_t n = utf8 ? utf8_seq(p + i, len - i) : 0;
			if (n == 0) {
				*why = utf8 ? "invalid UTF-8" : "non-ASCII without SMTPUTF8";
				return false;
			}
			i += n - 1;
			label += n;
		} else if (isalnum(p[i]) || (p[i] == '-' && label > 0)) {
			label++;
		} else {
			*why = "bad character in domain";
			return false;
		}
		if (label > 63) {
			*why = "domain label longer than 63 bytes";
			return false;
		}
	}
	if (p[len - 1] == '-') {
		*why = "bad domain";
		return false;
	}
	return true;
}

bool
smtp_mailbox_is_valid(const char *s, size_t len, bool utf8, const char **why)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t at = len;

	/* the last @ outside a quoted local part separates local part and domain */
	if (len > 0 && p[0] == '"') {
		size_t i = 1;
		while (i < len && p[i] != '"')
			i += p[i] == '\\' ? 2 : 1;
		if (i + 1 < len && p[i + 1] == '@')
			at = i + 1;
	} else {
		const unsigned char *a = memchr(p, '@', len);
		at = a ? (size_t)(a - p) : len;
	}
	if (at >= len) {
		*why = "no @domain";
		return false;
	}
	return local_part_ok(p, at, utf8, why) && domain_ok(p + at + 1, len - at - 1, utf8, why);
}

static bool
has_non_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return true;
	return false;
}

/* A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain (RFC 5321 §4.1.2). */
static bool
route_ok(const char *p, size_t len)
{
	const char *why;
	size_t i = 0;

	while (i < len) {
		size_t j;
		if (p[i] != '@')
			return false;
		j = i + 1;
		while (j < len && p[j] != ',')
			j++;
		if (!domain_ok((const unsigned char *)p + i + 1, j - i - 1, false, &why))
			return false;
		i = j + (j < len ? 1 : 0);
		if (j < len && i == len)
			return false; /* trailing comma */
	}
	return true;
}

/* Parses the path; returns a pointer just past it, or NULL. */
static const char *
parse_path(const char *p, bool is_mail, bool utf8, struct smtp_mail_args *out,
           enum smtp_arg_error *e, const char **why)
{
	const char *start, *end;
	size_t len;

	while (*p == ' ')
		p++;
	if (*p == '<') {
		start = ++p;
		/* A-d-l: "@a.example,@b.example:" source route, ignored (RFC 5321 §4.1.2) */
		if (*p == '@') {
			const char *gt = strchr(p, '>');
			const char *colon = memchr(p, ':', gt ? (size_t)(gt - p) : strlen(p));
			if (colon == NULL || !route_ok(p, (size_t)(colon - p))) {
				*e = SMTP_ARG_ADDRESS, *why = "bad source route";
				return NULL;
			}
			start = p = colon + 1;
		}
		/* find the closing '>' outside a quoted local part */
		end = p;
		while (*end && *end != '>') {
			if (*end == '"') {
				end++;
				while (*end && *end != '"')
					end += (end[0] == '\\' && end[1]) ? 2 : 1;
				if (*end == '\0')
					break;
			}
			end++;
		}
		if (*end != '>') {
			*e = SMTP_ARG_ADDRESS, *why = "missing '>'";
			return NULL;
		}
		len = (size_t)(end - start);
		end++;
	} else {
		/* tolerated, like Postfix: a bare address without angle brackets */
		start = p;
		end = p + strcspn(p, " ");
		len = (size_t)(end - start);
		if (len == 0) {
			*e = SMTP_ARG_ADDRESS, *why = "missing address";
			return NULL;
		}
	}
	/* RFC 5321 §4.5.3.1.3: 256 octets for the path, angle brackets included */
	if (len > SMTP_PATH_MAX - 2) {
		*e = SMTP_ARG_ADDRESS, *why = "address longer than 254 bytes";
		return NULL;
	}
	if (*end != '\0' && *end != ' ') {
		*e = SMTP_ARG_SYNTAX, *why = "a space must separate the address from parameters";
		return NULL;
	}
	memcpy(out->addr, start, len);
	out->addr[len] = '\0';
	if (len == 0) {
		if (!is_mail) {
			*e = SMTP_ARG_ADDRESS, *why = "empty recipient";
			return NULL;
		}
		return end;
	}
	if (!is_mail && strcasecmp(out->addr, "postmaster") == 0)
		return end;
	if (has_non_ascii(out->addr) && !utf8) {
		*e = SMTP_ARG_NEED_UTF8, *why = "non-ASCII address needs the SMTPUTF8 parameter";
		return NULL;
	}
	if (!smtp_mailbox_is_valid(out->addr, len, utf8, why)) {
		*e = SMTP_ARG_ADDRESS;
		return NULL;
	}
	return end;
}

static bool
param_is(const char *p, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp(p, name, n) == 0;
}

static enum smtp_arg_error
parse_params(const char *p, bool is_mail, struct smtp_mail_args *out, const char **why)
{
	while (*p) {
		size_t n, klen;
		const char *eq, *val;

		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, " ");
		eq = memchr(p, '=', n);
		klen = eq ? (size_t)(eq - p) : n;
		val = eq ? eq + 1 : NULL;
		if (!is_mail) {
			*why = "no RCPT parameters are supported";
			return SMTP_ARG_PARAM;
		}
		if (param_is(p, klen, "SIZE") && val) {
			int64_t v = 0;
			size_t vlen = n - klen - 1;
			if (vlen == 0 || vlen > 18) {
				*why = "bad SIZE";
				return SMTP_ARG_PARAM;
			}
			for (size_t i = 0; i < vlen; i++) {
				if (!isdigit((unsigned char)val[i])) {
					*why = "bad SIZE";
					return SMTP_ARG_PARAM;
				}
				v = v * 10 + (val[i] - '0');
			}
			out->size = v;
		} else if (param_is(p, klen, "BODY") && val) {
			size_t vlen = n - klen - 1;
			if (param_is(val, vlen, "8BITMIME"))
				out->body_8bit = true;
			else if (!param_is(val, vlen, "7BIT")) {
				*why = "BODY must be 7BIT or 8BITMIME";
				return SMTP_ARG_PARAM;
			}
		} else if (param_is(p, klen, "SMTPUTF8") && !val) {
			out->smtputf8 = true;
		} else if (param_is(p, klen, "AUTH") && val) {
			/* RFC 4954 §5: accepted and not used */
		} else {
			*why = "unsupported MAIL parameter";
			return SMTP_ARG_PARAM;
		}
		p += n;
	}
	return SMTP_ARG_OK;
}

enum smtp_arg_error
smtp_mail_args_parse(const char *arg, bool is_mail, bool utf8_ok, struct smtp_mail_args *out,
                     const char **why)
{
	const char *kw = is_mail ? "FROM:" : "TO:";
	const char *p;
	enum smtp_arg_error e = SMTP_ARG_OK;
	bool utf8;

	memset(out, 0, sizeof(*out));
	out->size = -1;
	*why = "";
	if (!mb_str_has_prefix_ci(arg, kw)) {
		*why = is_mail ? "expected MAIL FROM:<address>" : "expected RCPT TO:<address>";
		return SMTP_ARG_SYNTAX;
	}
	p = arg + strlen(kw);
	/* The parameters decide whether a UTF-8 address is allowed, so read them first. */
	if (is_mail) {
		struct smtp_mail_args tmp;
		const char *after;
		memset(&tmp, 0, sizeof(tmp));
		after = parse_path(p, true, true, &tmp, &e, why);
		if (after == NULL)
			return e;
		e = parse_params(after, true, out, why);
		if (e != SMTP_ARG_OK)
			return e;
	}
	utf8 = is_mail ? out->smtputf8 : utf8_ok;
	p = parse_path(p, is_mail, utf8, out, &e, why);
	if (p == NULL)
		return e;
	if (!is_mail)
		return parse_params(p, false, out, why);
	return SMTP_ARG_OK;
}

int
smtp_auth_plain_decode(const char *b64, char **user, char **pass)
{
	size_t len, i, j;
	unsigned char *raw = mb_base64_decode(b64, strlen(b64), &len);

	*user = *pass = NULL;
	if (raw == NULL)
		return -1;
	/* authzid NUL authcid NUL passwd */
	for (i = 0; i < len && raw[i]; i++)
		;
	for (j = i + 1; j < len && raw[j]; j++)
		;
	/* RFC 4616: authcid and passwd are not empty */
	if (i >= len || j >= len || j == i + 1 || j + 1 == len ||
	    memchr(raw + j + 1, '\0', len - j - 1)) {
		mb_secret_wipe(raw, len);
		free(raw);
		return -1;
	}
	/* an authzid other than the authcid is refused: no proxy authorization */
	if (i > 0 && (i != j - i - 1 || memcmp(raw, raw + i + 1, i) != 0)) {
		mb_secret_wipe(raw, len);
		free(raw);
		return -1;
	}
	*user = mb_strndup((const char *)raw + i + 1, j - i - 1);
	*pass = mb_strndup((const char *)raw + j + 1, len - j - 1);
	mb_secret_wipe(raw, len);
	free(raw);
	return 0;
}
