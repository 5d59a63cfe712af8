/* An administrator's Microsoft Graph session (see setup_graph.h). */
#include "setup_graph.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "deliver/deliver_internal.h"
#include "http/http.h"

/* ---- helpers ---- */

char *
sg_filter_path(const char *base, const char *filter, const char *extra)
{
	struct mb_buf b = {0};

	mb_buf_printf(&b, "%s?$filter=", base);
	http_url_encode(&b, filter);
	if (extra)
		mb_buf_printf(&b, "%s", extra);
	return mb_buf_steal(&b);
}

char *
sg_odata_quote(const char *s)
{
	struct mb_buf b = {0};

	for (; *s; s++) {
		if (*s == '\'')
			mb_buf_append(&b, "'", 1);
		mb_buf_append(&b, s, 1);
	}
	return b.data ? mb_buf_steal(&b) : mb_strdup("");
}

const char *
sg_jstr(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));
	return v ? v : "";
}

char *
sg_jwt_claim(const char *jwt, const char *claim)
{
	const char *p = jwt ? strchr(jwt, '.') : NULL, *q;
	struct mb_buf b = {0};
	unsigned char *raw;
	size_t n;
	json_t *o;
	char *v = NULL;

	if (p == NULL || (q = strchr(p + 1, '.')) == NULL)
		return NULL;
	for (const char *s = p + 1; s < q; s++) {
		char ch = *s == '-' ? '+' : *s == '_' ? '/' : *s;
		mb_buf_append(&b, &ch, 1);
	}
	while (b.len % 4)
		mb_buf_append(&b, "=", 1);
	raw = mb_base64_decode(b.data ? b.data : "", b.len, &n);
	mb_buf_release(&b);
	if (raw == NULL)
		return NULL;
	o = json_loadb((const char *)raw, n, 0, NULL);
	free(raw);
	if (json_string_value(json_object_get(o, claim)))
		v = mb_strdup(json_string_value(json_object_get(o, claim)));
	json_decref(o);
	return v;
}

int64_t
sg_parse_iso(const char *s)
{
	struct tm tm;
	int y, mo, d, h = 0, mi = 0, sec = 0;

	if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi, &sec) < 3)
		return 0;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	return (int64_t)timegm(&tm) * 1000;
}

/* ---- Graph calls ---- */

long
sg_call(struct sg *s, const char *method, const char *path, json_t *body, json_t **out)
{
	static const char *const hdrs[] = {"Content-Type: application/json",
	                                   "Accept: application/json", NULL};
	struct http_request req = {.method = method, .headers = hdrs, .timeout_ms = 30000};
	struct http_response resp;
	struct mb_err err = {0};
	char *url = mb_asprintf("%s%s", s->ep.graph, path), *js = NULL;
	long st;

	if (out)
		*out = NULL;
	if (body) {
		js = json_dumps(body, JSON_COMPACT);
		req.body = js;
		req.body_len = strlen(js);
	}
	req.url = url;
	req.ca_file = s->ca_file;
	req.bearer = s->token;
	free(s->transport);
	s->transport = NULL;
	s->code[0] = s->msg[0] = '\0';
	if (http_request_sync(&req, &resp, &err) < 0) {
		s->transport = mb_strdup(resp.error ? resp.error : err.msg);
		s->status = -1;
		http_response_release(&resp);
		free(url);
		free(js);
		return -1;
	}
	st = resp.status;
	s->status = st;
	if (st >= 400)
		deliver_graph_error(resp.body, resp.body_len, s->code, sizeof(s->code), s->msg,
		                    sizeof(s->msg));
	else if (out && resp.body_len > 0)
		*out = json_loadb(resp.body, resp.body_len, 0, NULL);
	http_response_release(&resp);
	free(url);
	free(js);
	return st;
}

void
sg_release(struct sg *s)
{
	mb_secret_free(s->token);
	free(s->tenant);
	free(s->transport);
	s->token = s->tenant = s->transport = NULL;
}

/* ---- the device code sign-in ---- */

static int
post_login(struct sg *s, const char *tenant, const char *what, struct mb_buf *form,
           struct http_response *resp)
{
	static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
	                                   "Accept: application/json", NULL};
	struct http_request req = {.method = "POST", .headers = hdrs, .timeout_ms = 30000};
	struct mb_buf url = {0};
	struct mb_err err = {0};
	int rc;

	oauth_endpoint_url(&s->ep, tenant, what, &url);
	req.url = url.data;
	req.body = form->data;
	req.body_len = form->len;
	req.ca_file = s->ca_file;
	rc = http_request_sync(&req, resp, &err);
	mb_buf_wipe(form);
	mb_buf_release(&url);
	return rc;
}

