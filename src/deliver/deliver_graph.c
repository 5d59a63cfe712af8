/*
 * Microsoft Graph beyond one sendMail: the error body, and the path for messages too big for
 * one request (4 MB). The message is split with GMime: a draft is created from the MIME
 * without its large attachments (POST /messages, base64 MIME), each attachment is added
 * (3 MB or more: an upload session with chunked PUTs; smaller: one POST), then the draft is
 * sent (POST /messages/{id}/send). A draft left behind by a failure is deleted.
 */
#include "deliver_internal.h"

#include <gmime/gmime.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "oauth/oauth.h"

#define RAW_MAX (3 * 1024 * 1024)
/* upload chunks: a multiple of 320 KiB, under 4 MB */
#define CHUNK (10 * 320 * 1024)

void
deliver_graph_error(const char *body, size_t len, char *code, size_t codelen, char *message,
                    size_t msglen)
{
	json_t *root = json_loadb(body, len, 0, NULL), *e, *c, *m, *inner;

	code[0] = message[0] = '\0';
	e = json_object_get(root, "error");
	c = json_object_get(e, "code");
	m = json_object_get(e, "message");
	if (json_is_string(c))
		snprintf(code, codelen, "%s", json_string_value(c));
	if (json_is_string(m))
		snprintf(message, msglen, "%s", json_string_value(m));
	/* a more specific code may hide in innererror / innerError */
	inner = json_object_get(e, "innerError");
	if (inner == NULL)
		inner = json_object_get(e, "innererror");
	c = json_object_get(inner, "code");
	if (json_is_string(c) && strncmp(json_string_value(c), "Error", 5) == 0)
		snprintf(code, codelen, "%s", json_string_value(c));
	json_decref(root);
}

struct piece {
	char *name;
	char *content_type;
	char *content_id;
	bool is_inline;
	GByteArray *bytes;
};

enum step { S_DRAFT, S_ATTACH, S_SESSION, S_PUT, S_SEND };

struct large {
	struct http_client *http;
	struct oauth_tm *tm;
	char *conn;
	char *base; /* {graph}/v1.0/me or /users/{sender} */
	char *ca_file;
	char *token; /* secret, for this job only */
	struct mb_buf draft_b64;
	struct piece *pieces;
	size_t npieces, cur;
	char *draft_id;
	char *upload_url;
	size_t offset;
	enum step step;
	char request_id[128];
	deliver_large_cb done;
	void *arg;
};

static void large_next(struct large *l);

static void
large_free(struct large *l)
{
	for (size_t i = 0; i < l->npieces; i++) {
		free(l->pieces[i].name);
		free(l->pieces[i].content_type);
		free(l->pieces[i].content_id);
		g_byte_array_unref(l->pieces[i].bytes);
	}
	free(l->pieces);
	free(l->conn);
	free(l->base);
	free(l->ca_file);
	mb_secret_free(l->token);
	mb_buf_wipe(&l->draft_b64);
	free(l->draft_id);
	free(l->upload_url);
	free(l);
}

static void
on_deleted(void *arg, const struct http_response *resp)
{
	/* best effort: a failed send should not leave a draft behind */
}

static void
large_end(struct large *l, const struct deliver_outcome *o)
{
	if (o->result != DELIVER_OK && l->draft_id && l->token) {
		struct mb_buf url = {0};
		struct http_request req = {.method = "DELETE", .timeout_ms = 30000};
		mb_buf_printf(&url, "%s/messages/%s", l->base, l->draft_id);
		req.url = url.data;
		req.ca_file = l->ca_file;
		req.bearer = l->token;
		http_request_start(l->http, &req, on_deleted, NULL);
		mb_buf_release(&url);
	}
	l->done(l->arg, o, l->request_id);
	large_free(l);
}

static void
fail_plain(struct large *l, const char *cause, const char *fix, const char *detail)
{
	struct deliver_outcome o;

	memset(&o, 0, sizeof(o));
	o.result = DELIVER_PERMFAIL;
	o.scope = DELIVER_SCOPE_MESSAGE;
	o.retry_after_s = -1;
	o.cause = cause;
	o.fix = fix;
	snprintf(o.detail, sizeof(o.detail), "%.290s", detail);
	large_end(l, &o);
}

