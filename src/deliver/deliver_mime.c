/*
 * What a message needs before it leaves: the From address for routing, the addresses its
 * headers name, Bcc: for envelope recipients no header names (Graph reads recipients from
 * the MIME, it has no envelope), and force_from. Header surgery works on the raw bytes; only
 * the header block is touched, and the body is copied as it is.
 */
#include "deliver_internal.h"

#include <gmime/gmime.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void
gmime_once(void)
{
	static bool done;

	if (!done) {
		g_mime_init();
		done = true;
	}
}

size_t
deliver_header_end(const char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		const char *nl = memchr(p + i, '\n', len - i);
		size_t line = nl ? (size_t)(nl - (p + i)) + 1 : len - i;
		if (line <= 2 && (p[i] == '\r' || p[i] == '\n'))
			return i;
		i += line;
	}
	return len;
}

void
deliver_each_header(const char *p, size_t len, deliver_header_cb fn, void *arg)
{
	size_t end = deliver_header_end(p, len), i = 0;

	while (i < end) {
		size_t start = i, colon;
		struct mb_buf v = {0};

		/* a field: its first line plus continuation lines (starting with WSP) */
		do {
			const char *nl = memchr(p + i, '\n', end - i);
			i = nl ? (size_t)(nl - p) + 1 : end;
		} while (i < end && (p[i] == ' ' || p[i] == '\t'));
		for (colon = start; colon < i && p[colon] != ':'; colon++)
			;
		if (colon >= i)
			continue;
		for (size_t k = colon + 1; k < i; k++)
			if (p[k] != '\r' && p[k] != '\n')
				mb_buf_append(&v, &p[k], 1);
		fn(arg, p + start, colon - start, v.data ? v.data : "", start, i);
		mb_buf_release(&v);
	}
}

static bool
name_is(const char *name, size_t nlen, const char *want)
{
	return strlen(want) == nlen && strncasecmp(name, want, nlen) == 0;
}

/* Appends every mailbox address of an address-list value, groups included. */
static void
collect_list(InternetAddressList *list, struct deliver_addrs *out)
{
	int n = list ? internet_address_list_length(list) : 0;

	for (int i = 0; i < n; i++) {
		InternetAddress *a = internet_address_list_get_address(list, i);
		if (INTERNET_ADDRESS_IS_GROUP(a)) {
			collect_list(internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a)),
			             out);
		} else if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
			const char *addr =
			    internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
			if (addr && *addr) {
				out->v = mb_realloc(out->v, (out->n + 1) * sizeof(char *));
				out->v[out->n++] = mb_strdup(addr);
			}
		}
	}
}

static void
parse_into(const char *value, struct deliver_addrs *out)
{
	InternetAddressList *list;

	gmime_once();
	list = internet_address_list_parse(NULL, value);
	collect_list(list, out);
	if (list)
		g_object_unref(list);
}

struct hdr_ctx {
	struct deliver_addrs *out;
	const char *const *names;
};

static void
collect_fields(void *arg, const char *name, size_t nlen, const char *value, size_t s, size_t e)
{
	struct hdr_ctx *ctx = arg;

	for (const char *const *w = ctx->names; *w; w++)
		if (name_is(name, nlen, *w))
			parse_into(value, ctx->out);
}

void
deliver_addrs_from_headers(const char *body, size_t len, struct deliver_addrs *out)
{
	static const char *const names[] = {"To", "Cc", "Bcc", NULL};
	struct hdr_ctx ctx = {out, names};

	deliver_each_header(body, len, collect_fields, &ctx);
}

void
deliver_addrs_release(struct deliver_addrs *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	a->v = NULL;
	a->n = 0;
}

char *
deliver_from_address(const char *from_value)
{
	struct deliver_addrs a = {0};
	char *r = NULL;

	if (from_value == NULL)
		return NULL;
	parse_into(from_value, &a);
	if (a.n > 0)
		r = mb_strdup(a.v[0]);
	deliver_addrs_release(&a);
	return r;
}

static bool
addrs_have(const struct deliver_addrs *a, const char *addr)
{
	for (size_t i = 0; i < a->n; i++)
		if (strcasecmp(a->v[i], addr) == 0)
			return true;
	return false;
}

struct rewrite_ctx {
	struct mb_buf *out;
	const char *body;
	bool force_from;
	const char *sender;
	char *from_value; /* the original From: value */
	bool has_reply_to;
};

