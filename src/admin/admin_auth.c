/* Access control for /api/v1: the admin password, sessions with CSRF tokens, API tokens, and
 * the login rate limit. */
#include "admin_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Whether host has failed too often (login and setup share the count); replies 429 if so. */
static bool
rate_limited(struct admin *a, struct ev_http_req *req, const char *host, const char *what)
{
	int64_t wait_s = login_wait_s(a, host);
	char wait[24];

	if (wait_s <= 0)
		return false;
	snprintf(wait, sizeof(wait), "%lld", (long long)wait_s);
	ev_http_add_header(req, "Retry-After", wait);
	admin_reply_error(req, 429, "rate_limited", "too many failed attempts from this address",
	                  "wait for the Retry-After seconds, then try again");
	mb_warn("admin: %s refused: rate limited peer=%s", what, host);
	return true;
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

/* Starts a session for host: the cookie, and the answer of login (with its CSRF token). */
static void
session_start(struct admin *a, struct ev_http_req *req, const char *host, const char *why)
{
	struct admin_caller c = {0};
	struct mb_err err = {0};
	char *id, *csrf;

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
	mb_info("admin: %s: session started peer=%s", why, host);
	reply_session(req, 200, &c);
	admin_caller_clear(&c);
}

static void
api_login(struct admin *a, struct ev_http_req *req, const struct admin_caller *unused,
          const struct api_params *p)
{
	char host[64] = "", *stored = NULL, *pw;
	struct mb_err err = {0};
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
	if (rate_limited(a, req, host, "login")) {
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
	session_start(a, req, host, "login");
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

/* ---- the admin password, and the one-time setup link ----
 *
 * When `mailbridge serve` starts and no admin password is set, it makes a setup token (32
 * random bytes, base64url) and keeps only its SHA-256, in memory: the link works once, for
 * SETUP_LIFETIME_MS, and never after a restart (which makes a new one). The link is a secret,
 * so it never goes into the log: on a terminal it is printed on stderr; otherwise (systemd,
 * a log file) it is written to data_dir/SETUP_LINK_FILE, mode 0600, and the log says where. */

#define SETUP_LIFETIME_MS (24 * 3600 * 1000LL)
#define SETUP_LINK_FILE   "setup-link"

struct admin_setup {
	char hash[65];      /* SHA-256 of the token, hex */
	int64_t expires_ms; /* monotonic */
	char *link_file;    /* the file holding the link, when it was written to one */
};

int
admin_password_set(struct store *st, const char *pw, struct mb_err *err)
{
	char *hash;
	int rc;

	if (strlen(pw) < ADMIN_PASSWORD_MIN) {
		mb_err_set(err, MB_EINVAL, "the admin password needs at least %d characters",
		           ADMIN_PASSWORD_MIN);
		return -1;
	}
	hash = mb_password_hash(pw);
	if (hash == NULL) {
		mb_err_set(err, MB_EIO, "hashing the admin password failed");
		return -1;
	}
	rc = store_setting_set(st, ADMIN_PASSWORD_SETTING, hash, err);
	free(hash);
	return rc;
}

/* 1 when an admin password is set, 0 when not, -1 when the store cannot tell. */
static int
password_is_set(struct admin *a, struct mb_err *err)
{
	char *stored = NULL;

	if (store_setting_get(a->d.st, ADMIN_PASSWORD_SETTING, &stored, err) == 0) {
		free(stored);
		return 1;
	}
	return err->code == MB_ENOTFOUND ? 0 : -1;
}

void
admin_setup_state_free(struct admin *a)
{
	if (a->setup == NULL)
		return;
	if (a->setup->link_file) {
		unlink(a->setup->link_file);
		free(a->setup->link_file);
	}
	mb_secret_wipe(a->setup->hash, sizeof(a->setup->hash));
	free(a->setup);
	a->setup = NULL;
}

/* Writes the link to path, readable by its owner only; 0 or -1 (and logs why). */
static int
link_file_write(const char *path, const char *url)
{
	size_t n = strlen(url);
	int fd;

	unlink(path); /* a link from an earlier start is dead anyway */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		mb_warn("admin: setup link: cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	if (write(fd, url, n) != (ssize_t)n || write(fd, "\n", 1) != 1 || close(fd) < 0) {
		mb_warn("admin: setup link: cannot write %s: %s", path, strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
}

/* The base URL a browser uses: public_url without a trailing slash; a new string. */
static char *
base_url(const struct config *cfg)
{
	const char *u = cfg->server.public_url;
	size_t n = strlen(u);

	while (n > 0 && u[n - 1] == '/')
		n--;
	return mb_strndup(u, n);
}

void
admin_setup_offer(struct admin *a)
{
	struct mb_err err = {0};
	struct admin_setup *s;
	char *token, *base, *url, *file;
	int set = password_is_set(a, &err);

	if (set != 0) {
		if (set < 0)
			mb_warn("admin: setup link: cannot read the store: %s", err.msg);
		return;
	}
	admin_setup_state_free(a);
	s = mb_calloc(1, sizeof(*s));
	token = random_b64url(32);
	admin_secret_hash(token, s->hash);
	s->expires_ms = mb_mono_ms() + SETUP_LIFETIME_MS;
	base = base_url(a->d.cfg);
	url = mb_asprintf("%s/#/setup/%s", base, token);
	mb_secret_free(token);
	if (isatty(STDERR_FILENO)) {
		/* straight to the terminal, not through the log (which may be kept or shipped) */
		fprintf(stderr,
		        "admin: no admin password yet: open %s within 24 h to set one (or run: "
		        "mailbridge admin password)\n",
		        url);
	} else {
		file = mb_asprintf("%s/%s", a->d.cfg->server.data_dir, SETUP_LINK_FILE);
		if (link_file_write(file, url) == 0) {
			mb_warn(
			    "admin: no admin password yet: a one-time setup link (valid 24 h) is "
			    "in %s, readable by mailbridge's user only; or run: mailbridge admin "
			    "password",
			    file);
			s->link_file = file;
		} else {
			mb_warn("admin: no admin password yet: run: mailbridge admin password");
			free(file);
		}
	}
	mb_secret_free(url);
	free(base);
	a->setup = s;
}

/* Whether token is the live setup token (constant-time compare of the hashes). */
static bool
setup_token_is_valid(struct admin *a, const char *token)
{
	char hash[65];

	if (a->setup == NULL || token == NULL || mb_mono_ms() >= a->setup->expires_ms)
		return false;
	admin_secret_hash(token, hash);
	return CRYPTO_memcmp(hash, a->setup->hash, 64) == 0;
}

/* A string member of a request body as a new string (NULL when absent), wiping jansson's
 * copy: the body holds a password and a token. */
static char *
body_secret(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);
	char *out;

	if (!json_is_string(v))
		return NULL;
	out = mb_strdup(json_string_value(v));
	mb_secret_wipe((char *)json_string_value(v), json_string_length(v));
	return out;
}

static void
api_setup_get(struct admin *a, struct ev_http_req *req, const struct admin_caller *unused,
              const struct api_params *p)
{
	struct mb_err err = {0};
	int set = password_is_set(a, &err);
	json_t *j;

	(void)unused;
	(void)p;
	if (set < 0) {
		admin_reply_store_error(req, &err);
		return;
	}
	if (set > 0)
		admin_setup_state_free(a); /* set meanwhile with mailbridge admin password */
	j = json_object();
	json_object_set_new(j, "needed", json_boolean(set == 0));
	admin_reply_json(req, 200, j);
}

/* The checks of POST setup before the password is stored; false after replying. */
static bool
setup_allowed(struct admin *a, struct ev_http_req *req, const char *host, const char *token,
              const char *pw)
{
	struct mb_err err = {0};
	int set = password_is_set(a, &err);

	if (set < 0) {
		admin_reply_store_error(req, &err);
		return false;
	}
	if (set > 0) {
		admin_setup_state_free(a); /* the link has no use any more */
		admin_reply_error(req, 409, "password_set", "an admin password is already set",
		                  "log in with it; to change it, run: mailbridge admin password");
		return false;
	}
	if (rate_limited(a, req, host, "setup"))
		return false;
	if (token == NULL || pw == NULL) {
		admin_reply_error(req, 400, "invalid", "token and password are required strings",
		                  "send {\"token\": \"...\", \"password\": \"...\"}");
		return false;
	}
	if (!setup_token_is_valid(a, token)) {
		login_failed(a, host);
		mb_warn("admin: setup refused: wrong, used or expired setup link peer=%s", host);
		admin_reply_error(req, 403, "bad_token",
		                  "this setup link is wrong, already used, or expired",
		                  "restart mailbridge serve for a new link, or run: mailbridge "
		                  "admin password");
		return false;
	}
	if (strlen(pw) < ADMIN_PASSWORD_MIN) {
		char *msg =
		    mb_asprintf("password: needs at least %d characters", ADMIN_PASSWORD_MIN);
		admin_reply_error(req, 400, "invalid", msg, "choose a longer password");
		free(msg);
		return false;
	}
	return true;
}

static void
api_setup_post(struct admin *a, struct ev_http_req *req, const struct admin_caller *unused,
               const struct api_params *p)
{
	struct mb_err err = {0};
	char host[64] = "", *token, *pw;
	json_t *j = admin_body_json(req);

	(void)unused;
	(void)p;
	if (j == NULL)
		return;
	ev_http_req_peer(req, host, sizeof(host));
	token = body_secret(j, "token");
	pw = body_secret(j, "password");
	json_decref(j);
	if (!setup_allowed(a, req, host, token, pw)) {
		mb_secret_free(token);
		mb_secret_free(pw);
		return;
	}
	mb_secret_free(token);
	if (admin_password_set(a->d.st, pw, &err) < 0) {
		mb_secret_free(pw);
		admin_reply_store_error(req, &err);
		return;
	}
	mb_secret_free(pw);
	admin_setup_state_free(a); /* burnt: the link works once */
	mb_info("admin: setup: admin password set with the setup link peer=%s", host);
	session_start(a, req, host, "setup");
}

const struct api_route admin_routes_auth[] = {
    {"POST", "login", api_login, true},      {"POST", "logout", api_logout, false},
    {"GET", "session", api_session, false},  {"GET", "setup", api_setup_get, true},
    {"POST", "setup", api_setup_post, true}, {NULL, NULL, NULL, false},
};
