/*
 * deliver: from the queue to Microsoft. The scheduler claims due messages with a lease, the
 * router picks a connection by From (senders aliases, then the default, then the
 * fallback), a transport sends (Graph sendMail, SMTP XOAUTH2, or plain SMTP), and the
 * classifier turns the answer into sent / tempfail (retry at) / permfail, with one line of
 * cause and one of fix. Per-mailbox caps, pacing and a daily recipient budget keep us
 * inside Microsoft's limits.
 *
 * Delivery is at-least-once: Graph's sendMail is not idempotent, so a crash between
 * Microsoft's 202 and our commit can send a message twice. Nothing is ever lost.
 */
#ifndef MB_DELIVER_H
#define MB_DELIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

enum deliver_result { DELIVER_OK, DELIVER_TEMPFAIL, DELIVER_PERMFAIL };

/* Who is at fault: this message, or the connection (auth, config, licence...), in which
 * case the fallback connection is tried and other messages on the connection wait. */
enum deliver_scope { DELIVER_SCOPE_MESSAGE, DELIVER_SCOPE_CONNECTION };

struct deliver_outcome {
	enum deliver_result result;
	enum deliver_scope scope;
	bool refresh_token;    /* a 401 / 535 5.7.3: refresh the token once, then retry */
	int64_t retry_after_s; /* for TEMPFAIL: at least this long; -1 = use the schedule */
	const char *cause;     /* one line, static text */
	const char *fix;       /* one line, static text */
	char detail[300];      /* what the peer said: status, code, text (never a token) */
};

/* Microsoft Graph: HTTP status and error.code (NULL if none). transport_error != NULL means
 * no HTTP answer at all (timed_out says whether it was a timeout). retry_after_s is the
 * Retry-After header, -1 if absent. */
void deliver_classify_graph(long status, const char *graph_code, const char *message,
                            int64_t retry_after_s, const char *transport_error, bool timed_out,
                            struct deliver_outcome *out);

/* SMTP: the reply code (0 when there was no reply: transport_error says why), the
 * enhanced status code ("5.7.139", or NULL) and the reply text. stage is where it
 * happened: "connect", "starttls", "auth", "mail", "rcpt", "data", "end". */
void deliver_classify_smtp(int code, const char *enhanced, const char *text, const char *stage,
                           const char *transport_error, bool timed_out,
                           struct deliver_outcome *out);

const char *deliver_result_name(enum deliver_result r); /* "sent", "tempfail", "permfail" */
const char *deliver_scope_name(enum deliver_scope s);   /* "message", "connection" */

/* Appends docs/errors.md, generated from the two classifier tables: every row, with what
 * the user sees, the outcome, the cause and the fix. A unit test keeps the file in step. */
void deliver_classify_reference(struct mb_buf *out);

/* ---- the scheduler, the router and the transports ---- */

struct config;
struct ev_loop;
struct http_client;
struct oauth_tm;
struct store;
struct store_writer;
struct store_msg;
struct mb_key;

struct deliver_deps {
	struct ev_loop *loop;
	const struct config *cfg;
	struct store *st;
	struct store_writer *writer; /* NULL: no queue (the command line's test send) */
	const struct mb_key *key;
	struct http_client *http;
	struct oauth_tm *tm;
};

struct deliver;

struct deliver *deliver_new(const struct deliver_deps *deps, struct mb_err *err);
/* New mail was queued: look for due messages now rather than at the next tick. */
void deliver_kick(struct deliver *d);
/* A reloaded config: connections and the retry schedule are read again. On error (a bad
 * retry_schedule) nothing changes. */
int deliver_set_config(struct deliver *d, const struct config *cfg, struct mb_err *err);
/* Connections or the default connection changed in the store (the API): read them again
 * now rather than at the next periodic reload. */
void deliver_conns_changed(struct deliver *d);
/* Stops claiming and starting deliveries; call before freeing the http client. */
void deliver_stop(struct deliver *d);
/* Stops claiming. Deliveries in flight are abandoned; their leases are given back at the
 * next start (at-least-once). Free the http client first: that ends them. */
void deliver_free(struct deliver *d);
size_t deliver_inflight(const struct deliver *d);
/* Prometheus text: deliveries by result and connection, latency histograms per transport. */
void deliver_metrics(const struct deliver *d, struct mb_buf *out);

/* End of a message's header block: the offset of the empty line's first byte, or len. */
size_t deliver_header_end(const char *p, size_t len);
/* Calls fn for each header field of the message p: its name, its unfolded value (line breaks
 * dropped, the white space after them kept) and the field's byte range [start, end). */
typedef void (*deliver_header_cb)(void *arg, const char *name, size_t nlen, const char *value,
                                  size_t start, size_t end);
void deliver_each_header(const char *p, size_t len, deliver_header_cb fn, void *arg);

/* A message addressed anew (a resend to other recipients): To: names them, Cc: and Bcc: are
 * dropped, Resent-Date/Resent-To are added; everything else is kept. Graph reads its
 * recipients from the headers, so the headers must name only those it should reach. */
void deliver_readdress(const char *body, size_t len, const char *const *rcpts, size_t n,
                       struct mb_buf *out);

/* One delivery attempt right now through the named connection, outside the queue and
 * without fallback: the Email Test. The callback runs once with the outcome and the time
 * it took. */
typedef void (*deliver_done_cb)(void *arg, const struct deliver_outcome *o, int64_t ms,
                                const char *upstream_id);
void deliver_send_now(struct deliver *d, const char *conn, struct store_msg *m, deliver_done_cb cb,
                      void *arg);

#endif
