/*
 * oauth, the pure half: names, clouds and endpoint overrides, scopes, PKCE (RFC 7636's vector),
 * base64url, the token / error / device-code parsers, and the table of errors that name the
 * fix (every AADSTS code of microsoft-reference §2, the OAuth error strings, and the seed
 * guide's Errors 3, 4 and 5).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oauth/oauth.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static bool
has(const char *s, const char *needle)
{
	return s != NULL && strstr(s, needle) != NULL;
}

static void
assert_str_or_null(const char *name, const char *field, const char *got, const char *want)
{
	if (want == NULL && got == NULL)
		return;
	if (want == NULL || got == NULL || strcmp(got, want) != 0) {
		print_error("case %s: %s = \"%s\", want \"%s\"\n", name, field,
		            got ? got : "(null)", want ? want : "(null)");
		fail();
	}
}

/* ---- names ---- */

static void
test_names(void **state)
{
	static const struct {
		const char *s;
		int want; /* -1: refused */
	} providers[] = {{"microsoft-graph", OAUTH_PROVIDER_GRAPH},
	                 {"microsoft-smtp", OAUTH_PROVIDER_MSSMTP},
	                 {"smtp", OAUTH_PROVIDER_SMTP},
	                 {"graph", -1},
	                 {"", -1},
	                 {"Microsoft-Graph ", -1}},
	  auths[] = {{"delegated", OAUTH_AUTH_DELEGATED},
	             {"app-only", OAUTH_AUTH_APP_ONLY},
	             {"app_only", -1},
	             {"", -1}};

	for (size_t i = 0; i < NELEM(providers); i++) {
		enum oauth_provider p = OAUTH_PROVIDER_SMTP;
		int rc = oauth_provider_parse(providers[i].s, &p);

		assert_int_equal(rc, providers[i].want < 0 ? -1 : 0);
		if (rc == 0) {
			assert_int_equal(p, providers[i].want);
			assert_string_equal(oauth_provider_name(p), providers[i].s);
		}
	}
	for (size_t i = 0; i < NELEM(auths); i++) {
		enum oauth_auth a = OAUTH_AUTH_DELEGATED;
		int rc = oauth_auth_parse(auths[i].s, &a);

		assert_int_equal(rc, auths[i].want < 0 ? -1 : 0);
		if (rc == 0) {
			assert_int_equal(a, auths[i].want);
			assert_string_equal(oauth_auth_name(a), auths[i].s);
		}
	}
	{
		enum oauth_provider p;
		enum oauth_auth a;

		assert_int_equal(oauth_provider_parse(NULL, &p), -1);
		assert_int_equal(oauth_auth_parse(NULL, &a), -1);
	}
	assert_string_equal(oauth_resource_name(OAUTH_RES_GRAPH), "graph");
	assert_string_equal(oauth_resource_name(OAUTH_RES_OUTLOOK), "outlook");
	assert_string_equal(oauth_class_name(OAUTH_CLASS_REAUTHORIZE), "reauthorize");
}

/* ---- PKCE and base64url ---- */

