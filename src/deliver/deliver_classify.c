/*
 * deliver_classify: Microsoft's answer to sent / tempfail / permfail, with one line of cause
 * and one of fix. Two tables (Graph, SMTP), searched first match, the most specific rows
 * first; the last rows of each are the generic fallback, so every answer finds a row.
 *
 * Policy: a CONNECTION-scope row is always TEMPFAIL. Connection trouble (consent, licence,
 * SMTP AUTH switched off) is fixed by an administrator, and the mail must wait for that fix
 * (and meanwhile try the fallback connection) rather than bounce. PERMFAIL is only for what
 * is wrong with this one message.
 *
 * Matching uses the HTTP status and Graph's error.code, or the SMTP code and the enhanced
 * code; free text is consulted only where Microsoft gives nothing better (Graph's
 * "Maximum request length", the two 5.7.139 variants, 554 5.2.0 SendAsDenied).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "deliver/deliver.h"

/* What the transport got back. */
enum when {
	ON_ANSWER,   /* an HTTP status or an SMTP reply */
	ON_TIMEOUT,  /* no answer in time */
	ON_NO_ANSWER /* DNS, connect, TLS, reset: no answer at all */
};

#define RETRY_SCHEDULE  (-1)  /* the scheduler's back-off */
#define RETRY_ADMIN     3600  /* an administrator must act: look again hourly */
#define RETRY_AFTER_MAX 86400 /* a Retry-After beyond a day is a broken peer */

#define DETAIL_MESSAGE_MAX 200 /* Graph error.message, SMTP text is longer: a whole reply */
#define DETAIL_TEXT_MAX    250
#define DETAIL_CODE_MAX    64

/*
 * A status or reply code in a row: 0 = any, 1..9 = a class (5 = 5xx), else exact. An
 * enhanced code pattern is "5.7.139" (exact, component by component: "5.7.3" is not
 * "5.7.30") or "4.7.500-699" (a range of the last component).
 */
struct graph_row {
	enum when when;
	long status;
	const char *code; /* error.code, case-insensitive; NULL = any */
	const char *text; /* substring of error.message, case-insensitive; NULL = any */
	enum deliver_result result;
	enum deliver_scope scope;
	bool refresh_token;
	int64_t retry_s; /* for TEMPFAIL when there is no Retry-After */
	const char *cause;
	const char *fix;
};

struct smtp_row {
	enum when when;
	int code;
	const char *enhanced; /* pattern, NULL = any */
	const char *text;     /* substring of the reply text, case-insensitive; NULL = any */
	const char *stage;    /* "auth", "rcpt"...; NULL = any */
	enum deliver_result result;
	enum deliver_scope scope;
	bool refresh_token;
	int64_t retry_s;
	const char *cause;
	const char *fix;
};

/* ---- shared texts ---- */

static const char cause_sent[] = "Microsoft accepted the message";
static const char fix_sent[] = "none needed; a later bounce (unknown recipient, quota) arrives "
                               "in the sender mailbox";

static const char cause_send_as[] = "the mailbox may not send as the From address";
static const char fix_send_as[] =
    "grant Send As (Add-RecipientPermission -Identity <from> -AccessRights SendAs -Trustee "
    "<mailbox>) or send From the mailbox (force_from = yes)";

static const char cause_licence[] = "this mailbox has no Exchange Online licence (or is "
                                    "on-premises, inactive or still being provisioned)";
static const char cause_licence_404[] =
    "this mailbox has no Exchange Online licence (or is on-premises, inactive or still being "
    "provisioned): Microsoft answers \"Not Found\"";
static const char fix_licence[] = "assign an Exchange Online licence to the sender mailbox in "
                                  "the Microsoft 365 admin center, or send from a licensed mailbox";
static const char fix_licence_404[] =
    "assign an Exchange Online licence to the sender mailbox in the Microsoft 365 admin "
    "center, or send from a licensed mailbox; check that sender = is that mailbox's address "
    "and that graph_url, if set, points at Microsoft Graph";