/* The identity platform's error, with its cause and fix. */
static void
explain(const struct http_response *resp, struct sg_why *why)
{
	struct oauth_error oe;
	struct oauth_explain ex;

	oauth_error_parse(resp->body, resp->body_len, (int)resp->status, &oe);
	oauth_error_explain(&oe, &ex);
	snprintf(why->detail, sizeof(why->detail), "%s%s%s", oe.error, *oe.description ? ": " : "",
	         oe.description);
	snprintf(why->cause, sizeof(why->cause), "%s", ex.cause ? ex.cause : "");
	snprintf(why->fix, sizeof(why->fix), "%s", ex.fix ? ex.fix : "");
}

static void sg_why_set(struct sg_why *why, const char *fmt, ...) MB_PRINTF(2, 3);

static void
sg_why_set(struct sg_why *why, const char *fmt, ...)
{
	va_list ap;

	memset(why, 0, sizeof(*why));
	va_start(ap, fmt);
	vsnprintf(why->what, sizeof(why->what), fmt, ap);
	va_end(ap);
}

/* Polls the token endpoint until the admin has signed in, declined, or the code expired. */
static int
poll_token(struct sg *s, const char *client_id, const char *tenant, bool tid_from_token,
           const struct oauth_device_resp *d, struct sg_why *why)
{
	int64_t deadline = mb_mono_ms() + d->expires_in * 1000;
	int64_t interval = d->interval > 0 ? d->interval : 5;
	struct mb_buf form = {0};
	struct http_response resp;
	struct mb_err err = {0};

	for (;;) {
		struct oauth_token_resp t;
		struct oauth_error oe;
		int rc;

		if (mb_mono_ms() + interval * 1000 > deadline + 1000) {
			sg_why_set(why,
			           "the code expired before sign-in finished (after %lld s); run "
			           "the command again",
			           (long long)d->expires_in);
			return -1;
		}
		sleep((unsigned)interval);
		http_form_add(&form, "grant_type", "urn:ietf:params:oauth:grant-type:device_code");
		http_form_add(&form, "client_id", client_id);
		http_form_add(&form, "device_code", d->device_code);
		if (post_login(s, tenant, "token", &form, &resp) < 0) {
			http_response_release(&resp); /* a blip while polling: keep polling */
			continue;
		}
		if (resp.status == 200) {
			rc = oauth_token_resp_parse(resp.body, resp.body_len, &t, &err);
			http_response_release(&resp);
			if (rc < 0) {
				sg_why_set(why, "%s", err.msg);
				return -1;
			}
			s->token = mb_strdup(t.access_token);
			if (tid_from_token) {
				s->tenant = sg_jwt_claim(t.id_token, "tid");
				if (s->tenant == NULL)
					s->tenant = sg_jwt_claim(t.access_token, "tid");
			}
			if (s->tenant == NULL)
				s->tenant = mb_strdup(tenant);
			oauth_token_resp_release(&t);
			return 0;
		}
		oauth_error_parse(resp.body, resp.body_len, (int)resp.status, &oe);
		if (strcmp(oe.error, "authorization_pending") == 0) {
			http_response_release(&resp);
			continue;
		}
		if (strcmp(oe.error, "slow_down") == 0) {
			interval += 5;
			http_response_release(&resp);
			continue;
		}
		if (strcmp(oe.error, "expired_token") == 0) {
			sg_why_set(why, "the code expired before sign-in finished; run the command "
			                "again");
		} else if (strcmp(oe.error, "authorization_declined") == 0) {
			struct oauth_explain ex;
			oauth_error_explain(&oe, &ex);
			sg_why_set(why,
			           "the admin declined the sign-in; run the command again and "
			           "accept (%s)",
			           ex.cause);
		} else {
			sg_why_set(why, "HTTP %ld from the token endpoint", resp.status);
			explain(&resp, why);
		}
		http_response_release(&resp);
		return -1;
	}
}

