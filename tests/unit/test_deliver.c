/*
 * deliver: the result classifier. One case per row of each table (Graph, SMTP), the
 * fallbacks, Retry-After, the detail line, and docs/errors.md against the tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "deliver/deliver.h"
#include "util/util.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

#define OK   DELIVER_OK
#define TEMP DELIVER_TEMPFAIL
#define PERM DELIVER_PERMFAIL
#define MSG  DELIVER_SCOPE_MESSAGE
#define CONN DELIVER_SCOPE_CONNECTION

struct want {
	enum deliver_result result;
	enum deliver_scope scope;
	bool refresh_token;
	int64_t retry_after_s;
	const char *cause_word; /* must appear in cause */
	const char *fix_word;   /* must appear in fix */
};

struct graph_case {
	const char *name;
	long status;
	const char *code;
	const char *message;
	int64_t retry_after_s;
	const char *transport_error;
	bool timed_out;
	struct want want;
};

struct smtp_case {
	const char *name;
	int code;
	const char *enhanced;
	const char *text;
	const char *stage;
	const char *transport_error;
	bool timed_out;
	struct want want;
};

static const struct graph_case graph_cases[] = {
    {"202 accepted", 202, NULL, NULL, -1, NULL, false, {OK, MSG, false, -1, "accepted", "none"}},
    {"200 is sent too",
     200,
     "whatever",
     NULL,
     30,
     NULL,
     false,
     {OK, MSG, false, -1, "accepted", "none"}},
    {"401 InvalidAuthenticationToken",
     401,
     "InvalidAuthenticationToken",
     "Access token has expired or is not yet valid.",
     -1,
     NULL,
     false,
     {TEMP, CONN, true, -1, "refreshes it once", "Mail.Send"}},
    {"401 without a code",
     401,
     NULL,
     NULL,
     -1,
     NULL,
     false,
     {TEMP, CONN, true, -1, "access token was refused", "auth login"}},
    {"403 ErrorSendAsDenied",
     403,
     "ErrorSendAsDenied",
     "The user account which was used to submit this request does not have the right to send "
     "mail on behalf of the specified sending account. Cannot submit message.",
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "may not send as the From address",
      "Add-RecipientPermission -Identity <from> -AccessRights SendAs -Trustee <mailbox>"}},
    {"403 MailboxNotEnabledForRESTAPI",
     403,
     "MailboxNotEnabledForRESTAPI",
     "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "no Exchange Online licence", "assign an Exchange Online licence"}},
    {"404 MailboxNotEnabledForRESTAPI",
     404,
     "MailboxNotEnabledForRESTAPI",
     "REST API is not yet supported for this mailbox.",
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "still being provisioned", "licensed mailbox"}},
    {"403 ErrorAccessDenied",
     403,
     "ErrorAccessDenied",
     "Access to OData is disabled.",
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "application access policy", "Test-ApplicationAccessPolicy"}},
    {"404 ErrorInvalidUser",
     404,
     "ErrorInvalidUser",
     "The requested user 'x' is invalid.",
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "Not Found", "Exchange Online licence"}},
    {"404 ResourceNotFound",
     404,
     "ResourceNotFound",
     "Resource could not be discovered.",
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "no Exchange Online licence", "sender ="}},
    {"RequestEntityTooLarge",
     413,
     "RequestEntityTooLarge",
     NULL,
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "4 MB", "large_messages = upload-session"}},
    {"400 BadRequest Maximum request length",
     400,
     "BadRequest",
     "Maximum request length exceeded.",
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "too big for one Microsoft Graph request", "large_messages = smtp"}},
    {"400 The maximum request length supported is 4MB",
     400,
     "BadRequest",
     "The maximum request length supported is 4MB.",
     5,
     NULL,
     false,
     {PERM, MSG, false, -1, "4 MB", "upload-session"}},
    {"ErrorMessageSizeExceeded",
     400,
     "ErrorMessageSizeExceeded",
     "The message exceeds the maximum supported size.",
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "MaxSendSize", "Set-Mailbox"}},
    {"ErrorInvalidRecipients",
     400,
     "ErrorInvalidRecipients",
     "At least one recipient is not valid., A message can't be sent because it contains no "
     "recipients.",
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "recipients", "resend"}},
    {"ErrorMimeContentInvalidBase64String",
     400,
     "ErrorMimeContentInvalidBase64String",
     "Invalid base64 string for MIME content.",
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "a bug in mailbridge", "report it"}},
    {"403 with another code",
     403,
     "accessDenied",
     NULL,
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "403 Forbidden", "admin consent"}},
    {"404 plain Not Found",
     404,
     NULL,
     NULL,
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "\"Not Found\"", "graph_url"}},
    {"413 without a code",
     413,
     NULL,
     NULL,
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "4 MB", "large_messages"}},
    {"429 with Retry-After",
     429,
     "ApplicationThrottled",
     "Application is over its MailboxConcurrency limit.",
     7,
     NULL,
     false,
     {TEMP, MSG, false, 7, "4 concurrent requests", "Retry-After"}},
    {"429 without Retry-After",
     429,
     "TooManyRequests",
     NULL,
     -1,
     NULL,
     false,
     {TEMP, MSG, false, 60, "30 messages a minute", "Retry-After"}},
    {"503 with Retry-After",
     503,
     "serviceNotAvailable",
     NULL,
     120,
     NULL,
     false,
     {TEMP, MSG, false, 120, "temporarily unavailable", "service health"}},
    {"504 without Retry-After",
     504,
     NULL,
     NULL,
     -1,
     NULL,
     false,
     {TEMP, MSG, false, -1, "temporarily unavailable", "back-off"}},
    {"500 generalException",
     500,
     "generalException",
     NULL,
     -1,
     NULL,
     false,
     {TEMP, MSG, false, -1, "on its side", "retries"}},
    {"timeout: cURL error 28",
     0,
     NULL,
     NULL,
     -1,
     "Operation timed out after 30001 milliseconds with 0 bytes received",
     true,
     {TEMP, CONN, false, -1, "cURL error 28: Operation timed out", "graph.microsoft.com"}},
    {"timeout beats a status",
     202,
     NULL,
     NULL,
     -1,
     "Operation timed out",
     true,
     {TEMP, CONN, false, -1, "did not answer in time", "firewall"}},
    {"DNS failure",
     0,
     NULL,
     NULL,
     -1,
     "Could not resolve host: graph.microsoft.com",
     false,
     {TEMP, CONN, false, -1, "DNS", "proxy"}},
    {"TLS failure",
     0,
     NULL,
     NULL,
     -1,
     "SSL certificate problem: unable to get local issuer",
     false,
     {TEMP, CONN, false, -1, "TLS", "ca_file"}},
    {"408 request timeout",
     408,
     NULL,
     NULL,
     -1,
     NULL,
     false,
     {TEMP, MSG, false, -1, "408", "retries"}},
    {"fallback: 400 unknown code",
     400,
     "ErrorSomethingNew",
     "odd",
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "4xx", "report it"}},
    {"fallback: 410 Gone",
     410,
     NULL,
     NULL,
     30,
     NULL,
     false,
     {PERM, MSG, false, -1, "refused the request", "correct the message"}},
    {"fallback: 302 redirect",
     302,
     NULL,
     NULL,
     -1,
     NULL,
     false,
     {TEMP, MSG, false, -1, "does not expect", "graph_url"}},
    {"fallback: status 0 and no error",
     0,
     NULL,
     NULL,
     -1,
     NULL,
     false,
     {TEMP, MSG, false, -1, "does not expect", "retries"}},
    {"empty error.code is no code",
     403,
     "",
     NULL,
     -1,
     NULL,
     false,
     {TEMP, CONN, false, 3600, "403 Forbidden", "Test-ApplicationAccessPolicy"}},
    {"error.code is case-insensitive",
     403,
     "errorsendasdenied",
     NULL,
     -1,
     NULL,
     false,
     {PERM, MSG, false, -1, "send as", "force_from = yes"}},
};