static const char fix_access[] =
    "grant admin consent for Mail.Send (Entra admin center > App registrations > API "
    "permissions), then check the policy with Test-ApplicationAccessPolicy -Identity <mailbox> "
    "-AppId <client_id> (policy changes can take an hour)";

static const char cause_too_big[] = "the message is too big for one Microsoft Graph request "
                                    "(4 MB, about 3 MB of MIME before base64)";
static const char fix_too_big[] = "set large_messages = upload-session (Graph upload session, up "
                                  "to 150 MB) or large_messages = smtp on the connection";

static const char fix_wait[] = "nothing to do: mailbridge retries with back-off";

static const char cause_unavailable[] = "Microsoft Graph is temporarily unavailable (503/504)";
static const char fix_unavailable[] = "nothing to do: mailbridge retries at Retry-After or on its "
                                      "back-off schedule; check Microsoft 365 service health if it "
                                      "lasts";

static const char cause_tenant_off[] =
    "SMTP AUTH is disabled for the tenant (SmtpClientAuthenticationDisabled, the default since "
    "2020; it blocks XOAUTH2 too)";
static const char fix_tenant_off[] =
    "an Exchange admin runs Set-TransportConfig -SmtpClientAuthenticationDisabled $false, or "
    "per mailbox Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false; "
    "or switch the connection to provider = microsoft-graph";
static const char cause_mailbox_off[] = "SMTP AUTH is disabled for this mailbox";
static const char fix_mailbox_off[] =
    "an Exchange admin runs Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled "
    "$false; or switch the connection to provider = microsoft-graph";
static const char fix_basic[] =
    "use OAuth: provider = microsoft-smtp (XOAUTH2) or provider = microsoft-graph, then sign "
    "in with mailbridge auth login NAME";
static const char cause_login[] = "the SMTP server refused the login";
static const char fix_login[] =
    "check username and password_file (provider = smtp; a personal Outlook account needs an "
    "app password); for Microsoft 365 use provider = microsoft-smtp";
static const char fix_resend[] = "correct the address and resend (mailbridge log resend ID --to "
                                 "ADDR)";

/* ---- Microsoft Graph ---- */

