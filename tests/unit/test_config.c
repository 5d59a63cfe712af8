/* config: parsing, bounds, the open-relay rule, connection rules, --set and `config show`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

/* An error: the line (0 = no line, just "file: ") and a part of the reason. want == NULL = ok. */
struct config_case {
	const char *name;
	const char *input;
	int line;
	const char *want;
};

static char *
tmp_write(const char *text)
{
	char *path = strdup("/tmp/test_config.XXXXXX");
	int fd;
	size_t len = strlen(text);

	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
	return path;
}

/* Checks err->msg is exactly "path:line: ..." containing want. */
static void
check_err(const char *name, const struct mb_err *err, const char *path, int line, const char *want)
{
	char prefix[600];

	if (line > 0)
		snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
	else
		snprintf(prefix, sizeof(prefix), "%s: ", path);
	if (strncmp(err->msg, prefix, strlen(prefix)) != 0 || strstr(err->msg, want) == NULL) {
		print_error("case %s: got \"%s\", want prefix \"%s\" and \"%s\"\n", name, err->msg,
		            prefix, want);
		fail();
	}
}

/* Loads text from a temporary file, then validates if validate. */
static void
run_case(const struct config_case *tc, bool validate)
{
	struct mb_err err = {0};
	char *path = tmp_write(tc->input);
	struct config *c = config_load(path, &err);
	int rc = c == NULL ? -1 : 0;

	if (c != NULL && validate)
		rc = config_validate(c, &err);
	if (tc->want == NULL) {
		if (rc != 0) {
			print_error("case %s: unexpected error: %s\n", tc->name, err.msg);
			fail();
		}
	} else {
		if (rc == 0) {
			print_error("case %s: loaded, want error \"%s\"\n", tc->name, tc->want);
			fail();
		}
		check_err(tc->name, &err, path, tc->line, tc->want);
	}
	config_free(c);
	unlink(path);
	free(path);
}

static const char valid_conf[] = "; mailbridge test\n"
                                 "[server]\n"
                                 "data_dir = /tmp/mb        ; store\n"
                                 "smtp_listen = 127.0.0.1:2525, [::1]:2525\n"
                                 "http_listen = 127.0.0.1:8025\n"
                                 "public_url = http://localhost:8025\n"
                                 "max_message_size = 20M\n"
                                 "smtp_timeout = 2m\n"
                                 "smtp_auth_plaintext = on\n"
                                 "log_level = debug\n"
                                 "\n"
                                 "[connection office365]\n"
                                 "provider = microsoft-graph\n"
                                 "sender = user@example.com\n"
                                 "senders = a@example.com, b@example.com\n"
                                 "auth = delegated\n"
                                 "tenant = contoso.onmicrosoft.com\n"
                                 "client_id = 00001111-aaaa-2222-bbbb-3333cccc4444\n"
                                 "client_secret_file = /etc/mailbridge/office365.secret\n"
                                 "cloud = global\n"
                                 "login_url = https://login.microsoftonline.com\n"
                                 "graph_url = https://graph.microsoft.com\n"
                                 "smtp_url = smtp://smtp.office365.com:587\n"
                                 "ca_file =\n"
                                 "default = yes\n"
                                 "fallback = backup\n"
                                 "\n"
                                 "  [connection backup]\n"
                                 "  provider = smtp\n"
                                 "  sender = relay@example.com\n"
                                 "  smtp_url = smtps://smtp.example.com:465\n"
                                 "  username = relay\n"
                                 "  password_env = RELAY_PASSWORD\n"
                                 "[user printer]\n"
                                 "password_hash = $scrypt$ln=15,r=8,p=1$c2FsdA$aGFzaA\n";

static int
param_index(const char *name)
{
	size_t n;
	const struct config_param *params = config_params(&n);

	for (size_t i = 0; i < n; i++) {
		if (strcmp(params[i].name, name) == 0)
			return (int)i;
	}
	fail_msg("no parameter %s", name);
	return -1;
}