static const struct smtp_case smtp_cases[] = {
    {"250 queued",
     250,
     "2.0.0",
     "OK <id@host> [Hostname=x]",
     "end",
     NULL,
     false,
     {OK, MSG, false, -1, "accepted", "none"}},
    {"535 5.7.139 Tenant",
     535,
     "5.7.139",
     "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit "
     "https://aka.ms/smtp_auth_disabled for more information.",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "SMTP AUTH is disabled for the tenant",
      "Set-TransportConfig -SmtpClientAuthenticationDisabled $false"}},
    {"535 5.7.139 Mailbox",
     535,
     "5.7.139",
     "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit "
     "https://aka.ms/smtp_auth_disabled for more information.",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "disabled for this mailbox",
      "Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false"}},
    {"535 5.7.139 SmtpClientAuthentication, no scope",
     535,
     "5.7.139",
     "Authentication unsuccessful, SmtpClientAuthentication is disabled",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "tenant or the mailbox", "provider = microsoft-graph"}},
    {"535 5.7.139 basic auth disabled",
     535,
     "5.7.139",
     "Authentication unsuccessful, basic authentication is disabled.",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "Basic", "XOAUTH2"}},
    {"535 5.7.3",
     535,
     "5.7.3",
     "Authentication unsuccessful [SN2PR00CA0018.namprd00]",
     "auth",
     NULL,
     false,
     {TEMP, CONN, true, 3600, "SMTP.Send consent", "New-ServicePrincipal"}},
    {"550 5.7.30 basic auth retired",
     550,
     "5.7.30",
     "Basic authentication is not supported for Client Submission.",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "no longer accepts Basic", "provider = microsoft-smtp"}},
    {"530 5.7.57",
     530,
     "5.7.57",
     "Client not authenticated to send mail",
     "mail",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "did not authenticate", "XOAUTH2"}},
    {"535 plain (generic server)",
     535,
     NULL,
     "Incorrect authentication data",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "refused the login", "app password"}},
    {"5.7.60 Send As",
     550,
     "5.7.60",
     "SMTP; Client does not have permissions to send as this sender",
     "mail",
     NULL,
     false,
     {PERM, MSG, false, -1, "may not send as the From address", "force_from = yes"}},
    {"554 5.2.0 SendAsDenied",
     554,
     "5.2.0",
     "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to "
     "process message due to a permanent exception with message Cannot submit message",
     "end",
     NULL,
     false,
     {PERM, MSG, false, -1, "send as", "Add-RecipientPermission"}},
    {"5.2.2 quota",
     554,
     "5.2.2",
     "Submission quota exceeded",
     "end",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "10,000 recipients a day", "24-hour budget"}},
    {"submission quota without an enhanced code",
     550,
     NULL,
     "sender's submission quota was exceeded",
     "end",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "quota", "rolling"}},
    {"5.1.8 bad outbound sender",
     550,
     "5.1.8",
     "Access denied, bad outbound sender",
     "mail",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "restricted entities", "Defender"}},
    {"432 4.3.2 concurrency",
     432,
     "4.3.2",
     "STOREDRV.ClientSubmit; sender thread limit exceeded",
     "end",
     NULL,
     false,
     {TEMP, MSG, false, 60, "allows 3", "retries"}},
    {"4.7.500 suspicious, low edge",
     450,
     "4.7.500",
     "Access denied, please try again later",
     "mail",
     NULL,
     false,
     {TEMP, CONN, false, 900, "suspicious activity", "compromise"}},
    {"4.7.699 suspicious, high edge",
     450,
     "4.7.699",
     "Access denied, please try again later",
     "mail",
     NULL,
     false,
     {TEMP, CONN, false, 900, "suspicious", "Defender"}},
    {"451 4.7.0",
     451,
     "4.7.0",
     "Temporary server error. Please try again later",
     "data",
     NULL,
     false,
     {TEMP, MSG, false, -1, "temporary error", "back-off"}},
    {"5.1.10 recipient not found",
     550,
     "5.1.10",
     "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     "rcpt",
     NULL,
     false,
     {PERM, MSG, false, -1, "does not exist", "log resend"}},
    {"550 5.1.1 at RCPT",
     550,
     "5.1.1",
     "User unknown",
     "rcpt",
     NULL,
     false,
     {PERM, MSG, false, -1, "does not exist", "correct the address"}},
    {"421 closing",
     421,
     "4.3.2",
     "Service not available, closing transmission channel",
     "mail",
     NULL,
     false,
     {TEMP, CONN, false, -1, "closed the session", "retries"}},
    {"554 at connect",
     554,
     "5.7.1",
     "Access denied",
     "connect",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "when mailbridge connected", "smtp_url"}},
    {"454 at STARTTLS",
     454,
     "4.7.0",
     "TLS not available due to temporary reason",
     "starttls",
     NULL,
     false,
     {TEMP, CONN, false, -1, "STARTTLS", "smtps://"}},
    {"5xx at auth",
     504,
     "5.5.4",
     "Unrecognized authentication type",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "refused the login", "password_file"}},
    {"4xx at auth",
     454,
     "4.7.0",
     "Temporary authentication failure",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, -1, "check the login just now", "retries"}},
    {"timeout: cURL error 28",
     0,
     NULL,
     NULL,
     "mail",
     "Operation timed out after 300000 ms",
     true,
     {TEMP, CONN, false, -1, "cURL error 28: Operation timed out", "firewall"}},
    {"connection refused",
     0,
     NULL,
     NULL,
     "connect",
     "Failed to connect to host port 587",
     false,
     {TEMP, CONN, false, -1, "could not reach", "smtp_url"}},
    {"no reply and no error",
     0,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     {TEMP, CONN, false, -1, "DNS", "retries"}},
    {"fallback: 4xx",
     452,
     "4.5.3",
     "Too many recipients",
     "rcpt",
     NULL,
     false,
     {TEMP, MSG, false, -1, "deferred", "retries"}},
    {"fallback: 5xx",
     552,
     "5.3.4",
     "Message size exceeds fixed limit",
     "end",
     NULL,
     false,
     {PERM, MSG, false, -1, "refused the message", "resend"}},
    {"fallback: 5xx without anything",
     500,
     NULL,
     NULL,
     NULL,
     NULL,
     false,
     {PERM, MSG, false, -1, "5xx", "resend"}},
    {"fallback: 354 where a final reply was due",
     354,
     NULL,
     "go ahead",
     "end",
     NULL,
     false,
     {TEMP, MSG, false, -1, "does not expect", "smtp_url"}},
    /* Component boundaries: a prefix is not a match. */
    {"5.7.3 is not 5.7.30",
     535,
     "5.7.30",
     "Basic authentication is not supported",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "no longer accepts Basic", "XOAUTH2"}},
    {"5.7.139 is not 5.7.13",
     535,
     "5.7.13",
     "whatever",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "refused the login", "username"}},
    {"5.1.1 is not 5.1.10 elsewhere",
     550,
     "5.1.100",
     "odd",
     "rcpt",
     NULL,
     false,
     {PERM, MSG, false, -1, "5xx", "resend"}},
    {"4.7.499 is below the range",
     450,
     "4.7.499",
     "odd",
     "mail",
     NULL,
     false,
     {TEMP, MSG, false, -1, "deferred", "retries"}},
    {"4.7.700 is above the range",
     450,
     "4.7.700",
     "odd",
     "mail",
     NULL,
     false,
     {TEMP, MSG, false, -1, "deferred", "retries"}},
    {"enhanced code read from the text",
     535,
     NULL,
     "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
     "Tenant.",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "tenant", "Set-TransportConfig"}},
    {"5.7.3 read from the text",
     535,
     NULL,
     "5.7.3 Authentication unsuccessful",
     "auth",
     NULL,
     false,
     {TEMP, CONN, true, 3600, "user=", "SMTP.SendAsApp"}},
    {"text case-insensitive",
     535,
     "5.7.139",
     "SMTPCLIENTAUTHENTICATION IS DISABLED FOR THE TENANT",
     "auth",
     NULL,
     false,
     {TEMP, CONN, false, 3600, "tenant", "Set-CASMailbox"}},
    {"5.1.1 at another stage falls back",
     550,
     "5.1.1",
     "User unknown",
     "data",
     NULL,
     false,
     {PERM, MSG, false, -1, "5xx", "address"}},
};

