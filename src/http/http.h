/*
 * http: the HTTPS client, libcurl's multi interface driven by the loop (only this module
 * includes curl/curl.h). One multi handle for the whole process, so connections are kept
 * alive and HTTP/2 is used where the server offers it.
 *
 * Async rule: a request started with http_request_start() belongs to the client until its
 * callback has run exactly once: with a response, with a transport error, or cancelled.
 * Requests are referred to by id, never by pointer.
 *
 * Secrets: bodies and headers given to a request are copied into buffers that are wiped when
 * the request ends. Nothing here logs a header or a body.
 */
#ifndef MB_HTTP_H
#define MB_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ev/ev.h"
#include "util/util.h"

enum http_result {
	HTTP_OK,        /* a response arrived (any status) */
	HTTP_TRANSPORT, /* DNS, connect, TLS, reset, timeout: see error */
	HTTP_CANCELLED
};

struct http_request {
	const char *method; /* "GET", "POST", "PUT", ... */
	const char *url;
	const char *const *headers; /* "Name: value", NULL-terminated; may be NULL */
	const void *body;
	size_t body_len;
	int64_t timeout_ms;  /* whole transfer; 0 = 30 s */
	const char *ca_file; /* extra trust anchors; NULL = system store */
	const char *bearer;  /* Authorization: Bearer ... (wiped after use); may be NULL */
};

struct http_response {
	enum http_result result;
	bool timed_out;
	long status;
	const char *error; /* for HTTP_TRANSPORT: curl's explanation */
	const char *body;  /* NUL-terminated */
	size_t body_len;
	const char *content_type;
	int64_t retry_after_s;  /* Retry-After in seconds, -1 if absent */
	const char *request_id; /* Graph's request-id header, or "" */
	int64_t elapsed_ms;
};

typedef void (*http_done_cb)(void *arg, const struct http_response *resp);

struct http_client;

struct http_client *http_client_new(struct ev_loop *loop);
/* Cancels what is in flight (callbacks run with HTTP_CANCELLED), then frees. */
void http_client_free(struct http_client *c);

/* Starts a request; returns its id (> 0). cb runs later on the loop, never from here. */
uint64_t http_request_start(struct http_client *c, const struct http_request *req, http_done_cb cb,
                            void *arg);
/* Cancels a request; its callback runs with HTTP_CANCELLED. Unknown ids are ignored. */
void http_request_cancel(struct http_client *c, uint64_t id);
size_t http_client_inflight(const struct http_client *c);

/* ---- SMTP submission through libcurl (STARTTLS, AUTH XOAUTH2 or PLAIN/LOGIN) ---- */

struct http_smtp_request {
	const char *url;   /* smtp://host:587 (STARTTLS) or smtps://host:465 */
	bool tls_required; /* refuse to go on without TLS (the default for every provider) */
	const char *username;
	const char *password; /* AUTH PLAIN/LOGIN; NULL when bearer is used */
	const char *bearer;   /* AUTH XOAUTH2 with username as user= */
	const char *mail_from;
	const char *const *rcpts;
	size_t nrcpts;
	const char *data; /* the message with CRLF line endings; dot-stuffing is done here */
	size_t len;
	const char *ca_file;
	int64_t timeout_ms; /* 0 = 120 s */
};

struct http_smtp_response {
	enum http_result result;
	bool timed_out;
	int code;             /* the last reply code, 0 if none */
	const char *enhanced; /* "5.7.139" or "" */
	const char *text;     /* the last reply line, without the code; "" if none */
	const char *stage;    /* "connect", "starttls", "auth", "mail", "rcpt", "data", "end" */
	const char *error;    /* transport error (HTTP_TRANSPORT) */
	int64_t elapsed_ms;
};

typedef void (*http_smtp_done_cb)(void *arg, const struct http_smtp_response *resp);

/* Sends one message; the callback runs exactly once, later, on the loop. Secrets given here
 * are wiped from our copies when the transfer ends. */
uint64_t http_smtp_start(struct http_client *c, const struct http_smtp_request *req,
                         http_smtp_done_cb cb, void *arg);

/* Blocking variant for the command line. The response's strings live until
 * http_response_release(). */
int http_request_sync(const struct http_request *req, struct http_response *resp,
                      struct mb_err *err);
void http_response_release(struct http_response *resp);

/* application/x-www-form-urlencoded: appends "&name=value" (no '&' when b is empty), with
 * RFC 3986 percent-encoding. */
void http_form_add(struct mb_buf *b, const char *name, const char *value);
/* Percent-encodes s into b (RFC 3986 unreserved characters kept). */
void http_url_encode(struct mb_buf *b, const char *s);
/* Percent-decodes n bytes of s ('+' as a space when plus): a new string, or NULL when a '%'
 * is not followed by two hex digits or the result would hold a NUL byte. */
char *http_url_decode(const char *s, size_t n, bool plus);
/* Decodes one application/x-www-form-urlencoded value from a query string: the value of
 * name, newly allocated, or NULL if absent or malformed (see http_url_decode). */
char *http_query_get(const char *query, const char *name);

/* ---- probes for `mailbridge doctor` (blocking, for the command line) ---- */

struct http_probe_result {
	enum http_result result;
	bool timed_out;
	bool tls_error;    /* the TLS handshake or the certificate check failed */
	int curl_code;     /* libcurl's error number (28 = timeout), 0 on success */
	long status;       /* HTTP status, or the last SMTP reply code */
	char enhanced[16]; /* SMTP: "5.7.139" or "" */
	char text[256];    /* SMTP: the last reply line without its code; HTTP: "" */
	char error[256];   /* transport error (result HTTP_TRANSPORT) */
	int64_t date_s;    /* the Date header (Unix seconds), 0 when absent */
	int64_t local_s;   /* our clock when the answer arrived */
	int64_t elapsed_ms;
};

/* One GET (or HEAD) of url without following redirects: reachability, TLS and the server's
 * clock. Any HTTP status is an answer. timeout_ms 0 = 10 s. */
void http_probe_sync(const char *method, const char *url, const char *ca_file, int64_t timeout_ms,
                     struct http_probe_result *out);

/* SMTP submission up to authentication, then QUIT: connect, EHLO, STARTTLS (when
 * tls_required), and AUTH XOAUTH2 with username and bearer when bearer is not NULL. No
 * MAIL FROM is sent, so nothing can be delivered. result HTTP_OK with status 235 (or 250 when
 * no AUTH was asked) means success; HTTP_OK with a 4xx/5xx status is the server's refusal. */
void http_smtp_probe_sync(const char *url, bool tls_required, const char *username,
                          const char *bearer, const char *ca_file, int64_t timeout_ms,
                          struct http_probe_result *out);

#endif
