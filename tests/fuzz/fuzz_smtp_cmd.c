/*
 * libFuzzer target for the SMTP command-line parsers: one client line (without CRLF) goes to
 * smtp_cmd_parse, to smtp_mail_args_parse as MAIL and as RCPT with and without SMTPUTF8, to
 * smtp_mailbox_is_valid (from an exact-size buffer, so ASan sees any read past len) and to the
 * AUTH PLAIN decoder. Each result is checked against what the header promises.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static bool
fuzz_has_non_ascii(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s >= 0x80)
			return true;
	}
	return false;
}

static void
fuzz_cmd(const char *line)
{
	struct smtp_cmd cmd;
	size_t len = strlen(line);

	smtp_cmd_parse(line, &cmd);
	FUZZ_CHECK(cmd.arg >= line && cmd.arg <= line + len);
	FUZZ_CHECK(cmd.verb < SMTP_VERB_COUNT);
	if (cmd.verb != SMTP_VERB_UNKNOWN) {
		const char *name = smtp_verb_name(cmd.verb);
		size_t n = strlen(name);

		FUZZ_CHECK(n > 0 && strncasecmp(line, name, n) == 0);
		FUZZ_CHECK(line[n] == ' ' || line[n] == '\0');
		FUZZ_CHECK(cmd.arg == line + n + (line[n] == ' '));
	}
}

/* Parses arg as MAIL (is_mail) or RCPT and checks the result; returns the error. */
static enum smtp_arg_error
fuzz_args(const char *arg, bool is_mail, bool utf8_ok, struct smtp_mail_args *out)
{
	const char *why = NULL;
	enum smtp_arg_error e = smtp_mail_args_parse(arg, is_mail, utf8_ok, out, &why);
	bool utf8;
	size_t alen;

	FUZZ_CHECK(why != NULL);
	FUZZ_CHECK(e <= SMTP_ARG_NEED_UTF8);
	/* SYNTAX means: no FROM:/TO:, or parameters glued to the path */
	if (!mb_str_has_prefix_ci(arg, is_mail ? "FROM:" : "TO:"))
		FUZZ_CHECK(e == SMTP_ARG_SYNTAX);
	if (e == SMTP_ARG_SYNTAX && mb_str_has_prefix_ci(arg, is_mail ? "FROM:" : "TO:"))
		FUZZ_CHECK(strstr(why, "space") != NULL);
	if (e != SMTP_ARG_OK) {
		FUZZ_CHECK(why[0] != '\0');
		return e;
	}
	alen = strnlen(out->addr, sizeof(out->addr));
	FUZZ_CHECK(alen <= SMTP_PATH_MAX);
	FUZZ_CHECK(out->size >= -1 && out->size <= 999999999999999999LL);
	if (!is_mail) {
		FUZZ_CHECK(alen > 0);
		FUZZ_CHECK(out->size == -1 && !out->body_8bit && !out->smtputf8);
	}
	utf8 = is_mail ? out->smtputf8 : utf8_ok;
	if (fuzz_has_non_ascii(out->addr))
		FUZZ_CHECK(utf8);
	if (alen > 0 && (is_mail || strcasecmp(out->addr, "postmaster") != 0)) {
		const char *why2 = "";
		FUZZ_CHECK(smtp_mailbox_is_valid(out->addr, alen, utf8, &why2));
	}
	return e;
}

static void
fuzz_mail_rcpt(const char *line)
{
	struct smtp_mail_args a, b;
	enum smtp_arg_error ea, eb;

	(void)fuzz_args(line, true, false, &a);
	ea = fuzz_args(line, true, true, &b);
	/* for MAIL, utf8_ok is ignored: only the SMTPUTF8 parameter counts */
	FUZZ_CHECK(ea == fuzz_args(line, true, false, &a));
	if (ea == SMTP_ARG_OK)
		FUZZ_CHECK(memcmp(&a, &b, sizeof(a)) == 0);

	ea = fuzz_args(line, false, false, &a);
	eb = fuzz_args(line, false, true, &b);
	/* allowing UTF-8 never refuses what ASCII-only accepted */
	if (ea == SMTP_ARG_OK) {
		FUZZ_CHECK(eb == SMTP_ARG_OK);
		FUZZ_CHECK(strcmp(a.addr, b.addr) == 0);
	}
	if (ea == SMTP_ARG_NEED_UTF8)
		FUZZ_CHECK(eb != SMTP_ARG_NEED_UTF8);
}

static void
fuzz_mailbox(const uint8_t *data, size_t size)
{
	/* exact size, no terminator: any read past len is a heap overflow */
	char *buf = malloc(size ? size : 1);
	const char *why = "";
	bool ascii_ok, utf8_ok;

	if (buf == NULL)
		return;
	memcpy(buf, data, size);
	ascii_ok = smtp_mailbox_is_valid(buf, size, false, &why);
	utf8_ok = smtp_mailbox_is_valid(buf, size, true, &why);
	if (ascii_ok) {
		FUZZ_CHECK(utf8_ok);
		for (size_t i = 0; i < size; i++)
			FUZZ_CHECK(data[i] < 0x80);
	}
	if (ascii_ok || utf8_ok)
		FUZZ_CHECK(memchr(buf, '\0', size) == NULL && memchr(buf, '@', size) != NULL);
	free(buf);
}

static void
fuzz_auth_plain(const char *line)
{
	char *user = NULL, *pass = NULL;
	size_t rawlen = 0;
	unsigned char *raw;

	if (smtp_auth_plain_decode(line, &user, &pass) < 0) {
		FUZZ_CHECK(user == NULL && pass == NULL);
		return;
	}
	FUZZ_CHECK(user != NULL && pass != NULL && user[0] != '\0');
	raw = mb_base64_decode(line, strlen(line), &rawlen);
	FUZZ_CHECK(raw != NULL);
	/* authzid NUL authcid NUL passwd, exactly two NULs */
	FUZZ_CHECK(rawlen == strlen((char *)raw) + 1 + strlen(user) + 1 + strlen(pass));
	free(raw);
	free(user);
	mb_secret_free(pass);
}

static void
fuzz_base64(const char *line)
{
	size_t n = 0, n2 = 0;
	unsigned char *raw = mb_base64_decode(line, strlen(line), &n);
	unsigned char *raw2;
	char *enc;

	if (raw == NULL)
		return;
	FUZZ_CHECK(n <= strlen(line) / 4 * 3 + 2);
	FUZZ_CHECK(raw[n] == '\0');
	enc = mb_base64_encode(raw, n);
	raw2 = mb_base64_decode(enc, strlen(enc), &n2);
	FUZZ_CHECK(raw2 != NULL && n2 == n && memcmp(raw, raw2, n) == 0);
	free(raw);
	free(raw2);
	free(enc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	struct smtp_cmd cmd;

	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';

	fuzz_cmd(line);
	fuzz_mail_rcpt(line);
	/* as the server sees it: the verb's argument */
	smtp_cmd_parse(line, &cmd);
	if (cmd.arg != line)
		fuzz_mail_rcpt(cmd.arg);
	fuzz_mailbox(data, size);
	fuzz_auth_plain(line);
	fuzz_base64(line);
	free(line);
	return 0;
}
