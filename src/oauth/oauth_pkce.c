/*
 * oauth: PKCE (RFC 7636, S256) and base64url. The verifier is a secret until the code is
 * redeemed, so every intermediate copy is wiped.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "oauth/oauth.h"

void
oauth_base64url(const void *data, size_t n, struct mb_buf *out)
{
	char *b64 = mb_base64_encode(data, n);
	size_t len = strlen(b64);

	while (len > 0 && b64[len - 1] == '=')
		len--;
	for (size_t i = 0; i < len; i++) {
		if (b64[i] == '+')
			b64[i] = '-';
		else if (b64[i] == '/')
			b64[i] = '_';
	}
	mb_buf_append(out, b64, len);
	mb_secret_free(b64);
}

/* Writes the base64url of n bytes (which must encode to exactly want chars) into out. */
static void
oauth_base64url_fixed(const void *data, size_t n, char *out, size_t want)
{
	struct mb_buf b = {0};

	oauth_base64url(data, n, &b);
	if (b.len != want)
		abort();
	memcpy(out, b.data, want);
	out[want] = '\0';
	mb_buf_wipe(&b);
}

void
oauth_pkce_verifier(char out[OAUTH_VERIFIER_LEN + 1])
{
	unsigned char raw[32];

	mb_random_bytes(raw, sizeof(raw));
	oauth_base64url_fixed(raw, sizeof(raw), out, OAUTH_VERIFIER_LEN);
	mb_secret_wipe(raw, sizeof(raw));
}

void
oauth_pkce_challenge(const char *verifier, char out[44])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)verifier, strlen(verifier), md);
	oauth_base64url_fixed(md, sizeof(md), out, 43);
	mb_secret_wipe(md, sizeof(md));
}
