/* The sendmail-compatible front end: argv and stdin in, one ESMTP transaction to the daemon. */
#include "cli/cli.h"
#include "cli/cli_sendmail.h"
#include "config/config.h"

#include <errno.h>
#include <gmime/gmime.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sysexits.h>
#include <unistd.h>

/* ---- options ---- */

typedef int (*sendmail_opt_cb)(struct sendmail_opts *o, char letter, const char *arg,
                               struct mb_err *err);

struct sendmail_option {
	char letter;
	bool has_arg;
	sendmail_opt_cb fn;
};

static bool
sendmail_addr_is_clean(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c < 0x20 || c == 0x7f || c == ' ' || c == '<' || c == '>')
			return false;
	}
	return true;
}

static int
sendmail_opt_t(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	o->read_headers = true;
	return 0;
}

static int
sendmail_opt_i(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	o->ignore_dots = true;
	return 0;
}

static int
sendmail_opt_ignore(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	return 0;
}

/* -f ADDR, -r ADDR: "<>" or "" is the null sender; "<a@x>" is taken as "a@x" (kept in a
 * static buffer: one command line per process). */
static int
sendmail_opt_f(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	static char unbracketed[1024];
	size_t n = strlen(arg);

	if (n >= 2 && arg[0] == '<' && arg[n - 1] == '>') {
		if (n - 2 >= sizeof(unbracketed)) {
			mb_err_set(err, MB_EINVAL, "option -%c: address too long", letter);
			return -1;
		}
		memcpy(unbracketed, arg + 1, n - 2);
		unbracketed[n - 2] = '\0';
		arg = unbracketed;
	}
	if (!sendmail_addr_is_clean(arg) || strlen(arg) > 512) {
		mb_err_set(err, MB_EINVAL, "option -%c: '%s' is not a valid sender address", letter,
		           arg);
		return -1;
	}
	o->sender = arg;
	return 0;
}

static int
sendmail_opt_F(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	o->full_name = arg;
	return 0;
}

static int
sendmail_opt_C(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	o->config_path = arg;
	return 0;
}

/* -oi stops "." from ending input; every other -oX is a sendmail setting we do not need. */
static int
sendmail_opt_o(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	if (strcmp(arg, "i") == 0)
		o->ignore_dots = true;
	return 0;
}

static int
sendmail_opt_b(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	if (strcmp(arg, "m") == 0)
		return 0;
	mb_err_set(err, MB_EINVAL,
	           "option -b%s: mode not supported (only -bm, delivering one message read from "
	           "stdin, is)",
	           arg);
	return -1;
}

static int
sendmail_opt_mode(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	mb_err_set(err, MB_EINVAL,
	           "option -%c%s: mode not supported (mailbridge has no local queue or aliases; "
	           "see `mailbridge queue`)",
	           letter, arg != NULL ? arg : "");
	return -1;
}

static int
sendmail_opt_A(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	if (strcmp(arg, "m") == 0 || strcmp(arg, "c") == 0)
		return 0;
	mb_err_set(err, MB_EINVAL, "option -A%s: unknown (only -Am and -Ac are accepted)", arg);
	return -1;
}

static int
sendmail_opt_e(struct sendmail_opts *o, char letter, const char *arg, struct mb_err *err)
{
	if (strlen(arg) == 1 && strchr("empqw", arg[0]) != NULL)
		return 0;
	mb_err_set(err, MB_EINVAL, "option -e%s: unknown (accepted: -em -ep -eq -ee -ew)", arg);
	return -1;
}

static const struct sendmail_option sendmail_options[] = {
    {'t', false, sendmail_opt_t},      {'i', false, sendmail_opt_i},
    {'f', true, sendmail_opt_f},       {'r', true, sendmail_opt_f},
    {'F', true, sendmail_opt_F},       {'C', true, sendmail_opt_C},
    {'c', true, sendmail_opt_C},       {'o', true, sendmail_opt_o},
    {'b', true, sendmail_opt_b},       {'A', true, sendmail_opt_A},
    {'e', true, sendmail_opt_e},       {'v', false, sendmail_opt_ignore},
    {'U', false, sendmail_opt_ignore}, {'G', false, sendmail_opt_ignore},
    {'m', false, sendmail_opt_ignore}, {'n', false, sendmail_opt_ignore},
    {'B', true, sendmail_opt_ignore},  {'N', true, sendmail_opt_ignore},
    {'R', true, sendmail_opt_ignore},  {'V', true, sendmail_opt_ignore},
    {'L', true, sendmail_opt_ignore},  {'X', true, sendmail_opt_ignore},
    {'h', true, sendmail_opt_ignore},  {'I', false, sendmail_opt_mode},
    {'q', false, sendmail_opt_mode},
};