static void
want_check(const char *kind, const char *name, const struct deliver_outcome *o,
           const struct want *w)
{
	bool ok = o->result == w->result && o->scope == w->scope &&
	          o->refresh_token == w->refresh_token && o->retry_after_s == w->retry_after_s &&
	          o->cause != NULL && o->fix != NULL && strstr(o->cause, w->cause_word) != NULL &&
	          strstr(o->fix, w->fix_word) != NULL;

	if (!ok) {
		print_error("%s case \"%s\": got %s/%s refresh=%d retry=%lld\n  cause: %s\n  fix: "
		            "%s\n  want %s/%s refresh=%d retry=%lld, cause has \"%s\", fix has "
		            "\"%s\"\n",
		            kind, name, deliver_result_name(o->result),
		            deliver_scope_name(o->scope), o->refresh_token,
		            (long long)o->retry_after_s, o->cause ? o->cause : "(null)",
		            o->fix ? o->fix : "(null)", deliver_result_name(w->result),
		            deliver_scope_name(w->scope), w->refresh_token,
		            (long long)w->retry_after_s, w->cause_word, w->fix_word);
		fail();
	}
}

static void
test_graph_rows(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(graph_cases); i++) {
		const struct graph_case *tc = &graph_cases[i];
		struct deliver_outcome o;

		memset(&o, 0xA5, sizeof(o));
		deliver_classify_graph(tc->status, tc->code, tc->message, tc->retry_after_s,
		                       tc->transport_error, tc->timed_out, &o);
		want_check("graph", tc->name, &o, &tc->want);
	}
}

