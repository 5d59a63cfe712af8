/*
 * The DATA reader: dot-unstuffing and the end-of-data marker, byte by byte.
 *
 * Only CR LF "." CR LF ends the content. A bare LF or a bare CR is never treated as a line
 * end: it is remembered (the message will be refused) and the parser keeps looking for the
 * one true terminator, so a smuggled "\n.\n" or "\r\n.\n" cannot end the message early.
 */
#include "smtp.h"

#include <string.h>

enum {
	D_LINE_START, /* after CRLF (or at the start) */
	D_DOT,        /* a '.' at line start */
	D_DOT_CR,     /* ".\r" at line start */
	D_IN_LINE,
	D_CR /* a CR inside a line */
};

void
smtp_data_init(struct smtp_data *d, struct mb_buf *out, size_t max_size, size_t max_line)
{
	memset(d, 0, sizeof(*d));
	d->out = out;
	d->max_size = max_size;
	d->max_line = max_line;
	d->state = D_LINE_START;
}

static inline void
emit(struct smtp_data *d, const char *p, size_t n)
{
	d->size += n;
	if (d->size > d->max_size) {
		d->too_big = true;
		return;
	}
	mb_buf_append(d->out, p, n);
}

static inline void
count_line(struct smtp_data *d, size_t n)
{
	d->line_len += n;
	if (d->line_len > d->max_line)
		d->line_too_long = true;
}

size_t
smtp_data_feed(struct smtp_data *d, const char *p, size_t len, bool *done)
{
	size_t i = 0;
	const char *cr = NULL; /* the next CR at or after p + i, or p + len */

	*done = false;
	while (i < len) {
		unsigned char c = (unsigned char)p[i];

		switch (d->state) {
		case D_LINE_START:
			d->line_len = 0;
			if (c == '.') {
				d->state = D_DOT;
				i++;
				continue;
			}
			d->state = D_IN_LINE;
			continue;
		case D_DOT:
			if (c == '\r') {
				d->state = D_DOT_CR;
				i++;
				continue;
			}
			/* ".x": the leading dot was stuffing; x is content */
			d->state = D_IN_LINE;
			continue;
		case D_DOT_CR:
			if (c == '\n') {
				*done = true;
				return i + 1;
			}
			/* ".\r" then not LF: a bare CR after a lone dot */
			d->bare_lf_or_cr = true;
			count_line(d, 1);
			emit(d, "\r", 1);
			d->state = D_IN_LINE;
			continue;
		case D_IN_LINE: {
			/* fast path: copy up to the next CR or LF; remember where the next CR is,
			 * so content without CRs is not rescanned for every line */
			size_t j;
			const char *lf;
			unsigned char acc = 0;

			if (cr == NULL || cr < p + i) {
				cr = memchr(p + i, '\r', len - i);
				if (cr == NULL)
					cr = p + len;
			}
			lf = memchr(p + i, '\n', (size_t)(cr - (p + i)));
			j = (size_t)((lf ? lf : cr) - p);
			if (j > i) {
				for (size_t k = i; k < j; k++)
					acc |= (unsigned char)p[k];
				if (acc & 0x80)
					d->has_8bit = true;
				count_line(d, j - i);
				emit(d, p + i, j - i);
				i = j;
				continue;
			}
			if (c == '\n') {
				d->bare_lf_or_cr = true;
				count_line(d, 1);
				emit(d, "\n", 1);
				i++;
				continue;
			}
			d->state = D_CR;
			i++;
			continue;
		}
		case D_CR:
			if (c == '\n') {
				emit(d, "\r\n", 2);
				d->state = D_LINE_START;
				i++;
				continue;
			}
			d->bare_lf_or_cr = true;
			count_line(d, 1);
			emit(d, "\r", 1);
			d->state = D_IN_LINE;
			continue;
		}
	}
	return i;
}