static const struct sendmail_option *
sendmail_option_find(char letter)
{
	size_t i;

	for (i = 0; i < sizeof(sendmail_options) / sizeof(sendmail_options[0]); i++)
		if (sendmail_options[i].letter == letter)
			return &sendmail_options[i];
	return NULL;
}

/* One "-xyz" word; *i advances when an option takes the next word as its value. */
static int
sendmail_parse_word(int argc, char **argv, int *i, struct sendmail_opts *o, struct mb_err *err)
{
	const char *p;

	if (argv[*i][1] == '-') {
		mb_err_set(err, MB_EINVAL, "unknown option %s", argv[*i]);
		return -1;
	}
	for (p = argv[*i] + 1; *p != '\0'; p++) {
		const struct sendmail_option *opt = sendmail_option_find(*p);
		const char *arg;

		if (opt == NULL) {
			mb_err_set(err, MB_EINVAL, "unknown option -%c", *p);
			return -1;
		}
		if (opt->fn == sendmail_opt_mode)
			return opt->fn(o, *p, p + 1, err);
		if (!opt->has_arg) {
			if (opt->fn(o, *p, NULL, err) < 0)
				return -1;
			continue;
		}
		if (p[1] != '\0') {
			arg = p + 1;
		} else if (*i + 1 < argc) {
			arg = argv[++*i];
		} else {
			mb_err_set(err, MB_EINVAL, "option -%c needs a value", *p);
			return -1;
		}
		return opt->fn(o, *p, arg, err);
	}
	return 0;
}

int
sendmail_parse_args(int argc, char **argv, struct sendmail_opts *o, struct mb_err *err)
{
	bool opts_done = false;
	int i;

	memset(o, 0, sizeof(*o));
	o->rcpts = mb_calloc((size_t)(argc > 0 ? argc : 1), sizeof(*o->rcpts));
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!opts_done && strcmp(a, "--") == 0) {
			opts_done = true;
			continue;
		}
		if (opts_done || a[0] != '-' || a[1] == '\0') {
			o->rcpts[o->nrcpts++] = a;
			continue;
		}
		if (sendmail_parse_word(argc, argv, &i, o, err) < 0) {
			sendmail_opts_release(o);
			return -1;
		}
	}
	if (!o->read_headers && o->nrcpts == 0) {
		mb_err_set(err, MB_EINVAL, "no recipients: give addresses or use -t");
		sendmail_opts_release(o);
		return -1;
	}
	return 0;
}

void
sendmail_opts_release(struct sendmail_opts *o)
{
	free(o->rcpts);
	o->rcpts = NULL;
	o->nrcpts = 0;
}

/* ---- input: line ends to CRLF, the "." terminator ---- */

struct sendmail_conv {
	struct mb_buf *out;
	bool ignore_dots;
	bool after_cr; /* the last byte was a CR, already written as CRLF */
	bool bol;      /* at the beginning of a line */
	bool dot;      /* the line so far is a single ".", not yet written */
	bool done;     /* a lone "." ended the input */
};

static void
sendmail_conv_feed(struct sendmail_conv *cv, const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && !cv->done; i++) {
		char c = p[i];

		if (cv->after_cr) {
			cv->after_cr = false;
			if (c == '\n')
				continue;
		}
		if (c == '\r' || c == '\n') {
			if (cv->dot && !cv->ignore_dots) {
				cv->done = true;
				break;
			}
			if (cv->dot)
				mb_buf_append(cv->out, ".", 1);
			mb_buf_append(cv->out, "\r\n", 2);
			cv->dot = false;
			cv->bol = true;
			cv->after_cr = c == '\r';
			continue;
		}
		if (cv->bol && c == '.') {
			cv->dot = true;
			cv->bol = false;
			continue;
		}
		if (cv->dot) {
			mb_buf_append(cv->out, ".", 1);
			cv->dot = false;
		}
		/* The rest of the line in one go. */
		size_t j = i + 1;
		while (j < n && p[j] != '\r' && p[j] != '\n')
			j++;
		mb_buf_append(cv->out, p + i, j - i);
		cv->bol = false;
		i = j - 1;
	}
}

/* A "." on the last line without a line end is the terminator too, unless -i. */
static void
sendmail_conv_finish(struct sendmail_conv *cv, size_t start)
{
	if (cv->dot && cv->ignore_dots)
		mb_buf_append(cv->out, ".", 1);
	else if (cv->dot)
		cv->bol = true; /* the "." was the terminator; what came before ends in CRLF */
	if (cv->out->len > start && !cv->bol)
		mb_buf_append(cv->out, "\r\n", 2);
}

