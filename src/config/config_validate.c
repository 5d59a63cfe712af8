/* The rules that span keys. Each error names the file and line of the key at fault. */
#include "config/config_impl.h"

#include <limits.h>
#include <string.h>

struct config_check {
	const struct config *c;
	struct mb_err *err;
};

static int
config_line_of(const struct config *c, const int *lines, const char *key)
{
	const struct config_param *params;
	size_t n;

	params = config_params(&n);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(params[i].name, key) == 0 && lines[i] != 0)
			return lines[i];
	}
	return 0;
}

static int config_fail(struct config_check *ck, int line, const char *fmt, ...) MB_PRINTF(3, 4);

/* "file:line: reason"; "--set: reason" for a value from config_set; "file: reason" for a default.
 */
static int
config_fail(struct config_check *ck, int line, const char *fmt, ...)
{
	const char *path = ck->c->path != NULL ? ck->c->path : "(defaults)";
	char why[CONFIG_WHY_LEN];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (line > 0)
		mb_err_set(ck->err, MB_EINVAL, "%s:%d: %s", path, line, why);
	else if (line == CONFIG_LINE_SET)
		mb_err_set(ck->err, MB_EINVAL, "--set: %s", why);
	else
		mb_err_set(ck->err, MB_EINVAL, "%s: %s", path, why);
	return -1;
}

static int
config_srv_line(const struct config *c, const char *key)
{
	return config_line_of(c, c->server_lines, key);
}

static int
config_listen_check(struct config_check *ck, const char *key, const struct config_list *l)
{
	struct mb_sockaddr sa;
	struct mb_err e;

	for (size_t i = 0; i < l->n; i++) {
		if (mb_sockaddr_parse(l->v[i], &sa, &e) < 0)
			return config_fail(ck, config_srv_line(ck->c, key), "%s = %s: %s", key,
			                   l->v[i], e.msg);
	}
	return 0;
}

static int
config_allow_check(struct config_check *ck)
{
	const struct config_list *l = &ck->c->server.smtp_allow;
	int line = config_srv_line(ck->c, "smtp_allow");
	struct mb_cidr cidr;

	for (size_t i = 0; i < l->n; i++) {
		if (mb_cidr_parse(l->v[i], &cidr) < 0)
			return config_fail(ck, line,
			                   "smtp_allow = %s is not a network; allowed: "
			                   "address/prefix, as in 192.0.2.0/24 or 2001:db8::/32",
			                   l->v[i]);
		if (cidr.prefix == 0)
			return config_fail(
			    ck, line,
			    "smtp_allow = %s lets every address send without AUTH: "
			    "this would be an open relay. Name the networks that may "
			    "send, as in 192.0.2.0/24",
			    l->v[i]);
	}
	return 0;
}

/* Never an open relay: a non-loopback listener needs smtp_allow or required AUTH. */
static int
config_relay_check(struct config_check *ck)
{
	const struct config_server *s = &ck->c->server;
	struct mb_sockaddr sa;

	if (s->smtp_allow.n > 0 || (ck->c->nusers > 0 && strcmp(s->smtp_auth, "required") == 0))
		return 0;
	for (size_t i = 0; i < s->smtp_listen.n; i++) {
		if (mb_sockaddr_parse(s->smtp_listen.v[i], &sa, NULL) < 0 ||
		    mb_sockaddr_is_loopback(&sa))
			continue;
		return config_fail(
		    ck, config_srv_line(ck->c, "smtp_listen"),
		    "smtp_listen = %s is not a loopback address, and neither smtp_allow nor "
		    "required client AUTH ([user] sections with smtp_auth = required) is set: "
		    "this would be an open relay. Add smtp_allow = 192.0.2.0/24 for the networks "
		    "that may send, or add [user NAME] sections and smtp_auth = required.",
		    s->smtp_listen.v[i]);
	}
	return 0;
}

static int
config_server_check(struct config_check *ck)
{
	const struct config *c = ck->c;
	const struct config_server *s = &c->server;

	if (s->data_dir == NULL)
		return config_fail(ck, config_srv_line(c, "data_dir"),
		                   "data_dir is empty; it must name the store's directory");
	if (s->public_url == NULL || (!mb_str_has_prefix_ci(s->public_url, "http://") &&
	                              !mb_str_has_prefix_ci(s->public_url, "https://")))
		return config_fail(ck, config_srv_line(c, "public_url"),
		                   "public_url = %s must start with http:// or https://",
		                   s->public_url ? s->public_url : "");
	if (config_listen_check(ck, "smtp_listen", &s->smtp_listen) < 0 ||
	    config_listen_check(ck, "http_listen", &s->http_listen) < 0 ||
	    config_allow_check(ck) < 0 || config_relay_check(ck) < 0)
		return -1;
	if ((s->tls_cert == NULL) != (s->tls_key == NULL)) {
		const char *set = s->tls_cert ? "tls_cert" : "tls_key";

		return config_fail(ck, config_srv_line(c, set),
		                   "%s is set but %s is not; set both or neither", set,
		                   s->tls_cert ? "tls_key" : "tls_cert");
	}
	if (strcmp(s->smtp_auth, "required") == 0 && c->nusers == 0)
		return config_fail(ck, config_srv_line(c, "smtp_auth"),
		                   "smtp_auth = required, but there is no [user NAME] section: no "
		                   "client could log in. Add a [user NAME] section with a "
		                   "password_hash");
	return 0;
}

