/* libcurl's multi socket interface on the loop, after curl's multi-event example. */
#include "http_internal.h"

#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RESPONSE_MAX (16 * 1024 * 1024)

struct xfer {
	uint64_t id;
	CURL *easy;
	struct curl_slist *hdrs;
	struct mb_buf req_body; /* a copy, wiped at the end: it may hold a secret */
	struct mb_buf resp_body;
	char *ca_file;
	http_done_cb cb;
	void *arg;
	char errbuf[CURL_ERROR_SIZE];
	char request_id[128];
	char content_type[128];
	int64_t retry_after;
	int64_t started_ms;
	bool too_big;
	/* SMTP transfers */
	bool smtp;
	http_smtp_done_cb smtp_cb;
	struct curl_slist *rcpts;
	struct mb_buf upload; /* the message, wiped at the end */
	size_t upload_off;
	char reply[512]; /* the last reply line the server sent */
	char partial[512];
	char stage[16];
	struct xfer *next;
};

struct http_client {
	struct ev_loop *loop;
	CURLM *multi;
	struct ev_timer *timer;
	struct ev_timer *reaper; /* runs callbacks of cancelled transfers */
	struct xfer *active;
	struct xfer *cancelled;
	uint64_t next_id;
	size_t inflight;
};

static void
global_init(void)
{
	static bool done;

	if (!done) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		done = true;
	}
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;

	if (x->resp_body.len + n > RESPONSE_MAX) {
		x->too_big = true;
		return 0; /* aborts the transfer */
	}
	mb_buf_append(&x->resp_body, p, n * size);
	return n * size;
}

void
http_header_value(const char *p, size_t n, size_t namelen, char *out, size_t outlen)
{
	size_t i = namelen, j = 0;

	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	while (i < n && p[i] != '\r' && p[i] != '\n' && j + 1 < outlen)
		out[j++] = p[i++];
	out[j] = '\0';
}

static size_t
on_header(char *p, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	char v[128];

	n *= size;
	if (n > 11 && strncasecmp(p, "request-id:", 11) == 0) {
		http_header_value(p, n, 11, x->request_id, sizeof(x->request_id));
	} else if (n > 13 && strncasecmp(p, "content-type:", 13) == 0) {
		http_header_value(p, n, 13, x->content_type, sizeof(x->content_type));
	} else if (n > 12 && strncasecmp(p, "retry-after:", 12) == 0) {
		int64_t s;
		http_header_value(p, n, 12, v, sizeof(v));
		if (mb_parse_int(v, &s) == 0 && s >= 0) {
			x->retry_after = s;
		} else {
			time_t t = curl_getdate(v, NULL);
			if (t > 0)
				x->retry_after = (int64_t)t - mb_now_ms() / 1000 > 0
				                     ? (int64_t)t - mb_now_ms() / 1000
				                     : 0;
		}
	}
	return n;
}

CURLcode
http_ssl_ctx_add_ca(void *ssl_ctx, const char *ca_file)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
	FILE *f = fopen(ca_file, "r");
	X509 *cert;
	int n = 0;

	if (f == NULL)
		return CURLE_SSL_CACERT_BADFILE;
	while ((cert = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
		X509_STORE_add_cert(store, cert);
		X509_free(cert);
		n++;
	}
	fclose(f);
	return n > 0 ? CURLE_OK : CURLE_SSL_CACERT_BADFILE;
}

static CURLcode
on_ssl_ctx(CURL *easy, void *ssl_ctx, void *arg)
{
	struct xfer *x = arg;

	(void)easy;
	return http_ssl_ctx_add_ca(ssl_ctx, x->ca_file);
}

static struct xfer *
xfer_new(const struct http_request *req)
{
	struct xfer *x = mb_calloc(1, sizeof(*x));
	CURL *e = curl_easy_init();

	global_init();
	x->easy = e;
	x->retry_after = -1;
	x->started_ms = mb_mono_ms();
	for (const char *const *h = req->headers; h && *h; h++)
		x->hdrs = curl_slist_append(x->hdrs, *h);
	if (req->bearer) {
		struct mb_buf b = {0};
		mb_buf_printf(&b, "Authorization: Bearer %s", req->bearer);
		x->hdrs = curl_slist_append(x->hdrs, b.data);
		mb_buf_wipe(&b);
	}
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	if (req->body) {
		mb_buf_append(&x->req_body, req->body, req->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req_body.data);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
	} else if (strcmp(req->method, "GET") == 0) {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
	                 (long)(req->timeout_ms > 0 ? req->timeout_ms : 30000));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "mailbridge/" MB_VERSION);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	if (req->ca_file && *req->ca_file) {
		x->ca_file = mb_strdup(req->ca_file);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, x);
	}
	return x;
}

