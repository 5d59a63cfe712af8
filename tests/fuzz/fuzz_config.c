/*
 * libFuzzer target for the config parser: arbitrary bytes as a config file. Whatever parses is
 * validated, shown, and shown text must read back to the same values.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* mb_sockaddr_parse resolves names; keep the fuzzer off DNS by validating numeric hosts only. */
static bool
fuzz_list_is_numeric(const struct config_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i][strspn(l->v[i], "0123456789.:[]")] != '\0')
			return false;
	}
	return true;
}

static bool
fuzz_has_secret(const struct config *c)
{
	for (size_t i = 0; i < c->nconns; i++) {
		if (c->conns[i].client_secret != NULL)
			return true;
	}
	for (size_t i = 0; i < c->nusers; i++) {
		if (c->users[i].password_hash != NULL)
			return true;
	}
	return false;
}

static char *
fuzz_show(const struct config *c, size_t *longest)
{
	char *out = NULL, *p, *nl;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);

	if (f == NULL)
		abort();
	config_show(c, f);
	fclose(f);
	*longest = 0;
	for (p = out; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		if ((size_t)(nl - p) > *longest)
			*longest = (size_t)(nl - p);
	}
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mb_err err;
	struct config *c;
	char *text, *shown;
	size_t longest;

	text = malloc(size + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	c = config_parse_string(text, "fuzz", &err);
	free(text);
	if (c == NULL)
		return 0;
	if (fuzz_list_is_numeric(&c->server.smtp_listen) &&
	    fuzz_list_is_numeric(&c->server.http_listen))
		(void)config_validate(c, &err);
	shown = fuzz_show(c, &longest);
	/* inih reads lines of at most 199 characters; a list shown as "a, b" can grow past that */
	if (longest < 199) {
		struct config *c2 = config_parse_string(shown, "shown", &err);
		size_t longest2;
		char *shown2;

		if (c2 == NULL) {
			fprintf(stderr, "shown config does not read back: %s\n%s", err.msg, shown);
			abort();
		}
		shown2 = fuzz_show(c2, &longest2);
		if (!fuzz_has_secret(c) && strcmp(shown, shown2) != 0) {
			fprintf(stderr, "round trip differs:\n%s\n---\n%s", shown, shown2);
			abort();
		}
		free(shown2);
		config_free(c2);
	}
	free(shown);
	config_free(c);
	return 0;
}
