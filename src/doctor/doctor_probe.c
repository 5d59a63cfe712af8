/* mailbridge doctor: probes of the Graph mailbox, SMTP AUTH, the hosts and the clock. */
#include "doctor_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/config.h"
#include "deliver/deliver.h"
#include "deliver/deliver_internal.h"
#include "ev/ev.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

#define SKEW_WARN_S 120

/* The host[:port] of a URL, for messages. */
static void
url_host(const char *url, char *out, size_t outlen)
{
	const char *p = strstr(url, "://");
	size_t n;

	p = p ? p + 3 : url;
	n = strcspn(p, "/?#");
	snprintf(out, outlen, "%.*s", (int)n, p);
}

/* POST sendMail with no recipients: Graph checks the mailbox before the message, so a 400
 * ErrorInvalidRecipients proves the mailbox takes Graph mail requests, and nothing is sent. */
void
doc_check_mailbox(struct doc *d)
{
	static const char body[] = "{\"message\":{\"subject\":\"mailbridge doctor probe (no "
	                           "recipients: never sent)\"},\"saveToSentItems\":false}";
	static const char *const hdrs[] = {"Content-Type: application/json",
	                                   "Accept: application/json", NULL};
	struct doctor_item *it;
	struct oauth_conn *c = d->oc;
	struct mb_buf url = {0};
	struct http_request req = {
	    .method = "POST", .headers = hdrs, .body = body, .body_len = sizeof(body) - 1};
	struct http_response resp = {0};
	struct mb_err err = {0};
	struct deliver_outcome o;
	char code[128] = "", msg[256] = "", path[400];

	if (c == NULL || c->provider != OAUTH_PROVIDER_GRAPH)
		return;
	it = doc_add(d, "mailbox", "mailbox enabled for Graph", CL_MAILBOX);
	if (d->token[OAUTH_RES_GRAPH] == NULL) {
		doc_set(it, DOCTOR_UNKNOWN, NULL,
		        "can't tell: no Graph token (see the token item)");
		return;
	}
	if (c->auth == OAUTH_AUTH_APP_ONLY) {
		struct mb_buf enc = {0};
		http_url_encode(&enc, c->sender);
		snprintf(path, sizeof(path), "/v1.0/users/%s/sendMail", enc.data);
		mb_buf_release(&enc);
	} else {
		snprintf(path, sizeof(path), "/v1.0/me/sendMail");
	}
	mb_buf_printf(&url, "%s%s", c->ep.graph, path);
	req.url = url.data;
	req.timeout_ms = d->timeout_ms;
	req.ca_file = c->ca_file;
	req.bearer = d->token[OAUTH_RES_GRAPH];
	if (http_request_sync(&req, &resp, &err) < 0) {
		deliver_classify_graph(0, NULL, NULL, -1, resp.error ? resp.error : err.msg,
		                       resp.timed_out, &o);
		doc_set(it, DOCTOR_FAIL, o.fix, "POST %s: %s%s: %s", path,
		        resp.timed_out ? "no answer within the timeout, " : "",
		        resp.error ? resp.error : err.msg, o.cause);
		goto out;
	}
	deliver_graph_error(resp.body, resp.body_len, code, sizeof(code), msg, sizeof(msg));
	if (resp.status == 400 && strstr(code, "Recipient")) {
		doc_set(it, DOCTOR_PASS, NULL,
		        "POST %s without recipients answered 400 %s: the mailbox takes Graph mail "
		        "requests (nothing was sent)",
		        path, code);
	} else if (resp.status >= 200 && resp.status < 300) {
		doc_set(it, DOCTOR_WARN, NULL,
		        "POST %s without recipients answered %ld: the mailbox takes Graph mail "
		        "requests",
		        path, resp.status);
	} else {
		deliver_classify_graph(resp.status, code[0] ? code : NULL, msg, resp.retry_after_s,
		                       NULL, false, &o);
		doc_set(it, DOCTOR_FAIL, o.fix, "POST %s answered %ld %s \"%s\": %s", path,
		        resp.status, code, msg, o.cause);
	}
out:
	http_response_release(&resp);
	mb_buf_release(&url);
}

