/* The Email Test's message (deliver_test.h). */
#include "deliver_test.h"

#include <gmime/gmime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool
is_7bit_short(const char *s)
{
	size_t line = 0;

	for (; *s; s++) {
		if ((unsigned char)*s >= 0x80)
			return false;
		line = *s == '\n' ? 0 : line + 1;
		if (line > 900)
			return false;
	}
	return true;
}

/* Text with every line break (CR, LF, CRLF) made CRLF, ending in one. */
static void
crlf_text(const char *s, struct mb_buf *out)
{
	for (; *s; s++) {
		if (*s == '\r' || *s == '\n') {
			mb_buf_puts(out, "\r\n");
			if (s[0] == '\r' && s[1] == '\n')
				s++;
		} else {
			mb_buf_append(out, s, 1);
		}
	}
	if (out->len < 2 || memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
		mb_buf_puts(out, "\r\n");
}

/* The subject (one line) as a header value: RFC 2047-encoded when it is not ASCII. */
static char *
subject_field(const char *one)
{
	char *enc, *out;

	if (is_7bit_short(one))
		return mb_strdup(one);
	g_mime_init(); /* counted: later calls do nothing */
	enc = g_mime_utils_header_encode_text(NULL, one, "utf-8");
	out = mb_strdup(enc ? enc : "");
	g_free(enc);
	return out;
}

static void
default_body(const struct deliver_test_spec *s, const char *host, struct mb_buf *out)
{
	if (s->html)
		/* host and connection names are letters, digits, '-', '_' and '.': no escaping */
		mb_buf_printf(out,
		              "<html><body><p>This is a test message from mailbridge on %s, sent "
		              "through the connection %s.</p><p>If you can read it, mail from this "
		              "server reaches Microsoft 365.</p></body></html>\r\n",
		              host, s->connection ? s->connection : "(default)");
	else
		mb_buf_printf(out,
		              "This is a test message from mailbridge on %s, sent through the "
		              "connection %s.\r\nIf you can read it, mail from this server reaches "
		              "Microsoft 365.\r\n",
		              host, s->connection ? s->connection : "(default)");
}

/* base64 in lines of 76 characters */
static void
base64_lines(const struct mb_buf *text, struct mb_buf *out)
{
	char *b64 = mb_base64_encode(text->data ? text->data : "", text->len);
	size_t n = strlen(b64);

	for (size_t i = 0; i < n; i += 76) {
		mb_buf_append(out, b64 + i, n - i < 76 ? n - i : 76);
		mb_buf_puts(out, "\r\n");
	}
	free(b64);
}

struct store_msg *
deliver_test_message(const struct deliver_test_spec *s)
{
	struct store_msg *m = store_msg_new();
	struct mb_buf text = {0}, msg = {0};
	char date[64], host[128];
	char *subject;
	bool b64;

	if (gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	mb_id_new(m->id);
	m->received_ms = mb_now_ms();
	mb_rfc5322_date(m->received_ms, date, sizeof(date));
	m->sender = mb_strdup(s->from);
	m->subject = mb_strdup(s->subject ? s->subject : DELIVER_TEST_SUBJECT);
	for (char *p = m->subject; *p; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	subject = subject_field(m->subject);
	store_msg_add_rcpt(m, s->to);
	if (s->body)
		crlf_text(s->body, &text);
	else
		default_body(s, host, &text);
	b64 = !is_7bit_short(text.data ? text.data : "");
	mb_buf_printf(&msg,
	              "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\n"
	              "MIME-Version: 1.0\r\nContent-Type: text/%s; charset=utf-8\r\n"
	              "Content-Transfer-Encoding: %s\r\n\r\n",
	              s->from, s->to, subject, date, m->id, host, s->html ? "html" : "plain",
	              b64 ? "base64" : "7bit");
	if (b64)
		base64_lines(&text, &msg);
	else
		mb_buf_append(&msg, text.data, text.len);
	mb_buf_release(&text);
	free(subject);
	m->body_len = msg.len;
	m->body = mb_buf_steal(&msg);
	m->from_hdr = mb_asprintf("<%s>", m->sender);
	return m;
}