int
sendmail_read_input(FILE *in, bool ignore_dots, size_t max, struct mb_buf *out, struct mb_err *err)
{
	struct sendmail_conv cv = {out, ignore_dots, false, true, false, false};
	size_t total = 0, start = out->len;
	char chunk[65536];

	while (!cv.done) {
		size_t n = fread(chunk, 1, sizeof(chunk), in);

		if (n == 0)
			break;
		total += n;
		if (total > max) {
			mb_err_set(
			    err, MB_EINVAL,
			    "message too big: more than %zu bytes on stdin (the limit is %zu "
			    "MB)",
			    max, max / (1024 * 1024));
			return -1;
		}
		sendmail_conv_feed(&cv, chunk, n);
	}
	if (!cv.done && ferror(in)) {
		mb_err_set(err, MB_EIO, "cannot read the message from stdin: %s", strerror(errno));
		return -1;
	}
	sendmail_conv_finish(&cv, start);
	return 0;
}

/* ---- the header block ---- */

struct sendmail_field {
	size_t start, end;  /* the raw field, continuation lines and final line end included */
	size_t name_len;    /* bytes before the colon */
	size_t value_start; /* just after the colon */
};

struct sendmail_hdrs {
	struct sendmail_field *v;
	size_t n, cap;
	size_t end;     /* where the header block ends (the separator line, or the body) */
	bool has_sep;   /* an empty line follows the header block */
	bool body_left; /* non-header lines follow with no separator */
};

static bool
sendmail_is_field_line(const char *p, size_t n, size_t *name_len)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == ':') {
			*name_len = i;
			return i > 0;
		}
		if (c < 33 || c > 126)
			return false;
	}
	return false;
}

static void
sendmail_hdrs_scan(const char *in, size_t len, struct sendmail_hdrs *h)
{
	size_t pos = 0;

	memset(h, 0, sizeof(*h));
	while (pos < len) {
		const char *nl = memchr(in + pos, '\n', len - pos);
		size_t next = nl != NULL ? (size_t)(nl - in) + 1 : len;
		size_t clen = (nl != NULL ? (size_t)(nl - in) : len) - pos, name_len;

		if (clen > 0 && in[pos + clen - 1] == '\r')
			clen--;
		if (clen == 0) {
			h->has_sep = true;
			break;
		}
		if (in[pos] == ' ' || in[pos] == '\t') {
			if (h->n == 0) {
				h->body_left = true;
				break;
			}
			h->v[h->n - 1].end = next;
		} else if (sendmail_is_field_line(in + pos, clen, &name_len)) {
			if (h->n == h->cap) {
				h->cap = h->cap ? h->cap * 2 : 32;
				h->v = mb_realloc(h->v, h->cap * sizeof(*h->v));
			}
			h->v[h->n++] =
			    (struct sendmail_field){pos, next, name_len, pos + name_len + 1};
		} else {
			h->body_left = true;
			break;
		}
		pos = next;
	}
	h->end = pos;
}

static bool
sendmail_field_is(const char *in, const struct sendmail_field *f, const char *name)
{
	size_t n = strlen(name);

	return f->name_len == n && strncasecmp(in + f->start, name, n) == 0;
}

/* The value with CR and LF removed (RFC 5322 unfolding). */
static char *
sendmail_field_value(const char *in, const struct sendmail_field *f)
{
	char *v = mb_malloc(f->end - f->value_start + 1);
	size_t i, n = 0;

	for (i = f->value_start; i < f->end; i++)
		if (in[i] != '\r' && in[i] != '\n')
			v[n++] = in[i];
	v[n] = '\0';
	return v;
}

/* ---- recipients ---- */

struct sendmail_rcpts {
	char **v;
	size_t n, cap;
};

static int
sendmail_rcpts_add(struct sendmail_rcpts *r, const char *addr, const char *where,
                   struct mb_err *err)
{
	size_t i;

	if (*addr == '\0')
		return 0;
	if (!sendmail_addr_is_clean(addr) || strlen(addr) > 512) {
		mb_err_set(err, MB_EINVAL, "%s: '%s' is not a valid address", where, addr);
		return -1;
	}
	for (i = 0; i < r->n; i++)
		if (strcasecmp(r->v[i], addr) == 0)
			return 0;
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 16;
		r->v = mb_realloc(r->v, r->cap * sizeof(*r->v));
	}
	r->v[r->n++] = mb_strdup(addr);
	return 0;
}

static int
sendmail_rcpts_add_list(struct sendmail_rcpts *r, InternetAddressList *l, const char *where,
                        struct mb_err *err)
{
	int i, n = internet_address_list_length(l);

	for (i = 0; i < n; i++) {
		InternetAddress *ia = internet_address_list_get_address(l, i);

		if (INTERNET_ADDRESS_IS_GROUP(ia)) {
			InternetAddressList *members =
			    internet_address_group_get_members(INTERNET_ADDRESS_GROUP(ia));
			if (members != NULL && sendmail_rcpts_add_list(r, members, where, err) < 0)
				return -1;
		} else if (INTERNET_ADDRESS_IS_MAILBOX(ia)) {
			const char *addr =
			    internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
			if (addr != NULL && sendmail_rcpts_add(r, addr, where, err) < 0)
				return -1;
		}
	}
	return 0;
}