static void
copy_fields(void *arg, const char *name, size_t nlen, const char *value, size_t s, size_t e)
{
	struct rewrite_ctx *ctx = arg;

	if (ctx->force_from && name_is(name, nlen, "From")) {
		if (ctx->from_value == NULL)
			ctx->from_value = mb_strdup(value);
		return; /* dropped: rewritten below */
	}
	if (name_is(name, nlen, "Reply-To"))
		ctx->has_reply_to = true;
	mb_buf_append(ctx->out, ctx->body + s, e - s);
}

/* "Display Name <sender>", keeping the original display name, encoded as needed. */
static void
forced_from(const char *original, const char *sender, struct mb_buf *out)
{
	InternetAddressList *list;
	const char *name = NULL;
	InternetAddress *a;
	char *text;

	gmime_once();
	list = original ? internet_address_list_parse(NULL, original) : NULL;
	if (list && internet_address_list_length(list) > 0)
		name = internet_address_get_name(internet_address_list_get_address(list, 0));
	a = internet_address_mailbox_new(name && *name ? name : NULL, sender);
	text = internet_address_to_string(a, NULL, TRUE);
	mb_buf_printf(out, "From: %s\r\n", text);
	g_free(text);
	g_object_unref(a);
	if (list)
		g_object_unref(list);
}

void
deliver_prepare(const struct store_msg *m, bool add_bcc, bool force_from, const char *sender,
                struct mb_buf *out)
{
	size_t end = deliver_header_end(m->body, m->body_len);
	struct deliver_addrs named = {0};
	struct rewrite_ctx ctx = {out, m->body, force_from, sender, NULL, false};
	struct mb_buf bcc = {0};

	mb_buf_reserve(out, m->body_len + 512);
	if (add_bcc) {
		deliver_addrs_from_headers(m->body, m->body_len, &named);
		for (size_t i = 0; i < m->nrcpts; i++) {
			if (addrs_have(&named, m->rcpts[i]))
				continue;
			mb_buf_puts(&bcc, bcc.len ? ", " : "Bcc: ");
			mb_buf_puts(&bcc, m->rcpts[i]);
		}
		if (bcc.len)
			mb_buf_puts(&bcc, "\r\n");
		deliver_addrs_release(&named);
	}
	if (!force_from || sender == NULL) {
		/* the common case: the original bytes, with Bcc: in front if needed */
		if (bcc.len)
			mb_buf_append(out, bcc.data, bcc.len);
		mb_buf_append(out, m->body, m->body_len);
		mb_buf_release(&bcc);
		return;
	}
	deliver_each_header(m->body, m->body_len, copy_fields, &ctx);
	forced_from(ctx.from_value, sender, out);
	if (!ctx.has_reply_to && ctx.from_value) {
		char *orig = deliver_from_address(ctx.from_value);
		if (orig && strcasecmp(orig, sender) != 0)
			mb_buf_printf(out, "Reply-To:%s\r\n", ctx.from_value);
		free(orig);
	}
	if (bcc.len)
		mb_buf_append(out, bcc.data, bcc.len);
	/* the empty line and the body, unchanged */
	mb_buf_append(out, m->body + end, m->body_len - end);
	free(ctx.from_value);
	mb_buf_release(&bcc);
}

struct readdress_ctx {
	struct mb_buf *out;
	const char *body;
};

static void
copy_but_recipients(void *arg, const char *name, size_t nlen, const char *value, size_t s, size_t e)
{
	struct readdress_ctx *ctx = arg;

	if (name_is(name, nlen, "To") || name_is(name, nlen, "Cc") || name_is(name, nlen, "Bcc"))
		return;
	mb_buf_append(ctx->out, ctx->body + s, e - s);
}

void
deliver_readdress(const char *body, size_t len, const char *const *rcpts, size_t n,
                  struct mb_buf *out)
{
	struct readdress_ctx ctx = {out, body};
	size_t end = deliver_header_end(body, len);
	char date[64];

	mb_rfc5322_date(mb_now_ms(), date, sizeof(date));
	mb_buf_printf(out, "Resent-Date: %s\r\n", date);
	mb_buf_puts(out, "Resent-To: ");
	for (size_t i = 0; i < n; i++)
		mb_buf_printf(out, "%s<%s>", i ? ", " : "", rcpts[i]);
	mb_buf_puts(out, "\r\n");
	deliver_each_header(body, len, copy_but_recipients, &ctx);
	mb_buf_puts(out, "To: ");
	for (size_t i = 0; i < n; i++)
		mb_buf_printf(out, "%s<%s>", i ? ", " : "", rcpts[i]);
	mb_buf_puts(out, "\r\n");
	mb_buf_append(out, body + end, len - end);
}
