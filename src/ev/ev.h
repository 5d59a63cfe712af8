/*
 * ev: the event loop, after Redis's ae: a small API over libevent, which only this module
 * includes.
 *
 * - a loop; timers; signals; a notifier that other threads may fire to wake the loop;
 * - listeners that accept TCP connections;
 * - streams: buffered, non-blocking connections with line reading, raw peeking for bulk
 *   data, writes, idle timeouts, and server-side STARTTLS (OpenSSL).
 *
 * Ownership: each *_new() has a *_free(); *_free(NULL) does nothing. Callbacks run on the
 * loop's thread, except that ev_notify_fire() may be called from any thread. A stream's owner
 * may free it from inside its own callbacks.
 */
#ifndef MB_EV_H
#define MB_EV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/util.h"

struct ev_loop;
struct ev_timer;
struct ev_signal;
struct ev_notify;
struct ev_listener;
struct ev_stream;
struct ev_tls;

typedef void (*ev_cb)(void *arg);
typedef void (*ev_accept_cb)(void *arg, int fd, const struct mb_sockaddr *peer,
                             const struct mb_sockaddr *local);

struct ev_loop *ev_loop_new(void);
void ev_loop_free(struct ev_loop *loop);
/* Runs until ev_loop_stop(); returns 0, or -1 if the loop broke. */
int ev_loop_run(struct ev_loop *loop);
void ev_loop_stop(struct ev_loop *loop);

struct ev_timer *ev_timer_new(struct ev_loop *loop, ev_cb cb, void *arg);
void ev_timer_start(struct ev_timer *t, int64_t ms); /* one-shot; restarts if pending */
void ev_timer_stop(struct ev_timer *t);
bool ev_timer_is_pending(const struct ev_timer *t);
void ev_timer_free(struct ev_timer *t);

struct ev_signal *ev_signal_new(struct ev_loop *loop, int signo, ev_cb cb, void *arg);
void ev_signal_free(struct ev_signal *s);

/* A wake-up other threads may fire; cb runs once on the loop for one or more fires. */
struct ev_notify *ev_notify_new(struct ev_loop *loop, ev_cb cb, void *arg);
void ev_notify_fire(struct ev_notify *n);
void ev_notify_free(struct ev_notify *n);

struct ev_listener *ev_listener_new(struct ev_loop *loop, const struct mb_sockaddr *addr,
                                    ev_accept_cb cb, void *arg, struct mb_err *err);
void ev_listener_pause(struct ev_listener *l);
void ev_listener_resume(struct ev_listener *l);
void ev_listener_free(struct ev_listener *l);

/* ---- raw fd watchers (for libcurl's multi socket interface) ---- */

struct ev_io;
#define EV_IO_READ  1
#define EV_IO_WRITE 2
typedef void (*ev_io_cb)(void *arg, int fd, int events);

/* Watches fd (not adopted, never closed here); ev_io_set(io, 0) stops watching. */
struct ev_io *ev_io_new(struct ev_loop *loop, int fd, ev_io_cb cb, void *arg);
void ev_io_set(struct ev_io *io, int events);
void ev_io_free(struct ev_io *io);

/* ---- TLS ---- */

struct ev_tls *ev_tls_server_new(const char *cert_file, const char *key_file, struct mb_err *err);
void ev_tls_free(struct ev_tls *tls);

/* ---- streams ---- */

enum ev_stream_event {
	EV_STREAM_EOF,     /* the peer closed */
	EV_STREAM_ERROR,   /* a socket or TLS error */
	EV_STREAM_TIMEOUT, /* no input within the read timeout (a write timeout is an ERROR) */
	EV_STREAM_DRAINED, /* all pending output was sent */
	EV_STREAM_FLUSHED  /* after ev_stream_close_after_write(): output fully sent */
};

typedef void (*ev_stream_event_cb)(void *arg, enum ev_stream_event what);

