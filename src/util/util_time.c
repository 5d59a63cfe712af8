/* Time, ids, randomness, base64 and fingerprints. */
#include "util.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t
mb_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
mb_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
mb_rfc5322_date(int64_t unix_ms, char *out, size_t outlen)
{
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;

	localtime_r(&t, &tm);
	strftime(out, outlen, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

void
mb_iso_date(int64_t unix_ms, char *out, size_t outlen)
{
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void
mb_random_bytes(void *out, size_t n)
{
	if (RAND_bytes(out, (int)n) != 1) {
		mb_fatal("util: random: RAND_bytes failed");
		abort();
	}
}

/* Crockford base32: no I, L, O, U; sorts in time order as text. */
static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

void
mb_id_new(char out[MB_ID_LEN + 1])
{
	uint64_t t = (uint64_t)mb_now_ms();
	unsigned char rnd[6];
	int i;

	for (i = 9; i >= 0; i--) {
		out[i] = b32[t & 31];
		t >>= 5;
	}
	mb_random_bytes(rnd, sizeof(rnd));
	for (i = 0; i < 6; i++)
		out[10 + i] = b32[rnd[i] & 31];
	out[MB_ID_LEN] = '\0';
}

bool
mb_id_is_valid(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != MB_ID_LEN)
		return false;
	for (i = 0; i < MB_ID_LEN; i++)
		if (strchr(b32, s[i]) == NULL || s[i] == '\0')
			return false;
	return true;
}

char *
mb_base64_encode(const void *data, size_t len)
{
	size_t outlen = 4 * ((len + 2) / 3);
	char *out = mb_malloc(outlen + 1);

	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	out[outlen] = '\0';
	return out;
}

unsigned char *
mb_base64_decode(const char *s, size_t slen, size_t *outlen)
{
	char *padded;
	unsigned char *out;
	size_t plen, pad = 0;
	int n;

	/* EVP_DecodeBlock wants padding and tolerates whitespace; we want neither. */
	if (slen % 4 == 1 || slen > (size_t)1 << 30)
		return NULL;
	for (size_t i = 0; i < slen; i++) {
		char c = s[i];
		if (c == '=') {
			/* padding: only at the end, at most two, and nothing after it */
			if (i < slen - 2 || (i == slen - 2 && s[slen - 1] != '='))
				return NULL;
			continue;
		}
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/'))
			return NULL;
	}
	plen = (slen + 3) / 4 * 4;
	padded = mb_malloc(plen + 1);
	memcpy(padded, s, slen);
	memset(padded + slen, '=', plen - slen);
	padded[plen] = '\0';
	for (size_t i = plen; i > 0 && padded[i - 1] == '='; i--)
		pad++;
	if (pad > 2) {
		free(padded);
		return NULL;
	}
	out = mb_malloc(plen / 4 * 3 + 1);
	n = plen ? EVP_DecodeBlock(out, (unsigned char *)padded, (int)plen) : 0;
	free(padded);
	if (n < 0) {
		free(out);
		return NULL;
	}
	*outlen = (size_t)n - pad;
	out[*outlen] = '\0';
	return out;
}

void
mb_fingerprint(const void *data, size_t len, char out[24])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256(data, len, md);
	snprintf(out, 24, "sha256:%02x%02x%02x%02x", md[0], md[1], md[2], md[3]);
}
