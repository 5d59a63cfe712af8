/* Client AUTH: password checks against [user] sections, with a keyed digest cache. */
#include "smtp_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

struct auth_entry {
	char *user;
	char *stored; /* the config's hash this entry was verified against */
	unsigned char digest[32];
};

struct smtp_auth_cache {
	unsigned char key[32]; /* per process: the digests mean nothing outside it */
	struct auth_entry *v;
	size_t n;
};

static void
digest(const struct smtp_auth_cache *c, const char *pass, unsigned char out[32])
{
	unsigned int len = 32;

	HMAC(EVP_sha256(), c->key, sizeof(c->key), (const unsigned char *)pass, strlen(pass), out,
	     &len);
}

bool
smtp_auth_check(struct smtp_server *srv, const char *user, const char *pass)
{
	const struct config_user *u = config_user_find(srv->cfg, user);
	struct smtp_auth_cache *c = srv->auth_cache;
	unsigned char d[32];
	bool ok;

	if (u == NULL || u->password_hash == NULL) {
		/* spend the same time as a real check, so user names cannot be probed */
		mb_password_verify(pass, "$scrypt$ln=14,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA==$"
		                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
		return false;
	}
	if (c == NULL) {
		c = srv->auth_cache = mb_calloc(1, sizeof(*c));
		mb_random_bytes(c->key, sizeof(c->key));
	}
	digest(c, pass, d);
	for (size_t i = 0; i < c->n; i++) {
		if (strcmp(c->v[i].user, user) == 0 &&
		    strcmp(c->v[i].stored, u->password_hash) == 0) {
			ok = CRYPTO_memcmp(c->v[i].digest, d, sizeof(d)) == 0;
			mb_secret_wipe(d, sizeof(d));
			return ok;
		}
	}
	ok = mb_password_verify(pass, u->password_hash);
	if (ok) {
		c->v = mb_realloc(c->v, (c->n + 1) * sizeof(*c->v));
		c->v[c->n].user = mb_strdup(user);
		c->v[c->n].stored = mb_strdup(u->password_hash);
		memcpy(c->v[c->n].digest, d, sizeof(d));
		c->n++;
	}
	mb_secret_wipe(d, sizeof(d));
	return ok;
}

void
smtp_auth_cache_free(struct smtp_auth_cache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->v[i].user);
		free(c->v[i].stored);
	}
	free(c->v);
	mb_secret_wipe(c, sizeof(*c));
	free(c);
}
