/*
 * oauth: parsers for what the identity platform answers (microsoft-reference §1.8-§1.10): the
 * token response, the error body and the device-code response.
 *
 * The bytes come from the network. Nothing here quotes them into an error message, because a
 * token response that fails half-way still holds tokens; jansson's own error text is not used
 * either, since it quotes the input near the error. The secret strings inside the parsed JSON
 * tree are wiped before the tree is freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "oauth/oauth.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Bounds on what the fields may hold; anything larger is not a Microsoft answer. */
#define OAUTH_MAX_LIFETIME  (10LL * 365 * 86400) /* expires_in, seconds */
#define OAUTH_MAX_JWT_PART  16384                /* id_token payload, base64url chars */
#define OAUTH_MAX_ACCOUNT   320                  /* an e-mail address or UPN */
#define OAUTH_DEVICE_EXPIRY 900                  /* §1.8: the default when absent */
#define OAUTH_DEVICE_POLL   5                    /* RFC 8628 §3.2: the default interval */

static json_t *
oauth_json_load(const char *json, size_t len, size_t flags, json_error_t *jerr)
{
	if (json == NULL) {
		json = "";
		len = 0;
	}
	return json_loadb(json, len, flags | JSON_DECODE_ANY, jerr);
}

/* Parses a JSON number or a string of decimal digits (numbers sent as strings by some
 * endpoints). */
static int
oauth_json_int(const json_t *v, int64_t *out)
{
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);

		if (d != d || d < -9.0e18 || d > 9.0e18 || d != (double)(int64_t)d)
			return -1;
		*out = (int64_t)d;
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		int64_t x = 0;

		if (n == 0 || n > 18)
			return -1;
		for (size_t i = 0; i < n; i++) {
			if (s[i] < '0' || s[i] > '9')
				return -1;
			x = x * 10 + (s[i] - '0');
		}
		*out = x;
		return 0;
	}
	return -1;
}

/* Returns the non-empty string at key, or NULL. */
static const char *
oauth_json_str(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);

	if (!json_is_string(v) || json_string_length(v) == 0)
		return NULL;
	return json_string_value(v);
}

static bool
oauth_has_control(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	}
	return false;
}

/* The secrets inside jansson's tree would otherwise go back to malloc in clear. */
static void
oauth_json_wipe(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (json_is_string(v))
		mb_secret_wipe((char *)json_string_value(v), json_string_length(v));
}

/* Loads a response that must be JSON without duplicate keys; what names it in the error. */
static json_t *
oauth_json_load_strict(const char *json, size_t len, const char *what, struct mb_err *err)
{
	json_error_t jerr;
	json_t *root = oauth_json_load(json, len, JSON_REJECT_DUPLICATES, &jerr);

	if (root == NULL)
		mb_err_set(err, MB_EINVAL, "%s is not JSON (line %d, column %d)", what, jerr.line,
		           jerr.column);
	return root;
}

/* Frees the tree after wiping the strings at the NULL-terminated list of secret keys. */
static void
oauth_json_free_wiped(json_t *root, const char *const *secrets)
{
	if (json_is_object(root)) {
		for (; *secrets != NULL; secrets++)
			oauth_json_wipe(root, *secrets);
	}
	json_decref(root);
}

/* Copies the first line of src (up to \r or \n) into dst, control characters as '?', cut on
 * a UTF-8 character boundary when it does not fit. */