void
doc_check_smtp_auth(struct doc *d)
{
	struct doctor_item *it;
	struct oauth_conn *c = d->oc;
	struct http_probe_result pr;
	struct deliver_outcome o;
	const char *user;
	char *fix;

	if (c == NULL || c->provider != OAUTH_PROVIDER_MSSMTP)
		return;
	it = doc_add(d, "smtp_auth", "SMTP AUTH enabled for the mailbox", CL_MODERN);
	if (d->token[OAUTH_RES_OUTLOOK] == NULL) {
		doc_set(it, DOCTOR_UNKNOWN, NULL,
		        "can't tell: no Exchange Online token (see the token item)");
		return;
	}
	user = d->cc && d->cc->username ? d->cc->username : c->sender;
	http_smtp_probe_sync(c->ep.smtp, true, user, d->token[OAUTH_RES_OUTLOOK], c->ca_file,
	                     d->timeout_ms, &pr);
	if (pr.result != HTTP_OK) {
		deliver_classify_smtp(0, NULL, NULL, "connect", pr.error, pr.timed_out, &o);
		doc_set(it, DOCTOR_FAIL, o.fix, "%s: %s: %s", c->ep.smtp, pr.error, o.cause);
		return;
	}
	if (pr.status == 235) {
		doc_set(
		    it, DOCTOR_PASS, NULL,
		    "%s: AUTH XOAUTH2 as %s accepted (235 %s %s); QUIT before MAIL FROM, nothing "
		    "sent",
		    c->ep.smtp, user, pr.enhanced, pr.text);
		return;
	}
	deliver_classify_smtp((int)pr.status, pr.enhanced[0] ? pr.enhanced : NULL, pr.text, "auth",
	                      NULL, false, &o);
	fix = mb_str_replace(o.fix, "<mailbox>", c->sender);
	doc_set(it, DOCTOR_FAIL, fix, "%s: AUTH XOAUTH2 as %s refused: %ld %s %s: %s", c->ep.smtp,
	        user, pr.status, pr.enhanced, pr.text, o.cause);
	free(fix);
}

static void
note_clock(struct doc *d, const struct http_probe_result *pr, const char *host)
{
	if (pr->date_s <= 0 || d->skew_known)
		return;
	d->skew_known = true;
	d->skew_s = pr->local_s - pr->date_s;
	snprintf(d->skew_host, sizeof(d->skew_host), "%s", host);
}

static void
reach_http(struct doc *d, const char *id, const char *title, const char *what, const char *url)
{
	struct doctor_item *it = doc_add(d, id, title, CL_REACH);
	struct http_probe_result pr;
	char host[128], fix[600];

	url_host(url, host, sizeof(host));
	http_probe_sync("GET", url, d->oc->ca_file, d->timeout_ms, &pr);
	if (pr.result == HTTP_OK) {
		note_clock(d, &pr, host);
		doc_set(it, DOCTOR_PASS, NULL,
		        "%s (%s) answered HTTP %ld in %lld ms over valid TLS", host, what,
		        pr.status, (long long)pr.elapsed_ms);
		return;
	}
	if (pr.timed_out)
		snprintf(
		    fix, sizeof(fix),
		    "the network path to %s is blocked or slow: check DNS, the firewall "
		    "(outbound 443) and any proxy. The guide's Error 1 fix applies too: make "
		    "sure the default connection is your Microsoft connection (see the default "
		    "connection item)",
		    host);
	else if (pr.tls_error)
		snprintf(fix, sizeof(fix),
		         "the TLS certificate of %s was not accepted: a TLS-inspecting proxy needs "
		         "its CA in ca_file; check the system clock and CA bundle",
		         host);
	else
		snprintf(
		    fix, sizeof(fix),
		    "mailbridge cannot connect to %s: check DNS, the firewall (outbound 443) and "
		    "any proxy",
		    host);
	doc_set(it, DOCTOR_FAIL, fix, "%s (%s): %s%s", host, what,
	        pr.timed_out ? "no answer within the timeout — " : "", pr.error);
}

