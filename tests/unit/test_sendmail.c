/* Unit tests for the sendmail front end: options, input, headers, and the SMTP client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "cli/cli_sendmail.h"

#define MAXARGS 12

/* ---- helpers ---- */

static int
argv_len(const char *const *argv)
{
	int n = 0;

	while (n < MAXARGS && argv[n] != NULL)
		n++;
	return n;
}

static char *
rcpts_join(char **v, size_t n)
{
	struct mb_buf b = {0};
	size_t i;

	mb_buf_puts(&b, "");
	for (i = 0; i < n; i++) {
		if (i > 0)
			mb_buf_puts(&b, ",");
		mb_buf_puts(&b, v[i]);
	}
	return mb_buf_steal(&b);
}

static void
convert(const char *in, bool ignore_dots, struct mb_buf *out)
{
	FILE *f = fmemopen((void *)in, strlen(in), "r");
	struct mb_err err;

	if (*in == '\0')
		f = fopen("/dev/null", "r");
	assert_non_null(f);
	assert_int_equal(sendmail_read_input(f, ignore_dots, SENDMAIL_MAX_INPUT, out, &err), 0);
	fclose(f);
}

/* ---- option parsing ---- */

struct args_case {
	const char *name;
	const char *argv[MAXARGS];
	int want_rc;
	bool t, i;
	const char *sender, *full_name, *config;
	const char *rcpts; /* comma-joined */
	const char *err;   /* substring of the error */
};

