/* A stored message for people: its headers and a plain-text preview (admin_msg.h). Nothing
 * here returns HTML to render: the preview is text, whatever the message held. */
#include "admin_msg.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deliver/deliver.h"
#include "util/util.h"

#define MAX_HEADERS      200
#define MAX_HEADER_VALUE 4000

static void
gmime_ready(void)
{
	static bool done;

	if (!done) {
		g_mime_init(); /* counted: deliver_*.c may have called it already */
		done = true;
	}
}

/* ---- text hygiene ---- */

/* n bytes of s as valid UTF-8 (bad bytes become U+FFFD) without control characters: newline
 * and tab are kept when keep_lines, else become spaces; the others are dropped. */
static char *
clean_text(const char *s, size_t n, bool keep_lines)
{
	char *valid = g_utf8_make_valid(s, (gssize)n), *o = valid;

	for (const char *p = valid; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '\n' || c == '\t')
			*o++ = keep_lines ? (char)c : ' ';
		else if (c >= 0x20 && c != 0x7f)
			*o++ = (char)c;
		else if (c == '\r' && !keep_lines)
			*o++ = ' ';
	}
	*o = '\0';
	{
		char *out = mb_strdup(valid);
		g_free(valid);
		return out;
	}
}

/* Cuts s to at most max bytes on a character boundary; true when it cut. */
static bool
cut_utf8(char *s, size_t max)
{
	size_t n = strlen(s);

	if (n <= max)
		return false;
	n = max;
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	s[n] = '\0';
	return true;
}

json_t *
admin_json_text(const char *s, bool header)
{
	char *decoded, *clean;
	const char *in;
	json_t *j;

	gmime_ready();
	decoded = header ? g_mime_utils_header_decode_text(NULL, s) : NULL;
	in = decoded ? decoded : s;
	clean = clean_text(in, strlen(in), false);
	j = json_string(clean);
	g_free(decoded);
	free(clean);
	return j ? j : json_null();
}

/* ---- headers ---- */

static void
add_header(void *arg, const char *name, size_t nlen, const char *unfolded, size_t start, size_t end)
{
	json_t *arr = arg, *h;
	char *n, *value, *decoded, *capped;

	if (nlen == 0 || json_array_size(arr) >= MAX_HEADERS)
		return;
	gmime_ready();
	capped = mb_strndup(unfolded, MAX_HEADER_VALUE);
	decoded = g_mime_utils_header_decode_text(NULL, mb_str_trim(capped));
	value = clean_text(decoded ? decoded : "", decoded ? strlen(decoded) : 0, false);
	g_free(decoded);
	free(capped);
	n = clean_text(name, nlen, false);
	h = json_object();
	json_object_set_new(h, "name", json_string(mb_str_trim(n)));
	json_object_set_new(h, "value", json_string(mb_str_trim(value)));
	json_array_append_new(arr, h);
	free(n);
	free(value);
}

static json_t *
headers_json(const char *p, size_t len)
{
	json_t *arr = json_array();

	deliver_each_header(p, len, add_header, arr);
	return arr;
}

/* ---- HTML to text ---- */

static void
put_utf8(struct mb_buf *b, unsigned long cp)
{
	char u[4];

	if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		cp = 0xfffd;
	if (cp < 0x80) {
		u[0] = (char)cp;
		mb_buf_append(b, u, 1);
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		mb_buf_append(b, u, 2);
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		mb_buf_append(b, u, 3);
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		mb_buf_append(b, u, 4);
	}
}

/* The entity at s ('&'): appends its text and returns its length, or 0 if it is none. */
static size_t
entity(const char *s, struct mb_buf *out)
{
	static const struct {
		const char *name;
		unsigned long cp;
	} names[] = {{"amp", '&'},       {"lt", '<'},       {"gt", '>'},      {"quot", '"'},
	             {"apos", '\''},     {"nbsp", ' '},     {"copy", 0xa9},   {"reg", 0xae},
	             {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013}};
	const char *semi = strchr(s, ';');
	size_t n = semi ? (size_t)(semi - s) : 0;

	if (n < 2 || n > 10)
		return 0;
	if (s[1] == '#') {
		char *end;
		unsigned long cp = (s[2] == 'x' || s[2] == 'X') ? strtoul(s + 3, &end, 16)
		                                                : strtoul(s + 2, &end, 10);
		if (end != semi)
			return 0;
		put_utf8(out, cp);
		return n + 1;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strlen(names[i].name) == n - 1 && strncmp(s + 1, names[i].name, n - 1) == 0) {
			put_utf8(out, names[i].cp);
			return n + 1;
		}
	}
	return 0;
}

/* Whether the tag at s ('<') is name (or its end tag, when closing). */
static bool
tag_is(const char *s, const char *name, bool closing)
{
	size_t n = strlen(name);

	s++;
	if (closing && *s++ != '/')
		return false;
	return strncasecmp(s, name, n) == 0 && !isalnum((unsigned char)s[n]);
}

/* Past the end of what starts at s ('<'): a comment, an element whose content is skipped
 * whole, or one tag. */
