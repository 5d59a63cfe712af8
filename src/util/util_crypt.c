/* Secrets at rest: the key file and AES-256-GCM sealing (OpenSSL EVP). */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC     "mb1"
#define MAGIC_LEN 3
#define NONCE_LEN 12
#define TAG_LEN   16

static int
read_key_file(const char *path, struct mb_key *out, struct mb_err *err)
{
	struct stat st;
	unsigned char buf[128];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		mb_err_set(err, errno == ENOENT ? MB_ENOTFOUND : MB_EIO, "key file %s: %s", path,
		           strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		mb_err_set(err, MB_EINVAL, "key file %s: not a regular file", path);
		close(fd);
		return -1;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		mb_err_set(
		    err, MB_EINVAL,
		    "key file %s is readable by group or others (mode %04o): run chmod 600 %s",
		    path, (unsigned)(st.st_mode & 07777), path);
		close(fd);
		return -1;
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n == MB_KEY_LEN) {
		memcpy(out->k, buf, MB_KEY_LEN);
	} else {
		size_t len = n > 0 ? (size_t)n : 0, klen;
		unsigned char *k;
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
			len--;
		k = mb_base64_decode((const char *)buf, len, &klen);
		if (k == NULL || klen != MB_KEY_LEN) {
			free(k);
			mb_secret_wipe(buf, sizeof(buf));
			mb_err_set(err, MB_EINVAL,
			           "key file %s: expected 32 bytes or their base64 (make one with: "
			           "openssl rand -base64 32 > %s)",
			           path, path);
			return -1;
		}
		memcpy(out->k, k, MB_KEY_LEN);
		mb_secret_wipe(k, klen);
		free(k);
	}
	mb_secret_wipe(buf, sizeof(buf));
	snprintf(out->source, sizeof(out->source), "%s", path);
	return 0;
}

static int
create_key_file(const char *path, struct mb_key *out, struct mb_err *err)
{
	unsigned char k[MB_KEY_LEN];
	char *b64;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	bool ok;

	if (fd < 0) {
		mb_err_set(err, MB_EIO, "cannot create key file %s: %s", path, strerror(errno));
		return -1;
	}
	mb_random_bytes(k, sizeof(k));
	b64 = mb_base64_encode(k, sizeof(k));
	ok = write(fd, b64, strlen(b64)) == (ssize_t)strlen(b64) && write(fd, "\n", 1) == 1 &&
	     fsync(fd) == 0;
	close(fd);
	mb_secret_free(b64);
	if (!ok) {
		unlink(path);
		mb_secret_wipe(k, sizeof(k));
		mb_err_set(err, MB_EIO, "cannot write key file %s: %s", path, strerror(errno));
		return -1;
	}
	memcpy(out->k, k, sizeof(k));
	mb_secret_wipe(k, sizeof(k));
	snprintf(out->source, sizeof(out->source), "%s", path);
	mb_info("util: key: created %s (mode 0600); back it up with the store", path);
	return 0;
}

int
mb_key_load(const char *key_file, const char *data_dir, bool create, struct mb_key *out,
            struct mb_err *err)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	char path[512];
	int rc;

	memset(out, 0, sizeof(*out));
	if (creds && *creds) {
		snprintf(path, sizeof(path), "%s/mailbridge.key", creds);
		if (access(path, F_OK) == 0)
			return read_key_file(path, out, err);
	}
	if (key_file && *key_file)
		return read_key_file(key_file, out, err);
	snprintf(path, sizeof(path), "%s/secret.key", data_dir);
	rc = read_key_file(path, out, err);
	if (rc < 0 && err && err->code == MB_ENOTFOUND && create)
		rc = create_key_file(path, out, err);
	return rc;
}

void
mb_key_wipe(struct mb_key *k)
{
	mb_secret_wipe(k->k, sizeof(k->k));
}

unsigned char *
mb_seal(const struct mb_key *k, const void *pt, size_t len, const char *aad, size_t *outlen)
{
	size_t total = MAGIC_LEN + NONCE_LEN + len + TAG_LEN;
	unsigned char *out = mb_malloc(total), *nonce = out + MAGIC_LEN;
	unsigned char *ct = nonce + NONCE_LEN;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n, ok;

	memcpy(out, MAGIC, MAGIC_LEN);
	mb_random_bytes(nonce, NONCE_LEN);
	ok = ctx && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, k->k, nonce) == 1 &&
	     EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) == 1 &&
	     EVP_EncryptUpdate(ctx, ct, &n, pt, (int)len) == 1 &&
	     EVP_EncryptFinal_ex(ctx, ct + n, &n) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, ct + len) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		free(out);
		return NULL;
	}
	*outlen = total;
	return out;
}

char *
mb_open(const struct mb_key *k, const unsigned char *in, size_t len, const char *aad, size_t *ptlen)
{
	const unsigned char *nonce = in + MAGIC_LEN, *ct = nonce + NONCE_LEN;
	size_t ctlen;
	unsigned char *pt;
	EVP_CIPHER_CTX *ctx;
	int n, ok;

	if (len < MAGIC_LEN + NONCE_LEN + TAG_LEN || memcmp(in, MAGIC, MAGIC_LEN) != 0)
		return NULL;
	ctlen = len - MAGIC_LEN - NONCE_LEN - TAG_LEN;
	pt = mb_malloc(ctlen + 1);
	ctx = EVP_CIPHER_CTX_new();
	ok = ctx && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, k->k, nonce) == 1 &&
	     EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)strlen(aad)) == 1 &&
	     EVP_DecryptUpdate(ctx, pt, &n, ct, (int)ctlen) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, (void *)(ct + ctlen)) == 1 &&
	     EVP_DecryptFinal_ex(ctx, pt + n, &n) == 1;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		mb_secret_wipe(pt, ctlen + 1);
		free(pt);
		return NULL;
	}
	pt[ctlen] = '\0';
	if (ptlen)
		*ptlen = ctlen;
	return (char *)pt;
}