static void
test_pkce_rfc7636(void **state)
{
	char challenge[44];

	/* RFC 7636 Appendix B */
	memset(challenge, 'x', sizeof(challenge));
	oauth_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", challenge);
	assert_string_equal(challenge, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

static void
test_pkce_verifier(void **state)
{
	char v1[OAUTH_VERIFIER_LEN + 1], v2[OAUTH_VERIFIER_LEN + 1], ch[44];

	oauth_pkce_verifier(v1);
	oauth_pkce_verifier(v2);
	assert_int_equal(strlen(v1), 43);
	assert_string_not_equal(v1, v2);
	/* RFC 7636 §4.1: unreserved characters only; base64url uses - and _ of them */
	for (size_t i = 0; i < OAUTH_VERIFIER_LEN; i++) {
		char c = v1[i];

		assert_true((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		            (c >= '0' && c <= '9') || c == '-' || c == '_');
	}
	oauth_pkce_challenge(v1, ch);
	assert_int_equal(strlen(ch), 43);
	assert_null(strpbrk(ch, "+/="));
}

static void
test_base64url(void **state)
{
	static const struct {
		const char *name;
		const char *raw;
		size_t len;
		const char *want;
	} cases[] = {
	    {"empty", "", 0, ""},
	    {"one byte, no padding", "f", 1, "Zg"},
	    {"two bytes, no padding", "fo", 2, "Zm8"},
	    {"three bytes", "foo", 3, "Zm9v"},
	    {"62 and 63 become - and _", "\xfb\xff", 2, "-_8"},
	    {"all 63", "\xff\xfe\xfd", 3, "__79"},
	    {"NUL bytes count", "\0\0\0\0", 4, "AAAAAA"},
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct mb_buf b = {0};

		oauth_base64url(cases[i].raw, cases[i].len, &b);
		assert_str_or_null(cases[i].name, "base64url", b.data ? b.data : "", cases[i].want);
		mb_buf_release(&b);
	}
	{
		struct mb_buf b = {0};

		mb_buf_puts(&b, "state=");
		oauth_base64url("foo", 3, &b);
		assert_string_equal(b.data, "state=Zm9v");
		mb_buf_release(&b);
	}
}

/* ---- clouds and endpoints ---- */

static void
test_endpoints_clouds(void **state)
{
	static const struct {
		const char *cloud;
		struct oauth_endpoints want;
	} cases[] = {
	    {"global",
	     {"https://login.microsoftonline.com", "https://graph.microsoft.com",
	      "smtp://smtp.office365.com:587", "https://graph.microsoft.com",
	      "https://outlook.office.com", "https://outlook.office365.com"}},
	    {NULL,
	     {"https://login.microsoftonline.com", "https://graph.microsoft.com",
	      "smtp://smtp.office365.com:587", "https://graph.microsoft.com",
	      "https://outlook.office.com", "https://outlook.office365.com"}},
	    {"",
	     {"https://login.microsoftonline.com", "https://graph.microsoft.com",
	      "smtp://smtp.office365.com:587", "https://graph.microsoft.com",
	      "https://outlook.office.com", "https://outlook.office365.com"}},
	    {"usgov",
	     {"https://login.microsoftonline.us", "https://graph.microsoft.us",
	      "smtp://smtp.office365.us:587", "https://graph.microsoft.us",
	      "https://outlook.office365.us", "https://outlook.office365.us"}},
	    {"usgov-dod",
	     {"https://login.microsoftonline.us", "https://dod-graph.microsoft.us",
	      "smtp://outlook-dod.office365.us:587", "https://dod-graph.microsoft.us",
	      "https://outlook-dod.office365.us", "https://outlook-dod.office365.us"}},
	    {"china",
	     {"https://login.partner.microsoftonline.cn", "https://microsoftgraph.chinacloudapi.cn",
	      "smtp://smtp.partner.outlook.cn:587", "https://microsoftgraph.chinacloudapi.cn",
	      "https://partner.outlook.cn", "https://partner.outlook.cn"}},
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct oauth_endpoints e;
		struct mb_err err = {0};
		const char *n = cases[i].cloud ? cases[i].cloud : "(null)";

		assert_int_equal(
		    oauth_endpoints_resolve(cases[i].cloud, NULL, NULL, NULL, &e, &err), 0);
		assert_str_or_null(n, "login", e.login, cases[i].want.login);
		assert_str_or_null(n, "graph", e.graph, cases[i].want.graph);
		assert_str_or_null(n, "smtp", e.smtp, cases[i].want.smtp);
		assert_str_or_null(n, "graph_resource", e.graph_resource,
		                   cases[i].want.graph_resource);
		assert_str_or_null(n, "outlook_resource", e.outlook_resource,
		                   cases[i].want.outlook_resource);
		assert_str_or_null(n, "outlook_app", e.outlook_app, cases[i].want.outlook_app);
	}
	{
		struct oauth_endpoints e;
		struct mb_err err = {0};

		assert_int_equal(oauth_endpoints_resolve("mars", NULL, NULL, NULL, &e, &err), -1);
		assert_true(has(err.msg, "cloud"));
		assert_true(has(err.msg, "usgov-dod"));
		assert_int_equal(oauth_endpoints_resolve("Global", NULL, NULL, NULL, &e, NULL), -1);
	}
}

struct override_case {
	const char *name;
	const char *login, *graph, *smtp;
	const char *want_login, *want_graph, *want_smtp; /* NULL: refused */
	const char *want_err[2];                         /* substrings of the error */
};

static const struct override_case override_cases[] = {
    {"none (empty strings)",
     "",
     "",
     "",
     "https://login.microsoftonline.com",
     "https://graph.microsoft.com",
     "smtp://smtp.office365.com:587",
     {NULL, NULL}},
    {"https with trailing slash",
     "https://login.example.test/",
     "https://graph.example.test//",
     "smtps://mail.example.test:465/",
     "https://login.example.test",
     "https://graph.example.test",
     "smtps://mail.example.test:465",
     {NULL, NULL}},
    {"https with a path",
     "https://idp.example.test:8443/ms",
     NULL,
     NULL,
     "https://idp.example.test:8443/ms",
     "https://graph.microsoft.com",
     "smtp://smtp.office365.com:587",
     {NULL, NULL}},
    {"http to 127.0.0.1",
     "http://127.0.0.1:8080",
     "http://127.1.2.3/",
     "smtp://127.0.0.1:2525",
     "http://127.0.0.1:8080",
     "http://127.1.2.3",
     "smtp://127.0.0.1:2525",
     {NULL, NULL}},
    {"http to [::1] and localhost",
     "http://[::1]:9000/",
     "HTTP://LocalHost:9001",
     NULL,
     "http://[::1]:9000",
     "HTTP://LocalHost:9001",
     "smtp://smtp.office365.com:587",
     {NULL, NULL}},
    {"http to a public host",
     "http://login.example.test",
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     {"login_url", "not loopback"}},
    {"http to a look-alike",
     NULL,
     "http://127.0.0.1.evil.test/",
     NULL,
     NULL,
     NULL,
     NULL,
     {"graph_url", "not loopback"}},
    {"http with userinfo",
     NULL,
     "http://127.0.0.1@evil.test/",
     NULL,
     NULL,
     NULL,
     NULL,
     {"graph_url", "host"}},
    {"http to ::2", NULL, "http://[::2]/", NULL, NULL, NULL, NULL, {"graph_url", "loopback"}},
    {"ftp", "ftp://login.example.test", NULL, NULL, NULL, NULL, NULL, {"login_url", "https://"}},
    {"no scheme", NULL, "graph.example.test", NULL, NULL, NULL, NULL, {"graph_url", "https://"}},
    {"smtp with https",
     NULL,
     NULL,
     "https://smtp.example.test",
     NULL,
     NULL,
     NULL,
     {"smtp_url", "smtps://"}},
    {"smtp with a path",
     NULL,
     NULL,
     "smtp://smtp.example.test:587/x",
     NULL,
     NULL,
     NULL,
     {"smtp_url", "no path"}},
    {"no host", "https:///", NULL, NULL, NULL, NULL, NULL, {"login_url", "host"}},
    {"bad port",
     "https://login.example.test:http",
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     {"login_url", "port"}},
    {"query",
     "https://login.example.test/?x=1",
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     {"login_url", "query"}},
    {"space",
     "https://login.example.test /",
     NULL,
     NULL,
     NULL,
     NULL,
     NULL,
     {"login_url", "spaces"}},
};

static void
test_endpoints_overrides(void **state)
{
	for (size_t i = 0; i < NELEM(override_cases); i++) {
		const struct override_case *tc = &override_cases[i];
		struct oauth_endpoints e;
		struct mb_err err = {0};
		int rc =
		    oauth_endpoints_resolve("global", tc->login, tc->graph, tc->smtp, &e, &err);

		if (tc->want_login == NULL) {
			if (rc != -1) {
				print_error("case %s: accepted, want refused\n", tc->name);
				fail();
			}
			for (size_t k = 0; k < 2; k++) {
				if (tc->want_err[k] && !has(err.msg, tc->want_err[k])) {
					print_error("case %s: error \"%s\" lacks \"%s\"\n",
					            tc->name, err.msg, tc->want_err[k]);
					fail();
				}
			}
			continue;
		}
		if (rc != 0) {
			print_error("case %s: refused: %s\n", tc->name, err.msg);
			fail();
		}
		assert_str_or_null(tc->name, "login", e.login, tc->want_login);
		assert_str_or_null(tc->name, "graph", e.graph, tc->want_graph);
		assert_str_or_null(tc->name, "smtp", e.smtp, tc->want_smtp);
		/* overrides never change the resource identifiers used in scopes */
		assert_string_equal(e.graph_resource, "https://graph.microsoft.com");
		assert_string_equal(e.outlook_resource, "https://outlook.office.com");
	}
}

static void
test_endpoint_url(void **state)
{
	static const struct {
		const char *name, *cloud, *login, *tenant, *what, *want;
	} cases[] = {
	    {"global token", "global", NULL, "contoso.onmicrosoft.com", "token",
	     "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"},
	    {"authorize by GUID", "global", NULL, "aaaabbbb-0000-cccc-1111-dddd2222eeee",
	     "authorize",
	     "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/oauth2/v2.0/"
	     "authorize"},
	    {"usgov devicecode", "usgov", NULL, "organizations", "devicecode",
	     "https://login.microsoftonline.us/organizations/oauth2/v2.0/devicecode"},
	    {"china", "china", NULL, "t", "token",
	     "https://login.partner.microsoftonline.cn/t/oauth2/v2.0/token"},
	    {"override", "global", "http://127.0.0.1:3000/", "common", "token",
	     "http://127.0.0.1:3000/common/oauth2/v2.0/token"},
	    {"odd tenant is encoded", "global", NULL, "a b/c?", "token",
	     "https://login.microsoftonline.com/a%20b%2Fc%3F/oauth2/v2.0/token"},
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		struct oauth_endpoints e;
		struct mb_buf b = {0};

		assert_int_equal(
		    oauth_endpoints_resolve(cases[i].cloud, cases[i].login, NULL, NULL, &e, NULL),
		    0);
		oauth_endpoint_url(&e, cases[i].tenant, cases[i].what, &b);
		assert_str_or_null(cases[i].name, "url", b.data, cases[i].want);
		mb_buf_release(&b);
	}
}

/* ---- scopes ---- */

#define G "https://graph.microsoft.com"

static void
test_scopes_token(void **state)
{
	static const struct {
		const char *name;
		enum oauth_provider p;
		enum oauth_auth a;
		enum oauth_resource r;
		bool upload;
		const char *want;
	} cases[] = {
	    {"graph delegated", OAUTH_PROVIDER_GRAPH, OAUTH_AUTH_DELEGATED, OAUTH_RES_GRAPH, false,
	     G "/Mail.Send " G "/User.Read offline_access"},
	    {"graph delegated, upload sessions", OAUTH_PROVIDER_GRAPH, OAUTH_AUTH_DELEGATED,
	     OAUTH_RES_GRAPH, true,
	     G "/Mail.Send " G "/User.Read offline_access " G "/Mail.ReadWrite"},
	    {"smtp delegated", OAUTH_PROVIDER_MSSMTP, OAUTH_AUTH_DELEGATED, OAUTH_RES_OUTLOOK,
	     false, "https://outlook.office.com/SMTP.Send offline_access"},
	    {"smtp delegated ignores upload", OAUTH_PROVIDER_MSSMTP, OAUTH_AUTH_DELEGATED,
	     OAUTH_RES_OUTLOOK, true, "https://outlook.office.com/SMTP.Send offline_access"},
	    {"graph app-only", OAUTH_PROVIDER_GRAPH, OAUTH_AUTH_APP_ONLY, OAUTH_RES_GRAPH, true,
	     G "/.default"},
	    {"smtp app-only", OAUTH_PROVIDER_MSSMTP, OAUTH_AUTH_APP_ONLY, OAUTH_RES_OUTLOOK, false,
	     "https://outlook.office365.com/.default"},
	    {"password smtp: none", OAUTH_PROVIDER_SMTP, OAUTH_AUTH_DELEGATED, OAUTH_RES_GRAPH,
	     false, NULL},
	};
	struct oauth_endpoints e;

	assert_int_equal(oauth_endpoints_resolve("global", NULL, NULL, NULL, &e, NULL), 0);
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct mb_buf b = {0};

		oauth_scopes_token(&e, cases[i].p, cases[i].a, cases[i].r, cases[i].upload, &b);
		assert_str_or_null(cases[i].name, "scope", b.data, cases[i].want);
		mb_buf_release(&b);
	}
	/* sovereign clouds: the prefixes follow the cloud */
	{
		struct mb_buf b = {0};

		assert_int_equal(oauth_endpoints_resolve("usgov", NULL, NULL, NULL, &e, NULL), 0);
		oauth_scopes_token(&e, OAUTH_PROVIDER_MSSMTP, OAUTH_AUTH_APP_ONLY,
		                   OAUTH_RES_OUTLOOK, false, &b);
		assert_string_equal(b.data, "https://outlook.office365.us/.default");
		mb_buf_reset(&b);
		oauth_scopes_token(&e, OAUTH_PROVIDER_GRAPH, OAUTH_AUTH_DELEGATED, OAUTH_RES_GRAPH,
		                   false, &b);
		assert_string_equal(b.data, "https://graph.microsoft.us/Mail.Send "
		                            "https://graph.microsoft.us/User.Read offline_access");
		mb_buf_release(&b);
	}
}

static void
test_scopes_authorize(void **state)
{
	static const struct {
		const char *name;
		enum oauth_provider p;
		bool upload;
		const char *want;
	} cases[] = {
	    {"graph", OAUTH_PROVIDER_GRAPH, false,
	     "offline_access openid profile " G "/Mail.Send " G "/User.Read"},
	    {"graph, upload sessions", OAUTH_PROVIDER_GRAPH, true,
	     "offline_access openid profile " G "/Mail.Send " G "/User.Read " G "/Mail.ReadWrite"},
	    {"microsoft-smtp", OAUTH_PROVIDER_MSSMTP, false,
	     "offline_access openid profile " G "/Mail.Send " G
	     "/User.Read https://outlook.office.com/SMTP.Send"},
	    {"microsoft-smtp, upload sessions", OAUTH_PROVIDER_MSSMTP, true,
	     "offline_access openid profile " G "/Mail.Send " G "/User.Read " G
	     "/Mail.ReadWrite https://outlook.office.com/SMTP.Send"},
	    {"password smtp: none", OAUTH_PROVIDER_SMTP, true, NULL},
	};
	struct oauth_endpoints e;

	assert_int_equal(oauth_endpoints_resolve("global", NULL, NULL, NULL, &e, NULL), 0);
	for (size_t i = 0; i < NELEM(cases); i++) {
		struct mb_buf b = {0};

		oauth_scopes_authorize(&e, cases[i].p, cases[i].upload, &b);
		assert_str_or_null(cases[i].name, "scope", b.data, cases[i].want);
		mb_buf_release(&b);
	}
}

static void
test_provider_needs(void **state)
{
	static const struct {
		enum oauth_provider p;
		bool graph, outlook;
	} cases[] = {
	    {OAUTH_PROVIDER_GRAPH, true, false},
	    {OAUTH_PROVIDER_MSSMTP, false, true},
	    {OAUTH_PROVIDER_SMTP, false, false},
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		assert_int_equal(oauth_provider_needs(cases[i].p, OAUTH_RES_GRAPH), cases[i].graph);
		assert_int_equal(oauth_provider_needs(cases[i].p, OAUTH_RES_OUTLOOK),
		                 cases[i].outlook);
	}
}

/* ---- token response ---- */

/* §1.9, with a well-formed id_token in place of the truncated one */
#define MS_SAMPLE                                                                                  \
	"{\n  \"token_type\": \"Bearer\",\n  \"scope\": \"https://graph.microsoft.com/Mail.Send "  \
	"https://graph.microsoft.com/User.Read\",\n  \"expires_in\": 3599,\n  "                    \
	"\"ext_expires_in\": 3599,\n  \"access_token\": "                                          \
	"\"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik5HVEZ2ZEstZnl0aEV1Q...\",\n  "            \
	"\"refresh_token\": \"AwABAAAAvPM1KaPlrEqdFSBzjqfTGAMxZGUTdM0t4B4...\",\n  \"id_token\": " \
	"\"eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJhdWQiOiIyZDRkMTFhMi1mODE0LTQ2YTctOD...\"\n}"

struct token_case {
	const char *name;
	const char *json;
	int want_rc;
	const char *access, *refresh, *scope;
	int64_t expires, ext;
	const char *err; /* substring of the error when refused */
};

static const struct token_case token_cases[] = {
    {"Microsoft sample (§1.9)", MS_SAMPLE, 0,
     "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6Ik5HVEZ2ZEstZnl0aEV1Q...",
     "AwABAAAAvPM1KaPlrEqdFSBzjqfTGAMxZGUTdM0t4B4...",
     "https://graph.microsoft.com/Mail.Send https://graph.microsoft.com/User.Read", 3599, 3599,
     NULL},
    {"client credentials (§1.7)",
     "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,\"access_token\":"
     "\"eyJSECRET\"}",
     0, "eyJSECRET", NULL, NULL, 3599, 3599, NULL},
    {"numeric strings",
     "{\"access_token\":\"SECRET\",\"expires_in\":\"3600\",\"ext_expires_in\":"
     "\"7200\",\"token_type\":\"bearer\"}",
     0, "SECRET", NULL, NULL, 3600, 7200, NULL},
    {"integral real", "{\"access_token\":\"SECRET\",\"expires_in\":60.0}", 0, "SECRET", NULL, NULL,
     60, 0, NULL},
    {"no token_type is Bearer", "{\"access_token\":\"SECRET\",\"expires_in\":1}", 0, "SECRET", NULL,
     NULL, 1, 0, NULL},
    {"unknown fields ignored, bad ext ignored",
     "{\"access_token\":\"SECRET\",\"expires_in\":10,\"ext_expires_in\":\"soon\",\"foo\":[1,{}],"
     "\"scope\":7,\"refresh_token\":null}",
     0, "SECRET", NULL, NULL, 10, 0, NULL},
    {"empty refresh_token is none",
     "{\"access_token\":\"SECRET\",\"expires_in\":10,\"refresh_token\":\"\"}", 0, "SECRET", NULL,
     NULL, 10, 0, NULL},
    {"not JSON", "<html>502 Bad Gateway SECRET</html>", -1, NULL, NULL, NULL, 0, 0, "not JSON"},
    {"truncated", "{\"access_token\":\"SECRET", -1, NULL, NULL, NULL, 0, 0, "not JSON"},
    {"empty", "", -1, NULL, NULL, NULL, 0, 0, "not JSON"},
    {"array", "[\"SECRET\"]", -1, NULL, NULL, NULL, 0, 0, "object"},
    {"no access_token", "{\"token_type\":\"Bearer\",\"expires_in\":3599}", -1, NULL, NULL, NULL, 0,
     0, "access_token"},
    {"empty access_token", "{\"access_token\":\"\",\"expires_in\":3599}", -1, NULL, NULL, NULL, 0,
     0, "access_token"},
    {"access_token not a string", "{\"access_token\":12345,\"expires_in\":3599}", -1, NULL, NULL,
     NULL, 0, 0, "access_token"},
    {"token_type pop", "{\"access_token\":\"SECRET\",\"token_type\":\"pop\",\"expires_in\":1}", -1,
     NULL, NULL, NULL, 0, 0, "Bearer"},
    {"token_type not a string", "{\"access_token\":\"SECRET\",\"token_type\":1,\"expires_in\":1}",
     -1, NULL, NULL, NULL, 0, 0, "Bearer"},
    {"no expires_in", "{\"access_token\":\"SECRET\",\"refresh_token\":\"RSECRET\"}", -1, NULL, NULL,
     NULL, 0, 0, "expires_in"},
    {"expires_in zero", "{\"access_token\":\"SECRET\",\"expires_in\":0}", -1, NULL, NULL, NULL, 0,
     0, "expires_in"},
    {"expires_in negative", "{\"access_token\":\"SECRET\",\"expires_in\":-5}", -1, NULL, NULL, NULL,
     0, 0, "expires_in"},
    {"expires_in signed string", "{\"access_token\":\"SECRET\",\"expires_in\":\"-5\"}", -1, NULL,
     NULL, NULL, 0, 0, "expires_in"},
    {"expires_in not numeric", "{\"access_token\":\"SECRET\",\"expires_in\":\"1h\"}", -1, NULL,
     NULL, NULL, 0, 0, "expires_in"},
    {"expires_in fraction", "{\"access_token\":\"SECRET\",\"expires_in\":1.5}", -1, NULL, NULL,
     NULL, 0, 0, "expires_in"},
    {"expires_in bool", "{\"access_token\":\"SECRET\",\"expires_in\":true}", -1, NULL, NULL, NULL,
     0, 0, "expires_in"},
    {"expires_in absurd", "{\"access_token\":\"SECRET\",\"expires_in\":99999999999}", -1, NULL,
     NULL, NULL, 0, 0, "expires_in"},
    {"refresh_token not a string",
     "{\"access_token\":\"SECRET\",\"expires_in\":1,\"refresh_token\":{\"v\":\"RSECRET\"}}", -1,
     NULL, NULL, NULL, 0, 0, "refresh_token"},
    {"duplicate access_token",
     "{\"access_token\":\"SECRET\",\"access_token\":\"SECRET2\",\"expires_in\":1}", -1, NULL, NULL,
     NULL, 0, 0, "not JSON"},
};

static void
test_token_resp(void **state)
{
	for (size_t i = 0; i < NELEM(token_cases); i++) {
		const struct token_case *tc = &token_cases[i];
		struct oauth_token_resp r;
		struct mb_err err = {0};
		int rc = oauth_token_resp_parse(tc->json, strlen(tc->json), &r, &err);

		if (rc != tc->want_rc) {
			print_error("case %s: rc %d, want %d (%s)\n", tc->name, rc, tc->want_rc,
			            err.msg);
			fail();
		}
		if (rc < 0) {
			if (!has(err.msg, tc->err)) {
				print_error("case %s: error \"%s\" lacks \"%s\"\n", tc->name,
				            err.msg, tc->err);
				fail();
			}
			/* never a token in an error message */
			assert_false(has(err.msg, "SECRET"));
			assert_false(has(err.msg, "eyJ"));
			assert_int_equal(err.code, MB_EINVAL);
			/* nothing left to free on failure */
			assert_null(r.access_token);
			assert_null(r.refresh_token);
			assert_null(r.token_type);
			continue;
		}
		assert_str_or_null(tc->name, "access_token", r.access_token, tc->access);
		assert_str_or_null(tc->name, "refresh_token", r.refresh_token, tc->refresh);
		assert_str_or_null(tc->name, "scope", r.scope, tc->scope);
		assert_str_or_null(tc->name, "token_type", r.token_type, "Bearer");
		assert_int_equal(r.expires_in, tc->expires);
		assert_int_equal(r.ext_expires_in, tc->ext);
		oauth_token_resp_release(&r);
		assert_null(r.access_token);
	}
	/* the sample's id_token is truncated: kept, but it names no account */
	{
		struct oauth_token_resp r;

		assert_int_equal(oauth_token_resp_parse(MS_SAMPLE, strlen(MS_SAMPLE), &r, NULL), 0);
		assert_non_null(r.id_token);
		assert_null(r.account);
		oauth_token_resp_release(&r);
		oauth_token_resp_release(NULL);
	}
}

/* A JWT with header {"typ":"JWT","alg":"none"}, the given payload and a fake signature. */
static char *
make_jwt(const char *payload)
{
	struct mb_buf b = {0};

	mb_buf_puts(&b, "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.");
	oauth_base64url(payload, strlen(payload), &b);
	mb_buf_puts(&b, ".c2lnbmF0dXJl");
	return mb_buf_steal(&b);
}

static void
test_token_resp_id_token(void **state)
{
	static const struct {
		const char *name;
		const char *payload; /* claims to encode, or NULL to use raw */
		const char *raw;
		const char *want;
	} cases[] = {
	    {"preferred_username wins",
	     "{\"aud\":\"x\",\"preferred_username\":\"user@contoso.com\",\"upn\":\"upn@contoso."
	     "com\","
	     "\"email\":\"mail@contoso.com\"}",
	     NULL, "user@contoso.com"},
	    {"then upn", "{\"upn\":\"upn@contoso.com\",\"email\":\"mail@contoso.com\"}", NULL,
	     "upn@contoso.com"},
	    {"then email", "{\"email\":\"mail@contoso.com\",\"preferred_username\":\"\"}", NULL,
	     "mail@contoso.com"},
	    {"base64url - and _ in the payload",
	     "{\"n\":\"\x3f\x3f\x3f>>>~~~\",\"preferred_username\":\"\xc3\xa4rger@contoso.com\"}",
	     NULL, "\xc3\xa4rger@contoso.com"},
	    {"no padding needed", NULL, "h.eyJlbWFpbCI6ImFAYiJ9.s", "a@b"},
	    {"padded payload", NULL, "h.eyJlbWFpbCI6ImFiQGIifQ==.s", "ab@b"},
	    {"no names", "{\"oid\":\"00000000-0000-0000-0000-000000000000\"}", NULL, NULL},
	    {"name not a string", "{\"preferred_username\":42}", NULL, NULL},
	    {"control characters refused", "{\"preferred_username\":\"a\\u001b[31m@x\"}", NULL,
	     NULL},
	    {"payload not an object", "[1,2]", NULL, NULL},
	    {"payload not JSON", "preferred_username", NULL, NULL},
	    {"one part", NULL, "eyJwcmVmZXJyZWRfdXNlcm5hbWUiOiJ4In0", NULL},
	    {"two parts only", NULL, "h.eyJwcmVmZXJyZWRfdXNlcm5hbWUiOiJ4In0", NULL},
	    {"empty payload", NULL, "h..s", NULL},
	    {"standard base64 alphabet refused", NULL, "h.ab+/.s", NULL},
	    {"not base64", NULL, "h.!!!!.s", NULL},
	    {"bad length", NULL, "h.a.s", NULL},
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		char *tok = cases[i].payload ? make_jwt(cases[i].payload) : mb_strdup(cases[i].raw);
		char *json = mb_asprintf("{\"token_type\":\"Bearer\",\"expires_in\":3599,"
		                         "\"access_token\":\"SECRET\",\"id_token\":\"%s\"}",
		                         tok);
		struct oauth_token_resp r;
		struct mb_err err = {0};

		if (oauth_token_resp_parse(json, strlen(json), &r, &err) != 0) {
			print_error("case %s: refused: %s\n", cases[i].name, err.msg);
			fail();
		}
		assert_str_or_null(cases[i].name, "id_token", r.id_token, tok);
		assert_str_or_null(cases[i].name, "account", r.account, cases[i].want);
		oauth_token_resp_release(&r);
		free(json);
		free(tok);
	}
	/* the case above really exercises the url-safe alphabet */
	{
		char *tok = make_jwt(cases[3].payload);

		assert_non_null(strpbrk(tok, "-_"));
		free(tok);
	}
}

/* ---- error body ---- */

/* §1.10, verbatim */
#define MS_ERROR                                                                                   \
	"{\n  \"error\": \"invalid_scope\",\n  \"error_description\": \"AADSTS70011: The "         \
	"provided "                                                                                \
	"value for the input parameter 'scope' isn't valid. The scope "                            \
	"https://example.contoso.com/activity.read isn't valid.\\r\\nTrace ID: "                   \
	"0000aaaa-11bb-cccc-dd33-eeeeee333333\\r\\nCorrelation ID: "                               \
	"aaaa0000-bb11-2222-33cc-444444dddddd\\r\\nTimestamp: 2016-01-09 02:02:12Z\",\n  "         \
	"\"error_codes\": [70011],\n  \"timestamp\": \"2016-01-09 02:02:12Z\",\n  \"trace_id\": "  \
	"\"0000aaaa-11bb-cccc-dd33-eeeeee333333\",\n  \"correlation_id\": "                        \
	"\"aaaa0000-bb11-2222-33cc-444444dddddd\",\n  \"error_uri\": "                             \
	"\"https://login.microsoftonline.com/error?code=70011\"\n}"

struct error_case {
	const char *name;
	const char *json;
	int status;
	int want_rc;
	const char *error, *description, *trace, *correlation;
	int ncodes;
	long codes[3];
};

static const struct error_case error_cases[] = {
    {"Microsoft sample (§1.10)",
     MS_ERROR,
     400,
     0,
     "invalid_scope",
     "AADSTS70011: The provided value for the input parameter 'scope' isn't valid. The scope "
     "https://example.contoso.com/activity.read isn't valid.",
     "0000aaaa-11bb-cccc-dd33-eeeeee333333",
     "aaaa0000-bb11-2222-33cc-444444dddddd",
     1,
     {70011}},
    {"AADSTS from the description only",
     "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid client "
     "secret provided.\\nTrace ID: x\"}",
     401,
     0,
     "invalid_client",
     "AADSTS7000215: Invalid client secret provided.",
     "",
     "",
     1,
     {7000215}},
    {"empty error_codes falls back to the description",
     "{\"error\":\"invalid_grant\",\"error_codes\":[],\"error_description\":\"AADSTS700082: "
     "expired\"}",
     400,
     0,
     "invalid_grant",
     "AADSTS700082: expired",
     "",
     "",
     1,
     {700082}},
    {"several codes, strings and junk skipped",
     "{\"error\":\"invalid_grant\",\"error_codes\":[\"50173\",\"x\",-1,1.5,{},70000],"
     "\"error_description\":\"AADSTS1: other\"}",
     400,
     0,
     "invalid_grant",
     "AADSTS1: other",
     "",
     "",
     2,
     {50173, 70000}},
    {"AADSTS not at the start is ignored",
     "{\"error\":\"server_error\",\"error_description\":\"Oops AADSTS50011: x\"}",
     500,
     0,
     "server_error",
     "Oops AADSTS50011: x",
     "",
     "",
     0,
     {0}},
    {"AADSTS without digits",
     "{\"error\":\"server_error\",\"error_description\":\"AADSTS: x\"}",
     503,
     0,
     "server_error",
     "AADSTS: x",
     "",
     "",
     0,
     {0}},
    {"AADSTS with too many digits",
     "{\"error\":\"server_error\",\"error_description\":\"AADSTS1234567890: x\"}",
     503,
     0,
     "server_error",
     "AADSTS1234567890: x",
     "",
     "",
     0,
     {0}},
    {"redirect error without description",
     "{\"error\":\"access_denied\"}",
     302,
     0,
     "access_denied",
     "",
     "",
     "",
     0,
     {0}},
    {"control characters replaced",
     "{\"error\":\"x\\u001b[0m\",\"error_description\":\"a\\tb\\u0007c\\rd\"}",
     400,
     0,
     "x?[0m",
     "a?b?c",
     "",
     "",
     0,
     {0}},
    {"no error field",
     "{\"error_description\":\"AADSTS50011: x\",\"error_codes\":[50011]}",
     400,
     -1,
     "",
     "",
     "",
     "",
     0,
     {0}},
    {"error not a string",
     "{\"error\":{\"code\":\"InvalidAuthenticationToken\"}}",
     401,
     -1,
     "",
     "",
     "",
     "",
     0,
     {0}},
    {"empty error", "{\"error\":\"\"}", 400, -1, "", "", "", "", 0, {0}},
    /* found by fuzz_oauth_parse */
    {"error with an empty first line",
     "{\"error\":\"\\nulrT\\tToD\",\"error_codes\":[1]}",
     400,
     -1,
     "",
     "",
     "",
     "",
     0,
     {0}},
    {"not JSON", "<html>Service Unavailable</html>", 503, -1, "", "", "", "", 0, {0}},
    {"empty body", "", 504, -1, "", "", "", "", 0, {0}},
    {"array", "[\"error\"]", 400, -1, "", "", "", "", 0, {0}},
};

static void
test_error_parse(void **state)
{
	for (size_t i = 0; i < NELEM(error_cases); i++) {
		const struct error_case *tc = &error_cases[i];
		struct oauth_error e;
		int rc = oauth_error_parse(tc->json, strlen(tc->json), tc->status, &e);

		if (rc != tc->want_rc) {
			print_error("case %s: rc %d, want %d\n", tc->name, rc, tc->want_rc);
			fail();
		}
		assert_str_or_null(tc->name, "error", e.error, tc->error);
		assert_str_or_null(tc->name, "description", e.description, tc->description);
		assert_str_or_null(tc->name, "trace_id", e.trace_id, tc->trace);
		assert_str_or_null(tc->name, "correlation_id", e.correlation_id, tc->correlation);
		assert_int_equal(e.http_status, tc->status);
		if (e.ncodes != tc->ncodes) {
			print_error("case %s: %d codes, want %d\n", tc->name, e.ncodes, tc->ncodes);
			fail();
		}
		for (int k = 0; k < tc->ncodes; k++)
			assert_int_equal(e.codes[k], tc->codes[k]);
	}
}

static void
test_error_parse_bounds(void **state)
{
	struct mb_buf b = {0};
	struct oauth_error e;

	/* a long description is cut, and never inside a UTF-8 character */
	mb_buf_puts(&b, "{\"error\":\"invalid_request\",\"error_description\":\"AADSTS9014: ");
	for (int i = 0; i < 400; i++)
		mb_buf_puts(&b, "\xc3\xa9");
	mb_buf_puts(&b, "\",\"error_codes\":[1,2,3,4,5,6,7,8,9,10],\"trace_id\":\"");
	for (int i = 0; i < 100; i++)
		mb_buf_puts(&b, "t");
	mb_buf_puts(&b, "\"}");
	assert_int_equal(oauth_error_parse(b.data, b.len, 400, &e), 0);
	assert_true(strlen(e.description) < sizeof(e.description));
	/* 12 + 499 bytes would fit, but the 499th is half an é */
	assert_int_equal(strlen(e.description), 12 + 498);
	assert_int_equal(e.ncodes, 8);
	assert_int_equal(e.codes[7], 8);
	assert_int_equal(strlen(e.trace_id), sizeof(e.trace_id) - 1);
	mb_buf_release(&b);
	assert_int_equal(oauth_error_parse(NULL, 0, 500, &e), -1);
	assert_string_equal(e.error, "");
}

/* ---- device-code response ---- */

struct device_case {
	const char *name;
	const char *json;
	int want_rc;
	const char *user_code, *uri, *message;
	int64_t expires, interval;
	const char *err;
};

static const struct device_case device_cases[] = {
    {"Microsoft shape",
     "{\"device_code\":\"GMMhmHCXhWEzkobqIHGG_EnNYYsAkukHspeYUk9E8SECRET\",\"user_code\":"
     "\"ABCD1234\",\"verification_uri\":\"https://microsoft.com/devicelogin\",\"expires_in\":900,"
     "\"interval\":5,\"message\":\"To sign in, use a web browser to open the page "
     "https://microsoft.com/devicelogin and enter the code ABCD1234 to authenticate.\"}",
     0, "ABCD1234", "https://microsoft.com/devicelogin",
     "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter "
     "the code ABCD1234 to authenticate.",
     900, 5, NULL},
    {"numeric strings, verification_url, no interval",
     "{\"device_code\":\"DSECRET\",\"user_code\":\"X\",\"verification_url\":\"https://x/\","
     "\"expires_in\":\"600\"}",
     0, "X", "https://x/", NULL, 600, 5, NULL},
    {"interval given as string",
     "{\"device_code\":\"DSECRET\",\"user_code\":\"X\",\"verification_uri\":\"https://x/\","
     "\"interval\":\"15\"}",
     0, "X", "https://x/", NULL, 900, 15, NULL},
    {"message escapes neutralised",
     "{\"device_code\":\"DSECRET\",\"user_code\":\"X\",\"verification_uri\":\"u\",\"message\":"
     "\"a\\u001b]0;owned\\u0007b\\n\"}",
     0, "X", "u", "a ]0;owned b ", 900, 5, NULL},
    {"no device_code", "{\"user_code\":\"X\",\"verification_uri\":\"u\"}", -1, NULL, NULL, NULL, 0,
     0, "device_code"},
    {"no user_code", "{\"device_code\":\"DSECRET\",\"verification_uri\":\"u\"}", -1, NULL, NULL,
     NULL, 0, 0, "user_code"},
    {"no verification_uri", "{\"device_code\":\"DSECRET\",\"user_code\":\"X\"}", -1, NULL, NULL,
     NULL, 0, 0, "verification_uri"},
    {"bad interval",
     "{\"device_code\":\"DSECRET\",\"user_code\":\"X\",\"verification_uri\":\"u\",\"interval\":"
     "\"soon\"}",
     -1, NULL, NULL, NULL, 0, 0, "interval"},
    {"negative expires_in",
     "{\"device_code\":\"DSECRET\",\"user_code\":\"X\",\"verification_uri\":\"u\","
     "\"expires_in\":-1}",
     -1, NULL, NULL, NULL, 0, 0, "expires_in"},
    {"not JSON", "DSECRET", -1, NULL, NULL, NULL, 0, 0, "not JSON"},
    {"not an object", "\"DSECRET\"", -1, NULL, NULL, NULL, 0, 0, "object"},
};

static void
test_device_resp(void **state)
{
	for (size_t i = 0; i < NELEM(device_cases); i++) {
		const struct device_case *tc = &device_cases[i];
		struct oauth_device_resp r;
		struct mb_err err = {0};
		int rc = oauth_device_resp_parse(tc->json, strlen(tc->json), &r, &err);

		if (rc != tc->want_rc) {
			print_error("case %s: rc %d, want %d (%s)\n", tc->name, rc, tc->want_rc,
			            err.msg);
			fail();
		}
		if (rc < 0) {
			if (!has(err.msg, tc->err)) {
				print_error("case %s: error \"%s\" lacks \"%s\"\n", tc->name,
				            err.msg, tc->err);
				fail();
			}
			assert_false(has(err.msg, "SECRET"));
			assert_null(r.device_code);
			continue;
		}
		assert_true(has(r.device_code, "SECRET"));
		assert_str_or_null(tc->name, "user_code", r.user_code, tc->user_code);
		assert_str_or_null(tc->name, "verification_uri", r.verification_uri, tc->uri);
		assert_str_or_null(tc->name, "message", r.message, tc->message);
		assert_int_equal(r.expires_in, tc->expires);
		assert_int_equal(r.interval, tc->interval);
		oauth_device_resp_release(&r);
		assert_null(r.device_code);
	}
	oauth_device_resp_release(NULL);
}

/* ---- errors that name the fix ---- */

#define TR OAUTH_CLASS_TRANSIENT
#define RE OAUTH_CLASS_REAUTHORIZE
#define CF OAUTH_CLASS_CONFIG
#define US OAUTH_CLASS_USER
#define PE OAUTH_CLASS_PENDING

/* Every code of microsoft-reference §2 (both tables) and §1.1, §1.3, §1.12, §1.13, §5. */
static const struct {
	long code;
	enum oauth_class cls;
} aadsts_want[] = {
    {50011, CF},   {50020, CF},   {50034, US},   {50055, US},  {50057, CF},  {50058, RE},
    {50076, RE},   {50079, US},   {50126, US},   {50173, RE},  {53003, CF},  {65001, CF},
    {65004, US},   {70000, RE},   {70008, RE},   {70011, CF},  {700016, CF}, {700082, RE},
    {7000215, CF}, {7000218, CF}, {7000222, CF}, {90002, CF},  {90014, CF},  {90094, CF},
    {500113, CF},  {700054, CF},  {9002313, CF}, {135010, US}, {90072, US},  {500011, CF},
    {65005, CF},   {650056, CF},  {650057, CF},  {50194, CF},  {54005, RE},  {700005, RE},
    {700022, CF},  {700025, CF},  {70016, PE},   {70018, US},  {70019, US},  {90120, US},
    {70043, RE},   {530035, CF},  {50196, TR},   {90055, TR},  {901002, CF}, {50147, CF},
    {50148, RE},   {50149, CF},   {501491, CF},  {501481, RE}, {90093, CF},  {900941, CF},
    {900981, CF},  {9001023, CF}, {90124, CF},   {90130, CF},  {90038, CF},  {70004, CF},
    {900971, CF},
};

static void
assert_row_ok(const char *what, const struct oauth_explain *ex)
{
	if (ex == NULL || ex->cause == NULL || ex->fix == NULL || strlen(ex->cause) < 10 ||
	    strlen(ex->fix) < 10 || strchr(ex->cause, '\n') || strchr(ex->fix, '\n') ||
	    (unsigned)ex->cls > OAUTH_CLASS_PENDING) {
		print_error("row %s: missing, or cause/fix empty or not one line\n", what);
		fail();
	}
}

static void
test_aadsts_table(void **state)
{
	size_t n;
	const struct oauth_explain *t = oauth_aadsts_table(&n);

	assert_int_equal(n, NELEM(aadsts_want));
	for (size_t i = 0; i < NELEM(aadsts_want); i++) {
		const struct oauth_explain *ex = oauth_aadsts_find(aadsts_want[i].code);
		char what[32];

		snprintf(what, sizeof(what), "AADSTS%ld", aadsts_want[i].code);
		assert_row_ok(what, ex);
		assert_int_equal(ex->aadsts, aadsts_want[i].code);
		if (ex->cls != aadsts_want[i].cls) {
			print_error("%s: class %s, want %s\n", what, oauth_class_name(ex->cls),
			            oauth_class_name(aadsts_want[i].cls));
			fail();
		}
	}
	for (size_t i = 0; i < n; i++) {
		assert_row_ok("table", &t[i]);
		assert_ptr_equal(oauth_aadsts_find(t[i].aadsts), &t[i]); /* no duplicates */
	}
	assert_null(oauth_aadsts_find(0));
	assert_null(oauth_aadsts_find(12345));
}

static void
test_aadsts_wording(void **state)
{
	static const struct {
		long code;
		const char *cause[2], *fix[4];
	} cases[] = {
	    {7000215,
	     {"the client secret is wrong — often the secret ID was pasted instead of its Value"},
	     {"In Entra admin center → App registrations → your app → Certificates & secrets, copy "
	      "the secret's Value (not the Secret ID) into client_secret_file"}},
	    {7000222,
	     {"the client secret has expired"},
	     {"addPassword", "new client secret", "client_secret_file"}},
	    {700082, {"90 days", "inactivity"}, {"mailbridge auth login NAME", "daily"}},
	    {65001,
	     {"needs permission to access resources in your organization that only an admin can "
	      "grant"},
	     {"Grant admin consent", "App registrations → API permissions", "owners", "Part 5"}},
	    {90094,
	     {"needs permission to access resources in your organization that only an admin can "
	      "grant"},
	     {"Grant admin consent", "App registrations → API permissions", "owners", "Part 5"}},
	    {50011, {"redirect URI"}, {"{public_url}/oauth/callback", "exactly"}},
	    {50194, {"single-tenant", "/common"}, {"tenant", "tenant ID"}},
	    {70000, {"refresh token"}, {"mailbridge auth login NAME"}},
	    {7000218, {"secret"}, {"client_secret_file", "Allow public client flows"}},
	    {700016, {"client_id"}, {"client_id", "tenant"}},
	    {90038, {"cloud"}, {"cloud"}},
	};

	for (size_t i = 0; i < NELEM(cases); i++) {
		const struct oauth_explain *ex = oauth_aadsts_find(cases[i].code);

		assert_non_null(ex);
		for (size_t k = 0; k < 2 && cases[i].cause[k]; k++) {
			if (!has(ex->cause, cases[i].cause[k])) {
				print_error("AADSTS%ld: cause \"%s\" lacks \"%s\"\n", cases[i].code,
				            ex->cause, cases[i].cause[k]);
				fail();
			}
		}
		for (size_t k = 0; k < 4 && cases[i].fix[k]; k++) {
			if (!has(ex->fix, cases[i].fix[k])) {
				print_error("AADSTS%ld: fix \"%s\" lacks \"%s\"\n", cases[i].code,
				            ex->fix, cases[i].fix[k]);
				fail();
			}
		}
	}
}

static void
test_error_strings(void **state)
{
	static const struct {
		const char *error;
		enum oauth_class cls;
	} cases[] = {
	    {"invalid_grant", RE},
	    {"interaction_required", RE},
	    {"login_required", RE},
	    {"consent_required", RE},
	    {"invalid_client", CF},
	    {"unauthorized_client", CF},
	    {"invalid_scope", CF},
	    {"invalid_request", CF},
	    {"invalid_resource", CF},
	    {"unsupported_grant_type", CF},
	    {"unsupported_response_type", CF},
	    {"temporarily_unavailable", TR},
	    {"server_error", TR},
	    {"authorization_pending", PE},
	    {"slow_down", PE},
	    {"access_denied", US},
	    {"authorization_declined", US},
	    {"expired_token", US},
	    {"bad_verification_code", US},
	    {"permission_denied", US},
	};
	size_t n = 0;

	for (size_t i = 0; i < NELEM(cases); i++) {
		const struct oauth_explain *ex = oauth_error_find(cases[i].error);

		assert_row_ok(cases[i].error, ex);
		assert_int_equal(ex->aadsts, 0);
		if (ex->cls != cases[i].cls) {
			print_error("%s: class %s, want %s\n", cases[i].error,
			            oauth_class_name(ex->cls), oauth_class_name(cases[i].cls));
			fail();
		}
	}
	while (oauth_error_name(n) != NULL) {
		assert_row_ok(oauth_error_name(n), oauth_error_find(oauth_error_name(n)));
		n++;
	}
	assert_int_equal(n, NELEM(cases));
	assert_null(oauth_error_find("Invalid_Grant"));
	assert_null(oauth_error_find(NULL));
	assert_true(has(oauth_error_find("invalid_client")->fix, "Value (not the Secret ID)"));
	assert_true(has(oauth_error_find("invalid_grant")->fix, "mailbridge auth login NAME"));
	assert_true(has(oauth_error_find("slow_down")->fix, "5 seconds"));
}

struct explain_case {
	const char *name;
	const char *json;
	int status;
	enum oauth_class cls;
	long aadsts;
	const char *cause, *fix; /* substrings */
};

static const struct explain_case explain_cases[] = {
    {"known code wins over the error string",
     "{\"error\":\"invalid_client\",\"error_codes\":[7000222]}", 401, CF, 7000222, "expired",
     "new client secret"},
    {"first known code", "{\"error\":\"invalid_grant\",\"error_codes\":[1,700082,70000]}", 400, RE,
     700082, "90 days", "auth login"},
    {"unknown code: the error string, with the code",
     "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS123456: new\"}", 400, RE, 123456,
     "expired, revoked", "mailbridge auth login NAME"},
    {"invalid_client without a code names the secret", "{\"error\":\"invalid_client\"}", 401, CF, 0,
     "secret", "client_secret_file"},
    {"interaction_required with MFA code",
     "{\"error\":\"interaction_required\",\"error_codes\":[50076]}", 400, RE, 50076, "MFA",
     "auth login"},
    {"consent_required with 65001 is config",
     "{\"error\":\"consent_required\",\"error_codes\":[65001]}", 400, CF, 65001, "admin",
     "Grant admin consent"},
    {"pending", "{\"error\":\"authorization_pending\",\"error_codes\":[70016]}", 400, PE, 70016,
     "not finished", "polling"},
    {"unknown error, 503",
     "{\"error\":\"weird\",\"error_description\":\"Backend down, try later\"}", 503, TR, 0,
     "Backend down, try later", "retries"},
    {"unknown error, 429", "{\"error\":\"weird\"}", 429, TR, 0, "busy", "retries"},
    {"unknown error, 400", "{\"error\":\"weird\",\"error_description\":\"Something odd happened\"}",
     400, CF, 0, "Something odd happened", "mailbridge doctor"},
    {"not JSON, 502", "<html>Bad Gateway</html>", 502, TR, 0, "no reason", "retries"},
    {"not JSON, 404", "Not Found", 404, CF, 0, "no reason", "mailbridge doctor"},
};

static void
test_error_explain(void **state)
{
	for (size_t i = 0; i < NELEM(explain_cases); i++) {
		const struct explain_case *tc = &explain_cases[i];
		struct oauth_error e;
		struct oauth_explain ex;

		(void)oauth_error_parse(tc->json, strlen(tc->json), tc->status, &e);
		memset(&ex, 0, sizeof(ex));
		oauth_error_explain(&e, &ex);
		assert_row_ok(tc->name, &ex);
		if (ex.cls != tc->cls || ex.aadsts != tc->aadsts || !has(ex.cause, tc->cause) ||
		    !has(ex.fix, tc->fix)) {
			print_error("case %s: %s %ld \"%s\" / \"%s\"\n", tc->name,
			            oauth_class_name(ex.cls), ex.aadsts, ex.cause, ex.fix);
			fail();
		}
	}
}

/* The seed guide's "Troubleshooting Common Errors" 3, 4 and 5. */
static void
test_seed_errors(void **state)
{
	static const char error3[] =
	    "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS90094: The grant requires "
	    "admin permission.\\r\\nTrace ID: t\"}";
	struct oauth_error e;
	struct oauth_explain ex;
	const struct oauth_explain *x;

	/* Error 3: "SMTP needs permission to access resources": admin consent and owners */
	assert_int_equal(oauth_error_parse(error3, strlen(error3), 400, &e), 0);
	oauth_error_explain(&e, &ex);
	assert_int_equal(ex.cls, OAUTH_CLASS_CONFIG);
	assert_int_equal(ex.aadsts, 90094);
	assert_true(has(ex.cause, "needs permission to access resources"));
	assert_true(has(ex.fix, "Grant admin consent"));
	assert_true(has(ex.fix, "owners"));

	/* Error 4: "Application is unverified": not a blocker */
	x = oauth_explain_unverified();
	assert_row_ok("unverified", x);
	assert_true(has(x->cause, "unverified"));
	assert_true(has(x->fix, "not a blocker"));
	assert_int_equal(x->aadsts, 0);

	/* Error 5: "Token expired": refreshed automatically; re-authorize only on invalid_grant */
	x = oauth_explain_token_expired();
	assert_row_ok("token expired", x);
	assert_int_equal(x->cls, OAUTH_CLASS_TRANSIENT);
	assert_true(has(x->cause, "60-90 minutes"));
	assert_true(has(x->cause, "refreshes them"));
	assert_true(has(x->fix, "invalid_grant"));
	assert_true(has(x->fix, "mailbridge auth login NAME"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_pkce_rfc7636),
	    cmocka_unit_test(test_pkce_verifier),
	    cmocka_unit_test(test_base64url),
	    cmocka_unit_test(test_endpoints_clouds),
	    cmocka_unit_test(test_endpoints_overrides),
	    cmocka_unit_test(test_endpoint_url),
	    cmocka_unit_test(test_scopes_token),
	    cmocka_unit_test(test_scopes_authorize),
	    cmocka_unit_test(test_provider_needs),
	    cmocka_unit_test(test_token_resp),
	    cmocka_unit_test(test_token_resp_id_token),
	    cmocka_unit_test(test_error_parse),
	    cmocka_unit_test(test_error_parse_bounds),
	    cmocka_unit_test(test_device_resp),
	    cmocka_unit_test(test_aadsts_table),
	    cmocka_unit_test(test_aadsts_wording),
	    cmocka_unit_test(test_error_strings),
	    cmocka_unit_test(test_error_explain),
	    cmocka_unit_test(test_seed_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
