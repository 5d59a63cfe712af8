/* Blocking probes for `mailbridge doctor`: an HTTP GET/HEAD that keeps the Date header, and an
 * SMTP session that stops after AUTH (libcurl's CURLOPT_CONNECT_ONLY runs SMTP's connect phase:
 * greeting, EHLO, STARTTLS, AUTH; cleaning the handle up sends QUIT). Nothing here logs a
 * header, a body or a token. */
#include "http.h"

#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct probe {
	const char *ca_file;
	struct http_probe_result *out;
	char reply[512]; /* the last SMTP reply line */
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
	size_t i = 5, j = 0;

	n *= size;
	if (n > 5 && strncasecmp(p, "date:", 5) == 0) {
		while (i < n && (p[i] == ' ' || p[i] == '\t'))
			i++;
		while (i < n && p[i] != '\r' && p[i] != '\n' && j + 1 < sizeof(v))
			v[j++] = p[i++];
		v[j] = '\0';
		{
			time_t t = curl_getdate(v, NULL);
			if (t > 0)
				pr->out->date_s = (int64_t)t;
		}
	}
	return n;
}

static CURLcode
probe_ssl_ctx(CURL *easy, void *ssl_ctx, void *arg)
{
	struct probe *pr = arg;
	X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
	FILE *f = fopen(pr->ca_file, "r");
	X509 *cert;
	int n = 0;

	(void)easy;
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

/* Keeps the server's last reply line; our own commands (AUTH carries the token) are never
 * looked at. */
static int
probe_debug(CURL *easy, curl_infotype type, char *data, size_t size, void *arg)
{
	struct probe *pr = arg;
	size_t n;

	(void)easy;
	if (type != CURLINFO_HEADER_IN)
		return 0;
	n = size < sizeof(pr->reply) - 1 ? size : sizeof(pr->reply) - 1;
	memcpy(pr->reply, data, n);
	while (n > 0 && (pr->reply[n - 1] == '\n' || pr->reply[n - 1] == '\r'))
		n--;
	pr->reply[n] = '\0';
	return 0;
}

static bool
is_tls_error(CURLcode rc)
{
	return rc == CURLE_SSL_CONNECT_ERROR || rc == CURLE_PEER_FAILED_VERIFICATION ||
	       rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CERTPROBLEM ||
	       rc == CURLE_USE_SSL_FAILED || rc == CURLE_SSL_ISSUER_ERROR;
}

static CURL *
probe_easy(const char *url, const char *ca_file, int64_t timeout_ms, struct probe *pr, char *errbuf)
{
	CURL *e = curl_easy_init();

	if (e == NULL)
		return NULL;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 10000));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 10000));
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "mailbridge/" MB_VERSION " (doctor)");
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
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
	char errbuf[CURL_ERROR_SIZE] = "";
	struct probe pr = {NULL, out, ""};
	int64_t t0 = mb_mono_ms();
	CURL *e;
	CURLcode rc;

	memset(out, 0, sizeof(*out));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	e = probe_easy(url, ca_file, timeout_ms, &pr, errbuf);
	if (e == NULL) {
		out->result = HTTP_TRANSPORT;
		snprintf(out->error, sizeof(out->error), "curl_easy_init failed");
		return;
	}
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
	if (method && strcmp(method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	rc = curl_easy_perform(e);
	out->elapsed_ms = mb_mono_ms() - t0;
	out->local_s = mb_now_ms() / 1000;
	if (rc == CURLE_OK) {
		out->result = HTTP_OK;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
	} else {
		probe_transport(e, rc, errbuf, out);
	}
	curl_easy_cleanup(e);
}

void
http_smtp_probe_sync(const char *url, bool tls_required, const char *username, const char *bearer,
                     const char *ca_file, int64_t timeout_ms, struct http_probe_result *out)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct probe pr = {NULL, out, ""};
	int64_t t0 = mb_mono_ms();
	long code = 0;
	const char *t;
	CURL *e;
	CURLcode rc;

	memset(out, 0, sizeof(*out));
	curl_global_init(CURL_GLOBAL_DEFAULT);
	e = probe_easy(url, ca_file, timeout_ms, &pr, errbuf);
	if (e == NULL) {
		out->result = HTTP_TRANSPORT;
		snprintf(out->error, sizeof(out->error), "curl_easy_init failed");
		return;
	}
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
	rc = curl_easy_perform(e);
	out->elapsed_ms = mb_mono_ms() - t0;
	out->local_s = mb_now_ms() / 1000;
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
		probe_transport(e, rc, errbuf, out);
	}
	curl_easy_cleanup(e); /* sends QUIT */
}