static void
test_valid_file(void **state)
{
	struct mb_err err = {0};
	char *path = tmp_write(valid_conf);
	struct config *c = config_load(path, &err);
	const struct config_conn *cc;

	(void)state;
	if (c == NULL)
		print_error("%s\n", err.msg);
	assert_non_null(c);
	assert_int_equal(config_validate(c, &err), 0);
	assert_string_equal(c->path, path);
	assert_string_equal(c->server.data_dir, "/tmp/mb");
	assert_int_equal(c->server.smtp_listen.n, 2);
	assert_string_equal(c->server.smtp_listen.v[1], "[::1]:2525");
	assert_int_equal(c->server.max_message_size, 20 * 1024 * 1024);
	assert_int_equal(c->server.smtp_max_line_length, 64 * 1024); /* default */
	assert_int_equal(c->server.smtp_timeout, 120);
	assert_int_equal(c->server.smtp_data_timeout, 600);
	assert_true(c->server.smtp_auth_plaintext);
	assert_string_equal(c->server.log_level, "debug");
	assert_string_equal(c->server.log_format, "text");
	assert_null(c->server.smtp_hostname);
	assert_int_equal(c->server_lines[param_index("max_message_size")], 7);
	assert_int_equal(c->server_lines[param_index("commit_batch_max")], 0);

	assert_int_equal(c->nconns, 2);
	cc = config_conn_find(c, "office365");
	assert_non_null(cc);
	assert_int_equal(cc->line, 12);
	assert_true(cc->is_default);
	assert_int_equal(cc->senders.n, 2);
	assert_null(cc->ca_file);
	assert_string_equal(cc->fallback, "backup");
	assert_int_equal(cc->lines[param_index("sender")], 14);
	cc = config_conn_find(c, "backup");
	assert_non_null(cc);
	assert_string_equal(cc->provider, "smtp");
	assert_string_equal(cc->auth, "delegated"); /* default */
	assert_false(cc->is_default);
	assert_null(config_conn_find(c, "nope"));
	assert_int_equal(c->nusers, 1);
	assert_non_null(config_user_find(c, "printer"));
	assert_int_equal(config_user_find(c, "printer")->line, 34);
	config_free(c);
	unlink(path);
	free(path);
}

static void
test_load_errors(void **state)
{
	static const struct config_case cases[] = {
	    {"unknown section", "[server]\n[mail]\nx = 1\n", 2,
	     "unknown section [mail]; allowed: [server], [connection NAME] or [user NAME]"},
	    {"unknown key", "[server]\ndata_dir = /x\nfoo = 1\n", 3,
	     "unknown key 'foo' in [server]"},
	    {"unknown key suggestion", "[server]\nsmtp_lisen = 127.0.0.1:25\n", 2,
	     "(did you mean smtp_listen?)"},
	    {"unknown conn key", "[connection a]\nsendr = a@b\n", 2,
	     "unknown key 'sendr' in [connection NAME] (did you mean sender?)"},
	    {"bad int", "[server]\nsmtp_max_errors = ten\n", 2,
	     "smtp_max_errors = ten is not a whole number; allowed: 1 to 1000"},
	    {"size above max", "[server]\n\n; big\nmax_message_size = 500G\n", 4,
	     "max_message_size = 500G is above the maximum 150M"},
	    {"size huge", "[server]\nmax_message_size = 99999999999999999999999\n", 2,
	     "max_message_size = 99999999999999999999999 is above the maximum 150M"},
	    {"size bad suffix", "[server]\nmax_message_size = 5X\n", 2,
	     "max_message_size = 5X is not a size (a number with an optional K, M or G suffix); "
	     "allowed: 1K to 150M"},
	    {"size negative", "[server]\nmax_message_size = -5\n", 2, "is not a size"},
	    {"duration bad", "[server]\nsmtp_timeout = 5y\n", 2,
	     "smtp_timeout = 5y is not a duration (a number with an optional s, m, h, d or w "
	     "suffix); allowed: 1s to 1h"},
	    {"int empty", "[server]\nsmtp_max_errors =\n", 2, "smtp_max_errors =  is not a whole"},
	    {"enum", "[server]\nlog_level = verbose\n", 2,
	     "log_level = verbose is not allowed; allowed: debug, info or warn"},
	    {"enum case", "[connection a]\nprovider = Microsoft-Graph\n", 2,
	     "allowed: microsoft-graph, microsoft-smtp or smtp"},
	    {"bool", "[server]\nsmtp_auth_plaintext = maybe\n", 2,
	     "smtp_auth_plaintext = maybe is not a boolean; allowed: yes or no"},
	    {"duplicate key", "[server]\ndata_dir = /a\nlog_level = warn\ndata_dir = /b\n", 4,
	     "data_dir is set twice (first on line 2)"},
	    {"duplicate key conn",
	     "[connection a]\nsender = a@b\n[connection b]\nsender = b@b\n"
	     "sender = c@b\n",
	     5, "sender is set twice (first on line 4)"},
	    {"duplicate server", "[server]\ndata_dir = /a\n[connection a]\n[server]\n", 4,
	     "[server] appears twice (first on line 1)"},
	    {"duplicate conn", "[connection a]\n\n[connection a]\n", 3,
	     "[connection a] appears twice (first on line 1)"},
	    {"duplicate user", "[user u]\n[user v]\n[user u]\n", 3,
	     "[user u] appears twice (first on line 1)"},
	    {"conn without name", "[server]\n[connection]\n", 2,
	     "[connection] needs a name, as in [connection NAME]"},
	    {"user bad name", "[user a/b]\n", 1, "[user a/b]: a name has 1 to 64 letters"},
	    {"name with space", "[connection a b]\n", 1, "[connection a b]: a name has"},
	    {"server with name", "[server x]\n", 1, "[server] takes no name (found 'x')"},
	    {"no closing bracket", "[server\n", 1, "section header without a closing ']'"},
	    {"junk after bracket", "[server] x\n", 1, "unexpected text after ']'"},
	    {"key outside section", "data_dir = /x\n[server]\n", 1,
	     "data_dir is outside any section"},
	    {"syntax", "[server]\ndata_dir /x\n", 2, "expected 'key = value'"},
	    {"missing key", "[server]\n= /x\n", 2, "a key name is missing before '='"},
	    {"nul byte", "[server]\ndata_dir = /x\0y\n", 0, NULL}, /* the C string ends at NUL */
	    {"comments and blanks", "# c\n; c\n\n[server] ; c\n  data_dir = /a ; c\n", 0, NULL},
	    {"indented keys", "[server]\n  data_dir = /a\n  log_level = warn\n", 0, NULL},
	    {"colon separator", "[server]\ndata_dir: /a\n", 0, NULL},
	    {"bom", "\xEF\xBB\xBF[server]\ndata_dir = /a\n", 0, NULL},
	    {"empty file", "", 0, NULL},
	    {"crlf", "[server]\r\ndata_dir = /a\r\n", 0, NULL},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i], false);
}

