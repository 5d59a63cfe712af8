/*
 * cli_sendmail: the sendmail-compatible front end (`mailbridge sendmail`, PHP's mail()).
 *
 * Four steps, each testable on its own:
 *   sendmail_parse_args()    argv -> struct sendmail_opts (errors are usage errors, EX_USAGE)
 *   sendmail_read_input()    stdin -> CRLF message; a lone "." ends it unless -i/-oi
 *   sendmail_prepare()       -t recipients, Bcc removal, missing From/Date/Message-ID, sender
 *   sendmail_smtp_send()     one ESMTP transaction on a connected socket; returns a sysexits code
 *
 * Ownership: struct sendmail_opts borrows its strings from argv (only the rcpt array is
 * allocated); struct sendmail_msg owns everything in it. Release both with their _release().
 * Nothing here touches the network except sendmail_smtp_send() and sendmail_connect().
 */
#ifndef MB_CLI_SENDMAIL_H
#define MB_CLI_SENDMAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/util.h"

/* Largest message read from stdin. */
#define SENDMAIL_MAX_INPUT ((size_t)160 * 1024 * 1024)
/* Socket send/receive timeout, seconds. */
#define SENDMAIL_TIMEOUT_SEC 60
/* Where the daemon listens when neither $MAILBRIDGE_SMTP nor the config says. */
#define SENDMAIL_DEFAULT_SMTP "127.0.0.1:2525"

struct sendmail_opts {
	bool read_headers;       /* -t */
	bool ignore_dots;        /* -i, -oi */
	const char *sender;      /* -f, -r: NULL = not given, "" = null sender (<>) */
	const char *full_name;   /* -F */
	const char *config_path; /* -C, -c */
	const char **rcpts;      /* recipient arguments, borrowed from argv */
	size_t nrcpts;
};

/* Parses argv (argv[0] is the command name and is skipped). Options and recipients may be
 * mixed until "--". Fills err with a message naming the option on failure. */
int sendmail_parse_args(int argc, char **argv, struct sendmail_opts *o, struct mb_err *err);
void sendmail_opts_release(struct sendmail_opts *o);

/* Reads the message from in into out (appended), converting LF, CR and CRLF line ends to
 * CRLF and making sure it ends with CRLF. Without ignore_dots, a line holding only "." ends
 * the input (and is not part of the message). Fails with MB_EINVAL past max bytes of input
 * and MB_EIO on a read error. */
int sendmail_read_input(FILE *in, bool ignore_dots, size_t max, struct mb_buf *out,
                        struct mb_err *err);

/* What sendmail_prepare() needs from the outside world; tests pass fixed values. */
struct sendmail_env {
	const char *hostname; /* for the default sender and the Message-ID */
	const char *login;    /* user name for the default sender */
	const char *date;     /* value for an added Date: header */
	const char *msgid;    /* left part of an added Message-ID: <msgid@hostname> */
};

struct sendmail_msg {
	struct mb_buf data; /* CRLF lines, not dot-stuffed */
	char *sender;       /* "" for the null sender */
	char **rcpts;       /* deduplicated, first spelling kept */
	size_t nrcpts;
	bool has_8bit;   /* the message has bytes >= 0x80: BODY=8BITMIME */
	bool needs_utf8; /* sender or a recipient is not ASCII: SMTPUTF8 */
};

/* Builds the message to send from a CRLF message (as sendmail_read_input() makes it).
 * Fails with MB_ENOTFOUND when there is no recipient at all (a usage error), and with
 * MB_EINVAL for an address list that cannot be parsed or holds control characters. Bcc:
 * headers are removed whether or not o->read_headers is set. */
int sendmail_prepare(const char *in, size_t len, const struct sendmail_opts *o,
                     const struct sendmail_env *env, struct sendmail_msg *m, struct mb_err *err);
void sendmail_msg_release(struct sendmail_msg *m);

/* The daemon's address: $MAILBRIDGE_SMTP, else the first loopback smtp_listen of the config
 * (an unreadable config is silently skipped), else SENDMAIL_DEFAULT_SMTP. */
int sendmail_target(const char *config_path, struct mb_sockaddr *out, struct mb_err *err);

/* A blocking TCP connection with SENDMAIL_TIMEOUT_SEC send/receive timeouts, or -1. */
int sendmail_connect(const struct mb_sockaddr *addr, struct mb_err *err);

/* One ESMTP transaction on fd (which is not closed). Returns a sysexits.h code: EX_OK only
 * after the 250 to the end of data; EX_TEMPFAIL for 4xx, timeouts and early close;
 * EX_NOUSER for a 5xx to RCPT; EX_DATAERR for a 5xx to DATA or the end of data. err holds
 * the one-line reason, with the server's reply, whenever the result is not EX_OK. */
int sendmail_smtp_send(int fd, const char *helo, const struct sendmail_msg *m, struct mb_err *err);

#endif
