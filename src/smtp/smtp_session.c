/*
 * One SMTP session: the command loop, the transaction, DATA and the hand-off to the store.
 *
 * Commands are processed from the input buffer in order until it is empty or the session
 * must wait (for the store to make a message durable, or for the client to read replies).
 * Pipelined commands that arrive meanwhile stay buffered, and are processed when the wait
 * ends, so replies always come out in order.
 */
#include "smtp_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Stop reading while this much output waits for a client that does not read. */
#define OUTPUT_HIGH_WATER (256 * 1024)

enum session_state {
	S_INIT,       /* before HELO/EHLO */
	S_READY,      /* no transaction */
	S_MAIL,       /* after MAIL */
	S_RCPT,       /* after at least one RCPT */
	S_DATA,       /* reading content */
	S_COMMITTING, /* waiting for the store */
	S_AUTH_PLAIN, /* waiting for the PLAIN response */
	S_AUTH_USER,  /* AUTH LOGIN: waiting for the user name */
	S_AUTH_PASS,  /* AUTH LOGIN: waiting for the password */
	S_CLOSING
};

struct smtp_session {
	uint64_t id;
	struct smtp_session *next; /* in the server's bucket */
	struct smtp_server *srv;
	struct ev_stream *stream;
	enum session_state state;
	struct mb_sockaddr peer;
	char peer_host[64];
	bool peer_loopback;
	bool peer_allowed;
	bool esmtp;
	char helo[72];
	char *auth_user;
	char *login_user; /* AUTH LOGIN in progress */
	int errors;
	bool waiting_output;
	struct mb_buf line;
	/* the transaction */
	struct smtp_mail_args mail;
	char **rcpts;
	size_t nrcpts;
	struct mb_buf body;
	struct smtp_data data;
	char data_id[MB_ID_LEN + 1];
	int64_t data_started_ms;
};

static void process(struct smtp_session *s);

uint64_t
smtp_session_id(const struct smtp_session *s)
{
	return s->id;
}

struct smtp_session **
smtp_session_next_ptr(struct smtp_session *s)
{
	return &s->next;
}

static const struct config_server *
cfg(const struct smtp_session *s)
{
	return &s->srv->cfg->server;
}

static void reply(struct smtp_session *s, const char *fmt, ...) MB_PRINTF(2, 3);

static void
reply(struct smtp_session *s, const char *fmt, ...)
{
	struct mb_buf b = {0};
	va_list ap;

	va_start(ap, fmt);
	mb_buf_vprintf(&b, fmt, ap);
	va_end(ap);
	mb_buf_append(&b, "\r\n", 2);
	ev_stream_write(s->stream, b.data, b.len);
	mb_buf_release(&b);
}

