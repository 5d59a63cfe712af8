/* Blocking probes for `mailbridge doctor`: an HTTP GET/HEAD that keeps the Date header, and an
 * SMTP session that stops after AUTH (libcurl's CURLOPT_CONNECT_ONLY runs SMTP's connect phase:
 * greeting, EHLO, STARTTLS, AUTH; cleaning the handle up sends QUIT). Nothing here logs a
 * header, a body or a token. */
#include "http_internal.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct probe {
	const char *ca_file;
	struct http_probe_result *out;
	char reply[512]; /* the last SMTP reply line */
	char errbuf[CURL_ERROR_SIZE];
	int64_t t0; /* mb_mono_ms() at the start */
};

static size_t
probe_discard(char *p, size_t size, size_t n, void *arg)
{
	(void)p;
	(void)arg;
	return size * n;
}

static size_t
probe_header(char *p, size_t size, size_t n, void *arg)
{
	struct probe *pr = arg;
	char v[128];

	n *= size;
	if (n > 5 && strncasecmp(p, "date:", 5) == 0) {
		time_t t;

		http_header_value(p, n, 5, v, sizeof(v));
		t = curl_getdate(v, NULL);
		if (t > 0)
			pr->out->date_s = (int64_t)t;
	}
	return n;
}

static CURLcode
probe_ssl_ctx(CURL *easy, void *ssl_ctx, void *arg)
{
	struct probe *pr = arg;

	(void)easy;
	return http_ssl_ctx_add_ca(ssl_ctx, pr->ca_file);
}

/* Keeps the server's last reply line; our own commands (AUTH carries the token) are never
 * looked at. */
static int
probe_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *arg)
{
	struct probe *pr = arg;

	(void)easy;
	if (type == CURLINFO_HEADER_IN)
		http_reply_line_keep(data, size, pr->reply, sizeof(pr->reply));
	return 0;
}

static bool
is_tls_error(CURLcode rc)
{
	return rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
	       rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM ||
	       rc == CURLE_USE_SSL_FAILED || rc == CURLE_SSL_ISSUER_ERROR;
}

/* Starts the clock, clears pr->out and makes the handle both probes start from; NULL (with
 * pr->out saying why) if curl cannot. */
static CURL *
probe_easy(const char *url, const char *ca_file, int64_t timeout_ms, struct probe *pr)
{
	CURL *e;

	pr->t0 = mb_mono_ms();
	memset(pr->out, 0, sizeof(*pr->out));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	e = curl_easy_init();
	if (e == NULL) {
		pr->out->result = HTTP_TRANSPORT;
		snprintf(pr->out->error, sizeof(pr->out->error), "curl_easy_init failed");
		return NULL;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 10000));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 10000));
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "mailbridge/" MB_VERSION " (doctor)");
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, pr->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, probe_discard);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, probe_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, pr);
	if (ca_file && *ca_file) {
		pr->ca_file = ca_file;
		curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, probe_ssl_ctx);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, pr);
	}
	return e;
}

/* Runs the transfer; notes how long it took since probe_easy() and the local clock when it
 * ended. */
static CURLcode
probe_perform(CURL *e, struct probe *pr)
{
	CURLcode rc = curl_easy_perform(e);

	pr->out->elapsed_ms = mb_mono_ms() - pr->t0;
	pr->out->local_s = mb_now_ms() / 1000;
	return rc;
}

static void
probe_transport(CURL *e, CURLcode rc, const char *errbuf, struct http_probe_result *out)
{
	(void)e;
	out->result = HTTP_TRANSPORT;
	out->curl_code = (int)rc;
	out->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
	out->tls_error = is_tls_error(rc);
	snprintf(out->error, sizeof(out->error), "cURL error %d: %s", (int)rc,
	         errbuf[0] ? errbuf : curl_easy_strerror(rc));
}

void
http_probe_sync(const char *method, const char *url, const char *ca_file, int64_t timeout_ms,
                struct http_probe_result *out)
{
	struct probe pr = {.out = out};
	CURL *e;
	CURLcode rc;

	e = probe_easy(url, ca_file, timeout_ms, &pr);
	if (e == NULL)
		return;
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	if (method && strcmp(method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	rc = probe_perform(e, &pr);
	if (rc == CURLE_OK) {
		out->result = HTTP_OK;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
	} else {
		probe_transport(e, rc, pr.errbuf, out);
	}
	curl_easy_cleanup(e);
}

void
http_smtp_probe_sync(const char *url, bool tls_required, const char *username, const char *bearer,
                     const char *ca_file, int64_t timeout_ms, struct http_probe_result *out)
{
	struct probe pr = {.out = out};
	long code = 0;
	const char *t;
	CURL *e;
	CURLcode rc;

	e = probe_easy(url, ca_file, timeout_ms, &pr);
	if (e == NULL)
		return;
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	curl_easy_setopt(e, CURLOPT_USE_SSL,
	                 (long)(tls_required ? CURLUSESSL_ALL : CURLUSESSL_TRY));
	curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
	if (bearer) {
		curl_easy_setopt(e, CURLOPT_USERNAME, username ? username : "");
		curl_easy_setopt(e, CURLOPT_XOAUTH2_BEARER, bearer);
		curl_easy_setopt(e, CURLOPT_LOGIN_OPTIONS, "AUTH=XOAUTH2");
	}
	curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, probe_debug);
	curl_easy_setopt(e, CURLOPT_DEBUGDATA, &pr);
	rc = probe_perform(e, &pr);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	/* "535 5.7.139 Authentication unsuccessful, ..." -> code, enhanced, text */
	t = pr.reply;
	if (strlen(t) >= 3 && t[0] >= '2' && t[0] <= '5') {
		if (code == 0)
			code = atoi(t);
		t += 3;
		while (*t == ' ' || *t == '-')
			t++;
	}
	if (t[0] >= '2' && t[0] <= '5' && t[1] == '.') {
		size_t n = strspn(t, "0123456789.");
		if (n < sizeof(out->enhanced)) {
			memcpy(out->enhanced, t, n);
			out->enhanced[n] = '\0';
			t += n;
			while (*t == ' ')
				t++;
		}
	}
	snprintf(out->text, sizeof(out->text), "%.*s", (int)(sizeof(out->text) - 1), t);
	out->status = code;
	if (rc == CURLE_OK) {
		out->result = HTTP_OK;
	} else if (code >= 400 && rc != CURLE_OPERATION_TIMEDOUT) {
		out->result = HTTP_OK; /* the server refused: the reply says why */
		out->curl_code = (int)rc;
	} else {
		probe_transport(e, rc, pr.errbuf, out);
	}
	curl_easy_cleanup(e); /* sends QUIT */
}