static bool
sendmail_is_blank(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s != ' ' && *s != '\t')
			return false;
	return true;
}

/* Adds the addresses of one header value or one argument; "Undisclosed recipients:;" adds
 * none. An address list GMime cannot parse at all is an error, not a silent loss. */
static int
sendmail_rcpts_parse(struct sendmail_rcpts *r, const char *value, const char *where,
                     struct mb_err *err)
{
	InternetAddressList *l;
	int rc;

	if (sendmail_is_blank(value))
		return 0;
	l = internet_address_list_parse(NULL, value);
	if (l == NULL) {
		mb_err_set(err, MB_EINVAL, "%s: cannot parse the address list '%s'", where, value);
		return -1;
	}
	rc = sendmail_rcpts_add_list(r, l, where, err);
	g_object_unref(l);
	return rc;
}

/* The first mailbox of a From: value, or NULL. */
static char *
sendmail_from_addr(const char *value)
{
	InternetAddressList *l = internet_address_list_parse(NULL, value);
	char *addr = NULL;
	int i, n;

	if (l == NULL)
		return NULL;
	n = internet_address_list_length(l);
	for (i = 0; i < n && addr == NULL; i++) {
		InternetAddress *ia = internet_address_list_get_address(l, i);
		const char *a;

		if (!INTERNET_ADDRESS_IS_MAILBOX(ia))
			continue;
		a = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia));
		if (a != NULL && *a != '\0' && sendmail_addr_is_clean(a))
			addr = mb_strdup(a);
	}
	g_object_unref(l);
	return addr;
}

/* ---- prepare ---- */

struct sendmail_seen {
	bool from, date, msgid;
	char *from_addr;
};

/* Walks the fields: collects -t recipients, notes From/Date/Message-ID, copies every field
 * except Bcc to out. */
static int
sendmail_copy_fields(const char *in, const struct sendmail_hdrs *h, const struct sendmail_opts *o,
                     struct sendmail_rcpts *r, struct sendmail_seen *seen, struct mb_buf *out,
                     struct mb_err *err)
{
	static const char *const rcpt_fields[] = {"To", "Cc", "Bcc"};
	size_t i, k;

	for (i = 0; i < h->n; i++) {
		const struct sendmail_field *f = &h->v[i];
		bool is_bcc = sendmail_field_is(in, f, "Bcc");

		for (k = 0; o->read_headers && k < 3; k++) {
			if (sendmail_field_is(in, f, rcpt_fields[k])) {
				char *v = sendmail_field_value(in, f);
				int rc = sendmail_rcpts_parse(r, v, rcpt_fields[k], err);
				free(v);
				if (rc < 0)
					return -1;
			}
		}
		if (sendmail_field_is(in, f, "From") && !seen->from) {
			char *v = sendmail_field_value(in, f);
			seen->from = true;
			seen->from_addr = sendmail_from_addr(v);
			free(v);
		}
		seen->date |= sendmail_field_is(in, f, "Date");
		seen->msgid |= sendmail_field_is(in, f, "Message-ID");
		if (!is_bcc)
			mb_buf_append(out, in + f->start, f->end - f->start);
	}
	if (out->len > 0 && out->data[out->len - 1] != '\n')
		mb_buf_append(out, "\r\n", 2);
	return 0;
}

/* "From: Name <addr>" with Name quoted or RFC 2047-encoded as needed, or "From: addr". */
static void
sendmail_add_from(struct mb_buf *out, const char *name, const char *addr)
{
	InternetAddress *ia;
	char *clean, *s, *p;

	if (name == NULL || sendmail_is_blank(name)) {
		mb_buf_printf(out, "From: %s\r\n", addr);
		return;
	}
	clean = mb_strdup(name);
	for (p = clean; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = ' ';
	ia = internet_address_mailbox_new(clean, addr);
	s = internet_address_to_string(ia, NULL, TRUE);
	for (p = s; *p != '\0'; p++)
		if (*p == '\r' || *p == '\n')
			*p = ' ';
	mb_buf_printf(out, "From: %s\r\n", s);
	g_free(s);
	g_object_unref(ia);
	free(clean);
}

static bool
sendmail_has_8bit(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)p[i] >= 0x80)
			return true;
	return false;
}

