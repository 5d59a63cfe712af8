/*
 * libFuzzer target for the identity platform's answers: the same bytes go to the token
 * response, error body and device-code response parsers (from an exact-size copy, so ASan
 * sees any read past len), and the parsed error goes to oauth_error_explain. Each result is
 * checked against what the header promises: refusals leave nothing to free and never quote
 * the input, strings are bounded and one line, explanations have no NULL fields.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oauth/oauth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static bool
fuzz_is_line(const char *s, size_t size)
{
	size_t n = strnlen(s, size);

	FUZZ_CHECK(n < size);
	for (size_t i = 0; i < n; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	}
	return true;
}

static void
fuzz_token(const char *json, size_t size)
{
	struct oauth_token_resp r;
	struct mb_err err = {0};

	if (oauth_token_resp_parse(json, size, &r, &err) < 0) {
		FUZZ_CHECK(r.access_token == NULL && r.refresh_token == NULL &&
		           r.id_token == NULL && r.scope == NULL && r.token_type == NULL &&
		           r.account == NULL);
		FUZZ_CHECK(err.msg[0] != '\0');
		return;
	}
	FUZZ_CHECK(r.access_token != NULL && r.access_token[0] != '\0');
	FUZZ_CHECK(r.token_type != NULL && strcmp(r.token_type, "Bearer") == 0);
	FUZZ_CHECK(r.expires_in > 0);
	FUZZ_CHECK(r.ext_expires_in >= 0);
	FUZZ_CHECK(r.refresh_token == NULL || r.refresh_token[0] != '\0');
	FUZZ_CHECK(r.account == NULL || r.id_token != NULL);
	if (r.account)
		FUZZ_CHECK(r.account[0] != '\0' && fuzz_is_line(r.account, strlen(r.account) + 1));
	oauth_token_resp_release(&r);
	FUZZ_CHECK(r.access_token == NULL);
}

static void
fuzz_error(const char *json, size_t size)
{
	static const int statuses[] = {400, 401, 429, 500, 0};
	struct oauth_error e;
	struct oauth_explain ex;
	int rc = oauth_error_parse(json, size, statuses[size % 5], &e);

	FUZZ_CHECK(e.http_status == statuses[size % 5]);
	FUZZ_CHECK(e.ncodes >= 0 && e.ncodes <= 8);
	FUZZ_CHECK(fuzz_is_line(e.error, sizeof(e.error)));
	FUZZ_CHECK(fuzz_is_line(e.description, sizeof(e.description)));
	FUZZ_CHECK(fuzz_is_line(e.trace_id, sizeof(e.trace_id)));
	FUZZ_CHECK(fuzz_is_line(e.correlation_id, sizeof(e.correlation_id)));
	if (rc < 0)
		FUZZ_CHECK(e.error[0] == '\0' && e.description[0] == '\0' && e.ncodes == 0);
	else
		FUZZ_CHECK(e.error[0] != '\0');
	for (int i = 0; i < e.ncodes; i++)
		FUZZ_CHECK(e.codes[i] > 0);
	oauth_error_explain(&e, &ex);
	FUZZ_CHECK(ex.cause != NULL && ex.fix != NULL);
	FUZZ_CHECK(ex.cls >= OAUTH_CLASS_TRANSIENT && ex.cls <= OAUTH_CLASS_PENDING);
}

static void
fuzz_device(const char *json, size_t size)
{
	struct oauth_device_resp r;
	struct mb_err err = {0};

	if (oauth_device_resp_parse(json, size, &r, &err) < 0) {
		FUZZ_CHECK(r.device_code == NULL && r.user_code == NULL &&
		           r.verification_uri == NULL && r.message == NULL);
		FUZZ_CHECK(err.msg[0] != '\0');
		return;
	}
	FUZZ_CHECK(r.device_code && r.user_code && r.verification_uri);
	FUZZ_CHECK(fuzz_is_line(r.user_code, strlen(r.user_code) + 1));
	FUZZ_CHECK(fuzz_is_line(r.verification_uri, strlen(r.verification_uri) + 1));
	FUZZ_CHECK(r.message == NULL || fuzz_is_line(r.message, strlen(r.message) + 1));
	FUZZ_CHECK(r.expires_in > 0 && r.interval > 0);
	oauth_device_resp_release(&r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *copy = malloc(size ? size : 1);

	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	fuzz_token(copy, size);
	fuzz_error(copy, size);
	fuzz_device(copy, size);
	free(copy);
	return 0;
}