static void
xfer_free(struct xfer *x)
{
	curl_easy_cleanup(x->easy);
	for (struct curl_slist *h = x->hdrs; h; h = h->next)
		mb_secret_wipe(h->data, strlen(h->data));
	curl_slist_free_all(x->hdrs);
	curl_slist_free_all(x->rcpts);
	mb_buf_wipe(&x->upload);
	mb_buf_wipe(&x->req_body);
	mb_buf_wipe(&x->resp_body);
	free(x->ca_file);
	free(x);
}

static void
response_fill(struct xfer *x, CURLcode rc, struct http_response *r)
{
	memset(r, 0, sizeof(*r));
	r->elapsed_ms = mb_mono_ms() - x->started_ms;
	r->retry_after_s = x->retry_after;
	r->request_id = x->request_id;
	r->content_type = x->content_type;
	r->body = x->resp_body.data ? x->resp_body.data : "";
	r->body_len = x->resp_body.len;
	if (rc == CURLE_OK) {
		r->result = HTTP_OK;
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r->status);
		return;
	}
	r->result = HTTP_TRANSPORT;
	r->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
	if (x->too_big)
		snprintf(x->errbuf, sizeof(x->errbuf), "response larger than %d bytes",
		         RESPONSE_MAX);
	else if (x->errbuf[0] == '\0')
		snprintf(x->errbuf, sizeof(x->errbuf), "%s", curl_easy_strerror(rc));
	r->error = x->errbuf;
}

static void
smtp_finish(struct xfer *x, CURLcode rc)
{
	struct http_smtp_response r;
	long code = 0;
	const char *t;
	static char enhanced[16];

	memset(&r, 0, sizeof(r));
	r.elapsed_ms = mb_mono_ms() - x->started_ms;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	r.code = (int)code;
	/* "535 5.7.139 Authentication unsuccessful, ..." -> code, enhanced, text */
	t = x->reply;
	if (strlen(t) >= 3 && t[0] >= '2' && t[0] <= '5') {
		if (r.code == 0)
			r.code = atoi(t);
		t += 3;
		while (*t == ' ' || *t == '-')
			t++;
	}
	enhanced[0] = '\0';
	if (t[0] >= '2' && t[0] <= '5' && t[1] == '.') {
		size_t n = strspn(t, "0123456789.");
		if (n < sizeof(enhanced)) {
			memcpy(enhanced, t, n);
			enhanced[n] = '\0';
			t += n;
			while (*t == ' ')
				t++;
		}
	}
	r.enhanced = enhanced;
	r.text = t;
	r.stage = x->stage[0] ? x->stage : "connect";
	if (rc == CURLE_OK) {
		r.result = HTTP_OK;
		r.stage = "end";
	} else if (r.code >= 400 && rc != CURLE_OPERATION_TIMEDOUT) {
		r.result = HTTP_OK; /* the server refused: the reply says why */
	} else {
		r.result = HTTP_TRANSPORT;
		r.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
		if (x->errbuf[0] == '\0')
			snprintf(x->errbuf, sizeof(x->errbuf), "%s", curl_easy_strerror(rc));
		r.error = x->errbuf;
	}
	x->smtp_cb(x->arg, &r);
}

static void
unlink_active(struct http_client *c, struct xfer *x)
{
	for (struct xfer **p = &c->active; *p; p = &(*p)->next) {
		if (*p == x) {
			*p = x->next;
			c->inflight--;
			return;
		}
	}
}

static void
check_done(struct http_client *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		struct xfer *x = NULL;
		struct http_response r;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		curl_multi_remove_handle(c->multi, x->easy);
		unlink_active(c, x);
		if (x->smtp) {
			smtp_finish(x, msg->data.result);
		} else {
			response_fill(x, msg->data.result, &r);
			x->cb(x->arg, &r);
		}
		xfer_free(x);
	}
}