static const struct graph_row graph_rows[] = {
    /* when, status, error.code, message text, result, scope, refresh, retry, cause, fix */
    {ON_ANSWER, 2, NULL, NULL, DELIVER_OK, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE, cause_sent,
     fix_sent},

    {ON_ANSWER, 401, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, true, RETRY_SCHEDULE,
     "the access token was refused: mailbridge refreshes it once and retries",
     "if it is refused again, sign in again (mailbridge auth login NAME) and check that the app "
     "has Microsoft Graph Mail.Send with admin consent (a token for another resource is refused "
     "as \"Invalid audience\")"},

    {ON_ANSWER, 403, "ErrorSendAsDenied", NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, cause_send_as, fix_send_as},
    {ON_ANSWER, 0, "MailboxNotEnabledForRESTAPI", NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION,
     false, RETRY_ADMIN, cause_licence, fix_licence},
    {ON_ANSWER, 403, "ErrorAccessDenied", NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN,
     "the app may not use this mailbox: admin consent for Mail.Send is missing, or an "
     "application access policy or RBAC scope leaves the mailbox out (\"Access to OData is "
     "disabled\")",
     fix_access},

    {ON_ANSWER, 404, "ErrorInvalidUser", NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN, cause_licence_404, fix_licence_404},
    {ON_ANSWER, 404, "ResourceNotFound", NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN, cause_licence_404, fix_licence_404},

    {ON_ANSWER, 0, "RequestEntityTooLarge", NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, cause_too_big, fix_too_big},
    {ON_ANSWER, 400, NULL, "maximum request length", DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, cause_too_big, fix_too_big},
    {ON_ANSWER, 0, "ErrorMessageSizeExceeded", NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE,
     "the message is larger than the mailbox's MaxSendSize (Exchange Online's size limit, "
     "counted after base64 adds a third)",
     "send a smaller message, or have an admin raise the limit (Set-Mailbox -Identity <mailbox> "
     "-MaxSendSize 150MB)"},
    {ON_ANSWER, 0, "ErrorInvalidRecipients", NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE,
     "Microsoft refused the recipients: an address is malformed, or the message has none",
     "correct the To/Cc/Bcc addresses and resend (mailbridge log resend ID --to ADDR)"},
    {ON_ANSWER, 0, "ErrorMimeContentInvalidBase64String", NULL, DELIVER_PERMFAIL,
     DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "Microsoft could not decode the base64 MIME that mailbridge sent: a bug in mailbridge",
     "report it with this log line and the message (mailbridge queue show ID --raw); meanwhile "
     "send it through a connection with provider = microsoft-smtp"},

    /* Status alone, once no error.code above has matched. */
    {ON_ANSWER, 403, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false, RETRY_ADMIN,
     "Microsoft refused access to the mailbox (403 Forbidden): a permission, consent or policy "
     "is missing",
     fix_access},
    {ON_ANSWER, 404, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false, RETRY_ADMIN,
     cause_licence_404, fix_licence_404},
    {ON_ANSWER, 413, NULL, NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     cause_too_big, fix_too_big},
    {ON_ANSWER, 429, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, 60,
     "Microsoft is throttling the app or mailbox (429 Too Many Requests): it allows 4 "
     "concurrent requests and 30 messages a minute per mailbox",
     "nothing to do: mailbridge waits for Retry-After and retries; if it keeps happening, send "
     "less at once or spread the mail over more mailboxes"},
    {ON_ANSWER, 503, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     cause_unavailable, fix_unavailable},
    {ON_ANSWER, 504, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     cause_unavailable, fix_unavailable},
    {ON_ANSWER, 5, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "Microsoft Graph failed on its side (5xx)",
     "nothing to do: mailbridge retries with back-off; report it if one message keeps failing"},

    {ON_TIMEOUT, 0, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false, RETRY_SCHEDULE,
     "Microsoft did not answer in time (what Fluent SMTP shows as \"cURL error 28: Operation "
     "timed out\")",
     "check the network, proxy and firewall path to graph.microsoft.com (HTTPS, port 443); "
     "mailbridge retries"},
    {ON_NO_ANSWER, 0, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false, RETRY_SCHEDULE,
     "mailbridge could not reach Microsoft Graph: a DNS, connection or TLS failure",
     "check DNS, the proxy and the firewall (outbound 443 to graph.microsoft.com), and ca_file "
     "behind a TLS-inspecting proxy; mailbridge retries"},

    /* The fallback. */
    {ON_ANSWER, 408, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "Microsoft timed out reading the request (408)", fix_wait},
    {ON_ANSWER, 4, NULL, NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "Microsoft refused the request (4xx)",
     "correct the message if the detail names a problem with it; otherwise report it with this "
     "log line"},
    {ON_ANSWER, 0, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "Microsoft gave an answer mailbridge does not expect",
     "mailbridge retries; if graph_url is set, check that Microsoft Graph (not a proxy or "
     "another server) answers there"},
};

/* ---- SMTP ---- */