static void
test_line_length(void **state)
{
	char line[400];
	struct config_case tc = {"199", line, 0, NULL};
	int pre = (int)strlen("[server]\ndata_dir = ");

	(void)state;
	snprintf(line, sizeof(line), "[server]\ndata_dir = %0*d\n", 199 - (pre - 9), 0);
	run_case(&tc, false);
	snprintf(line, sizeof(line), "[server]\ndata_dir = %0*d   ; a comment does not count\n",
	         199 - (pre - 9), 0);
	run_case(&tc, false);
	snprintf(line, sizeof(line), "[server]\ndata_dir = %0*d\n", 200 - (pre - 9), 0);
	tc.name = "200";
	tc.line = 2;
	tc.want = "the line is longer than 199 characters";
	run_case(&tc, false);
}

static void
test_missing_file(void **state)
{
	struct mb_err err = {0};

	(void)state;
	assert_null(config_load("/nonexistent/mailbridge.conf", &err));
	assert_string_equal(err.msg,
	                    "/nonexistent/mailbridge.conf: cannot open: No such file or directory");
	assert_int_equal(err.code, MB_ENOTFOUND);
	assert_null(config_load("/nonexistent/mailbridge.conf", NULL));
}

/* Every bounded row, at min, min-1, max and max+1, through the file and through --set. */
static void
test_bounds(void **state)
{
	const struct config_param *params;
	size_t n, checked = 0;

	(void)state;
	params = config_params(&n);
	for (size_t i = 0; i < n; i++) {
		const struct config_param *p = &params[i];
		const int64_t vals[] = {p->min, p->min - 1, p->max, p->max + 1};
		const bool ok[] = {true, false, true, false};

		if (p->type != CONFIG_INT && p->type != CONFIG_SIZE && p->type != CONFIG_DURATION)
			continue;
		assert_true(p->section == CONFIG_SEC_SERVER || p->section == CONFIG_SEC_CONNECTION);
		for (size_t k = 0; k < 4; k++) {
			bool conn = p->section == CONFIG_SEC_CONNECTION;
			char text[200], key[80], val[40], want[200];
			struct config_case tc = {p->name, text, 2, NULL};
			struct config *c = config_new_defaults();
			struct mb_err err = {0};

			snprintf(val, sizeof(val), "%lld", (long long)vals[k]);
			if (conn)
				snprintf(text, sizeof(text),
				         "[connection c]\nsender = a@example.com\n%s = %s\n",
				         p->name, val);
			else
				snprintf(text, sizeof(text), "[server]\n%s = %s\n", p->name, val);
			tc.line = conn ? 3 : 2;
			if (!ok[k]) {
				snprintf(want, sizeof(want), "%s = %s is %s", p->name, val,
				         k == 1 ? "below the minimum" : "above the maximum");
				tc.want = want;
			}
			run_case(&tc, false);
			snprintf(key, sizeof(key), "%s.%s", conn ? "connection.c" : "server",
			         p->name);
			assert_int_equal(config_set(c, key, val, &err), ok[k] ? 0 : -1);
			if (ok[k] && conn)
				assert_int_equal(
				    *(int64_t *)((char *)config_conn_find(c, "c") + p->offset),
				    vals[k]);
			else if (ok[k])
				assert_int_equal(*(int64_t *)((char *)&c->server + p->offset),
				                 vals[k]);
			else
				assert_non_null(strstr(err.msg, want));
			config_free(c);
		}
		checked++;
	}
	assert_int_equal(checked, 16);
}