static const char *
skip_markup(const char *s, bool *breaks)
{
	static const char *const skipped[] = {"script", "style", "head", "title", "template"};
	static const char *const blocks[] = {"br", "p",  "div", "tr", "li",    "h1",         "h2",
	                                     "h3", "h4", "h5",  "h6", "table", "blockquote", "hr"};
	const char *e;

	*breaks = false;
	if (strncmp(s, "<!--", 4) == 0) {
		e = strstr(s + 4, "-->");
		return e ? e + 3 : s + strlen(s);
	}
	for (size_t i = 0; i < sizeof(skipped) / sizeof(skipped[0]); i++) {
		if (tag_is(s, skipped[i], false)) {
			for (e = s + 1; *e; e++)
				if (*e == '<' && tag_is(e, skipped[i], true))
					break;
			s = e;
			break;
		}
	}
	for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++)
		if (tag_is(s, blocks[i], false) || tag_is(s, blocks[i], true))
			*breaks = true;
	e = strchr(s, '>');
	return e ? e + 1 : s + strlen(s);
}

/* Collapses runs of spaces to one and of blank lines to one, and trims each line (a space
 * is written only before a word on the same line). */
static char *
collapse(const char *s)
{
	struct mb_buf b = {0};
	int newlines = 0;
	bool space = false;

	for (; *s; s++) {
		if (*s == '\n') {
			space = false;
			if (newlines++ < 2 && b.len > 0)
				mb_buf_puts(&b, "\n");
		} else if (*s == ' ' || *s == '\t' || *s == '\r') {
			space = true;
		} else {
			if (space && newlines == 0 && b.len > 0)
				mb_buf_puts(&b, " ");
			space = false;
			newlines = 0;
			mb_buf_append(&b, s, 1);
		}
	}
	while (b.len > 0 && b.data[b.len - 1] == '\n')
		b.data[--b.len] = '\0';
	return b.data ? mb_buf_steal(&b) : mb_strdup("");
}

char *
admin_html_to_text(const char *html)
{
	struct mb_buf b = {0};
	char *out;

	for (const char *s = html; *s;) {
		if (*s == '<' && (isalpha((unsigned char)s[1]) || s[1] == '/' || s[1] == '!')) {
			bool br;
			s = skip_markup(s, &br);
			mb_buf_puts(&b, br ? "\n" : " ");
		} else if (*s == '&') {
			size_t n = entity(s, &b);
			if (n == 0)
				mb_buf_append(&b, s, 1);
			s += n ? n : 1;
		} else {
			/* line breaks in the source are spaces: only elements break lines */
			mb_buf_append(&b, *s == '\n' || *s == '\r' ? " " : s, 1);
			s++;
		}
	}
	out = collapse(b.data ? b.data : "");
	mb_buf_release(&b);
	return out;
}

/* ---- the MIME parts ---- */

struct parts {
	char *plain; /* UTF-8, from g_mime_text_part_get_text */
	char *html;
	bool has_html;
};

static void
each_part(GMimeObject *parent, GMimeObject *part, gpointer arg)
{
	struct parts *p = arg;
	GMimeContentType *ct;
	char *text;

	(void)parent;
	if (!GMIME_IS_TEXT_PART(part))
		return;
	ct = g_mime_object_get_content_type(part);
	if (ct == NULL)
		return;
	if (g_mime_content_type_is_type(ct, "text", "html"))
		p->has_html = true;
	if (g_mime_part_is_attachment(GMIME_PART(part)))
		return;
	if (g_mime_content_type_is_type(ct, "text", "plain") && p->plain == NULL) {
		text = g_mime_text_part_get_text(GMIME_TEXT_PART(part));
		p->plain = mb_strdup(text ? text : "");
		g_free(text);
	} else if (g_mime_content_type_is_type(ct, "text", "html") && p->html == NULL) {
		text = g_mime_text_part_get_text(GMIME_TEXT_PART(part));
		p->html = mb_strdup(text ? text : "");
		g_free(text);
	}
}

static void
parts_find(const char *body, size_t len, struct parts *p)
{
	GMimeStream *stream;
	GMimeParser *parser;
	GMimeMessage *msg;

	gmime_ready();
	stream = g_mime_stream_mem_new_with_buffer(body, len);
	parser = g_mime_parser_new_with_stream(stream);
	msg = g_mime_parser_construct_message(parser, NULL);
	g_object_unref(parser);
	g_object_unref(stream);
	if (msg == NULL)
		return;
	g_mime_message_foreach(msg, each_part, p);
	g_object_unref(msg);
}

void
admin_msg_view(const char *body, size_t len, json_t *o)
{
	struct parts p = {NULL, NULL, false};
	char *text = NULL, *clean;
	bool cut;

	json_object_set_new(o, "headers", headers_json(body ? body : "", body ? len : 0));
	if (body && len > 0)
		parts_find(body, len, &p);
	/* enough of the source for a preview: the rest would be cut anyway */
	if (p.plain) {
		text = mb_strndup(p.plain, strnlen(p.plain, 4 * ADMIN_PREVIEW_MAX));
	} else if (p.html) {
		p.html[strnlen(p.html, 64 * ADMIN_PREVIEW_MAX)] = '\0';
		text = admin_html_to_text(p.html);
	}
	clean = clean_text(text ? text : "", text ? strlen(text) : 0, true);
	cut = cut_utf8(clean, ADMIN_PREVIEW_MAX);
	json_object_set_new(o, "preview", json_string(clean));
	json_object_set_new(o, "preview_truncated", json_boolean(cut));
	json_object_set_new(o, "html", json_boolean(p.has_html));
	free(clean);
	free(text);
	free(p.plain);
	free(p.html);
}