static const struct smtp_row smtp_rows[] = {
    /* when, code, enhanced, text, stage, result, scope, refresh, retry, cause, fix */
    {ON_ANSWER, 2, NULL, NULL, NULL, DELIVER_OK, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "the SMTP server accepted the message", fix_sent},

    {ON_ANSWER, 535, "5.7.139", "disabled for the Tenant", NULL, DELIVER_TEMPFAIL,
     DELIVER_SCOPE_CONNECTION, false, RETRY_ADMIN, cause_tenant_off, fix_tenant_off},
    {ON_ANSWER, 535, "5.7.139", "disabled for the Mailbox", NULL, DELIVER_TEMPFAIL,
     DELIVER_SCOPE_CONNECTION, false, RETRY_ADMIN, cause_mailbox_off, fix_mailbox_off},
    {ON_ANSWER, 535, "5.7.139", "SmtpClientAuthentication is disabled", NULL, DELIVER_TEMPFAIL,
     DELIVER_SCOPE_CONNECTION, false, RETRY_ADMIN,
     "SMTP AUTH is disabled for the tenant or the "
     "mailbox",
     fix_tenant_off},
    {ON_ANSWER, 535, "5.7.139", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN,
     "Microsoft refused password (Basic) authentication: security defaults or a policy block it",
     fix_basic},
    {ON_ANSWER, 535, "5.7.3", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, true,
     RETRY_ADMIN,
     "the token was refused (mailbridge refreshes it once): SMTP.Send consent is missing, the "
     "Exchange service principal is not registered (app-only), or user= is not the mailbox",
     "grant admin consent for SMTP.Send (delegated) or SMTP.SendAsApp (app-only); for app-only "
     "run New-ServicePrincipal and Add-MailboxPermission in Exchange Online PowerShell; check "
     "that sender = is the mailbox that signed in"},
    {ON_ANSWER, 0, "5.7.30", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN,
     "Microsoft no longer accepts Basic (password) authentication for SMTP client submission",
     fix_basic},
    {ON_ANSWER, 0, "5.7.57", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN, "the SMTP server says mailbridge did not authenticate before MAIL FROM",
     "check the connection: provider = microsoft-smtp signs in with XOAUTH2, provider = smtp "
     "needs username and password_file"},
    {ON_ANSWER, 535, NULL, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN, cause_login, fix_login},

    {ON_ANSWER, 0, "5.7.60", NULL, NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, cause_send_as, fix_send_as},
    {ON_ANSWER, 554, "5.2.0", "SendAsDenied", NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, cause_send_as, fix_send_as},

    {ON_ANSWER, 0, "5.2.2", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN,
     "the mailbox used up its sending quota (10,000 recipients a day, 30 messages a minute)",
     "nothing to do: mailbridge retries hourly as the rolling 24-hour budget frees up; spread "
     "the mail over more mailboxes if it recurs"},
    {ON_ANSWER, 0, NULL, "submission quota", NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION,
     false, RETRY_ADMIN,
     "the mailbox used up its sending quota (10,000 recipients a day, 30 messages a minute)",
     "nothing to do: mailbridge retries hourly as the rolling 24-hour budget frees up; spread "
     "the mail over more mailboxes if it recurs"},
    {ON_ANSWER, 0, "5.1.8", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN,
     "the mailbox is blocked for spam (restricted entities): Microsoft stopped it sending after "
     "too much or suspicious mail",
     "an admin finds out why, then releases it in the Microsoft Defender portal (Email & "
     "collaboration > Review > Restricted entities)"},

    {ON_ANSWER, 432, "4.3.2", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, 60,
     "too many concurrent SMTP sessions for the mailbox: Microsoft allows 3",
     "nothing to do: mailbridge retries; other programs sending from this mailbox count too"},
    {ON_ANSWER, 0, "4.7.500-699", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     900, "Microsoft restricted sending from this mailbox for a while after suspicious activity",
     "mailbridge retries later; if it lasts, check the mailbox for compromise and its sending "
     "volume in the Microsoft Defender portal"},
    {ON_ANSWER, 451, "4.7.0", NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, "the SMTP server had a temporary error", fix_wait},

    {ON_ANSWER, 0, "5.1.10", NULL, NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, "the recipient address does not exist", fix_resend},
    {ON_ANSWER, 550, "5.1.1", NULL, "rcpt", DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false,
     RETRY_SCHEDULE, "the recipient address does not exist", fix_resend},

    {ON_ANSWER, 421, NULL, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_SCHEDULE, "the SMTP server closed the session (421 service not available)", fix_wait},
    {ON_ANSWER, 5, NULL, NULL, "connect", DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN, "the SMTP server refused the session when mailbridge connected",
     "check smtp_url (smtp.office365.com takes port 587 with STARTTLS, not 465)"},
    {ON_ANSWER, 0, NULL, NULL, "starttls", DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_SCHEDULE, "the SMTP server refused STARTTLS",
     "check smtp_url: smtp:// (port 587) upgrades with STARTTLS, smtps:// (port 465) is TLS "
     "from the start"},
    {ON_ANSWER, 5, NULL, NULL, "auth", DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_ADMIN, cause_login, fix_login},
    {ON_ANSWER, 4, NULL, NULL, "auth", DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_SCHEDULE, "the SMTP server could not check the login just now", fix_wait},

    {ON_TIMEOUT, 0, NULL, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_SCHEDULE,
     "the SMTP server did not answer in time (what Fluent SMTP shows as \"cURL error 28: "
     "Operation timed out\")",
     "check the network, proxy and firewall path to the SMTP server (smtp.office365.com port "
     "587; many hosts block outbound SMTP); mailbridge retries"},
    {ON_NO_ANSWER, 0, NULL, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_CONNECTION, false,
     RETRY_SCHEDULE, "mailbridge could not reach the SMTP server: a DNS, connection or TLS failure",
     "check smtp_url, DNS, the firewall (hosts often block outbound 587), and ca_file behind a "
     "TLS-inspecting proxy; mailbridge retries"},

    /* The fallback: 4xx waits, 5xx is this message's fault. */
    {ON_ANSWER, 4, NULL, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "the SMTP server deferred the message (4xx)", fix_wait},
    {ON_ANSWER, 5, NULL, NULL, NULL, DELIVER_PERMFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "the SMTP server refused the message (5xx)",
     "correct what the detail names (address, size, content) and resend"},
    {ON_ANSWER, 0, NULL, NULL, NULL, DELIVER_TEMPFAIL, DELIVER_SCOPE_MESSAGE, false, RETRY_SCHEDULE,
     "the SMTP server gave a reply mailbridge does not expect",
     "mailbridge retries; check that smtp_url points at an SMTP submission server"},
};