static void
test_suffixes(void **state)
{
	static const struct {
		const char *key, *value;
		int64_t want; /* -1 = refused */
	} cases[] = {
	    {"max_message_size", "1K", 1024},
	    {"max_message_size", "1k", 1024},
	    {"max_message_size", "35M", INT64_C(35) << 20},
	    {"max_message_size", "150M", INT64_C(150) << 20},
	    {"max_message_size", "151M", -1},
	    {"max_message_size", "1G", -1},
	    {"max_message_size", "1023", -1},
	    {"max_message_size", "2048", 2048},
	    {"max_message_size", "10MB", INT64_C(10) << 20},
	    {"max_message_size", "10 M", -1},
	    {"smtp_max_line_length", "1000", 1000},
	    {"smtp_max_line_length", "999", -1},
	    {"smtp_max_line_length", "1M", INT64_C(1) << 20},
	    {"smtp_timeout", "30", 30},
	    {"smtp_timeout", "30s", 30},
	    {"smtp_timeout", "5m", 300},
	    {"smtp_timeout", "1h", 3600},
	    {"smtp_timeout", "60m", 3600},
	    {"smtp_timeout", "61m", -1},
	    {"smtp_timeout", "1d", -1},
	    {"smtp_timeout", "0s", -1},
	    {"smtp_timeout", "5x", -1},
	    {"log_retention_days", "3650", 3650},
	    {"log_retention_days", "1e3", -1},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[200];
		struct mb_err err = {0};
		struct config *c;
		const struct config_param *p = config_param_find(CONFIG_SEC_SERVER, cases[i].key);

		assert_non_null(p);
		snprintf(text, sizeof(text), "[server]\n%s = %s\n", cases[i].key, cases[i].value);
		c = config_parse_string(text, "t.conf", &err);
		if (cases[i].want < 0) {
			if (c != NULL)
				fail_msg("%s = %s accepted", cases[i].key, cases[i].value);
			assert_int_equal(strncmp(err.msg, "t.conf:2: ", 10), 0);
			continue;
		}
		if (c == NULL)
			print_error("%s = %s: %s\n", cases[i].key, cases[i].value, err.msg);
		assert_non_null(c);
		assert_int_equal(*(int64_t *)((char *)&c->server + p->offset), cases[i].want);
		config_free(c);
	}
}

static void
test_lists(void **state)
{
	static const struct {
		const char *value;
		size_t n;
		const char *items[3];
	} cases[] = {
	    {"10.0.0.0/8", 1, {"10.0.0.0/8"}},
	    {" 10.0.0.0/8 , ,192.168.0.0/16,, ", 2, {"10.0.0.0/8", "192.168.0.0/16"}},
	    {"a,b,c", 3, {"a", "b", "c"}},
	    {"", 0, {NULL}},
	    {" , ,", 0, {NULL}},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[200];
		struct mb_err err = {0};
		struct config *c;

		snprintf(text, sizeof(text), "[server]\nsmtp_allow = %s\n", cases[i].value);
		c = config_parse_string(text, "t.conf", &err);
		assert_non_null(c);
		assert_int_equal(c->server.smtp_allow.n, cases[i].n);
		for (size_t k = 0; k < cases[i].n; k++)
			assert_string_equal(c->server.smtp_allow.v[k], cases[i].items[k]);
		config_free(c);
	}
}