/* Adopts fd. read_cb runs when input arrived; event_cb on EOF, errors, timeouts, flushes. */
struct ev_stream *ev_stream_new(struct ev_loop *loop, int fd, ev_cb read_cb,
                                ev_stream_event_cb event_cb, void *arg);
void ev_stream_free(struct ev_stream *s);

size_t ev_stream_input_len(const struct ev_stream *s);

enum ev_line_result { EV_LINE_OK, EV_LINE_NONE, EV_LINE_TOO_LONG };
/* Takes one line ending in CRLF or LF, without the terminator, into line (reset first).
 * EV_LINE_TOO_LONG: no terminator within max bytes; the overlong input up to and including
 * the next terminator is discarded (so the session stays in sync); *line is left empty. */
enum ev_line_result ev_stream_read_line(struct ev_stream *s, struct mb_buf *line, size_t max);

/* The first contiguous run of buffered input (NULL/0 when empty), then drain what was used. */
const char *ev_stream_peek(struct ev_stream *s, size_t *len);
void ev_stream_drain(struct ev_stream *s, size_t n);

void ev_stream_write(struct ev_stream *s, const void *data, size_t len);
void ev_stream_printf(struct ev_stream *s, const char *fmt, ...) MB_PRINTF(2, 3);
size_t ev_stream_output_len(const struct ev_stream *s);

void ev_stream_set_timeout(struct ev_stream *s, int64_t read_ms);
void ev_stream_pause_read(struct ev_stream *s);
void ev_stream_resume_read(struct ev_stream *s);
/* Stops reading; event_cb gets EV_STREAM_FLUSHED once all output has been sent. */
void ev_stream_close_after_write(struct ev_stream *s);

/* Server-side TLS on an open stream (STARTTLS). Buffered plaintext input is discarded
 * first, so nothing sent before the handshake is read as if it came after it. */
int ev_stream_start_tls(struct ev_stream *s, struct ev_tls *tls, struct mb_err *err);
bool ev_stream_is_tls(const struct ev_stream *s);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" or "" */
void ev_stream_tls_desc(const struct ev_stream *s, char *out, size_t outlen);

/* ---- the embedded HTTP server (evhttp underneath) ---- */

struct ev_http;
struct ev_http_req;

typedef void (*ev_http_cb)(void *arg, struct ev_http_req *req);

/* One callback for every request; it must call ev_http_reply() exactly once. */
struct ev_http *ev_http_new(struct ev_loop *loop, const struct mb_sockaddr *addr, ev_http_cb cb,
                            void *arg, size_t max_body, struct mb_err *err);
void ev_http_free(struct ev_http *h);

const char *ev_http_req_method(const struct ev_http_req *r); /* "GET", "POST", ... */
const char *ev_http_req_path(const struct ev_http_req *r);   /* "/api/v1/x", undecoded */
const char *ev_http_req_query(const struct ev_http_req *r);  /* after '?', or NULL */
const char *ev_http_req_header(const struct ev_http_req *r, const char *name);
/* The request body (NUL-terminated copy owned by the request). */
const char *ev_http_req_body(struct ev_http_req *r, size_t *len);
void ev_http_req_peer(const struct ev_http_req *r, char *host, size_t hostlen);
void ev_http_add_header(struct ev_http_req *r, const char *name, const char *value);
void ev_http_reply(struct ev_http_req *r, int status, const char *content_type, const void *body,
                   size_t len);
/* Keeps the request open after the callback returns, for a reply that needs async work.
 * Returns an id; ev_http_deferred() finds the request again, or NULL if the client left
 * meanwhile. The deferred request is released by ev_http_reply(). */
uint64_t ev_http_req_defer(struct ev_http *h, struct ev_http_req *r);
struct ev_http_req *ev_http_deferred(struct ev_http *h, uint64_t id);
/* The server a request came in on. */
struct ev_http *ev_http_req_server(const struct ev_http_req *r);

#endif
