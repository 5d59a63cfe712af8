/* Salted slow password hashes for SMTP client AUTH and the admin login: scrypt. */
#include "util.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRYPT_LN 14
#define SCRYPT_R  8
#define SCRYPT_P  1
#define SALT_LEN  16
#define HASH_LEN  32

static int
derive(const char *pw, const unsigned char *salt, size_t saltlen, int ln, int r, int p,
       unsigned char *out)
{
	uint64_t n = (uint64_t)1 << ln;
	uint64_t maxmem = 128 * n * (uint64_t)r * 2 + 1024 * 1024;

	return EVP_PBE_scrypt(pw, strlen(pw), salt, saltlen, n, (uint64_t)r, (uint64_t)p, maxmem,
	                      out, HASH_LEN) == 1
	           ? 0
	           : -1;
}

char *
mb_password_hash(const char *password)
{
	unsigned char salt[SALT_LEN], hash[HASH_LEN];
	char *s64, *h64, *out;

	mb_random_bytes(salt, sizeof(salt));
	if (derive(password, salt, sizeof(salt), SCRYPT_LN, SCRYPT_R, SCRYPT_P, hash) < 0)
		return NULL;
	s64 = mb_base64_encode(salt, sizeof(salt));
	h64 = mb_base64_encode(hash, sizeof(hash));
	out = mb_asprintf("$scrypt$ln=%d,r=%d,p=%d$%s$%s", SCRYPT_LN, SCRYPT_R, SCRYPT_P, s64, h64);
	free(s64);
	free(h64);
	mb_secret_wipe(hash, sizeof(hash));
	return out;
}

bool
mb_password_verify(const char *password, const char *stored)
{
	int ln, r, p, consumed = 0;
	const char *salt64, *hash64;
	unsigned char *salt = NULL, *want = NULL, got[HASH_LEN];
	size_t saltlen, wantlen;
	bool ok = false;

	if (sscanf(stored, "$scrypt$ln=%d,r=%d,p=%d$%n", &ln, &r, &p, &consumed) != 3 ||
	    consumed == 0 || ln < 10 || ln > 17 || r < 1 || r > 16 || p < 1 || p > 4)
		return false; /* bounded: at most 128 MiB of memory for one check */
	salt64 = stored + consumed;
	hash64 = strchr(salt64, '$');
	if (hash64 == NULL)
		return false;
	salt = mb_base64_decode(salt64, (size_t)(hash64 - salt64), &saltlen);
	want = mb_base64_decode(hash64 + 1, strlen(hash64 + 1), &wantlen);
	if (salt && saltlen >= 8 && want && wantlen == HASH_LEN &&
	    derive(password, salt, saltlen, ln, r, p, got) == 0)
		ok = CRYPTO_memcmp(got, want, HASH_LEN) == 0;
	mb_secret_wipe(got, sizeof(got));
	free(salt);
	free(want);
	return ok;
}