#define USER_U "[user u]\npassword_hash = $scrypt$x\n"

static void
test_open_relay(void **state)
{
	static const struct config_case cases[] = {
	    {"default loopback", "[server]\n", 0, NULL},
	    {"loopback v6", "[server]\nsmtp_listen = [::1]:25, 127.0.0.2:25\n", 0, NULL},
	    {"any v4", "[server]\ndata_dir = /x\nsmtp_listen = 127.0.0.1:25, 0.0.0.0:25\n", 3,
	     "smtp_listen = 0.0.0.0:25 is not a loopback address, and neither smtp_allow nor "
	     "required client AUTH ([user] sections with smtp_auth = required) is set: this "
	     "would be an open relay. Add smtp_allow = 192.0.2.0/24 for the networks that may "
	     "send, or add [user NAME] sections and smtp_auth = required."},
	    {"any v6", "[server]\nsmtp_listen = [::]:25\n", 2, "would be an open relay"},
	    {"with smtp_allow", "[server]\nsmtp_listen = 0.0.0.0:25\nsmtp_allow = 10.0.0.0/8\n", 0,
	     NULL},
	    {"with user and required",
	     "[server]\nsmtp_listen = 0.0.0.0:25\nsmtp_auth = required\n" USER_U, 0, NULL},
	    {"user but optional", "[server]\nsmtp_listen = 0.0.0.0:25\n" USER_U, 2,
	     "would be an open relay"},
	    {"required without user", "[server]\nsmtp_auth = required\n", 2,
	     "smtp_auth = required, but there is no [user NAME] section"},
	    {"required without user, public",
	     "[server]\nsmtp_listen = 0.0.0.0:25\nsmtp_auth = required\n", 2,
	     "would be an open relay"},
	    {"allow everyone", "[server]\nsmtp_listen = 0.0.0.0:25\nsmtp_allow = 0.0.0.0/0\n", 3,
	     "smtp_allow = 0.0.0.0/0 lets every address send without AUTH"},
	    {"allow everyone v6", "[server]\nsmtp_allow = 10.0.0.0/8, ::/0\n", 2,
	     "smtp_allow = ::/0 lets every address"},
	    {"bad cidr", "[server]\nsmtp_allow = 10.0.0.0/33\n", 2,
	     "smtp_allow = 10.0.0.0/33 is not a network"},
	    {"bad listen", "[server]\n\nsmtp_listen = 127.0.0.1\n", 3, "smtp_listen = 127.0.0.1: "},
	    {"bad http listen", "[server]\nhttp_listen = 127.0.0.1:99999\n", 2,
	     "http_listen = 127.0.0.1:99999: "},
	    {"tls cert only", "[server]\ntls_cert = /c.pem\n", 2,
	     "tls_cert is set but tls_key is not; set both or neither"},
	    {"tls key only", "[server]\ntls_key = /k.pem\n", 2, "tls_key is set but tls_cert"},
	    {"tls both", "[server]\ntls_cert = /c.pem\ntls_key = /k.pem\n", 0, NULL},
	    {"empty data_dir", "[server]\ndata_dir =\n", 2, "data_dir is empty"},
	    {"bad public_url", "[server]\npublic_url = localhost:8025\n", 2,
	     "public_url = localhost:8025 must start with http:// or https://"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i], true);
}

#define CONN_A "[connection a]\nsender = a@example.com\n"