void
doc_check_reach(struct doc *d)
{
	struct oauth_conn *c = d->oc;
	struct mb_buf url = {0};

	if (c == NULL)
		return;
	if (c->provider != OAUTH_PROVIDER_SMTP) {
		struct mb_buf enc = {0};
		http_url_encode(&enc, c->tenant);
		mb_buf_printf(&url, "%s/%s/v2.0/.well-known/openid-configuration", c->ep.login,
		              enc.data);
		mb_buf_release(&enc);
		reach_http(d, "reach_login", "login host reachable", "sign-in", url.data);
		mb_buf_reset(&url);
	}
	if (c->provider == OAUTH_PROVIDER_GRAPH) {
		mb_buf_printf(&url, "%s/v1.0/", c->ep.graph);
		reach_http(d, "reach_graph", "Graph host reachable", "Microsoft Graph", url.data);
	}
	if (c->provider != OAUTH_PROVIDER_GRAPH) {
		struct doctor_item *it = doc_add(d, "reach_smtp", "SMTP host reachable", CL_REACH);
		struct http_probe_result pr;
		bool tls = c->provider != OAUTH_PROVIDER_SMTP ||
		           (d->cc == NULL || d->cc->tls == NULL || strcmp(d->cc->tls, "none") != 0);

		http_smtp_probe_sync(c->ep.smtp, tls, NULL, NULL, c->ca_file, d->timeout_ms, &pr);
		if (pr.result == HTTP_OK && pr.status < 400)
			doc_set(it, DOCTOR_PASS, NULL, "%s answered (%ld)%s in %lld ms", c->ep.smtp,
			        pr.status,
			        tls ? " and STARTTLS worked with a valid certificate" : "",
			        (long long)pr.elapsed_ms);
		else if (pr.result == HTTP_OK)
			doc_set(it, DOCTOR_FAIL,
			        "check smtp_url and that the server accepts connections",
			        "%s refused: %ld %s %s", c->ep.smtp, pr.status, pr.enhanced,
			        pr.text);
		else
			doc_set(
			    it, DOCTOR_FAIL,
			    pr.timed_out ? "the network path to the SMTP host is blocked or slow: "
			                   "check DNS, the firewall (outbound 587) and any proxy"
			    : pr.tls_error ? "the SMTP server's TLS certificate was not accepted: "
			                     "check ca_file and the system clock"
			                   : "check smtp_url, DNS and the firewall (outbound 587)",
			    "%s: %s%s", c->ep.smtp,
			    pr.timed_out ? "no answer within the timeout — " : "", pr.error);
	}
	mb_buf_release(&url);
}

void
doc_check_clock(struct doc *d)
{
	struct doctor_item *it;

	if (d->oc == NULL || d->oc->provider == OAUTH_PROVIDER_SMTP)
		return;
	it = doc_add(d, "clock", "clock not skewed",
	             "tokens are time-limited: a skewed clock breaks them");
	if (!d->skew_known)
		doc_set(it, DOCTOR_UNKNOWN, "check that NTP runs (timedatectl)",
		        "can't tell: no server answered with a Date header");
	else if (d->skew_s > SKEW_WARN_S || d->skew_s < -SKEW_WARN_S)
		doc_set(
		    it, DOCTOR_WARN,
		    "synchronise the clock (timedatectl set-ntp true; chrony or systemd-timesyncd)",
		    "our clock is %lld s %s %s's",
		    (long long)(d->skew_s < 0 ? -d->skew_s : d->skew_s),
		    d->skew_s < 0 ? "behind" : "ahead of", d->skew_host);
	else
		doc_set(it, DOCTOR_PASS, NULL, "within %lld s of %s's Date header",
		        (long long)(d->skew_s < 0 ? -d->skew_s : d->skew_s), d->skew_host);
}
