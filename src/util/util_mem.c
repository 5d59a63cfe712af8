/* Allocation that aborts on out-of-memory, and growable buffers. */
#include "util.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
oom(void)
{
	static const char msg[] = "mailbridge: out of memory\n";

	fwrite(msg, 1, sizeof(msg) - 1, stderr);
	abort();
}

void *
mb_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
mb_calloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

	if (p == NULL)
		oom();
	return p;
}

void *
mb_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		oom();
	return q;
}

char *
mb_strdup(const char *s)
{
	return mb_strndup(s, strlen(s));
}

char *
mb_strndup(const char *s, size_t n)
{
	char *p = mb_malloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
mb_asprintf(const char *fmt, ...)
{
	struct mb_buf b = {0};
	va_list ap;

	va_start(ap, fmt);
	mb_buf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (b.data == NULL)
		return mb_strdup("");
	return mb_buf_steal(&b);
}

void
mb_buf_reserve(struct mb_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	size_t cap;

	if (need <= b->cap)
		return;
	cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	b->data = mb_realloc(b->data, cap);
	b->cap = cap;
}

void
mb_buf_append(struct mb_buf *b, const void *data, size_t len)
{
	mb_buf_reserve(b, len);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void
mb_buf_puts(struct mb_buf *b, const char *s)
{
	mb_buf_append(b, s, strlen(s));
}

void
mb_buf_vprintf(struct mb_buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	mb_buf_reserve(b, 128);
	n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	if (n < 0) {
		va_end(ap2);
		return;
	}
	if ((size_t)n >= b->cap - b->len) {
		mb_buf_reserve(b, (size_t)n);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
	}
	va_end(ap2);
	b->len += (size_t)n;
}

void
mb_buf_printf(struct mb_buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	mb_buf_vprintf(b, fmt, ap);
	va_end(ap);
}

void
mb_buf_reset(struct mb_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void
mb_buf_release(struct mb_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void
mb_buf_wipe(struct mb_buf *b)
{
	if (b->data)
		OPENSSL_cleanse(b->data, b->cap);
	mb_buf_release(b);
}

char *
mb_buf_steal(struct mb_buf *b)
{
	char *p = b->data;

	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}

void
mb_secret_wipe(void *p, size_t n)
{
	if (p && n)
		OPENSSL_cleanse(p, n);
}

void
mb_secret_free(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}