int
sendmail_prepare(const char *in, size_t len, const struct sendmail_opts *o,
                 const struct sendmail_env *env, struct sendmail_msg *m, struct mb_err *err)
{
	struct sendmail_hdrs h;
	struct sendmail_rcpts r = {0};
	struct sendmail_seen seen = {0};
	char *own_addr;
	size_t i;

	g_mime_init();
	memset(m, 0, sizeof(*m));
	sendmail_hdrs_scan(in, len, &h);
	if (sendmail_copy_fields(in, &h, o, &r, &seen, &m->data, err) < 0)
		goto fail;
	for (i = 0; i < o->nrcpts; i++)
		if (sendmail_rcpts_parse(&r, o->rcpts[i], "recipient argument", err) < 0)
			goto fail;
	if (r.n == 0) {
		mb_err_set(err, MB_ENOTFOUND, "no recipients: give addresses or use -t");
		goto fail;
	}

	own_addr = mb_asprintf("%s@%s", env->login, env->hostname);
	if (o->sender != NULL)
		m->sender = mb_strdup(o->sender);
	else if (seen.from_addr != NULL)
		m->sender = mb_strdup(seen.from_addr);
	else
		m->sender = mb_strdup(own_addr);
	if (!seen.from)
		sendmail_add_from(&m->data, o->full_name, *m->sender ? m->sender : own_addr);
	free(own_addr);
	if (!seen.date)
		mb_buf_printf(&m->data, "Date: %s\r\n", env->date);
	if (!seen.msgid)
		mb_buf_printf(&m->data, "Message-ID: <%s@%s>\r\n", env->msgid, env->hostname);

	if (h.has_sep)
		mb_buf_append(&m->data, in + h.end, len - h.end);
	else if (h.body_left) {
		mb_buf_append(&m->data, "\r\n", 2);
		mb_buf_append(&m->data, in + h.end, len - h.end);
	}
	if (m->data.len > 0 && m->data.data[m->data.len - 1] != '\n')
		mb_buf_append(&m->data, "\r\n", 2);

	m->rcpts = r.v;
	m->nrcpts = r.n;
	m->has_8bit = sendmail_has_8bit(m->data.data, m->data.len);
	m->needs_utf8 = sendmail_has_8bit(m->sender, strlen(m->sender));
	for (i = 0; i < r.n; i++)
		m->needs_utf8 |= sendmail_has_8bit(r.v[i], strlen(r.v[i]));
	free(seen.from_addr);
	free(h.v);
	return 0;
fail:
	for (i = 0; i < r.n; i++)
		free(r.v[i]);
	free(r.v);
	free(seen.from_addr);
	free(h.v);
	mb_buf_release(&m->data);
	return -1;
}

void
sendmail_msg_release(struct sendmail_msg *m)
{
	size_t i;

	mb_buf_release(&m->data);
	for (i = 0; i < m->nrcpts; i++)
		free(m->rcpts[i]);
	free(m->rcpts);
	free(m->sender);
	memset(m, 0, sizeof(*m));
}

/* ---- where the daemon is ---- */

/* 0.0.0.0 and :: listen on loopback too. */
static bool
sendmail_addr_to_loopback(struct mb_sockaddr *a)
{
	if (mb_sockaddr_is_loopback(a))
		return true;
	if (a->ss.ss_family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
		if (in->sin_addr.s_addr == htonl(INADDR_ANY)) {
			in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			return true;
		}
	} else if (a->ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->ss;
		if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr)) {
			in6->sin6_addr = in6addr_loopback;
			return true;
		}
	}
	return false;
}

int
sendmail_target(const char *config_path, struct mb_sockaddr *out, struct mb_err *err)
{
	const char *env = getenv("MAILBRIDGE_SMTP");
	struct config *c;
	struct mb_err cerr;
	size_t i;

	if (env != NULL && *env != '\0') {
		struct mb_err perr;

		if (mb_sockaddr_parse(env, out, &perr) < 0) {
			mb_err_set(err, MB_EINVAL, "MAILBRIDGE_SMTP: %s", perr.msg);
			return -1;
		}
		return 0;
	}
	c = config_load(config_default_path(config_path), &cerr);
	if (c == NULL) {
		mb_debug("sendmail: config: %s", cerr.msg);
	} else {
		for (i = 0; i < c->server.smtp_listen.n; i++) {
			if (mb_sockaddr_parse(c->server.smtp_listen.v[i], out, NULL) == 0 &&
			    sendmail_addr_to_loopback(out)) {
				config_free(c);
				return 0;
			}
		}
		config_free(c);
	}
	return mb_sockaddr_parse(SENDMAIL_DEFAULT_SMTP, out, err);
}