/* ---- matching ---- */

static bool
code_matches(long want, long got)
{
	if (want == 0)
		return true;
	if (want < 10)
		return got / 100 == want;
	return got == want;
}

static bool
str_has(const char *hay, const char *needle)
{
	size_t n;

	if (needle == NULL)
		return true;
	if (hay == NULL)
		return false;
	n = strlen(needle);
	for (; *hay != '\0'; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return true;
	return false;
}

static bool
str_is(const char *want, const char *got)
{
	return want == NULL || (got != NULL && strcasecmp(want, got) == 0);
}

/* Reads 1..3 digits; returns the number or -1. */
static int
enh_num(const char **s)
{
	int v = 0, n = 0;

	while (n < 3 && **s >= '0' && **s <= '9') {
		v = v * 10 + (**s - '0');
		(*s)++;
		n++;
	}
	return n == 0 ? -1 : v;
}

struct enh {
	int cls, subject, detail, detail_hi;
};

/* "C.S.D" or, with range set, "C.S.D-H". Returns the end, or NULL if malformed. */
static const char *
enh_parse(const char *s, bool range, struct enh *e)
{
	if (s == NULL || (*s != '2' && *s != '4' && *s != '5') || s[1] != '.')
		return NULL;
	e->cls = *s - '0';
	s += 2;
	if ((e->subject = enh_num(&s)) < 0 || *s++ != '.' || (e->detail = enh_num(&s)) < 0)
		return NULL;
	e->detail_hi = e->detail;
	if (range && *s == '-') {
		s++;
		if ((e->detail_hi = enh_num(&s)) < 0)
			return NULL;
	}
	if (*s >= '0' && *s <= '9')
		return NULL;
	return s;
}

/* The enhanced code given, else one at the start of the text (RFC 3463 §2). */
static bool
enh_find(const char *enhanced, const char *text, struct enh *e)
{
	const char *end;

	if (enhanced != NULL && *enhanced != '\0')
		return enh_parse(enhanced, false, e) != NULL;
	end = enh_parse(text, false, e);
	return end != NULL && (*end == '\0' || *end == ' ');
}

static bool
enh_matches(const char *pattern, bool have, const struct enh *got)
{
	struct enh want;

	if (pattern == NULL)
		return true;
	if (!have || enh_parse(pattern, true, &want) == NULL)
		return false;
	return want.cls == got->cls && want.subject == got->subject && got->detail >= want.detail &&
	       got->detail <= want.detail_hi;
}

/* ---- detail: what the peer said, printable, bounded ---- */

struct detail {
	char *p;
	size_t len, cap;
};

/* Appends at most max bytes of s (whole UTF-8 characters only), control characters as one
 * space, and "..." if s was cut. */
static void
detail_put(struct detail *d, const char *s, size_t max)
{
	size_t n = strlen(s), i;
	bool cut = n > max;

	if (cut) {
		n = max;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	for (i = 0; i < n && d->len + 1 < d->cap; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7F) {
			if (d->len > 0 && d->p[d->len - 1] == ' ')
				continue;
			c = ' ';
		}
		d->p[d->len++] = (char)c;
	}
	d->p[d->len] = '\0';
	if (cut)
		detail_put(d, "...", 3);
}

static void
outcome_init(struct deliver_outcome *out, enum deliver_result result, enum deliver_scope scope,
             bool refresh_token, int64_t retry_s, const char *cause, const char *fix)
{
	out->result = result;
	out->scope = scope;
	out->refresh_token = refresh_token;
	out->retry_after_s = result == DELIVER_TEMPFAIL ? retry_s : -1;
	out->cause = cause;
	out->fix = fix;
	out->detail[0] = '\0';
}

/* ---- Graph ---- */

static const struct graph_row *
graph_row_find(enum when when, long status, const char *code, const char *message)
{
	size_t i, n = sizeof(graph_rows) / sizeof(graph_rows[0]);

	for (i = 0; i < n; i++) {
		const struct graph_row *r = &graph_rows[i];

		if (r->when == when && (when != ON_ANSWER || code_matches(r->status, status)) &&
		    str_is(r->code, code) && str_has(message, r->text))
			return r;
	}
	return &graph_rows[n - 1];
}

void
deliver_classify_graph(long status, const char *graph_code, const char *message,
                       int64_t retry_after_s, const char *transport_error, bool timed_out,
                       struct deliver_outcome *out)
{
	enum when when = ON_ANSWER;
	const struct graph_row *r;
	struct detail d = {out->detail, 0, sizeof(out->detail)};
	char num[32];

	if (transport_error != NULL || timed_out)
		when = timed_out ? ON_TIMEOUT : ON_NO_ANSWER;
	if (graph_code != NULL && *graph_code == '\0')
		graph_code = NULL;
	r = graph_row_find(when, status, graph_code, message);
	outcome_init(out, r->result, r->scope, r->refresh_token, r->retry_s, r->cause, r->fix);
	/* Retry-After is Microsoft's word, so it beats the row's guess. */
	if (r->result == DELIVER_TEMPFAIL && retry_after_s >= 0)
		out->retry_after_s =
		    retry_after_s < RETRY_AFTER_MAX ? retry_after_s : RETRY_AFTER_MAX;

	if (when != ON_ANSWER) {
		detail_put(&d, "no answer: ", sizeof(out->detail));
		detail_put(&d, transport_error != NULL ? transport_error : "timed out",
		           DETAIL_TEXT_MAX);
		return;
	}
	snprintf(num, sizeof(num), "HTTP %ld", status);
	detail_put(&d, num, sizeof(num));
	if (graph_code != NULL) {
		detail_put(&d, " ", 1);
		detail_put(&d, graph_code, DETAIL_CODE_MAX);
	}
	if (message != NULL && *message != '\0') {
		detail_put(&d, ": ", 2);
		detail_put(&d, message, DETAIL_MESSAGE_MAX);
	}
}

/* ---- SMTP ---- */

static const struct smtp_row *
smtp_row_find(enum when when, int code, const char *enhanced, const char *text, const char *stage)
{
	size_t i, n = sizeof(smtp_rows) / sizeof(smtp_rows[0]);
	struct enh e = {0, 0, 0, 0};
	bool have = enh_find(enhanced, text, &e);

	for (i = 0; i < n; i++) {
		const struct smtp_row *r = &smtp_rows[i];

		if (r->when == when && (when != ON_ANSWER || code_matches(r->code, code)) &&
		    enh_matches(r->enhanced, have, &e) && str_has(text, r->text) &&
		    str_is(r->stage, stage))
			return r;
	}
	return &smtp_rows[n - 1];
}

void
deliver_classify_smtp(int code, const char *enhanced, const char *text, const char *stage,
                      const char *transport_error, bool timed_out, struct deliver_outcome *out)
{
	enum when when = ON_ANSWER;
	const struct smtp_row *r;
	struct detail d = {out->detail, 0, sizeof(out->detail)};
	char num[16];

	if (code == 0 || transport_error != NULL || timed_out)
		when = timed_out ? ON_TIMEOUT : ON_NO_ANSWER;
	if (enhanced != NULL && *enhanced == '\0')
		enhanced = NULL;
	r = smtp_row_find(when, code, enhanced, text, stage);
	outcome_init(out, r->result, r->scope, r->refresh_token, r->retry_s, r->cause, r->fix);

	if (when != ON_ANSWER) {
		detail_put(&d, "no reply: ", sizeof(out->detail));
		detail_put(&d, transport_error != NULL ? transport_error : "timed out",
		           DETAIL_TEXT_MAX);
		return;
	}
	snprintf(num, sizeof(num), "%d", code);
	detail_put(&d, num, sizeof(num));
	/* Microsoft repeats the enhanced code at the head of the text; say it once. */
	if (enhanced != NULL && (text == NULL || strncmp(text, enhanced, strlen(enhanced)) != 0)) {
		detail_put(&d, " ", 1);
		detail_put(&d, enhanced, 16);
	}
	if (text != NULL && *text != '\0') {
		detail_put(&d, " ", 1);
		detail_put(&d, text, DETAIL_TEXT_MAX);
	}
}

const char *
deliver_result_name(enum deliver_result r)
{
	switch (r) {
	case DELIVER_OK:
		return "sent";
	case DELIVER_TEMPFAIL:
		return "tempfail";
	case DELIVER_PERMFAIL:
		return "permfail";
	}
	return "unknown";
}

const char *
deliver_scope_name(enum deliver_scope s)
{
	switch (s) {
	case DELIVER_SCOPE_MESSAGE:
		return "message";
	case DELIVER_SCOPE_CONNECTION:
		return "connection";
	}
	return "unknown";
}

/* ---- docs/errors.md ---- */

/* Markdown cell text: a pipe would end the cell, <mailbox> would vanish as an HTML tag. */
static void
md_cell(struct mb_buf *b, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '|')
			mb_buf_puts(b, "\\|");
		else if (*s == '<')
			mb_buf_puts(b, "&lt;");
		else if (*s == '>')
			mb_buf_puts(b, "&gt;");
		else
			mb_buf_append(b, s, 1);
	}
}