static int
config_url_check(struct config_check *ck, const struct config_conn *cc, const char *key,
                 const char *url)
{
	bool smtp = strcmp(key, "smtp_url") == 0;
	int line = config_line_of(ck->c, cc->lines, key);

	if (url == NULL)
		return 0;
	if (smtp) {
		if (!mb_str_has_prefix_ci(url, "smtps://") && !mb_str_has_prefix_ci(url, "smtp://"))
			return config_fail(ck, line,
			                   "%s = %s must start with smtps:// (TLS) or smtp:// "
			                   "(STARTTLS)",
			                   key, url);
		return 0;
	}
	if (mb_str_has_prefix_ci(url, "https://"))
		return 0;
	if (mb_str_has_prefix_ci(url, "http://")) {
		if (mb_url_host_is_loopback(url + strlen("http://")))
			return 0;
		return config_fail(
		    ck, line,
		    "%s = %s uses http:// to a host that is not loopback; use "
		    "https:// (http:// is only for a test server on 127.0.0.1, ::1 or "
		    "localhost)",
		    key, url);
	}
	return config_fail(ck, line,
	                   "%s = %s must start with https:// (or http:// for a test server on "
	                   "loopback)",
	                   key, url);
}

/* At most one of the keys may be set; the error cites the one set last. */
static int
config_one_of(struct config_check *ck, const struct config_conn *cc, const char *const *keys,
              const char *const *vals, size_t n)
{
	const char *other = NULL, *last = NULL;
	int last_line = 0;

	for (size_t i = 0; i < n; i++) {
		int line = config_line_of(ck->c, cc->lines, keys[i]);

		if (vals[i] == NULL)
			continue;
		if (line == CONFIG_LINE_SET)
			line = INT_MAX;
		if (last == NULL || line > last_line) {
			other = last;
			last = keys[i];
			last_line = line;
		} else {
			other = keys[i];
		}
	}
	if (other == NULL)
		return 0;
	return config_fail(ck, last_line == INT_MAX ? CONFIG_LINE_SET : last_line,
	                   "[connection %s] sets both %s and %s; use only one of %s", cc->name,
	                   other, last,
	                   n == 3 ? "client_secret, client_secret_file and client_secret_env"
	                          : "password_file and password_env");
}

static int
config_conn_check(struct config_check *ck, const struct config_conn *cc,
                  const struct config_conn **def)
{
	static const char *const secrets[] = {"client_secret", "client_secret_file",
	                                      "client_secret_env"};
	static const char *const passwords[] = {"password_file", "password_env"};
	const char *secret_vals[] = {cc->client_secret, cc->client_secret_file,
	                             cc->client_secret_env};
	const char *password_vals[] = {cc->password_file, cc->password_env};
	const struct config *c = ck->c;

	if (cc->sender == NULL)
		return config_fail(ck, cc->line,
		                   "[connection %s] has no sender; add sender = user@example.com, "
		                   "the mailbox that sends",
		                   cc->name);
	if (strchr(cc->sender, '@') == NULL)
		return config_fail(ck, config_line_of(c, cc->lines, "sender"),
		                   "sender = %s is not an email address (user@example.com)",
		                   cc->sender);
	for (size_t i = 0; i < cc->senders.n; i++) {
		if (strchr(cc->senders.v[i], '@') == NULL)
			return config_fail(ck, config_line_of(c, cc->lines, "senders"),
			                   "senders = %s is not an email address "
			                   "(user@example.com)",
			                   cc->senders.v[i]);
	}
	if (cc->fallback != NULL && strcmp(cc->fallback, cc->name) == 0)
		return config_fail(ck, config_line_of(c, cc->lines, "fallback"),
		                   "fallback = %s names this connection itself; name another one",
		                   cc->fallback);
	if (cc->fallback != NULL && config_conn_find(c, cc->fallback) == NULL)
		return config_fail(ck, config_line_of(c, cc->lines, "fallback"),
		                   "fallback = %s: there is no [connection %s]", cc->fallback,
		                   cc->fallback);
	if (cc->is_default && *def != NULL)
		return config_fail(ck, config_line_of(c, cc->lines, "default"),
		                   "default = yes is also set in [connection %s]; only one "
		                   "connection can be the default",
		                   (*def)->name);
	if (cc->is_default)
		*def = cc;
	if (config_url_check(ck, cc, "login_url", cc->login_url) < 0 ||
	    config_url_check(ck, cc, "graph_url", cc->graph_url) < 0 ||
	    config_url_check(ck, cc, "smtp_url", cc->smtp_url) < 0)
		return -1;
	if (config_one_of(ck, cc, secrets, secret_vals, 3) < 0 ||
	    config_one_of(ck, cc, passwords, password_vals, 2) < 0)
		return -1;
	return 0;
}

static int
config_user_check(struct config_check *ck, const struct config_user *u)
{
	if (u->password_hash == NULL)
		return config_fail(
		    ck, u->line, "[user %s] has no password_hash; add password_hash = $scrypt$...",
		    u->name);
	if (strncmp(u->password_hash, "$scrypt$", 8) != 0)
		return config_fail(
		    ck, config_line_of(ck->c, u->lines, "password_hash"),
		    "password_hash of [user %s] is not an scrypt hash: it must start "
		    "with $scrypt$",
		    u->name);
	return 0;
}

int
config_validate(const struct config *c, struct mb_err *err)
{
	struct config_check ck = {c, err};
	const struct config_conn *def = NULL;

	if (config_server_check(&ck) < 0)
		return -1;
	for (size_t i = 0; i < c->nconns; i++) {
		if (config_conn_check(&ck, &c->conns[i], &def) < 0)
			return -1;
	}
	for (size_t i = 0; i < c->nusers; i++) {
		if (config_user_check(&ck, &c->users[i]) < 0)
			return -1;
	}
	return 0;
}