static void
oauth_copy_line(char *dst, size_t size, const char *src)
{
	size_t n = 0;

	for (; src[n] && src[n] != '\r' && src[n] != '\n' && n < size - 1; n++) {
		unsigned char c = (unsigned char)src[n];

		dst[n] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	if (src[n] && src[n] != '\r' && src[n] != '\n') {
		/* truncated: drop a partial multi-byte sequence at the end */
		size_t k = n;

		while (k > 0 && ((unsigned char)dst[k - 1] & 0xC0) == 0x80)
			k--;
		if (k > 0 && ((unsigned char)dst[k - 1] & 0x80)) {
			unsigned char lead = (unsigned char)dst[k - 1];
			size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;

			if (n - (k - 1) < need)
				n = k - 1;
		}
	}
	dst[n] = '\0';
}

/* ---- id_token ---- */

static bool
oauth_account_is_valid(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n <= OAUTH_MAX_ACCOUNT && !oauth_has_control(s);
}

/* The account named by an id_token: preferred_username, else upn, else email. The signature
 * is not checked: the token came from the token endpoint over TLS (OIDC Core §3.1.3.7). */
static char *
oauth_id_token_account(const char *jwt)
{
	static const char *const claims[] = {"preferred_username", "upn", "email"};
	const char *p1 = strchr(jwt, '.'), *p2;
	unsigned char *payload;
	char *b64, *account = NULL;
	size_t n, plen;
	json_t *root;

	if (p1 == NULL || (p2 = strchr(p1 + 1, '.')) == NULL)
		return NULL;
	n = (size_t)(p2 - p1 - 1);
	if (n == 0 || n > OAUTH_MAX_JWT_PART)
		return NULL;
	b64 = mb_strndup(p1 + 1, n);
	for (size_t i = 0; i < n; i++) {
		if (b64[i] == '+' || b64[i] == '/') {
			free(b64);
			return NULL;
		}
		if (b64[i] == '-')
			b64[i] = '+';
		else if (b64[i] == '_')
			b64[i] = '/';
	}
	payload = mb_base64_decode(b64, n, &plen);
	free(b64);
	if (payload == NULL)
		return NULL;
	root = json_loadb((const char *)payload, plen, 0, NULL);
	free(payload);
	if (!json_is_object(root)) {
		json_decref(root);
		return NULL;
	}
	for (size_t i = 0; i < NELEM(claims) && account == NULL; i++) {
		const char *v = oauth_json_str(root, claims[i]);

		if (v && oauth_account_is_valid(v))
			account = mb_strdup(v);
	}
	json_decref(root);
	return account;
}

/* ---- token response ---- */

static int
oauth_token_fields(json_t *root, struct oauth_token_resp *out, struct mb_err *err)
{
	const json_t *v;
	const char *s;

	if (!json_is_object(root)) {
		mb_err_set(err, MB_EINVAL, "token response is not a JSON object");
		return -1;
	}
	v = json_object_get(root, "access_token");
	if (v == NULL) {
		mb_err_set(err, MB_EINVAL, "token response has no access_token");
		return -1;
	}
	if (!json_is_string(v) || json_string_length(v) == 0) {
		mb_err_set(err, MB_EINVAL,
		           "token response: access_token is not a non-empty string");
		return -1;
	}
	out->access_token = mb_strdup(json_string_value(v));

	v = json_object_get(root, "token_type");
	if (v != NULL && (!json_is_string(v) || strcasecmp(json_string_value(v), "Bearer") != 0)) {
		mb_err_set(err, MB_EINVAL, "token response: token_type is not Bearer");
		return -1;
	}
	out->token_type = mb_strdup("Bearer");

	v = json_object_get(root, "expires_in");
	if (v == NULL) {
		mb_err_set(err, MB_EINVAL, "token response has no expires_in");
		return -1;
	}
	if (oauth_json_int(v, &out->expires_in) < 0 || out->expires_in <= 0 ||
	    out->expires_in > OAUTH_MAX_LIFETIME) {
		mb_err_set(err, MB_EINVAL,
		           "token response: expires_in is not a positive number of seconds");
		return -1;
	}
	v = json_object_get(root, "ext_expires_in");
	if (v == NULL || oauth_json_int(v, &out->ext_expires_in) < 0 || out->ext_expires_in < 0 ||
	    out->ext_expires_in > OAUTH_MAX_LIFETIME)
		out->ext_expires_in = 0;

	/* A refresh token of the wrong type must not pass for "none returned": the caller would
	 * keep the old one, which the server may just have rotated away. */
	v = json_object_get(root, "refresh_token");
	if (v != NULL && !json_is_null(v) && !json_is_string(v)) {
		mb_err_set(err, MB_EINVAL, "token response: refresh_token is not a string");
		return -1;
	}
	if ((s = oauth_json_str(root, "refresh_token")) != NULL)
		out->refresh_token = mb_strdup(s);
	if ((s = oauth_json_str(root, "scope")) != NULL)
		out->scope = mb_strdup(s);
	if ((s = oauth_json_str(root, "id_token")) != NULL) {
		out->id_token = mb_strdup(s);
		out->account = oauth_id_token_account(s);
	}
	return 0;
}

int
oauth_token_resp_parse(const char *json, size_t len, struct oauth_token_resp *out,
                       struct mb_err *err)
{
	static const char *const secrets[] = {"access_token", "refresh_token", "id_token", NULL};
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	root = oauth_json_load_strict(json, len, "token response", err);
	if (root == NULL)
		return -1;
	rc = oauth_token_fields(root, out, err);
	oauth_json_free_wiped(root, secrets);
	if (rc < 0)
		oauth_token_resp_release(out);
	return rc;
}

void
oauth_token_resp_release(struct oauth_token_resp *r)
{
	if (r == NULL)
		return;
	mb_secret_free(r->access_token);
	mb_secret_free(r->refresh_token);
	mb_secret_free(r->id_token);
	free(r->scope);
	free(r->token_type);
	free(r->account);
	memset(r, 0, sizeof(*r));
}

/* ---- error body ---- */

/* "AADSTS70011: ..." -> 70011 */
static long
oauth_aadsts_prefix(const char *desc)
{
	long code = 0;
	int digits = 0;

	if (strncmp(desc, "AADSTS", 6) != 0)
		return 0;
	for (desc += 6; *desc >= '0' && *desc <= '9' && digits < 9; desc++, digits++)
		code = code * 10 + (*desc - '0');
	if (digits == 0 || (*desc >= '0' && *desc <= '9'))
		return 0;
	return code;
}

static void
oauth_error_codes(const json_t *root, struct oauth_error *out)
{
	const json_t *codes = json_object_get(root, "error_codes");

	if (!json_is_array(codes))
		return;
	for (size_t i = 0; i < json_array_size(codes) && out->ncodes < (int)NELEM(out->codes);
	     i++) {
		int64_t v;

		if (oauth_json_int(json_array_get(codes, i), &v) == 0 && v > 0 && v <= 999999999)
			out->codes[out->ncodes++] = (long)v;
	}
}

int
oauth_error_parse(const char *json, size_t len, int http_status, struct oauth_error *out)
{
	json_t *root;
	const char *s;

	memset(out, 0, sizeof(*out));
	out->http_status = http_status;
	root = oauth_json_load(json, len, 0, NULL);
	if (!json_is_object(root) || (s = oauth_json_str(root, "error")) == NULL) {
		json_decref(root);
		return -1;
	}
	oauth_copy_line(out->error, sizeof(out->error), s);
	if (out->error[0] == '\0') { /* "\n..." has no first line to branch on */
		json_decref(root);
		return -1;
	}
	if ((s = oauth_json_str(root, "error_description")) != NULL)
		oauth_copy_line(out->description, sizeof(out->description), s);
	if ((s = oauth_json_str(root, "trace_id")) != NULL)
		oauth_copy_line(out->trace_id, sizeof(out->trace_id), s);
	if ((s = oauth_json_str(root, "correlation_id")) != NULL)
		oauth_copy_line(out->correlation_id, sizeof(out->correlation_id), s);
	oauth_error_codes(root, out);
	if (out->ncodes == 0 && (s = oauth_json_str(root, "error_description")) != NULL) {
		long code = oauth_aadsts_prefix(s);

		if (code > 0)
			out->codes[out->ncodes++] = code;
	}
	json_decref(root);
	return 0;
}

/* ---- device-code response ---- */

/* Microsoft's message is printed to a terminal: no escape sequences get through. */
static char *
oauth_printable_dup(const char *s)
{
	char *d = mb_strdup(s);

	for (char *p = d; *p; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	}
	return d;
}

static int
oauth_device_int(const json_t *root, const char *key, int64_t dflt, int64_t *out,
                 struct mb_err *err)
{
	const json_t *v = json_object_get(root, key);

	if (v == NULL) {
		*out = dflt;
		return 0;
	}
	if (oauth_json_int(v, out) < 0 || *out < 0 || *out > OAUTH_MAX_LIFETIME) {
		mb_err_set(err, MB_EINVAL,
		           "device code response: %s is not a positive number of seconds", key);
		return -1;
	}
	if (*out == 0)
		*out = dflt;
	return 0;
}

static int
oauth_device_fields(const json_t *root, struct oauth_device_resp *out, struct mb_err *err)
{
	const char *s;

	if (!json_is_object(root)) {
		mb_err_set(err, MB_EINVAL, "device code response is not a JSON object");
		return -1;
	}
	if ((s = oauth_json_str(root, "device_code")) == NULL) {
		mb_err_set(err, MB_EINVAL, "device code response has no device_code");
		return -1;
	}
	out->device_code = mb_strdup(s);
	if ((s = oauth_json_str(root, "user_code")) == NULL || oauth_has_control(s)) {
		mb_err_set(err, MB_EINVAL, "device code response has no usable user_code");
		return -1;
	}
	out->user_code = mb_strdup(s);
	/* verification_url: older endpoints' spelling */
	if ((s = oauth_json_str(root, "verification_uri")) == NULL)
		s = oauth_json_str(root, "verification_url");
	if (s == NULL || oauth_has_control(s)) {
		mb_err_set(err, MB_EINVAL, "device code response has no usable verification_uri");
		return -1;
	}
	out->verification_uri = mb_strdup(s);
	if ((s = oauth_json_str(root, "message")) != NULL)
		out->message = oauth_printable_dup(s);
	if (oauth_device_int(root, "expires_in", OAUTH_DEVICE_EXPIRY, &out->expires_in, err) < 0 ||
	    oauth_device_int(root, "interval", OAUTH_DEVICE_POLL, &out->interval, err) < 0)
		return -1;
	return 0;
}

int
oauth_device_resp_parse(const char *json, size_t len, struct oauth_device_resp *out,
                        struct mb_err *err)
{
	static const char *const secrets[] = {"device_code", NULL};
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	root = oauth_json_load_strict(json, len, "device code response", err);
	if (root == NULL)
		return -1;
	rc = oauth_device_fields(root, out, err);
	oauth_json_free_wiped(root, secrets);
	if (rc < 0)
		oauth_device_resp_release(out);
	return rc;
}

void
oauth_device_resp_release(struct oauth_device_resp *r)
{
	if (r == NULL)
		return;
	mb_secret_free(r->device_code);
	free(r->user_code);
	free(r->verification_uri);
	free(r->message);
	memset(r, 0, sizeof(*r));
}