static void
md_code(struct mb_buf *b, long code, const char *what)
{
	if (code == 0)
		mb_buf_printf(b, "any %s", what);
	else if (code < 10)
		mb_buf_printf(b, "%s %ldxx", what, code);
	else
		mb_buf_printf(b, "%s %ld", what, code);
}

static void
md_seconds(struct mb_buf *b, int64_t s)
{
	if (s < 0)
		mb_buf_puts(b, "on the back-off schedule");
	else if (s % 3600 == 0)
		mb_buf_printf(b, "after %lld h", (long long)(s / 3600));
	else if (s % 60 == 0)
		mb_buf_printf(b, "after %lld min", (long long)(s / 60));
	else
		mb_buf_printf(b, "after %lld s", (long long)s);
}

static void
md_outcome(struct mb_buf *b, enum deliver_result result, enum deliver_scope scope, bool refresh,
           int64_t retry_s, bool retry_after)
{
	mb_buf_printf(b, " | %s", deliver_result_name(result));
	if (refresh)
		mb_buf_puts(b, " after one token refresh");
	if (result == DELIVER_TEMPFAIL) {
		mb_buf_puts(b, ", retry ");
		if (retry_after)
			mb_buf_puts(b, "after Retry-After, else ");
		md_seconds(b, retry_s);
	}
	mb_buf_printf(b, " | %s | ", deliver_scope_name(scope));
}