static void
txn_reset(struct smtp_session *s)
{
	for (size_t i = 0; i < s->nrcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = 0;
	memset(&s->mail, 0, sizeof(s->mail));
	mb_buf_release(&s->body);
}

static void
session_free(struct smtp_session *s)
{
	smtp_server_unregister(s->srv, s);
	txn_reset(s);
	ev_stream_free(s->stream);
	mb_buf_release(&s->line);
	free(s->auth_user);
	mb_secret_free(s->login_user);
	free(s);
}

void
smtp_session_free_all(struct smtp_server *srv)
{
	for (size_t b = 0; b < srv->nbuckets; b++)
		while (srv->buckets[b])
			session_free(srv->buckets[b]);
}

static void
session_close(struct smtp_session *s)
{
	if (s->state == S_CLOSING)
		return;
	s->state = S_CLOSING;
	ev_stream_close_after_write(s->stream);
}

/* A client error: counts towards smtp_max_errors. */
static void error_reply(struct smtp_session *s, const char *fmt, ...) MB_PRINTF(2, 3);

static void
error_reply(struct smtp_session *s, const char *fmt, ...)
{
	struct mb_buf b = {0};
	va_list ap;

	va_start(ap, fmt);
	mb_buf_vprintf(&b, fmt, ap);
	va_end(ap);
	reply(s, "%s", b.data);
	mb_buf_release(&b);
	if (++s->errors >= cfg(s)->smtp_max_errors) {
		mb_info("smtp: disconnect: too many errors client=[%s] errors=%d", s->peer_host,
		        s->errors);
		reply(s, "421 4.7.0 %s Error: too many errors", s->srv->hostname);
		session_close(s);
	}
}

static bool
auth_is_offered(const struct smtp_session *s)
{
	return s->srv->cfg->nusers > 0 &&
	       (ev_stream_is_tls(s->stream) || s->peer_loopback || cfg(s)->smtp_auth_plaintext);
}

static bool
may_send(const struct smtp_session *s)
{
	if (s->auth_user)
		return true;
	if (strcmp(cfg(s)->smtp_auth, "required") == 0)
		return false;
	return s->peer_loopback || s->peer_allowed;
}

/* ---- commands ---- */

static void
set_helo(struct smtp_session *s, const char *arg)
{
	size_t i, n = 0;

	for (i = 0; arg[i] && n < sizeof(s->helo) - 1; i++)
		if (arg[i] > 32 && arg[i] < 127 && arg[i] != '(' && arg[i] != ')')
			s->helo[n++] = arg[i];
	s->helo[n] = '\0';
}

static void
cmd_helo(struct smtp_session *s, const char *arg, bool esmtp)
{
	if (*arg == '\0') {
		error_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	txn_reset(s);
	set_helo(s, arg);
	s->esmtp = esmtp;
	s->state = S_READY;
	if (!esmtp) {
		reply(s, "250 %s", s->srv->hostname);
		return;
	}
	reply(s, "250-%s", s->srv->hostname);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %lld", (long long)cfg(s)->max_message_size);
	if (s->srv->tls && !ev_stream_is_tls(s->stream))
		reply(s, "250-STARTTLS");
	if (auth_is_offered(s))
		reply(s, "250-AUTH PLAIN LOGIN");
	reply(s, "250-ENHANCEDSTATUSCODES");
	reply(s, "250-8BITMIME");
	reply(s, "250 SMTPUTF8");
}

/* Parses MAIL/RCPT arguments, or answers the error (RFC 5321, 1870, 6531 codes). */
static bool
args_or_reply(struct smtp_session *s, const char *arg, bool is_mail, struct smtp_mail_args *out)
{
	const char *why;
	const char *verb = is_mail ? "MAIL FROM" : "RCPT TO";

	switch (smtp_mail_args_parse(arg, is_mail, s->mail.smtputf8, out, &why)) {
	case SMTP_ARG_OK:
		return true;
	case SMTP_ARG_PARAM:
		error_reply(s, "555 5.5.4 %s", why);
		return false;
	case SMTP_ARG_NEED_UTF8:
		error_reply(s, "553 5.6.7 %s", why);
		return false;
	case SMTP_ARG_SYNTAX:
		if (strstr(why, "space"))
			error_reply(s, "501 5.5.4 Syntax: %s:<address>: %s", verb, why);
		else
			error_reply(s, "501 5.5.4 Syntax: %s:<address>", verb);
		return false;
	default:
		error_reply(s, "501 %s Bad %s address syntax: %s", is_mail ? "5.1.7" : "5.1.3",
		            is_mail ? "sender" : "recipient", why);
		return false;
	}
}

static void
cmd_mail(struct smtp_session *s, const char *arg)
{
	if (s->state == S_INIT) {
		error_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return;
	}
	if (s->state != S_READY) {
		error_reply(s, "503 5.5.1 Error: nested MAIL command");
		return;
	}
	if (!may_send(s)) {
		if (auth_is_offered(s))
			error_reply(s, "530 5.7.0 Authentication required");
		else if (s->srv->cfg->nusers > 0 && s->srv->tls && !ev_stream_is_tls(s->stream))
			error_reply(s, "530 5.7.0 Must issue a STARTTLS command first");
		else
			error_reply(s,
			            "554 5.7.1 Relay access denied: [%s] may not send here "
			            "(not in smtp_allow, not authenticated)",
			            s->peer_host);
		return;
	}
	if (!args_or_reply(s, arg, true, &s->mail))
		return;
	if (s->mail.size > cfg(s)->max_message_size) {
		reply(s, "552 5.3.4 Message size exceeds fixed limit of %lld bytes",
		      (long long)cfg(s)->max_message_size);
		memset(&s->mail, 0, sizeof(s->mail));
		return;
	}
	s->state = S_MAIL;
	reply(s, "250 2.1.0 Ok");
}

static void
cmd_rcpt(struct smtp_session *s, const char *arg)
{
	struct smtp_mail_args r;

	if (s->state != S_MAIL && s->state != S_RCPT) {
		error_reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (!args_or_reply(s, arg, false, &r))
		return;
	if ((int64_t)s->nrcpts >= cfg(s)->smtp_max_recipients) {
		reply(s, "452 4.5.3 Error: too many recipients (at most %lld per message)",
		      (long long)cfg(s)->smtp_max_recipients);
		return;
	}
	s->rcpts = mb_realloc(s->rcpts, (s->nrcpts + 1) * sizeof(char *));
	s->rcpts[s->nrcpts++] = mb_strdup(r.addr);
	s->state = S_RCPT;
	reply(s, "250 2.1.5 Ok");
}

static const char *
protocol_name(const struct smtp_session *s)
{
	static const char *const names[2][2][2] = {
	    /* [utf8][tls][auth] */
	    {{"ESMTP", "ESMTPA"}, {"ESMTPS", "ESMTPSA"}},
	    {{"UTF8SMTP", "UTF8SMTPA"}, {"UTF8SMTPS", "UTF8SMTPSA"}},
	};

	if (!s->esmtp)
		return "SMTP";
	return names[s->mail.smtputf8][ev_stream_is_tls(s->stream)][s->auth_user != NULL];
}

static void
cmd_data(struct smtp_session *s, const char *arg, char id[MB_ID_LEN + 1])
{
	char date[64], tls[128];

	if (s->state != S_RCPT) {
		error_reply(s, s->state == S_MAIL ? "503 5.5.1 Error: need RCPT command"
		                                  : "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (*arg) {
		error_reply(s, "501 5.5.4 Syntax: DATA (no arguments)");
		return;
	}
	mb_id_new(id);
	s->data_started_ms = mb_now_ms();
	mb_rfc5322_date(s->data_started_ms, date, sizeof(date));
	ev_stream_tls_desc(s->stream, tls, sizeof(tls));
	mb_buf_reset(&s->body);
	/* one allocation for the usual message: the SIZE it declared, else 8K to start */
	mb_buf_reserve(&s->body, s->mail.size > 0 && s->mail.size <= cfg(s)->max_message_size
	                             ? (size_t)s->mail.size + 1024
	                             : 8192);
	mb_buf_printf(&s->body, "Received: from %s ([%s])\r\n", *s->helo ? s->helo : "unknown",
	              s->peer_host);
	if (*tls)
		mb_buf_printf(&s->body, "\t(using %s)\r\n", tls);
	mb_buf_printf(&s->body, "\tby %s (mailbridge) with %s id %s", s->srv->hostname,
	              protocol_name(s), id);
	if (s->nrcpts == 1)
		mb_buf_printf(&s->body, "\r\n\tfor <%s>", s->rcpts[0]);
	mb_buf_printf(&s->body, "; %s\r\n", date);
	smtp_data_init(&s->data, &s->body, (size_t)cfg(s)->max_message_size,
	               (size_t)cfg(s)->smtp_max_line_length);
	s->state = S_DATA;
	ev_stream_set_timeout(s->stream, cfg(s)->smtp_data_timeout * 1000);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
}

static void committed(void *arg, int status, const char *errmsg);

struct commit_ref {
	struct smtp_server *srv;
	uint64_t session_id;
	char id[MB_ID_LEN + 1];
	char *log; /* "from=<a> nrcpt=1 size=10 client=[127.0.0.1]", for the one log line */
};

static void
data_done(struct smtp_session *s, const char *id)
{
	struct store_msg *m;
	struct commit_ref *ref;
	char tls[128];

	ev_stream_set_timeout(s->stream, cfg(s)->smtp_timeout * 1000);
	s->state = S_RCPT; /* until decided below */
	if (s->data.bare_lf_or_cr || s->data.too_big || s->data.line_too_long)
		s->srv->refused++;
	if (s->data.bare_lf_or_cr) {
		mb_info("smtp: refused: bare LF/CR client=[%s]", s->peer_host);
		txn_reset(s);
		s->state = S_READY;
		error_reply(s, "554 5.6.0 Message refused: it contains a bare LF or bare CR; "
		               "end every line with CRLF (SMTP smuggling protection, "
		               "CVE-2023-51764)");
		return;
	}
	if (s->data.too_big) {
		txn_reset(s);
		s->state = S_READY;
		reply(s, "552 5.3.4 Message too big: over %lld bytes",
		      (long long)cfg(s)->max_message_size);
		return;
	}
	if (s->data.line_too_long) {
		txn_reset(s);
		s->state = S_READY;
		error_reply(s, "554 5.6.0 Message refused: a line is longer than %lld bytes",
		            (long long)cfg(s)->smtp_max_line_length);
		return;
	}
	m = store_msg_new();
	snprintf(m->id, sizeof(m->id), "%s", id);
	m->sender = mb_strdup(s->mail.addr);
	m->rcpts = s->rcpts;
	m->nrcpts = s->nrcpts;
	s->rcpts = NULL;
	s->nrcpts = 0;
	m->body_len = s->body.len;
	m->body = mb_buf_steal(&s->body);
	m->received_ms = mb_now_ms();
	ev_stream_tls_desc(s->stream, tls, sizeof(tls));
	m->client =
	    mb_asprintf("[%s] helo=%s%s%s%s%s", s->peer_host, s->helo, s->auth_user ? " auth=" : "",
	                s->auth_user ? s->auth_user : "", *tls ? " tls=" : "", *tls ? tls : "");
	ref = mb_malloc(sizeof(*ref));
	ref->srv = s->srv;
	ref->session_id = s->id;
	snprintf(ref->id, sizeof(ref->id), "%s", id);
	ref->log = mb_asprintf("from=<%s> nrcpt=%zu size=%zu client=[%s]", m->sender, m->nrcpts,
	                       m->body_len, s->peer_host);
	txn_reset(s);
	s->state = S_COMMITTING;
	ev_stream_pause_read(s->stream);
	store_writer_submit(s->srv->writer, m, committed, ref);
}

static void
committed(void *arg, int status, const char *errmsg)
{
	struct commit_ref *ref = arg;
	struct smtp_session *s = smtp_server_find(ref->srv, ref->session_id);
	char id[MB_ID_LEN + 1];

	if (status == 0)
		ref->srv->accepted++;
	else
		ref->srv->refused++;
	if (status == 0 && ref->srv->on_queued)
		ref->srv->on_queued(ref->srv->on_queued_arg);
	snprintf(id, sizeof(id), "%s", ref->id);
	if (status == 0)
		mb_info("smtp: queued: id=%s %s%s", id, ref->log,
		        s ? "" : " (the client had left)");
	else
		mb_warn("smtp: not queued: id=%s %s error=%s", id, ref->log, errmsg ? errmsg : "?");
	free(ref->log);
	free(ref);
	if (s == NULL || s->state != S_COMMITTING)
		return;
	s->state = S_READY;
	if (status == 0)
		reply(s, "250 2.0.0 Ok: queued as %s", id);
	else
		reply(s, "451 4.3.0 Error: the queue could not store the message; nothing was "
		         "accepted, try again later");
	ev_stream_resume_read(s->stream);
	process(s);
}

/* ---- AUTH ---- */

static void
auth_finish(struct smtp_session *s, char *user, char *pass)
{
	bool ok = user && pass && smtp_auth_check(s->srv, user, pass);

	s->state = S_READY;
	if (ok) {
		mb_info("smtp: auth: ok user=%s client=[%s]", user, s->peer_host);
		s->auth_user = user;
		reply(s, "235 2.7.0 Authentication successful");
	} else {
		mb_info("smtp: auth: failed user=%s client=[%s]", user ? user : "?", s->peer_host);
		free(user);
		error_reply(s, "535 5.7.8 Authentication credentials invalid");
	}
	mb_secret_free(pass);
}

static void
auth_plain_response(struct smtp_session *s, const char *b64)
{
	char *user, *pass;

	if (smtp_auth_plain_decode(b64, &user, &pass) < 0) {
		s->state = S_READY;
		error_reply(s, "501 5.5.2 Cannot decode the AUTH PLAIN response");
		return;
	}
	auth_finish(s, user, pass);
}

static void
cmd_auth(struct smtp_session *s, const char *arg)
{
	const char *ir = strchr(arg, ' ');
	size_t mlen = ir ? (size_t)(ir - arg) : strlen(arg);

	if (s->state == S_INIT) {
		error_reply(s, "503 5.5.1 Error: send EHLO first");
		return;
	}
	if (!auth_is_offered(s)) {
		error_reply(s, s->srv->cfg->nusers > 0 ? "538 5.7.11 Encryption required: use "
		                                         "STARTTLS first"
		                                       : "502 5.5.1 AUTH not available");
		return;
	}
	if (s->auth_user) {
		error_reply(s, "503 5.5.1 Error: already authenticated");
		return;
	}
	if (s->state != S_READY) {
		error_reply(s, "503 5.5.1 Error: AUTH not allowed in a mail transaction");
		return;
	}
	if (mlen == 5 && mb_str_has_prefix_ci(arg, "PLAIN")) {
		if (ir && strcmp(ir + 1, "=") != 0) {
			auth_plain_response(s, ir + 1);
		} else {
			s->state = S_AUTH_PLAIN;
			reply(s, "334 ");
		}
	} else if (mlen == 5 && mb_str_has_prefix_ci(arg, "LOGIN")) {
		if (ir) {
			size_t n;
			unsigned char *u = mb_base64_decode(ir + 1, strlen(ir + 1), &n);
			if (u == NULL || n == 0) {
				free(u);
				error_reply(s, "501 5.5.2 Cannot decode the user name");
				return;
			}
			s->login_user = (char *)u;
			s->state = S_AUTH_PASS;
			reply(s, "334 UGFzc3dvcmQ6");
		} else {
			s->state = S_AUTH_USER;
			reply(s, "334 VXNlcm5hbWU6");
		}
	} else {
		error_reply(s, "504 5.5.4 Unsupported authentication mechanism (use PLAIN or "
		               "LOGIN)");
	}
}

static void
auth_continue(struct smtp_session *s, const char *line)
{
	size_t n;
	unsigned char *v;

	if (strcmp(line, "*") == 0) {
		s->state = S_READY;
		mb_secret_free(s->login_user);
		s->login_user = NULL;
		error_reply(s, "501 5.7.0 Authentication cancelled");
		return;
	}
	if (s->state == S_AUTH_PLAIN) {
		auth_plain_response(s, line);
		return;
	}
	v = mb_base64_decode(line, strlen(line), &n);
	if (v == NULL || (s->state == S_AUTH_USER && n == 0)) {
		free(v);
		s->state = S_READY;
		mb_secret_free(s->login_user);
		s->login_user = NULL;
		error_reply(s, "501 5.5.2 Cannot decode the AUTH LOGIN response");
		return;
	}
	if (s->state == S_AUTH_USER) {
		s->login_user = (char *)v;
		s->state = S_AUTH_PASS;
		reply(s, "334 UGFzc3dvcmQ6");
		return;
	}
	{
		char *user = s->login_user;
		s->login_user = NULL;
		auth_finish(s, user, (char *)v);
	}
}

static void
cmd_starttls(struct smtp_session *s, const char *arg)
{
	struct mb_err err;

	if (s->srv->tls == NULL || ev_stream_is_tls(s->stream)) {
		error_reply(s, "502 5.5.1 STARTTLS not available");
		return;
	}
	if (*arg) {
		error_reply(s, "501 5.5.4 Syntax: STARTTLS (no arguments)");
		return;
	}
	if (s->state == S_MAIL || s->state == S_RCPT) {
		error_reply(s, "503 5.5.1 Error: STARTTLS in a mail transaction");
		return;
	}
	reply(s, "220 2.0.0 Ready to start TLS");
	if (ev_stream_start_tls(s->stream, s->srv->tls, &err) < 0) {
		mb_warn("smtp: starttls: %s client=[%s]", err.msg, s->peer_host);
		session_close(s);
		return;
	}
	/* RFC 3207 §4.2: forget everything learned before TLS */
	txn_reset(s);
	s->state = S_INIT;
	s->helo[0] = '\0';
	s->esmtp = false;
}

/* ---- the loop ---- */

static void
command(struct smtp_session *s, const char *line)
{
	struct smtp_cmd cmd;
	char id[MB_ID_LEN + 1];

	if (s->state == S_AUTH_PLAIN || s->state == S_AUTH_USER || s->state == S_AUTH_PASS) {
		auth_continue(s, line);
		return;
	}
	smtp_cmd_parse(line, &cmd);
	switch (cmd.verb) {
	case SMTP_VERB_HELO:
		cmd_helo(s, cmd.arg, false);
		break;
	case SMTP_VERB_EHLO:
		cmd_helo(s, cmd.arg, true);
		break;
	case SMTP_VERB_MAIL:
		cmd_mail(s, cmd.arg);
		break;
	case SMTP_VERB_RCPT:
		cmd_rcpt(s, cmd.arg);
		break;
	case SMTP_VERB_DATA:
		cmd_data(s, cmd.arg, id);
		if (s->state == S_DATA)
			snprintf(s->data_id, sizeof(s->data_id), "%s", id);
		break;
	case SMTP_VERB_RSET:
		txn_reset(s);
		if (s->state != S_INIT)
			s->state = S_READY;
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VERB_NOOP:
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_VERB_QUIT:
		reply(s, "221 2.0.0 Bye");
		session_close(s);
		break;
	case SMTP_VERB_VRFY:
		if (*cmd.arg == '\0')
			error_reply(s, "501 5.5.4 Syntax: VRFY address");
		else
			reply(s, "252 2.0.0 Cannot VRFY user; send some mail");
		break;
	case SMTP_VERB_EXPN:
		error_reply(s, "502 5.5.1 EXPN not available");
		break;
	case SMTP_VERB_HELP:
		reply(s, "214 2.0.0 mailbridge: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY "
		         "STARTTLS AUTH");
		break;
	case SMTP_VERB_STARTTLS:
		cmd_starttls(s, cmd.arg);
		break;
	case SMTP_VERB_AUTH:
		cmd_auth(s, cmd.arg);
		break;
	case SMTP_VERB_BDAT:
		error_reply(s, "502 5.5.1 BDAT not available (CHUNKING is not offered)");
		break;
	default:
		error_reply(s, "500 5.5.2 Error: command not recognized");
		break;
	}
}

static void
read_data(struct smtp_session *s)
{
	const char *p;
	size_t len, used;
	bool done = false;

	while (!done && (p = ev_stream_peek(s->stream, &len)) != NULL && len > 0) {
		used = smtp_data_feed(&s->data, p, len, &done);
		ev_stream_drain(s->stream, used);
	}
	if (done)
		data_done(s, s->data_id);
}

static bool
busy_with_message(const struct smtp_session *s)
{
	return s->state == S_DATA || s->state == S_COMMITTING || s->state == S_CLOSING;
}

static void
say_goodbye(struct smtp_session *s)
{
	reply(s, "421 4.3.2 %s Service shutting down, try again later", s->srv->hostname);
	session_close(s);
}

void
smtp_session_drain_all(struct smtp_server *srv)
{
	for (size_t b = 0; b < srv->nbuckets; b++)
		for (struct smtp_session *s = srv->buckets[b]; s; s = s->next)
			if (!busy_with_message(s))
				say_goodbye(s);
}

static void
process(struct smtp_session *s)
{
	while (s->state != S_CLOSING && s->state != S_COMMITTING) {
		if (s->srv->draining && !busy_with_message(s)) {
			say_goodbye(s);
			return;
		}
		if (ev_stream_output_len(s->stream) > OUTPUT_HIGH_WATER) {
			/* the client does not read its replies: wait until it does */
			s->waiting_output = true;
			ev_stream_pause_read(s->stream);
			return;
		}
		if (s->state == S_DATA) {
			read_data(s);
			if (s->state == S_DATA)
				return; /* need more input */
			continue;
		}
		switch (ev_stream_read_line(s->stream, &s->line,
		                            (size_t)cfg(s)->smtp_max_line_length - 2)) {
		case EV_LINE_NONE:
			return;
		case EV_LINE_TOO_LONG:
			error_reply(s, "500 5.5.2 Error: line too long");
			break;
		case EV_LINE_OK:
			command(s, s->line.data);
			break;
		}
	}
}

static void
on_read(void *arg)
{
	process(arg);
}

static void
on_event(void *arg, enum ev_stream_event what)
{
	struct smtp_session *s = arg;

	switch (what) {
	case EV_STREAM_DRAINED:
		if (s->waiting_output) {
			s->waiting_output = false;
			ev_stream_resume_read(s->stream);
			process(s);
		}
		return;
	case EV_STREAM_TIMEOUT:
		if (s->state == S_COMMITTING)
			return; /* the store decides; our reply follows */
		mb_info("smtp: timeout: client=[%s] state=%d", s->peer_host, s->state);
		reply(s, "421 4.4.2 %s Error: timeout exceeded", s->srv->hostname);
		session_close(s);
		return;
	case EV_STREAM_FLUSHED:
		session_free(s);
		return;
	case EV_STREAM_EOF:
	case EV_STREAM_ERROR:
		if (s->state == S_DATA)
			mb_info("smtp: lost connection during DATA: client=[%s]", s->peer_host);
		session_free(s);
		return;
	}
}

void
smtp_session_accept(struct smtp_server *srv, int fd, const struct mb_sockaddr *peer,
                    const struct mb_sockaddr *local)
{
	struct smtp_session *s = mb_calloc(1, sizeof(*s));

	s->srv = srv;
	s->id = srv->next_id++;
	s->peer = *peer;
	mb_sockaddr_host(peer, s->peer_host, sizeof(s->peer_host));
	s->peer_loopback = mb_sockaddr_is_loopback(peer);
	for (size_t i = 0; i < srv->nallow; i++)
		if (mb_cidr_match(&srv->allow[i], peer))
			s->peer_allowed = true;
	s->stream = ev_stream_new(srv->loop, fd, on_read, on_event, s);
	if (s->stream == NULL) {
		free(s);
		return;
	}
	smtp_server_register(srv, s);
	if ((int64_t)srv->nsessions > srv->cfg->server.smtp_max_sessions) {
		mb_warn("smtp: refused: too many sessions (%zu) client=[%s]", srv->nsessions - 1,
		        s->peer_host);
		reply(s, "421 4.3.2 %s Too many sessions, try again later", srv->hostname);
		session_close(s);
		return;
	}
	ev_stream_set_timeout(s->stream, srv->cfg->server.smtp_timeout * 1000);
	reply(s, "220 %s ESMTP mailbridge", srv->hostname);
}