static void
test_conn_rules(void **state)
{
	static const struct config_case cases[] = {
	    {"minimal", CONN_A, 0, NULL},
	    {"no sender", "[server]\n[connection a]\ntenant = t\n", 2,
	     "[connection a] has no sender"},
	    {"sender without @", "[connection a]\ntenant = t\nsender = nobody\n", 3,
	     "sender = nobody is not an email address"},
	    {"senders without @", CONN_A "senders = b@example.com, c\n", 3,
	     "senders = c is not an email address"},
	    {"fallback self", CONN_A "fallback = a\n", 3,
	     "fallback = a names this connection itself"},
	    {"fallback missing", CONN_A "fallback = b\n", 3,
	     "fallback = b: there is no [connection b]"},
	    {"fallback ok", CONN_A "fallback = b\n[connection b]\nsender = b@example.com\n", 0,
	     NULL},
	    {"two defaults",
	     CONN_A "default = yes\n[connection b]\nsender = b@example.com\ndefault = yes\n", 6,
	     "default = yes is also set in [connection a]"},
	    {"one default",
	     CONN_A "default = yes\n[connection b]\nsender = b@example.com\ndefault = no\n", 0,
	     NULL},
	    {"https login", CONN_A "login_url = https://login.example.com\n", 0, NULL},
	    {"http loopback", CONN_A "login_url = http://127.0.0.1:3000/x\n", 0, NULL},
	    {"http localhost", CONN_A "graph_url = http://localhost:3000\n", 0, NULL},
	    {"http v6 loopback", CONN_A "graph_url = http://[::1]:3000/v1.0\n", 0, NULL},
	    {"http remote", CONN_A "graph_url = http://graph.example.com\n", 3,
	     "graph_url = http://graph.example.com uses http:// to a host that is not loopback"},
	    {"http userinfo trick", CONN_A "login_url = http://127.0.0.1@evil.example\n", 3,
	     "is not loopback"},
	    {"http localhost prefix trick", CONN_A "login_url = http://localhost.evil.example\n", 3,
	     "is not loopback"},
	    {"ftp login", CONN_A "login_url = ftp://x\n", 3,
	     "login_url = ftp://x must start with https://"},
	    {"smtp url starttls", CONN_A "smtp_url = smtp://smtp.example.com:587\n", 0, NULL},
	    {"smtp url tls", CONN_A "smtp_url = smtps://smtp.example.com\n", 0, NULL},
	    {"smtp url http", CONN_A "smtp_url = https://smtp.example.com\n", 3,
	     "smtp_url = https://smtp.example.com must start with smtps://"},
	    {"two secrets", CONN_A "client_secret_env = S\nclient_secret = x\n", 4,
	     "[connection a] sets both client_secret_env and client_secret"},
	    {"secret file and env", CONN_A "client_secret_file = /f\nclient_secret_env = S\n", 4,
	     "sets both client_secret_file and client_secret_env"},
	    {"two passwords", CONN_A "password_file = /f\npassword_env = P\n", 4,
	     "sets both password_file and password_env"},
	    {"user without hash", "[user u]\n", 1, "[user u] has no password_hash"},
	    {"user bad hash", "[user u]\npassword_hash = secret123\n", 2,
	     "password_hash of [user u] is not an scrypt hash"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i], true);
}

static void
test_config_set(void **state)
{
	static const struct {
		const char *key, *value, *want; /* want: part of the error, NULL = ok */
	} cases[] = {
	    {"server.data_dir", "./var", NULL},
	    {"server.max_message_size", " 10M ", NULL},
	    {"server.max_message_size", "500G",
	     "--set server.max_message_size: max_message_size = 500G is above the maximum 150M"},
	    {"server.nope", "1", "--set server.nope: unknown key 'nope' in [server]"},
	    {"connection.a.sender", "a@example.com", NULL},
	    {"connection.a.default", "yes", NULL},
	    {"connection.b.c.sender", "b@example.com", NULL},
	    {"connection.x.nope", "1", "unknown key 'nope' in [connection NAME]"},
	    {"connection.a/b.sender", "1", "a name has 1 to 64"},
	    {"connection..sender", "1", "a name has 1 to 64"},
	    {"user.u.password_hash", "$scrypt$x", NULL},
	    {"data_dir", "/x", "expected server.KEY, connection.NAME.KEY or user.NAME.KEY"},
	    {"server.a.data_dir", "/x", "expected server.KEY"},
	    {"connection.sender", "/x", "expected server.KEY"},
	    {"mail.x", "/x", "expected server.KEY"},
	};
	struct config *c = config_new_defaults();
	struct mb_err err = {0};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = config_set(c, cases[i].key, cases[i].value, &err);

		if (cases[i].want == NULL && rc != 0)
			fail_msg("%s: %s", cases[i].key, err.msg);
		if (cases[i].want != NULL && (rc == 0 || strstr(err.msg, cases[i].want) == NULL))
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].key,
			         rc == 0 ? "ok" : err.msg, cases[i].want);
	}
	assert_string_equal(c->server.data_dir, "./var");
	assert_int_equal(c->server.max_message_size, 10 * 1024 * 1024);
	assert_int_equal(c->nconns, 2); /* x was not created for an unknown key */
	assert_non_null(config_conn_find(c, "b.c"));
	assert_true(config_conn_find(c, "a")->is_default);
	assert_int_equal(config_conn_find(c, "a")->line, CONFIG_LINE_SET);
	assert_string_equal(config_conn_find(c, "a")->provider, "microsoft-graph");
	assert_int_equal(c->server_lines[param_index("data_dir")], CONFIG_LINE_SET);
	assert_int_equal(config_validate(c, &err), 0);

	/* --set overrides a value from the file, and errors from it say so */
	assert_int_equal(config_set(c, "server.smtp_listen", "0.0.0.0:25", &err), 0);
	assert_int_equal(config_validate(c, &err), -1);
	assert_non_null(strstr(err.msg, "--set: smtp_listen = 0.0.0.0:25 is not a loopback"));
	assert_ptr_equal(strstr(err.msg, "--set: "), err.msg);
	assert_int_equal(config_set(c, "server.smtp_auth", "required", &err), 0);
	assert_int_equal(config_validate(c, &err), 0);
	config_free(c);

	c = config_parse_string("[server]\ndata_dir = /a\n", "t.conf", &err);
	assert_non_null(c);
	assert_int_equal(config_set(c, "server.data_dir", "/b", &err), 0);
	assert_string_equal(c->server.data_dir, "/b");
	assert_int_equal(config_set(c, "server.data_dir", c->server.data_dir, &err), 0);
	assert_string_equal(c->server.data_dir, "/b");
	config_free(c);
}