static void
on_step(void *arg, const struct http_response *resp)
{
	struct large *l = arg;
	struct deliver_outcome o;
	char code[128] = "", message[256] = "";
	bool ok;

	if (resp->request_id && *resp->request_id)
		snprintf(l->request_id, sizeof(l->request_id), "%s", resp->request_id);
	ok = resp->result == HTTP_OK && resp->status >= 200 && resp->status < 300;
	if (!ok) {
		if (resp->result == HTTP_OK)
			deliver_graph_error(resp->body, resp->body_len, code, sizeof(code), message,
			                    sizeof(message));
		deliver_classify_graph(resp->result == HTTP_OK ? resp->status : 0,
		                       *code ? code : NULL, message, resp->retry_after_s,
		                       resp->result == HTTP_OK ? NULL : resp->error,
		                       resp->timed_out, &o);
		large_end(l, &o);
		return;
	}
	if (l->step == S_DRAFT || l->step == S_SESSION) {
		json_t *root = json_loadb(resp->body, resp->body_len, 0, NULL);
		const char *v = json_string_value(
		    json_object_get(root, l->step == S_DRAFT ? "id" : "uploadUrl"));
		if (v == NULL) {
			json_decref(root);
			fail_plain(l, "Microsoft Graph answered without the expected field",
			           "retry later; if it repeats, report it",
			           "draft or upload session");
			return;
		}
		if (l->step == S_DRAFT)
			l->draft_id = mb_strdup(v);
		else
			l->upload_url = mb_strdup(v);
		json_decref(root);
	}
	if (l->step == S_SEND) {
		memset(&o, 0, sizeof(o));
		deliver_classify_graph(resp->status, NULL, NULL, -1, NULL, false, &o);
		large_end(l, &o);
		return;
	}
	large_next(l);
}

static void
post_json(struct large *l, const char *url, json_t *body)
{
	static const char *const hdrs[] = {"Content-Type: application/json", NULL};
	char *text = json_dumps(body, JSON_COMPACT);
	struct http_request req = {
	    .method = "POST", .url = url, .headers = hdrs, .timeout_ms = 60000};

	req.body = text;
	req.body_len = strlen(text);
	req.ca_file = l->ca_file;
	req.bearer = l->token;
	http_request_start(l->http, &req, on_step, l);
	free(text);
}

static void
send_draft(struct large *l)
{
	struct mb_buf url = {0};
	struct http_request req = {.method = "POST", .timeout_ms = 60000};

	l->step = S_SEND;
	mb_buf_printf(&url, "%s/messages/%s/send", l->base, l->draft_id);
	req.url = url.data;
	req.body = "";
	req.body_len = 0;
	req.ca_file = l->ca_file;
	req.bearer = l->token;
	http_request_start(l->http, &req, on_step, l);
	mb_buf_release(&url);
}

/* The next chunk of an upload session, without Authorization (Graph's rule for upload
 * URLs: the URL carries its own token). */
static void
put_chunk(struct large *l)
{
	struct piece *p = &l->pieces[l->cur];
	size_t n = p->bytes->len - l->offset < CHUNK ? p->bytes->len - l->offset : CHUNK;
	char range[96], len[48];
	const char *hdrs[] = {"Content-Type: application/octet-stream", range, len, NULL};
	struct http_request req = {
	    .method = "PUT", .url = l->upload_url, .headers = hdrs, .timeout_ms = 120000};

	snprintf(range, sizeof(range), "Content-Range: bytes %zu-%zu/%u", l->offset,
	         l->offset + n - 1, p->bytes->len);
	snprintf(len, sizeof(len), "Content-Length: %zu", n);
	req.body = (const char *)p->bytes->data + l->offset;
	req.body_len = n;
	req.ca_file = l->ca_file;
	l->offset += n;
	l->step = S_PUT;
	http_request_start(l->http, &req, on_step, l);
}

