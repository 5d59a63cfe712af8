/*
 * smtp: the SMTP submission server (RFC 5321, with PIPELINING, 8BITMIME, SIZE,
 * ENHANCEDSTATUSCODES, SMTPUTF8, STARTTLS and AUTH PLAIN/LOGIN for clients).
 *
 * Every session runs on the loop. A message is acknowledged with 250 only from the store
 * writer's callback, after its group commit is durable; a failed commit answers 451 4.3.0.
 * DATA is read by a strict parser: only CRLF "." CRLF ends a message, and a bare LF or CR
 * anywhere in the content refuses the whole message (SMTP smuggling, CVE-2023-51764), so
 * one DATA can never become two messages.
 *
 * Access: a client may send when it authenticated, or connects from loopback (unless
 * smtp_auth = required), or from a network in smtp_allow. Config validation has already
 * refused non-loopback listeners that would make an open relay.
 *
 * The parsers below are pure functions, for the unit tests and fuzz targets.
 */
#ifndef MB_SMTP_H
#define MB_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "ev/ev.h"
#include "store/store.h"
#include "util/util.h"

/* ---- the server ---- */

struct smtp_server;

/* Binds every smtp_listen address. The config must stay valid while the server lives. */
struct smtp_server *smtp_server_new(struct ev_loop *loop, const struct config *cfg,
                                    struct store_writer *writer, struct mb_err *err);
/* Shutting down gently: stops listening; idle sessions and those between transactions get
 * 421 and are closed; a session in DATA or waiting for its commit finishes that message
 * first (its 250 goes out), then gets 421. */
void smtp_server_drain(struct smtp_server *srv);

/* Stops listening and drops every session. Commits still in flight finish in the store;
 * their callbacks then find no session. Call before store_writer_free(). */
void smtp_server_close(struct smtp_server *srv);
/* Frees what is left; call after store_writer_free(). */
void smtp_server_free(struct smtp_server *srv);
size_t smtp_server_session_count(const struct smtp_server *srv);
/* Prometheus text: sessions, messages accepted and refused. */
void smtp_server_metrics(const struct smtp_server *srv, struct mb_buf *out);
/* Called after each message is durably queued (the daemon kicks delivery with it). */
void smtp_server_on_queued(struct smtp_server *srv, ev_cb cb, void *arg);
/* A reloaded config: limits, users, the allow-list, the host name and the TLS certificate
 * apply to new commands and sessions; open sessions stay open. The listeners stay (a
 * changed smtp_listen needs a restart; the caller says so). On error nothing changes. */
int smtp_server_set_config(struct smtp_server *srv, const struct config *cfg, struct mb_err *err);

/* ---- commands ---- */

enum smtp_verb {
	SMTP_VERB_UNKNOWN,
	SMTP_VERB_HELO,
	SMTP_VERB_EHLO,
	SMTP_VERB_MAIL,
	SMTP_VERB_RCPT,
	SMTP_VERB_DATA,
	SMTP_VERB_RSET,
	SMTP_VERB_NOOP,
	SMTP_VERB_QUIT,
	SMTP_VERB_VRFY,
	SMTP_VERB_EXPN,
	SMTP_VERB_HELP,
	SMTP_VERB_STARTTLS,
	SMTP_VERB_AUTH,
	SMTP_VERB_BDAT,
	SMTP_VERB_COUNT
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg; /* points into the line: after the verb and one space, "" if none */
};

/* Splits a command line (without CRLF). Never fails: unknown verbs are SMTP_VERB_UNKNOWN. */
void smtp_cmd_parse(const char *line, struct smtp_cmd *cmd);
const char *smtp_verb_name(enum smtp_verb v);

#define SMTP_LOCAL_MAX  64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX   256

struct smtp_mail_args {
	char addr[SMTP_PATH_MAX + 1]; /* the mailbox without <>; "" for the null path */
	int64_t size;                 /* SIZE=, -1 if absent */
	bool body_8bit;               /* BODY=8BITMIME */
	bool smtputf8;                /* SMTPUTF8 */
};

enum smtp_arg_error {
	SMTP_ARG_OK,
	SMTP_ARG_SYNTAX,    /* 501 5.5.4: no FROM:/TO: */
	SMTP_ARG_ADDRESS,   /* 501 5.1.x: the path or the address is invalid */
	SMTP_ARG_PARAM,     /* 555: an unknown or malformed parameter */
	SMTP_ARG_NEED_UTF8, /* 553: non-ASCII address without SMTPUTF8 */
};

/* "FROM:<a@b> SIZE=10 BODY=8BITMIME SMTPUTF8" (MAIL) or "TO:<a@b>" (RCPT). For RCPT,
 * utf8_ok says whether the transaction's MAIL had SMTPUTF8. why gets a short reason. */
enum smtp_arg_error smtp_mail_args_parse(const char *arg, bool is_mail, bool utf8_ok,
                                         struct smtp_mail_args *out, const char **why);

/* Validates a mailbox "local@domain" (RFC 5321 §4.1.2, with RFC 6531 UTF-8 if utf8). */
bool smtp_mailbox_is_valid(const char *s, size_t len, bool utf8, const char **why);

/* ---- DATA ---- */

struct smtp_data {
	struct mb_buf *out; /* unstuffed content is appended here */
	size_t max_size;    /* content bytes allowed */
	size_t max_line;    /* bytes allowed in one line, without CRLF */
	size_t size;        /* content bytes seen (counted even past max_size) */
	size_t line_len;
	int state;
	bool bare_lf_or_cr;
	bool too_big;
	bool line_too_long;
	bool has_8bit;
};

void smtp_data_init(struct smtp_data *d, struct mb_buf *out, size_t max_size, size_t max_line);
/* Feeds bytes; returns how many were consumed. *done becomes true when CRLF.CRLF was
 * consumed (the bytes after it are not consumed). */
size_t smtp_data_feed(struct smtp_data *d, const char *p, size_t len, bool *done);

/* ---- AUTH ---- */

/* Decodes an AUTH PLAIN response (base64 of authzid NUL authcid NUL password) into
 * newly allocated user and password (the password must be freed with mb_secret_free). */
int smtp_auth_plain_decode(const char *b64, char **user, char **pass);

#endif