static void
on_io(void *arg, int fd, int events)
{
	struct http_client *c = arg;
	int running, flags = 0;

	if (events & EV_IO_READ)
		flags |= CURL_CSELECT_IN;
	if (events & EV_IO_WRITE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(c->multi, fd, flags, &running);
	check_done(c);
}

static void
on_timer(void *arg)
{
	struct http_client *c = arg;
	int running;

	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(c);
}

static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct http_client *c = userp;
	struct ev_io *io = socketp;

	if (what == CURL_POLL_REMOVE) {
		ev_io_free(io);
		curl_multi_assign(c->multi, s, NULL);
		return 0;
	}
	if (io == NULL) {
		io = ev_io_new(c->loop, (int)s, on_io, c);
		curl_multi_assign(c->multi, s, io);
	}
	ev_io_set(io, (what & CURL_POLL_IN ? EV_IO_READ : 0) |
	                  (what & CURL_POLL_OUT ? EV_IO_WRITE : 0));
	return 0;
}

static int
on_multi_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct http_client *c = userp;

	if (timeout_ms < 0)
		ev_timer_stop(c->timer);
	else
		ev_timer_start(c->timer, timeout_ms);
	return 0;
}

static void
reap_cancelled(void *arg)
{
	struct http_client *c = arg;
	struct xfer *list = c->cancelled, *next;

	c->cancelled = NULL;
	for (struct xfer *x = list; x; x = next) {
		struct http_response r;
		next = x->next;
		memset(&r, 0, sizeof(r));
		r.result = HTTP_CANCELLED;
		r.error = "cancelled";
		r.body = "";
		r.request_id = "";
		r.content_type = "";
		r.retry_after_s = -1;
		if (x->smtp) {
			struct http_smtp_response sr;
			memset(&sr, 0, sizeof(sr));
			sr.result = HTTP_CANCELLED;
			sr.error = "cancelled";
			sr.enhanced = sr.text = "";
			sr.stage = "connect";
			x->smtp_cb(x->arg, &sr);
		} else {
			x->cb(x->arg, &r);
		}
		xfer_free(x);
	}
}

struct http_client *
http_client_new(struct ev_loop *loop)
{
	struct http_client *c = mb_calloc(1, sizeof(*c));

	global_init();
	c->loop = loop;
	c->next_id = 1;
	c->multi = curl_multi_init();
	c->timer = ev_timer_new(loop, on_timer, c);
	c->reaper = ev_timer_new(loop, reap_cancelled, c);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_multi_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	return c;
}

void
http_client_free(struct http_client *c)
{
	if (c == NULL)
		return;
	while (c->active)
		http_request_cancel(c, c->active->id);
	reap_cancelled(c);
	curl_multi_cleanup(c->multi);
	ev_timer_free(c->timer);
	ev_timer_free(c->reaper);
	free(c);
}

void
http_reply_line_keep(const char *data, size_t size, char *out, size_t outlen)
{
	size_t n = size < outlen - 1 ? size : outlen - 1;

	memcpy(out, data, n);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		n--;
	out[n] = '\0';
}

/* The server's replies arrive as HEADER_IN; our commands as HEADER_OUT, of which only the
 * verb is looked at (AUTH lines carry the token). */
static int
on_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *arg)
{
	struct xfer *x = arg;
	static const struct {
		const char *verb, *stage;
	} stages[] = {{"EHLO", "connect"}, {"HELO", "connect"}, {"STARTTLS", "starttls"},
	              {"AUTH", "auth"},    {"MAIL", "mail"},    {"RCPT", "rcpt"},
	              {"DATA", "data"},    {"QUIT", "end"}};

	if (type == CURLINFO_HEADER_OUT) {
		for (size_t i = 0; i < sizeof(stages) / sizeof(stages[0]); i++) {
			size_t n = strlen(stages[i].verb);
			if (size >= n && strncasecmp(data, stages[i].verb, n) == 0) {
				snprintf(x->stage, sizeof(x->stage), "%s", stages[i].stage);
				break;
			}
		}
		return 0;
	}
	if (type != CURLINFO_HEADER_IN)
		return 0;
	/* one reply line per call; keep the last one */
	http_reply_line_keep(data, size, x->reply, sizeof(x->reply));
	return 0;
}

static size_t
on_upload(char *buf, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t left = x->upload.len - x->upload_off, take = size * n < left ? size * n : left;

	memcpy(buf, x->upload.data + x->upload_off, take);
	x->upload_off += take;
	return take;
}

