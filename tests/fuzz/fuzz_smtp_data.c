/*
 * libFuzzer target for the DATA reader. The input is the raw bytes after "354"; the limits and
 * the chunk sizes come from a hash of the input, so seeds stay plain SMTP content.
 *
 * Checked: consumed <= len on every call and all of it until done; the same bytes fed whole,
 * in random chunks and byte by byte give the same result; and that result matches a simple
 * model: lines split only at CRLF, the first line "." ends the data, a leading dot is removed,
 * any other CR or LF is bare. A too-big message's output is a prefix of the full content.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

struct fuzz_run {
	struct mb_buf out;
	struct smtp_data d;
	size_t consumed;
	bool done;
};

static uint64_t
fuzz_next(uint64_t *s)
{
	/* xorshift64* */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

/* chunk: 0 = one call, 1 = byte by byte, 2 = random sizes from rng (some empty) */
static void
fuzz_feed(const uint8_t *p, size_t len, size_t max_size, size_t max_line, int chunk, uint64_t rng,
          struct fuzz_run *r)
{
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	smtp_data_init(&r->d, &r->out, max_size, max_line);
	do {
		size_t n = len - off, used;

		if (chunk == 1 && n > 1)
			n = 1;
		else if (chunk == 2 && n > 0)
			n = (size_t)(fuzz_next(&rng) % (n < 64 ? n + 1 : 65));
		used = smtp_data_feed(&r->d, (const char *)p + off, n, &r->done);
		FUZZ_CHECK(used <= n);
		if (!r->done)
			FUZZ_CHECK(used == n);
		off += used;
	} while (!r->done && off < len);
	r->consumed = off;
}

struct fuzz_model {
	struct mb_buf out;
	size_t consumed;
	size_t longest; /* longest line of content, without CRLF */
	bool done;
	bool bare;
	bool has_8bit;
};

/* The reference: the data as a list of CRLF-terminated lines. */
static void
fuzz_model_run(const uint8_t *p, size_t len, struct fuzz_model *m)
{
	size_t start = 0;

	memset(m, 0, sizeof(*m));
	while (start < len) {
		const uint8_t *crlf = NULL;
		size_t end, from;

		for (size_t i = start; i + 1 < len; i++) {
			if (p[i] == '\r' && p[i + 1] == '\n') {
				crlf = p + i;
				break;
			}
		}
		end = crlf ? (size_t)(crlf - p) : len;
		if (crlf && end - start == 1 && p[start] == '.') {
			m->done = true;
			m->consumed = end + 2;
			return;
		}
		from = start < end && p[start] == '.' ? start + 1 : start;
		/* without a CRLF yet, a trailing CR is undecided and not emitted */
		if (!crlf && end > from && p[end - 1] == '\r')
			end--;
		for (size_t i = from; i < end; i++) {
			if (p[i] == '\n' || p[i] == '\r')
				m->bare = true;
			if (p[i] >= 0x80)
				m->has_8bit = true;
		}
		if (end - from > m->longest)
			m->longest = end - from;
		mb_buf_append(&m->out, p + from, end - from);
		if (!crlf)
			break;
		mb_buf_append(&m->out, "\r\n", 2);
		start = end + 2;
	}
	m->consumed = len;
}

static bool
fuzz_same(const struct fuzz_run *a, const struct fuzz_run *b, bool cmp_out)
{
	if (cmp_out && (a->out.len != b->out.len ||
	                (a->out.len > 0 && memcmp(a->out.data, b->out.data, a->out.len) != 0)))
		return false;
	return a->consumed == b->consumed && a->done == b->done && a->d.size == b->d.size &&
	       a->d.bare_lf_or_cr == b->d.bare_lf_or_cr && a->d.too_big == b->d.too_big &&
	       a->d.line_too_long == b->d.line_too_long && a->d.has_8bit == b->d.has_8bit;
}

static bool
fuzz_is_prefix(const struct mb_buf *a, const struct mb_buf *full)
{
	return a->len <= full->len && (a->len == 0 || memcmp(a->data, full->data, a->len) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t sizes[] = {0, 1, 2, 5, 16, 64, 1000, SIZE_MAX};
	static const size_t lines[] = {0, 1, 2, 3, 8, 76, 998, SIZE_MAX};
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	size_t max_size, max_line;
	struct fuzz_run whole, chunked, bytes, full;
	struct fuzz_model m;

	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 1099511628211ULL;
	max_size = sizes[h % 8];
	max_line = lines[(h >> 8) % 8];

	fuzz_feed(data, size, max_size, max_line, 0, 0, &whole);
	fuzz_feed(data, size, max_size, max_line, 2, h | 1, &chunked);
	fuzz_feed(data, size, SIZE_MAX, max_line, 0, 0, &full);
	fuzz_model_run(data, size, &m);

	/* the model */
	FUZZ_CHECK(full.done == m.done);
	FUZZ_CHECK(full.consumed == m.consumed);
	FUZZ_CHECK(full.out.len == m.out.len &&
	           (m.out.len == 0 || memcmp(full.out.data, m.out.data, m.out.len) == 0));
	FUZZ_CHECK(full.d.size == full.out.len);
	FUZZ_CHECK(full.d.bare_lf_or_cr == m.bare);
	FUZZ_CHECK(full.d.has_8bit == m.has_8bit);
	FUZZ_CHECK(full.d.line_too_long == (m.longest > max_line));
	FUZZ_CHECK(!full.d.too_big);

	/* the limits */
	FUZZ_CHECK(whole.out.len <= max_size && chunked.out.len <= max_size);
	FUZZ_CHECK(whole.d.too_big == (full.d.size > max_size));
	FUZZ_CHECK(fuzz_is_prefix(&whole.out, &full.out));
	FUZZ_CHECK(fuzz_is_prefix(&chunked.out, &full.out));
	if (!whole.d.too_big)
		FUZZ_CHECK(fuzz_same(&whole, &full, true));

	/* chunking changes nothing (the output of a too-big message is only capped) */
	FUZZ_CHECK(fuzz_same(&whole, &chunked, !whole.d.too_big));
	if (size <= 1024) {
		fuzz_feed(data, size, max_size, max_line, 1, 0, &bytes);
		FUZZ_CHECK(fuzz_same(&whole, &bytes, !whole.d.too_big));
		FUZZ_CHECK(fuzz_is_prefix(&bytes.out, &full.out));
		mb_buf_release(&bytes.out);
	}

	mb_buf_release(&whole.out);
	mb_buf_release(&chunked.out);
	mb_buf_release(&full.out);
	mb_buf_release(&m.out);
	return 0;
}