static const struct args_case args_cases[] = {
    {.name = "php",
     .argv = {"sendmail", "-t", "-i"},
     .want_rc = 0,
     .t = true,
     .i = true,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = ""},
    {.name = "php with -f",
     .argv = {"sendmail", "-t", "-i", "-fwww@x.org"},
     .want_rc = 0,
     .t = true,
     .i = true,
     .sender = "www@x.org"},
    {.name = "bundled -ti", .argv = {"sendmail", "-ti"}, .want_rc = 0, .t = true, .i = true},
    {.name = "-oi",
     .argv = {"sendmail", "-oi", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = true,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "-f separate",
     .argv = {"sendmail", "-f", "s@x", "a@x", "b@y"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = "s@x",
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x,b@y"},
    {.name = "-r",
     .argv = {"sendmail", "-r", "s@x", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = "s@x",
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "-f bracketed",
     .argv = {"sendmail", "-f", "<s@x>", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = "s@x",
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "-f null sender",
     .argv = {"sendmail", "-f<>", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = "",
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "-F both forms",
     .argv = {"sendmail", "-FWeb Site", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = NULL,
     .full_name = "Web Site",
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "-F separate",
     .argv = {"sendmail", "-F", "Ann", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = NULL,
     .full_name = "Ann",
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "-C",
     .argv = {"sendmail", "-C", "/tmp/m.conf", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = NULL,
     .full_name = NULL,
     .config = "/tmp/m.conf",
     .rcpts = "a@x"},
    {.name = "-- ends options",
     .argv = {"sendmail", "--", "-t", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = "-t,a@x"},
    {.name = "options after rcpt",
     .argv = {"sendmail", "a@x", "-i"},
     .want_rc = 0,
     .t = false,
     .i = true,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "-t with args",
     .argv = {"sendmail", "-t", "a@x"},
     .want_rc = 0,
     .t = true,
     .i = false,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "ignored -o*",
     .argv = {"sendmail", "-odi", "-odb", "-odq", "-oem", "-oee", "-oep", "-oeq", "-oew", "-om",
              "-oo", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "ignored -ob -oX -oQ",
     .argv = {"sendmail", "-obfoo", "-oXbar", "-oQ/var/spool", "a@x"},
     .want_rc = 0},
    {.name = "ignored flags",
     .argv = {"sendmail", "-v", "-U", "-bm", "-G", "-Am", "-Ac", "-em", "-ep", "-eq", "a@x"},
     .want_rc = 0},
    {.name = "ignored with values",
     .argv = {"sendmail", "-B", "8BITMIME", "-N", "never", "-R", "hdrs", "-V", "env1", "-L", "tag",
              "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "ignored -X -h",
     .argv = {"sendmail", "-X", "/tmp/log", "-h", "17", "-Vid", "a@x"},
     .want_rc = 0,
     .t = false,
     .i = false,
     .sender = NULL,
     .full_name = NULL,
     .config = NULL,
     .rcpts = "a@x"},
    {.name = "unknown option",
     .argv = {"sendmail", "-Z", "a@x"},
     .want_rc = -1,
     .err = "unknown option -Z"},
    {.name = "unknown long option",
     .argv = {"sendmail", "--help"},
     .want_rc = -1,
     .err = "unknown option --help"},
    {.name = "-bs", .argv = {"sendmail", "-bs"}, .want_rc = -1, .err = "-bs"},
    {.name = "-bd", .argv = {"sendmail", "-bd"}, .want_rc = -1, .err = "-bd"},
    {.name = "-bp", .argv = {"sendmail", "-bp"}, .want_rc = -1, .err = "-bp"},
    {.name = "-bi", .argv = {"sendmail", "-bi"}, .want_rc = -1, .err = "-bi"},
    {.name = "-bv", .argv = {"sendmail", "-bv", "a@x"}, .want_rc = -1, .err = "-bv"},
    {.name = "-I", .argv = {"sendmail", "-I"}, .want_rc = -1, .err = "-I"},
    {.name = "-q", .argv = {"sendmail", "-q"}, .want_rc = -1, .err = "-q"},
    {.name = "-q15m", .argv = {"sendmail", "-q15m"}, .want_rc = -1, .err = "-q15m"},
    {.name = "-f without value",
     .argv = {"sendmail", "a@x", "-f"},
     .want_rc = -1,
     .err = "-f needs a value"},
    {.name = "-f injection",
     .argv = {"sendmail", "-f", "a@x>\r\nRCPT TO:<b@y", "a@x"},
     .want_rc = -1,
     .err = "-f"},
    {.name = "bad -A", .argv = {"sendmail", "-Ax", "a@x"}, .want_rc = -1, .err = "-Ax"},
    {.name = "no recipients",
     .argv = {"sendmail", "-i"},
     .want_rc = -1,
     .err = "no recipients: give addresses or use -t"},
    {.name = "nothing at all", .argv = {"sendmail"}, .want_rc = -1, .err = "no recipients"},
};

static void
test_parse_args(void **state)
{
	size_t k;

	for (k = 0; k < sizeof(args_cases) / sizeof(args_cases[0]); k++) {
		const struct args_case *c = &args_cases[k];
		struct sendmail_opts o;
		struct mb_err err = {0};
		int rc;

		print_message("args: %s\n", c->name);
		rc = sendmail_parse_args(argv_len(c->argv), (char **)c->argv, &o, &err);
		assert_int_equal(rc, c->want_rc);
		if (rc < 0) {
			assert_non_null(strstr(err.msg, c->err));
			continue;
		}
		if (c->rcpts != NULL) {
			char *j = rcpts_join((char **)o.rcpts, o.nrcpts);
			assert_string_equal(j, c->rcpts);
			free(j);
			assert_int_equal(o.read_headers, c->t);
			assert_int_equal(o.ignore_dots, c->i);
		}
		if (c->sender != NULL)
			assert_string_equal(o.sender, c->sender);
		if (c->full_name != NULL)
			assert_string_equal(o.full_name, c->full_name);
		if (c->config != NULL)
			assert_string_equal(o.config_path, c->config);
		sendmail_opts_release(&o);
	}
}

/* ---- input ---- */

struct input_case {
	const char *name;
	const char *in;
	bool ignore_dots;
	const char *want;
};

static const struct input_case input_cases[] = {
    {.name = "LF", .in = "a\nb\n", .ignore_dots = true, .want = "a\r\nb\r\n"},
    {.name = "CRLF unchanged", .in = "a\r\nb\r\n", .ignore_dots = true, .want = "a\r\nb\r\n"},
    {.name = "bare CR", .in = "a\rb\r", .ignore_dots = true, .want = "a\r\nb\r\n"},
    {.name = "mix",
     .in = "a\r\nb\nc\rd\r\r\ne",
     .ignore_dots = true,
     .want = "a\r\nb\r\nc\r\nd\r\n\r\ne\r\n"},
    {.name = "CR CR LF", .in = "a\r\r\nb", .ignore_dots = true, .want = "a\r\n\r\nb\r\n"},
    {.name = "empty lines", .in = "\n\n", .ignore_dots = true, .want = "\r\n\r\n"},
    {.name = "no final newline", .in = "abc", .ignore_dots = true, .want = "abc\r\n"},
    {.name = "empty", .in = "", .ignore_dots = true, .want = ""},
    {.name = "dot ends without -i", .in = "a\n.\nb\n", .ignore_dots = false, .want = "a\r\n"},
    {.name = "dot CRLF ends without -i",
     .in = "a\r\n.\r\nb\r\n",
     .ignore_dots = false,
     .want = "a\r\n"},
    {.name = "dot CR ends without -i", .in = "a\r.\rb\r", .ignore_dots = false, .want = "a\r\n"},
    {.name = "dot at EOF without -i", .in = "a\n.", .ignore_dots = false, .want = "a\r\n"},
    {.name = "dot kept with -i", .in = "a\n.\nb\n", .ignore_dots = true, .want = "a\r\n.\r\nb\r\n"},
    {.name = "dot at EOF with -i", .in = "a\n.", .ignore_dots = true, .want = "a\r\n.\r\n"},
    {.name = "dot line start not alone",
     .in = "a\n.b\n..\n",
     .ignore_dots = false,
     .want = "a\r\n.b\r\n..\r\n"},
    {.name = "dot mid line", .in = "a.\n", .ignore_dots = false, .want = "a.\r\n"},
    {.name = "first line dot", .in = ".\nx\n", .ignore_dots = false, .want = ""},
};

static void
test_read_input(void **state)
{
	size_t k;

	for (k = 0; k < sizeof(input_cases) / sizeof(input_cases[0]); k++) {
		const struct input_case *c = &input_cases[k];
		struct mb_buf out = {0};

		print_message("input: %s\n", c->name);
		convert(c->in, c->ignore_dots, &out);
		assert_int_equal(out.len, strlen(c->want));
		if (out.len > 0)
			assert_memory_equal(out.data, c->want, out.len);
		mb_buf_release(&out);
	}
}

static void
test_read_input_too_big(void **state)
{
	const char *in = "0123456789\n0123456789\n";
	FILE *f = fmemopen((void *)in, strlen(in), "r");
	struct mb_buf out = {0};
	struct mb_err err = {0};

	assert_int_equal(sendmail_read_input(f, true, 21, &out, &err), -1);
	assert_non_null(strstr(err.msg, "too big"));
	fclose(f);
	mb_buf_release(&out);

	f = fmemopen((void *)in, strlen(in), "r");
	assert_int_equal(sendmail_read_input(f, true, 22, &out, &err), 0);
	fclose(f);
	mb_buf_release(&out);
}

/* ---- prepare ---- */

#define MAXCHECK 6

struct prep_case {
	const char *name;
	const char *argv[MAXARGS];
	const char *in; /* LF line ends; converted as stdin would be */
	int want_rc;
	const char *rcpts; /* comma-joined */
	const char *sender;
	const char *has[MAXCHECK];
	const char *lacks[MAXCHECK];
	const char *exact; /* whole output, when given */
};

static const struct sendmail_env test_env = {"host.example", "www-data",
                                             "Thu, 01 Jan 2026 00:00:00 +0000", "ID123"};

static const struct prep_case prep_cases[] = {
    {.name = "plain -t, all headers present",
     .argv = {"sendmail", "-t", "-i"},
     .in = "From: a@x\nTo: b@y\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <1@x>\n"
           "Subject: hi\n\nbody\n",
     .want_rc = 0,
     .rcpts = "b@y",
     .sender = "a@x",
     .exact = "From: a@x\r\nTo: b@y\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
              "Message-ID: <1@x>\r\nSubject: hi\r\n\r\nbody\r\n"},
    {.name = "group",
     .argv = {"sendmail", "-t"},
     .in = "To: Team: a@x, b@y;, c@z\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@x,b@y,c@z"},
    {.name = "comments and quoted commas",
     .argv = {"sendmail", "-t"},
     .in = "To: a@x (Alice), \"Doe, John\" <j@x>\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@x,j@x"},
    {.name = "encoded words",
     .argv = {"sendmail", "-t"},
     .in = "To: =?UTF-8?B?w6lsb2TDqWU=?= <e@x>, =?ISO-8859-1?Q?Andr=E9?= <andre@x>\n\nx\n",
     .want_rc = 0,
     .rcpts = "e@x,andre@x"},
    {.name = "undisclosed recipients",
     .argv = {"sendmail", "-t"},
     .in = "To: Undisclosed recipients:;\nBcc: hidden@x\n\nx\n",
     .want_rc = 0,
     .rcpts = "hidden@x",
     .has = {"To: Undisclosed recipients:;\r\n"},
     .lacks = {"hidden", "Bcc"}},
    {.name = "undisclosed only: no recipients",
     .argv = {"sendmail", "-t"},
     .in = "To: Undisclosed recipients:;\n\nx\n",
     .want_rc = -1},
    {.name = "folded headers",
     .argv = {"sendmail", "-t"},
     .in = "To: a@x,\n b@y,\n\tc@z\nSubject: s\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@x,b@y,c@z",
     .has = {"To: a@x,\r\n b@y,\r\n\tc@z\r\nSubject: s\r\n"}},
    {.name = "folded display name",
     .argv = {"sendmail", "-t"},
     .in = "To: \"Long\n Name\" <a@x>\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@x"},
    {.name = "several To headers, Cc, case",
     .argv = {"sendmail", "-t"},
     .in = "to: a@x\nTO: b@y\ncC: c@z\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@x,b@y,c@z"},
    {.name = "Bcc removed with continuation lines",
     .argv = {"sendmail", "-t", "-i"},
     .in = "From: s@x\nTo: a@x\nBcc: secret1@x,\n  secret2@x\nSubject: s\n\nbody Bcc: stays\n",
     .want_rc = 0,
     .rcpts = "a@x,secret1@x,secret2@x",
     .sender = "s@x",
     .has = {"To: a@x\r\nSubject: s\r\n", "body Bcc: stays"},
     .lacks = {"secret", "\r\nBcc:"}},
    {.name = "bcc lower case last header",
     .argv = {"sendmail", "-t"},
     .in = "To: a@x\nbcc: z@x\n\nbody\n",
     .want_rc = 0,
     .rcpts = "a@x,z@x",
     .lacks = {"z@x", "bcc"}},
    {.name = "dedupe keeps first spelling",
     .argv = {"sendmail", "-t", "A@X", "b@y"},
     .in = "To: Ann <a@X>, B@Y\nCc: a@x\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@X,B@Y"},
    {.name = "-t plus argument recipients",
     .argv = {"sendmail", "-t", "extra@x"},
     .in = "To: a@x\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@x,extra@x"},
    {.name = "no -t: headers are not recipients, Bcc still removed",
     .argv = {"sendmail", "r@x"},
     .in = "To: a@x\nBcc: b@x\n\nx\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .lacks = {"Bcc", "b@x"}},
    {.name = "argument with a list",
     .argv = {"sendmail", "a@x, Bob <b@y>"},
     .in = "Subject: s\n\nx\n",
     .want_rc = 0,
     .rcpts = "a@x,b@y"},
    {.name = "added From Date Message-ID",
     .argv = {"sendmail", "r@x"},
     .in = "Subject: s\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .sender = "www-data@host.example",
     .exact = "Subject: s\r\nFrom: www-data@host.example\r\n"
              "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <ID123@host.example>\r\n"
              "\r\nbody\r\n"},
    {.name = "added From with -f and -F",
     .argv = {"sendmail", "-f", "web@x", "-F", "Web Site", "r@x"},
     .in = "Subject: s\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .sender = "web@x",
     .has = {"\r\nFrom: Web Site <web@x>\r\n"}},
    {.name = "added From with quoted -F",
     .argv = {"sendmail", "-f", "web@x", "-F", "Doe, John", "r@x"},
     .in = "Subject: s\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .sender = "web@x",
     .has = {"From: \"Doe, John\" <web@x>\r\n"}},
    {.name = "added From with encoded -F",
     .argv = {"sendmail", "-f", "web@x", "-F", "Jos\xc3\xa9", "r@x"},
     .in = "Subject: s\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .sender = "web@x",
     .has = {"From: =?", "?= <web@x>\r\n"},
     .lacks = {"Jos\xc3\xa9"}},
    {.name = "-F ignored when From present",
     .argv = {"sendmail", "-F", "Nobody", "r@x"},
     .in = "From: Real <real@x>\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .sender = "real@x",
     .lacks = {"Nobody"}},
    {.name = "-f wins over From",
     .argv = {"sendmail", "-f", "bounce@x", "r@x"},
     .in = "From: Real <real@x>\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .sender = "bounce@x",
     .lacks = {"bounce"}},
    {.name = "null sender",
     .argv = {"sendmail", "-f", "", "r@x"},
     .in = "Subject: s\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .sender = "",
     .has = {"From: www-data@host.example\r\n"}},
    {.name = "Date and Message-ID kept, From added",
     .argv = {"sendmail", "r@x"},
     .in = "date: Mon, 1 Jan 2024 00:00:00 +0000\nmessage-id: <1@x>\n\nbody\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .has = {"From: www-data@host.example\r\n"},
     .lacks = {"Thu, 01 Jan 2026", "ID123"}},
    {.name = "headers only, no body",
     .argv = {"sendmail", "r@x"},
     .in = "Subject: s\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .exact = "Subject: s\r\nFrom: www-data@host.example\r\n"
              "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <ID123@host.example>\r\n"},
    {.name = "empty message",
     .argv = {"sendmail", "r@x"},
     .in = "",
     .want_rc = 0,
     .rcpts = "r@x",
     .exact = "From: www-data@host.example\r\n"
              "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <ID123@host.example>\r\n"},
    {.name = "no headers, body only",
     .argv = {"sendmail", "r@x"},
     .in = "hello world\nsecond\n",
     .want_rc = 0,
     .rcpts = "r@x",
     .exact = "From: www-data@host.example\r\n"
              "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <ID123@host.example>\r\n"
              "\r\nhello world\r\nsecond\r\n"},
    {.name = "body lines that look like headers stay",
     .argv = {"sendmail", "-t"},
     .in = "To: a@x\n\nBcc: not-a-header@x\nTo: nope@x\n",
     .want_rc = 0,
     .rcpts = "a@x",
     .has = {"\r\n\r\nBcc: not-a-header@x\r\nTo: nope@x\r\n"}},
    {.name = "8bit and utf8 flags",
     .argv = {"sendmail", "-t"},
     .in = "To: Jos\xc3\xa9 <jos\xc3\xa9@ex\xc3\xa4mple.com>\n\nbody\n",
     .want_rc = 0,
     .rcpts = "jos\xc3\xa9@ex\xc3\xa4mple.com"},
    {.name = "unparseable To",
     .argv = {"sendmail", "-t"},
     .in = "To: garbage <<<\n\nx\n",
     .want_rc = -1},
    {.name = "-t without any recipient header",
     .argv = {"sendmail", "-t"},
     .in = "Subject: s\n\nx\n",
     .want_rc = -1},
};

static void
check_prep(const struct prep_case *c, const struct sendmail_msg *m)
{
	size_t j;

	if (c->rcpts != NULL) {
		char *got = rcpts_join(m->rcpts, m->nrcpts);
		assert_string_equal(got, c->rcpts);
		free(got);
	}
	if (c->sender != NULL)
		assert_string_equal(m->sender, c->sender);
	for (j = 0; j < MAXCHECK && c->has[j] != NULL; j++) {
		if (strstr(m->data.data, c->has[j]) == NULL)
			fail_msg("'%s' not in:\n%s", c->has[j], m->data.data);
	}
	for (j = 0; j < MAXCHECK && c->lacks[j] != NULL; j++) {
		if (strstr(m->data.data, c->lacks[j]) != NULL)
			fail_msg("'%s' found in:\n%s", c->lacks[j], m->data.data);
	}
	if (c->exact != NULL)
		assert_string_equal(m->data.data, c->exact);
}

static void
test_prepare(void **state)
{
	size_t k;

	for (k = 0; k < sizeof(prep_cases) / sizeof(prep_cases[0]); k++) {
		const struct prep_case *c = &prep_cases[k];
		struct sendmail_opts o;
		struct sendmail_msg m;
		struct mb_buf in = {0};
		struct mb_err err = {0};
		int rc;

		print_message("prepare: %s\n", c->name);
		assert_int_equal(sendmail_parse_args(argv_len(c->argv), (char **)c->argv, &o, &err),
		                 0);
		convert(c->in, true, &in);
		rc = sendmail_prepare(in.data != NULL ? in.data : "", in.len, &o, &test_env, &m,
		                      &err);
		assert_int_equal(rc, c->want_rc);
		if (rc == 0) {
			check_prep(c, &m);
			sendmail_msg_release(&m);
		} else {
			assert_true(err.msg[0] != '\0');
		}
		mb_buf_release(&in);
		sendmail_opts_release(&o);
	}
}

static void
test_prepare_errors(void **state)
{
	const char *argv[] = {"sendmail", "-t", NULL};
	const char *in = "Subject: s\r\n\r\nx\r\n";
	struct sendmail_opts o;
	struct sendmail_msg m;
	struct mb_err err = {0};

	assert_int_equal(sendmail_parse_args(2, (char **)argv, &o, &err), 0);
	assert_int_equal(sendmail_prepare(in, strlen(in), &o, &test_env, &m, &err), -1);
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_string_equal(err.msg, "no recipients: give addresses or use -t");

	in = "To: a@x\r\n\r\nx\r\n";
	assert_int_equal(sendmail_prepare(in, strlen(in), &o, &test_env, &m, &err), 0);
	assert_false(m.has_8bit);
	assert_false(m.needs_utf8);
	sendmail_msg_release(&m);

	in = "To: a@x\r\n\r\nna\xc3\xafve\r\n";
	assert_int_equal(sendmail_prepare(in, strlen(in), &o, &test_env, &m, &err), 0);
	assert_true(m.has_8bit);
	assert_false(m.needs_utf8);
	sendmail_msg_release(&m);

	in = "To: jos\xc3\xa9@x\r\n\r\nx\r\n";
	assert_int_equal(sendmail_prepare(in, strlen(in), &o, &test_env, &m, &err), 0);
	assert_true(m.needs_utf8);
	sendmail_msg_release(&m);
	sendmail_opts_release(&o);
}

/* ---- the SMTP client against a scripted peer ---- */

#define MAXREPLIES 12
#define SILENT     "(silent)"

struct smtp_case {
	const char *name;
	const char *replies[MAXREPLIES]; /* greeting, then one per command; NULL closes */
	bool utf8_rcpt;
	int want_rc;
	const char *err;      /* substring of the error */
	const char *sent;     /* substring of what the client sent */
	const char *not_sent; /* must not be in what the client sent */
};

#define EHLO_ALL "250-mb.test\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"

static const struct smtp_case smtp_cases[] = {
    {.name = "success",
     .replies = {"220 mb.test ESMTP\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "354 go\r\n", "250 2.0.0 queued as X\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_OK,
     .err = NULL,
     .sent = "EHLO host.example\r\nMAIL FROM:<s@x> BODY=8BITMIME SIZE=",
     .not_sent = NULL},
    {.name = "dot-stuffing and terminator",
     .replies = {"220 mb.test ESMTP\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "354 go\r\n", "250 ok\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_OK,
     .err = NULL,
     .sent = "DATA\r\nSubject: t\r\n\r\n..dot\r\nna\xc3\xafve\r\n.\r\nQUIT\r\n",
     .not_sent = NULL},
    {.name = "recipients in order",
     .replies = {"220 mb.test ESMTP\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "354 go\r\n", "250 ok\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_OK,
     .err = NULL,
     .sent = "RCPT TO:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n",
     .not_sent = "SMTPUTF8"},
    {.name = "no extensions, no parameters",
     .replies = {"220 mb.test\r\n", "250 mb.test\r\n", "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "354 go\r\n", "250 ok\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_OK,
     .err = NULL,
     .sent = "MAIL FROM:<s@x>\r\n",
     .not_sent = NULL},
    {.name = "smtputf8",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "354 go\r\n",
                 "250 ok\r\n", "221 bye\r\n"},
     .utf8_rcpt = true,
     .want_rc = EX_OK,
     .err = NULL,
     .sent = "MAIL FROM:<s@x> SMTPUTF8 BODY=8BITMIME SIZE=",
     .not_sent = NULL},
    {.name = "smtputf8 not offered",
     .replies = {"220 mb.test\r\n", "250 mb.test\r\n", "221 bye\r\n"},
     .utf8_rcpt = true,
     .want_rc = EX_DATAERR,
     .err = "SMTPUTF8",
     .sent = NULL,
     .not_sent = "MAIL FROM"},
    {.name = "greeting 421",
     .replies = {"421 4.3.2 shutting down\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "421 4.3.2 shutting down",
     .sent = NULL,
     .not_sent = "MAIL"},
    {.name = "closed after greeting",
     .replies = {"220 mb.test\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "closed the connection"},
    {.name = "closed after MAIL",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "closed the connection"},
    {.name = "timeout",
     .replies = {"220 mb.test\r\n", EHLO_ALL, SILENT},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "no answer"},
    {.name = "MAIL 451",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "451 4.3.0 store busy\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "451 4.3.0 store busy",
     .sent = NULL,
     .not_sent = "RCPT"},
    {.name = "RCPT 550 stops",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n", "550 5.1.1 no such user\r\n",
                 "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_NOUSER,
     .err = "recipient <a@x>: 550 5.1.1 no such user",
     .sent = NULL,
     .not_sent = "DATA"},
    {.name = "second RCPT 452",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "452 4.5.3 too many\r\n",
                 "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "452 4.5.3 too many",
     .sent = NULL,
     .not_sent = "DATA"},
    {.name = "DATA 554",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "554 5.5.1 no valid recipients\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_DATAERR,
     .err = "554 5.5.1 no valid recipients",
     .sent = NULL,
     .not_sent = "Subject"},
    {.name = "end of data 552 multi-line",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "354 go\r\n", "552-5.3.4 message too big\r\n552 5.3.4 limit is 35M\r\n",
                 "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_DATAERR,
     .err = "552-5.3.4 message too big 552 5.3.4 limit is 35M"},
    {.name = "end of data 451",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "354 go\r\n", "451 4.3.0 try later\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "451 4.3.0 try later"},
    {.name = "closed before final reply",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "250 ok\r\n", "250 ok\r\n", "250 ok\r\n",
                 "354 go\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_TEMPFAIL,
     .err = "closed"},
    {.name = "garbage reply",
     .replies = {"220 mb.test\r\n", "hello?\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_PROTOCOL,
     .err = "malformed"},
    {.name = "EHLO 550",
     .replies = {"220 mb.test\r\n", "550 go away\r\n", "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_UNAVAILABLE,
     .err = "550 go away"},
    {.name = "MAIL 530",
     .replies = {"220 mb.test\r\n", EHLO_ALL, "530 5.7.0 authentication required\r\n",
                 "221 bye\r\n"},
     .utf8_rcpt = false,
     .want_rc = EX_NOPERM,
     .err = "530 5.7.0"},
};

/* The scripted peer: answers each command line (and the data after 354) with the next reply,
 * then writes everything it received to out. */
static void
fake_server(int fd, const char *const *replies, int out)
{
	struct mb_buf got = {0};
	size_t pos = 0, r = 0;
	bool data = false;
	char buf[4096];

	mb_buf_puts(&got, "");
	if (replies[r] != NULL)
		(void)!send(fd, replies[r], strlen(replies[r]), MSG_NOSIGNAL);
	r++;
	for (;;) {
		const char *end;
		ssize_t n;

		end = data ? strstr(got.data + pos, "\r\n.\r\n") : strstr(got.data + pos, "\r\n");
		if (end != NULL) {
			bool is_data = !data && strncmp(got.data + pos, "DATA\r\n", 6) == 0;
			pos = (size_t)(end - got.data) + (data ? 5 : 2);
			if (r >= MAXREPLIES || replies[r] == NULL)
				break;
			if (strcmp(replies[r], SILENT) == 0) {
				while (recv(fd, buf, sizeof(buf), 0) > 0)
					;
				break;
			}
			(void)!send(fd, replies[r], strlen(replies[r]), MSG_NOSIGNAL);
			data = is_data && replies[r][0] == '3';
			if (data)
				pos -= 2; /* the terminator's CRLF may be DATA's */
			r++;
			continue;
		}
		n = recv(fd, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		mb_buf_append(&got, buf, (size_t)n);
	}
	close(fd);
	(void)!write(out, got.data, got.len);
	close(out);
}

static void
test_smtp(void **state)
{
	char *rcpts[] = {"a@x", "b@y"};
	char *urcpts[] = {"jos\xc3\xa9@x"};
	char data[] = "Subject: t\r\n\r\n.dot\r\nna\xc3\xafve\r\n";
	size_t k;

	for (k = 0; k < sizeof(smtp_cases) / sizeof(smtp_cases[0]); k++) {
		const struct smtp_case *c = &smtp_cases[k];
		struct sendmail_msg m = {
		    {data, strlen(data), sizeof(data)}, "s@x", rcpts, 2, true, false};
		struct timeval tv = {1, 0};
		struct mb_err err = {0};
		struct mb_buf sent = {0};
		int sv[2], pp[2], rc;
		char buf[4096];
		ssize_t n;
		pid_t pid;

		print_message("smtp: %s\n", c->name);
		if (c->utf8_rcpt) {
			m.rcpts = urcpts;
			m.nrcpts = 1;
			m.needs_utf8 = true;
		}
		assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		assert_int_equal(pipe(pp), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(sv[0]);
			close(pp[0]);
			fake_server(sv[1], c->replies, pp[1]);
			_exit(0);
		}
		close(sv[1]);
		close(pp[1]);
		setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		rc = sendmail_smtp_send(sv[0], "host.example", &m, &err);
		close(sv[0]);
		mb_buf_puts(&sent, "");
		while ((n = read(pp[0], buf, sizeof(buf))) > 0)
			mb_buf_append(&sent, buf, (size_t)n);
		close(pp[0]);
		waitpid(pid, NULL, 0);
		if (rc != c->want_rc)
			fail_msg("rc %d, want %d (%s)", rc, c->want_rc, err.msg);
		if (c->err != NULL && strstr(err.msg, c->err) == NULL)
			fail_msg("error '%s' lacks '%s'", err.msg, c->err);
		if (c->sent != NULL && strstr(sent.data, c->sent) == NULL)
			fail_msg("sent:\n%s\nlacks:\n%s", sent.data, c->sent);
		if (c->not_sent != NULL && strstr(sent.data, c->not_sent) != NULL)
			fail_msg("sent:\n%s\nhas:\n%s", sent.data, c->not_sent);
		mb_buf_release(&sent);
	}
}

static void
test_target(void **state)
{
	struct mb_sockaddr a;
	struct mb_err err = {0};
	char host[64];

	setenv("MAILBRIDGE_SMTP", "127.0.0.1:9925", 1);
	assert_int_equal(sendmail_target(NULL, &a, &err), 0);
	assert_int_equal(mb_sockaddr_port(&a), 9925);
	setenv("MAILBRIDGE_SMTP", "[::1]:25", 1);
	assert_int_equal(sendmail_target(NULL, &a, &err), 0);
	mb_sockaddr_host(&a, host, sizeof(host));
	assert_string_equal(host, "::1");
	setenv("MAILBRIDGE_SMTP", "nonsense", 1);
	assert_int_equal(sendmail_target(NULL, &a, &err), -1);
	assert_non_null(strstr(err.msg, "MAILBRIDGE_SMTP"));
	unsetenv("MAILBRIDGE_SMTP");
	/* An unreadable config falls back to the default silently. */
	assert_int_equal(sendmail_target("/nonexistent/mailbridge.conf", &a, &err), 0);
	mb_sockaddr_host(&a, host, sizeof(host));
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(mb_sockaddr_port(&a), 2525);
}

/* The first loopback listener of the config wins; a wildcard one means loopback too. */
static void
test_target_config(void **state)
{
	static const char *const confs[][2] = {
	    {"[server]\nsmtp_listen = 192.0.2.1:25, 127.0.0.1:2626\n", "127.0.0.1:2626"},
	    {"[server]\nsmtp_listen = [::1]:2627\n", "::1:2627"},
	    {"[server]\nsmtp_listen = 0.0.0.0:2628\n", "127.0.0.1:2628"},
	    {"[server]\nsmtp_listen = 192.0.2.1:25\n", "127.0.0.1:2525"},
	};
	size_t k;

	unsetenv("MAILBRIDGE_SMTP");
	for (k = 0; k < sizeof(confs) / sizeof(confs[0]); k++) {
		char path[] = "/tmp/test_sendmail_XXXXXX", host[64], got[80];
		struct mb_sockaddr a;
		struct mb_err err = {0};
		int fd = mkstemp(path);

		assert_true(fd >= 0);
		assert_int_equal(write(fd, confs[k][0], strlen(confs[k][0])),
		                 (ssize_t)strlen(confs[k][0]));
		close(fd);
		assert_int_equal(sendmail_target(path, &a, &err), 0);
		unlink(path);
		mb_sockaddr_host(&a, host, sizeof(host));
		snprintf(got, sizeof(got), "%s:%d", host, mb_sockaddr_port(&a));
		assert_string_equal(got, confs[k][1]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_args),
	    cmocka_unit_test(test_read_input),
	    cmocka_unit_test(test_read_input_too_big),
	    cmocka_unit_test(test_prepare),
	    cmocka_unit_test(test_prepare_errors),
	    cmocka_unit_test(test_smtp),
	    cmocka_unit_test(test_target),
	    cmocka_unit_test(test_target_config),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