static void
test_smtp_rows(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(smtp_cases); i++) {
		const struct smtp_case *tc = &smtp_cases[i];
		struct deliver_outcome o;

		memset(&o, 0xA5, sizeof(o));
		deliver_classify_smtp(tc->code, tc->enhanced, tc->text, tc->stage,
		                      tc->transport_error, tc->timed_out, &o);
		want_check("smtp", tc->name, &o, &tc->want);
	}
}

/* ---- Retry-After ---- */

struct retry_case {
	const char *name;
	long status;
	int64_t header;
	int64_t want;
};

static const struct retry_case retry_cases[] = {
    {"429 passes it through", 429, 3, 3},
    {"429 zero means now", 429, 0, 0},
    {"429 absent: a minute", 429, -1, 60},
    {"503 passes it through", 503, 45, 45},
    {"503 absent: the schedule", 503, -1, -1},
    {"504 passes it through", 504, 10, 10},
    {"500 passes it through", 500, 10, 10},
    {"403 config: Retry-After beats the hour", 403, 20, 20},
    {"a day at most", 429, 10LL * 86400, 86400},
    {"permfail ignores it", 413, 30, -1},
    {"sent ignores it", 202, 30, -1},
};

static void
test_graph_retry_after(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(retry_cases); i++) {
		const struct retry_case *tc = &retry_cases[i];
		struct deliver_outcome o;

		deliver_classify_graph(tc->status, NULL, NULL, tc->header, NULL, false, &o);
		if (o.retry_after_s != tc->want) {
			print_error("case %s: retry_after %lld, want %lld\n", tc->name,
			            (long long)o.retry_after_s, (long long)tc->want);
			fail();
		}
	}
}