static void
md_row_end(struct mb_buf *b, const char *cause, const char *fix)
{
	md_cell(b, cause);
	mb_buf_puts(b, " | ");
	md_cell(b, fix);
	mb_buf_puts(b, " |\n");
}

static void
md_graph(struct mb_buf *b)
{
	size_t i;

	mb_buf_puts(b, "## Microsoft Graph (provider = microsoft-graph)\n\n"
	               "| what you see | outcome | scope | cause | fix |\n"
	               "|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(graph_rows) / sizeof(graph_rows[0]); i++) {
		const struct graph_row *r = &graph_rows[i];

		mb_buf_puts(b, "| ");
		if (r->when == ON_TIMEOUT)
			mb_buf_puts(b, "no answer in time");
		else if (r->when == ON_NO_ANSWER)
			mb_buf_puts(b, "no answer (DNS, connection, TLS)");
		else
			md_code(b, r->status, "HTTP");
		if (r->code != NULL)
			mb_buf_printf(b, " `%s`", r->code);
		if (r->text != NULL)
			mb_buf_printf(b, " with \"%s\"", r->text);
		md_outcome(b, r->result, r->scope, r->refresh_token, r->retry_s,
		           r->when == ON_ANSWER);
		md_row_end(b, r->cause, r->fix);
	}
}