/* Piece i: 3 MB or more through an upload session, smaller ones in one POST. */
static void
start_piece(struct large *l, size_t i)
{
	struct piece *p;
	struct mb_buf url = {0};
	json_t *o = json_object();

	l->cur = i;
	l->offset = 0;
	free(l->upload_url);
	l->upload_url = NULL;
	if (i >= l->npieces) {
		json_decref(o);
		send_draft(l);
		return;
	}
	p = &l->pieces[i];
	if (p->bytes->len >= RAW_MAX) {
		json_t *item = json_object();
		json_object_set_new(item, "attachmentType", json_string("file"));
		json_object_set_new(item, "name", json_string(p->name));
		json_object_set_new(item, "size", json_integer((json_int_t)p->bytes->len));
		if (p->content_type)
			json_object_set_new(item, "contentType", json_string(p->content_type));
		if (p->is_inline)
			json_object_set_new(item, "isInline", json_true());
		if (p->content_id)
			json_object_set_new(item, "contentId", json_string(p->content_id));
		json_object_set_new(o, "AttachmentItem", item);
		l->step = S_SESSION;
		mb_buf_printf(&url, "%s/messages/%s/attachments/createUploadSession", l->base,
		              l->draft_id);
	} else {
		char *b64 = mb_base64_encode(p->bytes->data, p->bytes->len);
		json_object_set_new(o, "@odata.type",
		                    json_string("#microsoft.graph.fileAttachment"));
		json_object_set_new(o, "name", json_string(p->name));
		json_object_set_new(o, "contentBytes", json_string(b64));
		if (p->content_type)
			json_object_set_new(o, "contentType", json_string(p->content_type));
		if (p->is_inline)
			json_object_set_new(o, "isInline", json_true());
		if (p->content_id)
			json_object_set_new(o, "contentId", json_string(p->content_id));
		free(b64);
		l->step = S_ATTACH;
		mb_buf_printf(&url, "%s/messages/%s/attachments", l->base, l->draft_id);
	}
	post_json(l, url.data, o);
	json_decref(o);
	mb_buf_release(&url);
}

static void
large_next(struct large *l)
{
	switch (l->step) {
	case S_DRAFT:
		start_piece(l, 0);
		break;
	case S_ATTACH:
		start_piece(l, l->cur + 1);
		break;
	case S_SESSION:
		put_chunk(l);
		break;
	case S_PUT:
		if (l->offset < l->pieces[l->cur].bytes->len)
			put_chunk(l);
		else
			start_piece(l, l->cur + 1);
		break;
	default:
		break;
	}
}

/* ---- splitting the MIME ---- */

static GByteArray *
part_bytes(GMimePart *part)
{
	GMimeDataWrapper *w = g_mime_part_get_content(part);
	GByteArray *a = g_byte_array_new();
	GMimeStream *s = g_mime_stream_mem_new_with_byte_array(a);

	g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(s), FALSE);
	if (w)
		g_mime_data_wrapper_write_to_stream(w, s); /* decodes the transfer encoding */
	g_object_unref(s);
	return a;
}

struct split {
	GMimeObject *parent[256];
	GMimeObject *part[256];
	size_t n;
};

static void
find_attachments(GMimeObject *parent, GMimeObject *part, gpointer arg)
{
	struct split *sp = arg;
	const char *disp;

	if (!GMIME_IS_PART(part) || sp->n >= 256)
		return;
	disp = g_mime_object_get_disposition(part);
	if ((disp && g_ascii_strcasecmp(disp, "attachment") == 0) ||
	    g_mime_part_get_filename(GMIME_PART(part)) != NULL) {
		sp->parent[sp->n] = parent;
		sp->part[sp->n] = part;
		sp->n++;
	}
}

static size_t
serialized_size(GMimeObject *msg)
{
	GMimeStream *null = g_mime_stream_null_new();
	size_t n;

	g_mime_object_write_to_stream(msg, NULL, null);
	n = GMIME_STREAM_NULL(null)->written;
	g_object_unref(null);
	return n;
}