/* ---- detail ---- */

struct detail_case {
	const char *name;
	long status;
	const char *code;
	const char *message;
	const char *transport_error;
	const char *want;
};

static const struct detail_case graph_detail_cases[] = {
    {"status, code and message", 403, "ErrorSendAsDenied", "Cannot submit message.", NULL,
     "HTTP 403 ErrorSendAsDenied: Cannot submit message."},
    {"status alone", 404, NULL, NULL, NULL, "HTTP 404"},
    {"empty message", 503, "serviceNotAvailable", "", NULL, "HTTP 503 serviceNotAvailable"},
    {"message without code", 500, NULL, "boom", NULL, "HTTP 500: boom"},
    {"control characters become one space", 400, "X", "line1\r\nline2\tend", NULL,
     "HTTP 400 X: line1 line2 end"},
    {"transport error", 0, NULL, NULL, "Could not resolve host: graph.microsoft.com",
     "no answer: Could not resolve host: graph.microsoft.com"},
};

static void
test_graph_detail(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(graph_detail_cases); i++) {
		const struct detail_case *tc = &graph_detail_cases[i];
		struct deliver_outcome o;

		deliver_classify_graph(tc->status, tc->code, tc->message, -1, tc->transport_error,
		                       false, &o);
		if (strcmp(o.detail, tc->want) != 0) {
			print_error("case %s: detail \"%s\", want \"%s\"\n", tc->name, o.detail,
			            tc->want);
			fail();
		}
	}
}