static void
test_show(void **state)
{
	static const char text[] = "[server]\n"
	                           "max_message_size = 20M\n"
	                           "smtp_allow = 10.0.0.0/8, 192.168.1.0/24\n"
	                           "[connection a]\n"
	                           "sender = a@example.com\n"
	                           "client_secret = TopSecretValue42\n"
	                           "[user printer]\n"
	                           "password_hash = $scrypt$HashValue99\n";
	struct mb_err err = {0};
	struct config *c = config_parse_string(text, "t.conf", &err);
	char *out = NULL;
	size_t len = 0;
	FILE *f;

	(void)state;
	assert_non_null(c);
	f = open_memstream(&out, &len);
	config_show(c, f);
	fclose(f);
	assert_null(strstr(out, "TopSecretValue42"));
	assert_null(strstr(out, "HashValue99"));
	assert_non_null(strstr(out, "[server]\ndata_dir = /var/lib/mailbridge\n"));
	assert_non_null(strstr(out, "\nmax_message_size = 20M\n"));
	assert_non_null(strstr(out, "\nsmtp_max_line_length = 64K\n"));
	assert_non_null(strstr(out, "\nsmtp_timeout = 5m\n"));
	assert_non_null(strstr(out, "\nsmtp_hostname = \n"));
	assert_non_null(strstr(out, "\nsmtp_auth_plaintext = no\n"));
	assert_non_null(strstr(out, "\nsmtp_allow = 10.0.0.0/8, 192.168.1.0/24\n"));
	assert_non_null(strstr(out, "\n[connection a]\nsender = a@example.com\n"
	                            "client_secret = (set, sha256:"));
	assert_null(strstr(out, "provider")); /* not set in [connection a] */
	assert_non_null(strstr(out, "\n[user printer]\npassword_hash = (set, sha256:"));

	config_free(c);
	free(out);
}

/* What show prints reads back the same (secrets aside); the ';' cases came from the fuzzer. */
static void
test_show_round_trip(void **state)
{
	static const char *const cases[] = {
	    ("[server]\nmax_message_size = 20M\nsmtp_listen = [::1]:1, 127.0.0.1:2\n"
	     "[connection a]\nsender = a@example.com\ndefault = on\n[user u]\npassword_hash =\n"),
	    "[server]\ndata_dir =;x\n",
	    "[server]\nsmtp_listen = ,,;,,$A\n",
	    "[server]\nsmtp_allow = a,;b;,c ;d\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mb_err err = {0};
		struct config *c = config_parse_string(cases[i], "t.conf", &err), *c2;
		char *out = NULL, *out2 = NULL;
		size_t len = 0, len2 = 0;
		FILE *f;

		if (c == NULL)
			fail_msg("case %zu: %s", i, err.msg);
		f = open_memstream(&out, &len);
		config_show(c, f);
		fclose(f);
		c2 = config_parse_string(out, "show", &err);
		if (c2 == NULL)
			fail_msg("case %zu: %s", i, err.msg);
		f = open_memstream(&out2, &len2);
		config_show(c2, f);
		fclose(f);
		assert_string_equal(out, out2);
		config_free(c);
		config_free(c2);
		free(out);
		free(out2);
	}
}

