/* Access control for /api/v1: the admin password, sessions with CSRF tokens, API tokens, and
 * the login rate limit. */
#include "admin_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"

#define SESSION_COOKIE "mb_session"

void
admin_secret_hash(const char *secret, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int mdlen = 0;

	if (EVP_Digest(secret, strlen(secret), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		abort(); /* SHA-256 is always there; without it nothing here is safe */
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

/* n random bytes as base64url without padding: cookie-, header- and URL-safe. */
static char *
random_b64url(size_t n)
{
	unsigned char raw[64];
	char *s;
	size_t len;

	mb_random_bytes(raw, n);
	s = mb_base64_encode(raw, n);
	mb_secret_wipe(raw, sizeof(raw));
	for (char *p = s; *p; p++) {
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
	}
	len = strlen(s);
	while (len > 0 && s[len - 1] == '=')
		s[--len] = '\0';
	return s;
}

char *
admin_token_new(void)
{
	char *r = random_b64url(32);
	char *t = mb_asprintf("%s%s", ADMIN_TOKEN_PREFIX, r);

	mb_secret_free(r);
	return t;
}

void
admin_caller_clear(struct admin_caller *c)
{
	mb_secret_free(c->csrf);
	free(c->token_name);
	memset(c, 0, sizeof(*c));
}

/* The value of cookie name in a Cookie header, as a new string, or NULL. */
static char *
cookie_get(const char *header, const char *name)
{
	size_t n = strlen(name);
	const char *p = header;

	while (p && *p) {
		const char *end;

		while (*p == ' ' || *p == '\t' || *p == ';')
			p++;
		end = strchr(p, ';');
		if (strncmp(p, name, n) == 0 && p[n] == '=') {
			p += n + 1;
			return end ? mb_strndup(p, (size_t)(end - p)) : mb_strdup(p);
		}
		p = end;
	}
	return NULL;
}

static int
caller_from_session(struct admin *a, struct ev_http_req *req, struct admin_caller *c)
{
	const char *cookies = ev_http_req_header(req, "Cookie");
	char *id;

	if (cookies == NULL || (id = cookie_get(cookies, SESSION_COOKIE)) == NULL)
		return -1;
	admin_secret_hash(mb_str_trim(id), c->id_hash);
	mb_secret_free(id);
	if (store_admin_session_get(a->d.st, c->id_hash, &c->csrf, &c->expires_ms, NULL) < 0) {
		c->id_hash[0] = '\0';
		return -1;
	}
	c->via_session = true;
	return 0;
}

static int
caller_from_token(struct admin *a, struct ev_http_req *req, struct admin_caller *c)
{
	const char *auth = ev_http_req_header(req, "Authorization");
	char hash[65];

	if (auth == NULL || !mb_str_has_prefix_ci(auth, "Bearer "))
		return -1;
	auth += strlen("Bearer ");
	while (*auth == ' ')
		auth++;
	if (strncmp(auth, ADMIN_TOKEN_PREFIX, strlen(ADMIN_TOKEN_PREFIX)) != 0)
		return -1;
	admin_secret_hash(auth, hash);
	return store_api_token_find(a->d.st, hash, &c->token_name, NULL);
}

int
admin_caller_find(struct admin *a, struct ev_http_req *req, struct admin_caller *c)
{
	memset(c, 0, sizeof(*c));
	/* An Authorization header is an explicit choice: a bad token is not rescued by a cookie. */
	if (ev_http_req_header(req, "Authorization") != NULL)
		return caller_from_token(a, req, c);
	return caller_from_session(a, req, c);
}

bool
admin_csrf_is_valid(const struct admin_caller *c, struct ev_http_req *req)
{
	const char *got = ev_http_req_header(req, "X-CSRF-Token");
	size_t n;

	if (!c->via_session || c->csrf == NULL || got == NULL)
		return false;
	n = strlen(c->csrf);
	return strlen(got) == n && CRYPTO_memcmp(got, c->csrf, n) == 0;
}

/* ---- the login rate limit ---- */

static struct admin_login_fails *
fails_of(struct admin *a, const char *host, bool create)
{
	struct admin_login_fails *oldest = &a->fails[0];

	for (size_t i = 0; i < ADMIN_LOGIN_TRACKED; i++) {
		struct admin_login_fails *f = &a->fails[i];
		if (f->host[0] && strcmp(f->host, host) == 0)
			return f;
		if (f->last_ms < oldest->last_ms)
			oldest = f;
	}
	if (!create)
		return NULL;
	/* the least recently failing address makes room: a flood from many addresses can only
	 * forget old failures, never lock anyone else out */
	memset(oldest, 0, sizeof(*oldest));
	snprintf(oldest->host, sizeof(oldest->host), "%s", host);
	return oldest;
}

/* Seconds until this address may try again, or 0. */
static int64_t
login_wait_s(struct admin *a, const char *host)
{
	struct admin_login_fails *f = fails_of(a, host, false);
	int64_t now = mb_mono_ms(), oldest;

	if (f == NULL)
		return 0;
	/* the ring is full of failures when its oldest slot (the next to overwrite) is set */
	oldest = f->at_ms[f->next];
	if (oldest == 0 || now - oldest >= ADMIN_LOGIN_WINDOW_MS)
		return 0;
	return (ADMIN_LOGIN_WINDOW_MS - (now - oldest) + 999) / 1000;
}

static void
login_failed(struct admin *a, const char *host)
{
	struct admin_login_fails *f = fails_of(a, host, true);

	f->last_ms = mb_mono_ms();
	f->at_ms[f->next] = f->last_ms ? f->last_ms : 1;
	f->next = (f->next + 1) % ADMIN_LOGIN_MAX_FAILS;
}

/* ---- routes ---- */

static void
reply_session(struct ev_http_req *req, int status, const struct admin_caller *c)
{
	json_t *j = json_object();
	char date[40] = "";

	json_object_set_new(j, "user", json_string("admin"));
	if (c->via_session) {
		json_object_set_new(j, "via", json_string("session"));
		json_object_set_new(j, "csrf", json_string(c->csrf));
		mb_iso_date(c->expires_ms, date, sizeof(date));
		json_object_set_new(j, "expires", json_string(date));
	} else {
		json_object_set_new(j, "via", json_string("token"));
		json_object_set_new(j, "token", json_string(c->token_name));
		json_object_set_new(j, "csrf", json_null());
	}
	admin_reply_json(req, status, j);
}

/* Reads {"password": "..."}; a new string to mb_secret_free, or NULL after replying 400. */
static char *
login_password(struct ev_http_req *req)
{
	size_t len;
	const char *body = ev_http_req_body(req, &len);
	json_t *j = json_loadb(body ? body : "", body ? len : 0, 0, NULL);
	const char *pw = j ? json_string_value(json_object_get(j, "password")) : NULL;
	char *out = pw ? mb_strdup(pw) : NULL;

	if (j) {
		/* jansson keeps its own copy of the password: wipe it before it is freed */
		json_t *v = json_object_get(j, "password");
		if (json_is_string(v))
			mb_secret_wipe((char *)json_string_value(v), json_string_length(v));
		json_decref(j);
	}
	if (out == NULL)
		admin_reply_error(req, 400, "bad_request",
		                  "the body must be JSON: {\"password\": \"...\"}",
		                  "send Content-Type: application/json with the admin password");
	return out;
}

static void
set_session_cookie(struct admin *a, struct ev_http_req *req, const char *value, bool clear)
{
	const char *url = a->d.cfg->server.public_url;
	bool secure = url && mb_str_has_prefix_ci(url, "https://");
	char *cookie = mb_asprintf(
	    "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%lld%s", SESSION_COOKIE, value,
	    clear ? 0LL : (long long)(ADMIN_SESSION_LIFETIME / 1000), secure ? "; Secure" : "");

	ev_http_add_header(req, "Set-Cookie", cookie);
	mb_secret_free(cookie);
}

static void
api_login(struct admin *a, struct ev_http_req *req, const struct admin_caller *unused,
          const struct api_params *p)
{
	char host[64] = "", *stored = NULL, *pw, *id, *csrf, wait[24];
	struct admin_caller c = {0};
	struct mb_err err = {0};
	int64_t wait_s;
	bool ok;

	(void)unused;
	ev_http_req_peer(req, host, sizeof(host));
	if (store_setting_get(a->d.st, ADMIN_PASSWORD_SETTING, &stored, &err) < 0) {
		if (err.code == MB_ENOTFOUND)
			admin_reply_error(req, 409, "no_admin_password",
			                  "no admin password is set yet",
			                  "run mailbridge admin password");
		else
			admin_reply_error(req, 503, "store", err.msg, "see the daemon's log");
		return;
	}
	if ((wait_s = login_wait_s(a, host)) > 0) {
		snprintf(wait, sizeof(wait), "%lld", (long long)wait_s);
		ev_http_add_header(req, "Retry-After", wait);
		admin_reply_error(req, 429, "rate_limited",
		                  "too many failed logins from this address",
		                  "wait for the Retry-After seconds, then log in again");
		mb_warn("admin: login refused: rate limited peer=%s", host);
		free(stored);
		return;
	}
	if ((pw = login_password(req)) == NULL) {
		free(stored);
		return;
	}
	ok = mb_password_verify(pw, stored);
	mb_secret_free(pw);
	free(stored);
	if (!ok) {
		login_failed(a, host);
		mb_warn("admin: login failed: wrong password peer=%s", host);
		admin_reply_error(
		    req, 401, "bad_password", "wrong admin password",
		    "check the password, or set a new one with mailbridge admin password");
		return;
	}
	store_admin_session_prune(a->d.st, NULL);
	id = random_b64url(32);
	csrf = random_b64url(32);
	admin_secret_hash(id, c.id_hash);
	c.expires_ms = mb_now_ms() + ADMIN_SESSION_LIFETIME;
	if (store_admin_session_put(a->d.st, c.id_hash, csrf, host, c.expires_ms, &err) < 0) {
		admin_reply_error(req, 503, "store", err.msg, "see the daemon's log");
		mb_secret_free(id);
		mb_secret_free(csrf);
		return;
	}
	set_session_cookie(a, req, id, false);
	mb_secret_free(id);
	c.via_session = true;
	c.csrf = csrf;
	mb_info("admin: login: session started peer=%s", host);
	reply_session(req, 200, &c);
	admin_caller_clear(&c);
}

static void
api_logout(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
           const struct api_params *p)
{
	json_t *j = json_object();

	if (c->via_session) {
		store_admin_session_delete(a->d.st, c->id_hash, NULL);
		set_session_cookie(a, req, "", true);
	}
	json_object_set_new(j, "ok", json_true());
	admin_reply_json(req, 200, j);
}

static void
api_session(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
            const struct api_params *p)
{
	(void)a;
	reply_session(req, 200, c);
}

const struct api_route admin_routes_auth[] = {
    {"POST", "login", api_login, true},
    {"POST", "logout", api_logout, false},
    {"GET", "session", api_session, false},
    {NULL, NULL, NULL, false},
};

void
admin_setup_state_free(struct admin *a)
{
}