uint64_t
http_smtp_start(struct http_client *c, const struct http_smtp_request *req, http_smtp_done_cb cb,
                void *arg)
{
	struct http_request base = {.method = "POST",
	                            .url = req->url,
	                            .ca_file = req->ca_file,
	                            .timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : 120000};
	struct xfer *x = xfer_new(&base);
	CURL *e = x->easy;

	x->smtp = true;
	x->smtp_cb = cb;
	x->arg = arg;
	/* xfer_new prepared an HTTP request; make it an SMTP upload */
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_NONE);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(e, CURLOPT_USE_SSL,
	                 (long)(req->tls_required ? CURLUSESSL_ALL : CURLUSESSL_NONE));
	if (req->username)
		curl_easy_setopt(e, CURLOPT_USERNAME, req->username);
	if (req->bearer) {
		curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, req->bearer);
		curl_easy_setopt(e, CURLOPT_LOGIN_OPTIONS, "AUTH=XOAUTH2");
	} else if (req->password) {
		curl_easy_setopt(e, CURLOPT_PASSWORD, req->password);
	}
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, req->mail_from);
	for (size_t i = 0; i < req->nrcpts; i++)
		x->rcpts = curl_slist_append(x->rcpts, req->rcpts[i]);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, x->rcpts);
	mb_buf_append(&x->upload, req->data, req->len);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)req->len);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, on_upload);
	curl_easy_setopt(e, CURLOPT_READDATA, x);
	curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
	curl_easy_setopt(e, CURLOPT_DEBUGDATA, x);
	x->id = c->next_id++;
	x->next = c->active;
	c->active = x;
	c->inflight++;
	curl_multi_add_handle(c->multi, x->easy);
	return x->id;
}

uint64_t
http_request_start(struct http_client *c, const struct http_request *req, http_done_cb cb,
                   void *arg)
{
	struct xfer *x = xfer_new(req);

	x->id = c->next_id++;
	x->cb = cb;
	x->arg = arg;
	x->next = c->active;
	c->active = x;
	c->inflight++;
	curl_multi_add_handle(c->multi, x->easy);
	return x->id;
}

void
http_request_cancel(struct http_client *c, uint64_t id)
{
	for (struct xfer *x = c->active; x; x = x->next) {
		if (x->id != id)
			continue;
		curl_multi_remove_handle(c->multi, x->easy);
		unlink_active(c, x);
		x->next = c->cancelled;
		c->cancelled = x;
		ev_timer_start(c->reaper, 0);
		return;
	}
}

size_t
http_client_inflight(const struct http_client *c)
{
	return c->inflight;
}

int
http_request_sync(const struct http_request *req, struct http_response *resp, struct mb_err *err)
{
	struct xfer *x = xfer_new(req);
	CURLcode rc = curl_easy_perform(x->easy);

	response_fill(x, rc, resp);
	/* the response points into x; keep x alive until release */
	resp->error = resp->error ? mb_strdup(resp->error) : NULL;
	resp->body = mb_strndup(resp->body, resp->body_len);
	resp->request_id = mb_strdup(x->request_id);
	resp->content_type = mb_strdup(x->content_type);
	xfer_free(x);
	if (rc != CURLE_OK) {
		mb_err_set(err, resp->timed_out ? MB_ETEMP : MB_EIO, "%s", resp->error);
		return -1;
	}
	return 0;
}

void
http_response_release(struct http_response *resp)
{
	if (resp->body) {
		mb_secret_wipe((void *)resp->body, resp->body_len);
		free((void *)resp->body);
	}
	free((void *)resp->error);
	free((void *)resp->request_id);
	free((void *)resp->content_type);
	memset(resp, 0, sizeof(*resp));
}

void
http_url_encode(struct mb_buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			mb_buf_append(b, p, 1);
		} else {
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			mb_buf_append(b, e, 3);
		}
	}
}

void
http_form_add(struct mb_buf *b, const char *name, const char *value)
{
	if (b->len > 0)
		mb_buf_append(b, "&", 1);
	http_url_encode(b, name);
	mb_buf_append(b, "=", 1);
	http_url_encode(b, value);
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

char *
http_url_decode(const char *s, size_t n, bool plus)
{
	char *out = mb_malloc(n + 1), *o = out;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
			int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				free(out);
				return NULL;
			}
			*o++ = (char)(hi * 16 + lo);
			i += 2;
		} else {
			*o++ = plus && s[i] == '+' ? ' ' : s[i];
		}
	}
	*o = '\0';
	return out;
}

char *
http_query_get(const char *query, const char *name)
{
	size_t nlen = strlen(name);
	const char *p = query;

	while (p && *p) {
		const char *amp = strchr(p, '&');
		size_t len = amp ? (size_t)(amp - p) : strlen(p);

		if (len > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=')
			return http_url_decode(p + nlen + 1, len - nlen - 1, true);
		p = amp ? amp + 1 : NULL;
	}
	return NULL;
}