static void
md_smtp(struct mb_buf *b)
{
	size_t i;

	mb_buf_puts(b, "## SMTP (provider = microsoft-smtp or smtp)\n\n"
	               "| what you see | outcome | scope | cause | fix |\n"
	               "|---|---|---|---|---|\n");
	for (i = 0; i < sizeof(smtp_rows) / sizeof(smtp_rows[0]); i++) {
		const struct smtp_row *r = &smtp_rows[i];

		mb_buf_puts(b, "| ");
		if (r->when == ON_TIMEOUT)
			mb_buf_puts(b, "no reply in time");
		else if (r->when == ON_NO_ANSWER)
			mb_buf_puts(b, "no reply (DNS, connection, TLS)");
		else
			md_code(b, r->code, "reply");
		if (r->enhanced != NULL)
			mb_buf_printf(b, " `%s`", r->enhanced);
		if (r->text != NULL)
			mb_buf_printf(b, " with \"%s\"", r->text);
		if (r->stage != NULL)
			mb_buf_printf(b, " at %s", r->stage);
		md_outcome(b, r->result, r->scope, r->refresh_token, r->retry_s, false);
		md_row_end(b, r->cause, r->fix);
	}
}

void
deliver_classify_reference(struct mb_buf *out)
{
	mb_buf_puts(
	    out,
	    "# Delivery errors: what you see, why, and what to do\n\n"
	    "<!-- Generated from src/deliver/deliver_classify.c; test_deliver checks it. To "
	    "rewrite it: MB_UPDATE_DOCS=1 tests/test_deliver in the build tree -->\n\n"
	    "mailbridge turns every answer from Microsoft Graph or an SMTP server into one "
	    "outcome: "
	    "**sent**, **tempfail** (the message stays queued and is retried) or **permfail** (it "
	    "is not retried; the sender is told). The log and `mailbridge queue show` print the "
	    "detail (what the server said), the cause and the fix from these tables.\n\n"
	    "The rows are tried from the top; the first that matches wins, so the last rows of "
	    "each table catch everything else.\n\n"
	    "**Scope** says who is at fault. *message*: only this message. *connection*: the "
	    "connection's sign-in, licence or settings; its other messages wait, and the "
	    "`fallback` connection, if any, is tried. A connection problem is always a tempfail, "
	    "so mail waits for an administrator's fix instead of bouncing; it still fails once "
	    "the queue lifetime runs out.\n\n"
	    "A refused token is refreshed once and the message retried at once; if the new "
	    "token is refused too, the outcome below applies.\n\n");
	md_graph(out);
	mb_buf_puts(out, "\n");
	md_smtp(out);
}