int
sendmail_connect(const struct mb_sockaddr *addr, struct mb_err *err)
{
	struct timeval tv = {SENDMAIL_TIMEOUT_SEC, 0};
	char host[64];
	int fd, rc;

	mb_sockaddr_host(addr, host, sizeof(host));
	fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		mb_err_set(err, MB_EIO, "socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	do
		rc = connect(fd, (const struct sockaddr *)&addr->ss, addr->len);
	while (rc < 0 && errno == EINTR);
	if (rc < 0) {
		int e = errno;
		mb_err_set(err, MB_ETEMP,
		           "cannot reach the mailbridge daemon at %s port %d: %s (is `mailbridge "
		           "serve` running? set MAILBRIDGE_SMTP=host:port or smtp_listen); the "
		           "message was not sent",
		           host, mb_sockaddr_port(addr),
		           e == EINPROGRESS || e == EAGAIN ? "timed out" : strerror(e));
		close(fd);
		return -1;
	}
	return fd;
}

/* ---- the SMTP client ---- */

struct sendmail_smtp {
	int fd;
	char in[4096];
	size_t inlen;
	struct mb_buf out;
	bool broken; /* the connection is unusable: do not even say QUIT */
};

struct sendmail_reply {
	int code;
	char text[480];
	bool size, eightbit, smtputf8; /* EHLO keywords */
};

/* Which sysexits code a 5xx gets, per command. */
enum sendmail_stage {
	SENDMAIL_GREETING,
	SENDMAIL_EHLO,
	SENDMAIL_MAIL,
	SENDMAIL_RCPT,
	SENDMAIL_DATA,
	SENDMAIL_END
};

static int
sendmail_smtp_write(struct sendmail_smtp *s, const char *p, size_t n, struct mb_err *err)
{
	while (n > 0) {
		ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			s->broken = true;
			mb_err_set(err, MB_ETEMP, "sending to the mailbridge daemon failed: %s",
			           w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
			               ? "timed out"
			               : strerror(errno));
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One reply line into line[] (CRLF stripped). */
static int
sendmail_smtp_line(struct sendmail_smtp *s, char *line, size_t cap, struct mb_err *err)
{
	for (;;) {
		char *nl = memchr(s->in, '\n', s->inlen);
		ssize_t r;

		if (nl != NULL) {
			size_t n = (size_t)(nl - s->in) + 1, l = n - 1;
			if (l > 0 && s->in[l - 1] == '\r')
				l--;
			if (l >= cap)
				l = cap - 1;
			memcpy(line, s->in, l);
			line[l] = '\0';
			memmove(s->in, s->in + n, s->inlen - n);
			s->inlen -= n;
			return 0;
		}
		if (s->inlen == sizeof(s->in)) {
			s->broken = true;
			mb_err_set(err, MB_EIO,
			           "the daemon sent a reply line longer than %zu bytes",
			           sizeof(s->in));
			return -1;
		}
		r = recv(s->fd, s->in + s->inlen, sizeof(s->in) - s->inlen, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			s->broken = true;
			mb_err_set(err, MB_ETEMP, "%s",
			           r == 0 ? "the mailbridge daemon closed the connection"
			           : errno == EAGAIN || errno == EWOULDBLOCK
			               ? "no answer from the mailbridge daemon within 60 s"
			               : strerror(errno));
			return -1;
		}
		s->inlen += (size_t)r;
	}
}

static void
sendmail_reply_text_add(struct sendmail_reply *rp, const char *line)
{
	size_t n = strlen(rp->text), i;

	if (n > 0 && n + 1 < sizeof(rp->text))
		rp->text[n++] = ' ';
	for (i = 0; line[i] != '\0' && n + 1 < sizeof(rp->text); i++) {
		unsigned char c = (unsigned char)line[i];
		rp->text[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	rp->text[n] = '\0';
}

/* A whole (multi-line) reply; the text is the lines joined, controls made harmless. */
static int
sendmail_smtp_reply(struct sendmail_smtp *s, struct sendmail_reply *rp, struct mb_err *err)
{
	char line[1024];

	memset(rp, 0, sizeof(*rp));
	for (;;) {
		const char *kw;

		if (sendmail_smtp_line(s, line, sizeof(line), err) < 0)
			return -1;
		if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
		    line[1] > '9' || line[2] < '0' || line[2] > '9' ||
		    (line[3] != '\0' && line[3] != ' ' && line[3] != '-') ||
		    (rp->code != 0 && atoi(line) != rp->code)) {
			s->broken = true;
			line[80] = '\0';
			mb_err_set(err, MB_EIO, "the daemon sent a malformed reply '%s'", line);
			return -1;
		}
		rp->code = atoi(line);
		sendmail_reply_text_add(rp, line);
		kw = line[3] != '\0' ? line + 4 : "";
		rp->size |= mb_str_has_prefix_ci(kw, "SIZE") && (kw[4] == '\0' || kw[4] == ' ');
		rp->eightbit |= strcasecmp(kw, "8BITMIME") == 0;
		rp->smtputf8 |= strcasecmp(kw, "SMTPUTF8") == 0;
		if (line[3] != '-')
			return 0;
	}
}

/* Maps a reply that is not the expected one to a sysexits code and a message. */
static int
sendmail_reply_fail(const struct sendmail_reply *rp, enum sendmail_stage stage, const char *what,
                    struct mb_err *err)
{
	if (rp->code >= 400 && rp->code < 500) {
		mb_err_set(err, MB_ETEMP,
		           "the daemon deferred %s: %s; the message was not sent, try "
		           "again later",
		           what, rp->text);
		return EX_TEMPFAIL;
	}
	if (rp->code < 500) {
		mb_err_set(err, MB_EIO, "unexpected reply to %s: %s", what, rp->text);
		return EX_PROTOCOL;
	}
	mb_err_set(err, MB_EINVAL, "the daemon refused %s: %s", what, rp->text);
	switch (stage) {
	case SENDMAIL_RCPT:
		return EX_NOUSER;
	case SENDMAIL_DATA:
	case SENDMAIL_END:
		return EX_DATAERR;
	case SENDMAIL_MAIL:
		return rp->code == 552 ? EX_DATAERR : EX_NOPERM;
	default:
		return EX_UNAVAILABLE;
	}
}

/* Sends a command, reads its reply; 0 when the reply is the expected class. */
static int
sendmail_smtp_cmd(struct sendmail_smtp *s, const char *cmd, int want, enum sendmail_stage stage,
                  const char *what, struct sendmail_reply *rp, struct mb_err *err)
{
	if (cmd != NULL && sendmail_smtp_write(s, cmd, strlen(cmd), err) < 0)
		return EX_TEMPFAIL;
	if (sendmail_smtp_reply(s, rp, err) < 0)
		return err != NULL && err->code == MB_ETEMP ? EX_TEMPFAIL : EX_PROTOCOL;
	if (rp->code / 100 == want / 100)
		return EX_OK;
	return sendmail_reply_fail(rp, stage, what, err);
}

/* The message, dot-stuffed, then the terminating ".". */
static int
sendmail_smtp_data(struct sendmail_smtp *s, const struct sendmail_msg *m, struct mb_err *err)
{
	const char *p = m->data.data, *end = p + m->data.len;
	bool bol = true;

	mb_buf_reset(&s->out);
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl != NULL ? (size_t)(nl - p) + 1 : (size_t)(end - p);

		if (*p == '.')
			mb_buf_append(&s->out, ".", 1);
		mb_buf_append(&s->out, p, n);
		p += n;
		bol = p[-1] == '\n';
		if (s->out.len >= 65536) {
			if (sendmail_smtp_write(s, s->out.data, s->out.len, err) < 0)
				return -1;
			mb_buf_reset(&s->out);
		}
	}
	mb_buf_puts(&s->out, bol ? ".\r\n" : "\r\n.\r\n");
	return sendmail_smtp_write(s, s->out.data, s->out.len, err);
}

static int
sendmail_smtp_envelope(struct sendmail_smtp *s, const struct sendmail_reply *ehlo,
                       const struct sendmail_msg *m, struct mb_err *err)
{
	struct sendmail_reply rp;
	char *cmd, *what;
	size_t i;
	int rc;

	if (m->needs_utf8 && !ehlo->smtputf8) {
		mb_err_set(err, MB_EINVAL,
		           "the daemon does not offer SMTPUTF8, needed for non-ASCII addresses");
		return EX_DATAERR;
	}
	mb_buf_reset(&s->out);
	mb_buf_printf(&s->out, "MAIL FROM:<%s>", m->sender);
	if (m->needs_utf8)
		mb_buf_puts(&s->out, " SMTPUTF8");
	if (m->has_8bit && ehlo->eightbit)
		mb_buf_puts(&s->out, " BODY=8BITMIME");
	if (ehlo->size)
		mb_buf_printf(&s->out, " SIZE=%zu", m->data.len);
	mb_buf_puts(&s->out, "\r\n");
	cmd = mb_buf_steal(&s->out);
	what = mb_asprintf("sender <%s>", m->sender);
	rc = sendmail_smtp_cmd(s, cmd, 250, SENDMAIL_MAIL, what, &rp, err);
	free(cmd);
	free(what);
	for (i = 0; rc == EX_OK && i < m->nrcpts; i++) {
		cmd = mb_asprintf("RCPT TO:<%s>\r\n", m->rcpts[i]);
		what = mb_asprintf("recipient <%s>", m->rcpts[i]);
		rc = sendmail_smtp_cmd(s, cmd, 250, SENDMAIL_RCPT, what, &rp, err);
		free(cmd);
		free(what);
	}
	return rc;
}

int
sendmail_smtp_send(int fd, const char *helo, const struct sendmail_msg *m, struct mb_err *err)
{
	struct sendmail_smtp s = {.fd = fd};
	struct sendmail_reply rp, ehlo;
	char *cmd;
	int rc;

	rc = sendmail_smtp_cmd(&s, NULL, 220, SENDMAIL_GREETING, "the connection", &rp, err);
	if (rc == EX_OK) {
		cmd = mb_asprintf("EHLO %s\r\n", helo);
		rc = sendmail_smtp_cmd(&s, cmd, 250, SENDMAIL_EHLO, "EHLO", &ehlo, err);
		free(cmd);
	}
	if (rc == EX_OK)
		rc = sendmail_smtp_envelope(&s, &ehlo, m, err);
	if (rc == EX_OK)
		rc = sendmail_smtp_cmd(&s, "DATA\r\n", 354, SENDMAIL_DATA, "DATA", &rp, err);
	if (rc == EX_OK)
		rc = sendmail_smtp_data(&s, m, err) < 0 ? EX_TEMPFAIL : EX_OK;
	if (rc == EX_OK)
		rc = sendmail_smtp_cmd(&s, NULL, 250, SENDMAIL_END, "the message", &rp, err);
	/* QUIT is a courtesy: its failure changes nothing, the message is taken or not. */
	if (!s.broken && sendmail_smtp_write(&s, "QUIT\r\n", 6, NULL) == 0)
		(void)sendmail_smtp_reply(&s, &rp, NULL);
	mb_buf_release(&s.out);
	return rc;
}

/* ---- the command ---- */

static bool
sendmail_name_is_clean(const char *s)
{
	if (s == NULL || *s == '\0' || strlen(s) > 255)
		return false;
	for (; *s != '\0'; s++)
		if (*s <= ' ' || *s == 0x7f || strchr("<>@()[],;:\\\"", *s) != NULL)
			return false;
	return true;
}

static void
sendmail_env_init(struct sendmail_env *env, char *host, size_t hostlen, char *date, size_t datelen,
                  char id[MB_ID_LEN + 1])
{
	const char *login = getenv("LOGNAME");
	struct passwd *pw;

	if (gethostname(host, hostlen) < 0 || !sendmail_name_is_clean(host))
		snprintf(host, hostlen, "localhost");
	host[hostlen - 1] = '\0';
	if (!sendmail_name_is_clean(login))
		login = getenv("USER");
	if (!sendmail_name_is_clean(login)) {
		pw = getpwuid(getuid());
		login = pw != NULL ? pw->pw_name : NULL;
	}
	if (!sendmail_name_is_clean(login))
		login = "nobody";
	mb_rfc5322_date(mb_now_ms(), date, datelen);
	mb_id_new(id);
	env->hostname = host;
	env->login = login;
	env->date = date;
	env->msgid = id;
}

static int
sendmail_run(const struct sendmail_opts *o, struct mb_err *err)
{
	struct mb_buf in = {0};
	struct sendmail_msg m;
	struct sendmail_env env;
	struct mb_sockaddr addr;
	char host[256], date[64], id[MB_ID_LEN + 1];
	int fd, rc;

	if (sendmail_read_input(stdin, o->ignore_dots, SENDMAIL_MAX_INPUT, &in, err) < 0) {
		mb_buf_release(&in);
		return err->code == MB_EIO ? EX_IOERR : EX_DATAERR;
	}
	sendmail_env_init(&env, host, sizeof(host), date, sizeof(date), id);
	rc = sendmail_prepare(in.data != NULL ? in.data : "", in.len, o, &env, &m, err);
	mb_buf_release(&in);
	if (rc < 0)
		return err->code == MB_ENOTFOUND ? EX_USAGE : EX_DATAERR;
	if (sendmail_target(o->config_path, &addr, err) < 0) {
		sendmail_msg_release(&m);
		return EX_CONFIG;
	}
	fd = sendmail_connect(&addr, err);
	if (fd < 0) {
		sendmail_msg_release(&m);
		return EX_TEMPFAIL;
	}
	rc = sendmail_smtp_send(fd, host, &m, err);
	close(fd);
	sendmail_msg_release(&m);
	return rc;
}

int
cli_sendmail_main(int argc, char **argv)
{
	struct sendmail_opts o;
	struct mb_err err = {0};
	int rc;

	if (sendmail_parse_args(argc, argv, &o, &err) < 0) {
		fprintf(stderr, "sendmail: %s\n", err.msg);
		fprintf(stderr, "usage: sendmail [-t] [-i] [-f FROM] [-F NAME] [-C FILE] [--] "
		                "[RCPT...]\n");
		return EX_USAGE;
	}
	rc = sendmail_run(&o, &err);
	if (rc != EX_OK)
		fprintf(stderr, "sendmail: %s\n", err.msg);
	sendmail_opts_release(&o);
	return rc;
}
