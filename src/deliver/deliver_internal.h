/* Shared between the deliver_*.c files only. */
#ifndef MB_DELIVER_INTERNAL_H
#define MB_DELIVER_INTERNAL_H

#include "deliver.h"
#include "store/store.h"

struct deliver_addrs {
	char **v;
	size_t n;
};

/* To, Cc and Bcc addresses of a message's header block (groups expanded). */
void deliver_addrs_from_headers(const char *body, size_t len, struct deliver_addrs *out);
void deliver_addrs_release(struct deliver_addrs *a);
/* The address of a From: value ("Name <a@b>" -> "a@b"), or NULL. */
char *deliver_from_address(const char *from_value);
/* The message as it leaves: with Bcc: for envelope recipients no header names (add_bcc,
 * for Graph), and From: rewritten to sender (force_from; the original goes to Reply-To when
 * there is none). */
void deliver_prepare(const struct store_msg *m, bool add_bcc, bool force_from, const char *sender,
                     struct mb_buf *out);

struct http_client;
struct oauth_tm;
struct oauth_conn;
struct store_writer;
struct config;

/* Graph's error body: error.code (the innermost known one) and error.message. */
void deliver_graph_error(const char *body, size_t len, char *code, size_t codelen, char *message,
                         size_t msglen);

/* The upload-session path for messages too big for one Graph request: a draft without the
 * big attachments, each attachment uploaded (in chunks when large), then send. done runs
 * once with the outcome and Graph's last request-id. */
typedef void (*deliver_large_cb)(void *arg, const struct deliver_outcome *o, const char *upstream);
void deliver_graph_large(struct http_client *http, struct oauth_tm *tm, const struct oauth_conn *oc,
                         bool force_from, const struct store_msg *m, deliver_large_cb done,
                         void *arg);
void attempt_large_done(void *arg, const struct deliver_outcome *o, const char *upstream);

/* POSTs {"text": ...} to alert_webhook and queues a mail to alert_email, each if set: the config
 * file's, else the ones set through the API (store_server_setting). */
void deliver_alert_send(const struct config *cfg, struct store *st, struct http_client *http,
                        struct store_writer *writer, const char *text);

#endif