/* Every row is well formed and its default goes through the same parser as the file. */
static void
test_defaults(void **state)
{
	const struct config_param *params;
	struct config *c = config_new_defaults();
	size_t n;

	(void)state;
	params = config_params(&n);
	assert_true(n > 40);
	for (size_t i = 0; i < n; i++) {
		const struct config_param *p = &params[i];
		struct mb_err err = {0};
		char key[100];

		assert_non_null(p->name);
		assert_non_null(p->doc);
		assert_true(strlen(p->doc) > 20);
		assert_ptr_equal(config_param_find(p->section, p->name), p);
		for (size_t k = 0; k < i; k++) /* unique within its section */
			assert_false(params[k].section == p->section &&
			             strcmp(params[k].name, p->name) == 0);
		if (p->type == CONFIG_ENUM) {
			assert_non_null(p->choices);
			assert_non_null(p->def);
		}
		if (p->type == CONFIG_INT || p->type == CONFIG_SIZE || p->type == CONFIG_DURATION) {
			assert_non_null(p->def);
			assert_true(p->min <= p->max);
			assert_true(p->min >= 0);
		}
		if (p->def == NULL)
			continue;
		snprintf(key, sizeof(key), "%s%s",
		         p->section == CONFIG_SEC_SERVER       ? "server."
		         : p->section == CONFIG_SEC_CONNECTION ? "connection.t."
		                                               : "user.t.",
		         p->name);
		if (config_set(c, key, p->def, &err) != 0)
			fail_msg("default of %s: %s", p->name, err.msg);
	}
	config_free(c);

	c = config_new_defaults();
	assert_null(c->path);
	assert_int_equal(c->nconns, 0);
	assert_string_equal(c->server.data_dir, "/var/lib/mailbridge");
	assert_int_equal(c->server.smtp_listen.n, 1);
	assert_int_equal(c->server.smtp_allow.n, 0);
	assert_int_equal(c->server.max_message_size, 35 * 1024 * 1024);
	assert_int_equal(c->server.smtp_max_recipients, 1000);
	assert_int_equal(c->server.smtp_data_timeout, 600);
	assert_int_equal(c->server.commit_batch_max, 512);
	assert_int_equal(c->server.log_retention_days, 14);
	assert_string_equal(c->server.smtp_auth, "optional");
	assert_null(c->server.key_file);
	assert_int_equal(config_validate(c, NULL), 0);
	config_free(c);
	config_free(NULL);
}

static void
test_default_path(void **state)
{
	(void)state;
	setenv("MAILBRIDGE_CONFIG", "/env/x.conf", 1);
	assert_string_equal(config_default_path("/a.conf"), "/a.conf");
	assert_string_equal(config_default_path(NULL), "/env/x.conf");
	setenv("MAILBRIDGE_CONFIG", "", 1);
	assert_string_equal(config_default_path(NULL), CONFIG_DEFAULT_PATH);
	unsetenv("MAILBRIDGE_CONFIG");
	assert_string_equal(config_default_path(NULL), "/etc/mailbridge/mailbridge.conf");
}

static void
test_parse_string(void **state)
{
	struct mb_err err = {0};
	struct config *c;

	(void)state;
	c = config_parse_string("[server]\nbad\n", NULL, &err);
	assert_null(c);
	assert_string_equal(err.msg,
	                    "(string):2: expected 'key = value', a [section] header or a comment");
	c = config_parse_string("[server]\ndata_dir = /x", "mem", &err); /* no final newline */
	assert_non_null(c);
	assert_string_equal(c->server.data_dir, "/x");
	assert_string_equal(c->path, "mem");
	config_free(c);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_valid_file),   cmocka_unit_test(test_load_errors),
	    cmocka_unit_test(test_line_length),  cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_bounds),       cmocka_unit_test(test_suffixes),
	    cmocka_unit_test(test_lists),        cmocka_unit_test(test_open_relay),
	    cmocka_unit_test(test_conn_rules),   cmocka_unit_test(test_config_set),
	    cmocka_unit_test(test_show),         cmocka_unit_test(test_show_round_trip),
	    cmocka_unit_test(test_defaults),     cmocka_unit_test(test_default_path),
	    cmocka_unit_test(test_parse_string),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