int
sg_sign_in(struct sg *s, const char *client_id, const char *tenant, const char *scope,
           const char *intro, FILE *prompt, struct sg_why *why)
{
	const char *t = tenant ? tenant : "organizations";
	bool tid_from_token = strcmp(t, "organizations") == 0 || strcmp(t, "common") == 0;
	struct mb_buf form = {0};
	struct http_response resp;
	struct oauth_device_resp d;
	struct mb_err err = {0};
	int rc;

	memset(why, 0, sizeof(*why));
	http_form_add(&form, "client_id", client_id);
	http_form_add(&form, "scope", scope);
	if (post_login(s, t, "devicecode", &form, &resp) < 0) {
		sg_why_set(why, "%s could not be reached: %s", s->ep.login,
		           resp.error ? resp.error : "transport error");
		http_response_release(&resp);
		return -1;
	}
	if (resp.status != 200) {
		sg_why_set(why, "HTTP %ld from the device code endpoint", resp.status);
		explain(&resp, why);
		http_response_release(&resp);
		return -1;
	}
	rc = oauth_device_resp_parse(resp.body, resp.body_len, &d, &err);
	http_response_release(&resp);
	if (rc < 0) {
		sg_why_set(why, "%s", err.msg);
		return -1;
	}
	fprintf(prompt, "%s\n%s\n", intro, d.message ? d.message : "");
	fflush(prompt);
	rc = poll_token(s, client_id, t, tid_from_token, &d, why);
	oauth_device_resp_release(&d);
	return rc;
}

/* ---- permissions ---- */

static void
need_add(struct sg_need *out, size_t *n, const char *value, const char *type, bool exchange)
{
	struct sg_need *x = &out[(*n)++];

	x->value = value;
	x->type = type;
	x->exchange = exchange;
	x->id[0] = '\0';
}

size_t
sg_needs(enum oauth_provider p, bool app_only, unsigned flags, struct sg_need *out)
{
	size_t n = 0;

	if (!app_only) {
		need_add(out, &n, "Mail.Send", "Scope", false);
		need_add(out, &n, "User.Read", "Scope", false);
		if (flags & SG_NEED_OFFLINE)
			need_add(out, &n, "offline_access", "Scope", false);
		if (p == OAUTH_PROVIDER_MSSMTP || (flags & SG_NEED_SMTP))
			need_add(out, &n, "SMTP.Send", "Scope", false);
		if (flags & SG_NEED_READWRITE)
			need_add(out, &n, "Mail.ReadWrite", "Scope", false);
	} else if (p == OAUTH_PROVIDER_GRAPH) {
		need_add(out, &n, "Mail.Send", "Role", false);
		if (flags & SG_NEED_READWRITE)
			need_add(out, &n, "Mail.ReadWrite", "Role", false);
	} else {
		need_add(out, &n, "SMTP.SendAsApp", "Role", true);
	}
	return n;
}

int
sg_resolve(struct sg *s, const char *app_id, bool exchange, struct sg_need *needs, size_t n,
           char *sp_out, size_t sp_len, char *why, size_t whylen)
{
	char *filter = mb_asprintf("appId eq '%s'", app_id);
	char *path =
	    sg_filter_path("/v1.0/servicePrincipals", filter,
	                   "&$select=id,appId,displayName,appRoles,oauth2PermissionScopes");
	json_t *res, *sp;
	long st = sg_call(s, "GET", path, NULL, &res);

	free(filter);
	free(path);
	if (st != 200) {
		json_decref(res);
		return -1;
	}
	sp = json_array_get(json_object_get(res, "value"), 0);
	if (sp == NULL) {
		snprintf(why, whylen, "no service principal for %s in this tenant", app_id);
		json_decref(res);
		return -2;
	}
	snprintf(sp_out, sp_len, "%s", sg_jstr(sp, "id"));
	for (size_t i = 0; i < n; i++) {
		struct sg_need *x = &needs[i];
		bool role = strcmp(x->type, "Role") == 0;
		json_t *arr = json_object_get(sp, role ? "appRoles" : "oauth2PermissionScopes"), *p;
		size_t k;

		if (x->exchange != exchange)
			continue;
		json_array_foreach(arr, k, p)
		{
			if (strcmp(sg_jstr(p, "value"), x->value) == 0)
				snprintf(x->id, sizeof(x->id), "%s", sg_jstr(p, "id"));
		}
		if (!*x->id) {
			snprintf(why, whylen, "%s has no %s %s", sg_jstr(sp, "displayName"),
			         role ? "application permission" : "delegated permission",
			         x->value);
			json_decref(res);
			return -2;
		}
	}
	json_decref(res);
	return 0;
}