static void
test_graph_detail_truncation(void **state)
{
	char msg[1000], want[300];
	struct deliver_outcome o;

	(void)state;
	memset(msg, 'm', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	deliver_classify_graph(403, "ErrorSendAsDenied", msg, -1, NULL, false, &o);
	snprintf(want, sizeof(want), "HTTP 403 ErrorSendAsDenied: %.200s...", msg);
	assert_string_equal(o.detail, want);

	/* exactly 200: no ellipsis */
	msg[200] = '\0';
	deliver_classify_graph(403, "ErrorSendAsDenied", msg, -1, NULL, false, &o);
	snprintf(want, sizeof(want), "HTTP 403 ErrorSendAsDenied: %.200s", msg);
	assert_string_equal(o.detail, want);

	/* a two-byte character across the cut is dropped whole */
	memset(msg, 'm', 199);
	memcpy(msg + 199, "\xc3\xa9tail", 7);
	deliver_classify_graph(400, "X", msg, -1, NULL, false, &o);
	snprintf(want, sizeof(want), "HTTP 400 X: %.199s...", msg);
	assert_string_equal(o.detail, want);

	/* a monstrous code and message still fit, NUL-terminated */
	memset(msg, 'c', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	deliver_classify_graph(400, msg, msg, -1, NULL, false, &o);
	assert_true(strlen(o.detail) < sizeof(o.detail));
	assert_non_null(strstr(o.detail, "...: "));
}

struct smtp_detail_case {
	const char *name;
	int code;
	const char *enhanced;
	const char *text;
	const char *transport_error;
	const char *want;
};

static const struct smtp_detail_case smtp_detail_cases[] = {
    {"code, enhanced and text", 535, "5.7.139",
     "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.", NULL,
     "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
     "Tenant."},
    {"enhanced repeated in the text is said once", 535, "5.7.3",
     "5.7.3 Authentication unsuccessful", NULL, "535 5.7.3 Authentication unsuccessful"},
    {"no enhanced", 535, NULL, "Incorrect authentication data", NULL,
     "535 Incorrect authentication data"},
    {"code alone", 421, NULL, NULL, NULL, "421"},
    {"multi-line reply", 550, "5.1.1", "User unknown\r\nsee the help page", NULL,
     "550 5.1.1 User unknown see the help page"},
    {"no reply", 0, NULL, NULL, "Operation timed out", "no reply: Operation timed out"},
};

static void
test_smtp_detail(void **state)
{
	char text[600], want[300];
	struct deliver_outcome o;

	(void)state;
	for (size_t i = 0; i < NELEM(smtp_detail_cases); i++) {
		const struct smtp_detail_case *tc = &smtp_detail_cases[i];

		deliver_classify_smtp(tc->code, tc->enhanced, tc->text, "end", tc->transport_error,
		                      false, &o);
		if (strcmp(o.detail, tc->want) != 0) {
			print_error("case %s: detail \"%s\", want \"%s\"\n", tc->name, o.detail,
			            tc->want);
			fail();
		}
	}

	memset(text, 't', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	deliver_classify_smtp(550, "5.0.0", text, "end", NULL, false, &o);
	snprintf(want, sizeof(want), "550 5.0.0 %.250s...", text);
	assert_string_equal(o.detail, want);
}

static void
test_timeout_detail(void **state)
{
	struct deliver_outcome o;

	(void)state;
	deliver_classify_graph(0, NULL, NULL, -1, NULL, true, &o);
	assert_int_equal(o.result, DELIVER_TEMPFAIL);
	assert_string_equal(o.detail, "no answer: timed out");
	deliver_classify_smtp(0, NULL, NULL, "data", NULL, true, &o);
	assert_non_null(strstr(o.cause, "cURL error 28"));
	assert_string_equal(o.detail, "no reply: timed out");
}

/* Every CONNECTION outcome is a tempfail: mail waits for the admin's fix. */
static void
test_connection_scope_waits(void **state)
{
	(void)state;
	for (size_t i = 0; i < NELEM(graph_cases); i++)
		if (graph_cases[i].want.scope == CONN)
			assert_int_equal(graph_cases[i].want.result, TEMP);
	for (size_t i = 0; i < NELEM(smtp_cases); i++)
		if (smtp_cases[i].want.scope == CONN)
			assert_int_equal(smtp_cases[i].want.result, TEMP);
}

static void
test_names(void **state)
{
	(void)state;
	assert_string_equal(deliver_result_name(DELIVER_OK), "sent");
	assert_string_equal(deliver_result_name(DELIVER_TEMPFAIL), "tempfail");
	assert_string_equal(deliver_result_name(DELIVER_PERMFAIL), "permfail");
	assert_string_equal(deliver_result_name((enum deliver_result)42), "unknown");
	assert_string_equal(deliver_scope_name(DELIVER_SCOPE_MESSAGE), "message");
	assert_string_equal(deliver_scope_name(DELIVER_SCOPE_CONNECTION), "connection");
}

/* ---- docs/errors.md ---- */

static char *
docs_path(void)
{
	const char *me = __FILE__, *cut = strstr(me, "tests/unit/test_deliver.c");

	if (cut == NULL)
		return NULL;
	return mb_asprintf("%.*sdocs/errors.md", (int)(cut - me), me);
}

static void
test_docs_in_step(void **state)
{
	struct mb_buf want = {0};
	struct mb_buf got = {0};
	char chunk[4096];
	size_t n;
	char *path = docs_path();
	FILE *f;

	(void)state;
	if (path == NULL)
		skip();
	deliver_classify_reference(&want);
	assert_non_null(strstr(want.data, "ErrorSendAsDenied"));
	assert_non_null(strstr(want.data, "`5.7.139` with \"disabled for the Tenant\""));
	assert_non_null(strstr(want.data, "&lt;mailbox&gt;"));
	if (getenv("MB_UPDATE_DOCS") != NULL) {
		f = fopen(path, "w");
		assert_non_null(f);
		assert_int_equal(fwrite(want.data, 1, want.len, f), want.len);
		assert_int_equal(fclose(f), 0);
	}
	f = fopen(path, "r");
	if (f == NULL) {
		print_error("%s is missing: run with MB_UPDATE_DOCS=1\n", path);
		fail();
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		mb_buf_append(&got, chunk, n);
	fclose(f);
	if (got.len != want.len || (want.len > 0 && memcmp(got.data, want.data, want.len) != 0)) {
		print_error("%s differs from the classifier tables: run with MB_UPDATE_DOCS=1\n",
		            path);
		fail();
	}
	mb_buf_release(&want);
	mb_buf_release(&got);
	free(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_graph_rows),
	    cmocka_unit_test(test_smtp_rows),
	    cmocka_unit_test(test_graph_retry_after),
	    cmocka_unit_test(test_graph_detail),
	    cmocka_unit_test(test_graph_detail_truncation),
	    cmocka_unit_test(test_smtp_detail),
	    cmocka_unit_test(test_timeout_detail),
	    cmocka_unit_test(test_connection_scope_waits),
	    cmocka_unit_test(test_names),
	    cmocka_unit_test(test_docs_in_step),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