/* Takes the biggest attachments out until the rest fits one request. */
static int
split(struct large *l, const char *raw, size_t len, struct mb_err *err)
{
	GMimeStream *in = g_mime_stream_mem_new_with_buffer(raw, len);
	GMimeParser *parser = g_mime_parser_new_with_stream(in);
	GMimeMessage *msg = g_mime_parser_construct_message(parser, NULL);
	struct split sp = {.n = 0};
	GByteArray *out;
	GMimeStream *os;
	char *b64;

	g_object_unref(parser);
	g_object_unref(in);
	if (msg == NULL) {
		mb_err_set(err, MB_EINVAL, "the message is not MIME that can be split");
		return -1;
	}
	g_mime_message_foreach(msg, find_attachments, &sp);
	while (serialized_size(GMIME_OBJECT(msg)) > RAW_MAX) {
		size_t best = SIZE_MAX;
		gint64 best_len = -1;
		for (size_t i = 0; i < sp.n; i++) {
			GMimeDataWrapper *w;
			GMimeStream *s;
			gint64 n;
			if (sp.part[i] == NULL)
				continue;
			w = g_mime_part_get_content(GMIME_PART(sp.part[i]));
			s = w ? g_mime_data_wrapper_get_stream(w) : NULL;
			n = s ? g_mime_stream_length(s) : 0;
			if (n > best_len) {
				best_len = n;
				best = i;
			}
		}
		if (best == SIZE_MAX || !GMIME_IS_MULTIPART(sp.parent[best])) {
			g_object_unref(msg);
			mb_err_set(err, MB_EINVAL,
			           "the message is over 3 MB without its attachments (a body that "
			           "large cannot go through Graph)");
			return -1;
		}
		{
			GMimePart *part = GMIME_PART(sp.part[best]);
			struct piece *p;
			const char *name = g_mime_part_get_filename(part);
			const char *cid = g_mime_part_get_content_id(part);
			const char *disp = g_mime_object_get_disposition(GMIME_OBJECT(part));
			GMimeContentType *ct = g_mime_object_get_content_type(GMIME_OBJECT(part));
			char *mime = ct ? g_mime_content_type_get_mime_type(ct) : NULL;

			l->pieces = mb_realloc(l->pieces, (l->npieces + 1) * sizeof(*l->pieces));
			p = &l->pieces[l->npieces++];
			memset(p, 0, sizeof(*p));
			p->name = mb_strdup(name ? name : "attachment");
			p->content_type = mime ? mb_strdup(mime) : NULL;
			p->content_id = cid ? mb_strdup(cid) : NULL;
			p->is_inline = disp && g_ascii_strcasecmp(disp, "inline") == 0;
			p->bytes = part_bytes(part);
			g_free(mime);
			g_object_ref(part);
			g_mime_multipart_remove(GMIME_MULTIPART(sp.parent[best]),
			                        GMIME_OBJECT(part));
			g_object_unref(part);
			sp.part[best] = NULL;
		}
	}
	out = g_byte_array_new();
	os = g_mime_stream_mem_new_with_byte_array(out);
	g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(os), FALSE);
	g_mime_object_write_to_stream(GMIME_OBJECT(msg), NULL, os);
	g_object_unref(os);
	g_object_unref(msg);
	b64 = mb_base64_encode(out->data, out->len);
	mb_buf_puts(&l->draft_b64, b64);
	free(b64);
	g_byte_array_unref(out);
	return 0;
}

static void
on_token(void *arg, int status, const char *token, const struct oauth_explain *ex)
{
	struct large *l = arg;
	static const char *const hdrs[] = {"Content-Type: text/plain", NULL};
	struct mb_buf url = {0};
	struct http_request req = {.method = "POST", .headers = hdrs, .timeout_ms = 120000};

	if (status < 0) {
		struct deliver_outcome o;
		memset(&o, 0, sizeof(o));
		o.result = DELIVER_TEMPFAIL;
		o.scope = DELIVER_SCOPE_CONNECTION;
		o.retry_after_s = ex->cls == OAUTH_CLASS_TRANSIENT ? -1 : 300;
		o.cause = ex->cause;
		o.fix = ex->fix;
		snprintf(o.detail, sizeof(o.detail), "token: AADSTS%ld", ex->aadsts);
		large_end(l, &o);
		return;
	}
	l->token = mb_strdup(token);
	l->step = S_DRAFT;
	mb_buf_printf(&url, "%s/messages", l->base);
	req.url = url.data;
	req.body = l->draft_b64.data;
	req.body_len = l->draft_b64.len;
	req.ca_file = l->ca_file;
	req.bearer = l->token;
	http_request_start(l->http, &req, on_step, l);
	mb_buf_release(&url);
}

void
deliver_graph_large(struct http_client *http, struct oauth_tm *tm, const struct oauth_conn *oc,
                    bool force_from, const struct store_msg *m, deliver_large_cb done, void *arg)
{
	struct large *l = mb_calloc(1, sizeof(*l));
	struct mb_buf raw = {0};
	struct mb_err err = {0};

	g_mime_init();
	l->http = http;
	l->tm = tm;
	l->conn = mb_strdup(oc->name);
	l->ca_file = oc->ca_file ? mb_strdup(oc->ca_file) : NULL;
	l->base = oc->auth == OAUTH_AUTH_APP_ONLY
	              ? mb_asprintf("%s/v1.0/users/%s", oc->ep.graph, oc->sender)
	              : mb_asprintf("%s/v1.0/me", oc->ep.graph);
	l->done = done;
	l->arg = arg;
	deliver_prepare(m, true, force_from, oc->sender, &raw);
	if (split(l, raw.data, raw.len, &err) < 0) {
		mb_buf_wipe(&raw);
		fail_plain(l, "the message cannot be split into a draft and attachments",
		           "send it with large_messages = smtp, or make it smaller", err.msg);
		return;
	}
	mb_buf_wipe(&raw);
	oauth_tm_get(tm, oc->name, OAUTH_RES_GRAPH, false, on_token, l);
}
