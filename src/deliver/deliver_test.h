/*
 * The Email Test's message, shared by `mailbridge test` (cli_test.c) and POST /api/v1/test
 * (admin_api_msg.c): one small message built here, then sent with deliver_send_now().
 */
#ifndef MB_DELIVER_TEST_H
#define MB_DELIVER_TEST_H

#include <stdbool.h>

#include "store/store.h"

#define DELIVER_TEST_SUBJECT "mailbridge test email"

struct deliver_test_spec {
	const char *from;       /* the sender address (required) */
	const char *to;         /* the one recipient (required) */
	const char *connection; /* named in the default body */
	const char *subject;    /* NULL: DELIVER_TEST_SUBJECT */
	const char *body;       /* NULL: a short note naming this host and the connection */
	bool html;              /* a text/html body, else text/plain */
};

/* A new message, ready for deliver_send_now(): a fresh id, the envelope (sender, one
 * recipient), received now, and the whole RFC 5322 text: From, To, Subject (RFC 2047 when not
 * ASCII), Date, Message-ID, MIME-Version and a UTF-8 body (base64 when not 7-bit). Line
 * breaks in subject become spaces; the body's become CRLF. */
struct store_msg *deliver_test_message(const struct deliver_test_spec *s);

#endif
