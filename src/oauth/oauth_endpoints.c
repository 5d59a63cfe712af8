/*
 * oauth: the names of providers, auth kinds and resources; national clouds and their endpoint
 * overrides; endpoint URLs and the scopes each request asks for.
 */
#include <stdio.h>
#include <string.h>

#include "oauth/oauth.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- names ---- */

static const char *const provider_names[] = {
    [OAUTH_PROVIDER_GRAPH] = "microsoft-graph",
    [OAUTH_PROVIDER_MSSMTP] = "microsoft-smtp",
    [OAUTH_PROVIDER_SMTP] = "smtp",
};

static const char *const auth_names[] = {
    [OAUTH_AUTH_DELEGATED] = "delegated",
    [OAUTH_AUTH_APP_ONLY] = "app-only",
};

static const char *const resource_names[] = {
    [OAUTH_RES_GRAPH] = "graph",
    [OAUTH_RES_OUTLOOK] = "outlook",
};

static int
oauth_name_index(const char *const *names, size_t n, const char *s)
{
	if (s == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(names[i], s) == 0)
			return (int)i;
	}
	return -1;
}

int
oauth_provider_parse(const char *s, enum oauth_provider *out)
{
	int i = oauth_name_index(provider_names, NELEM(provider_names), s);

	if (i < 0)
		return -1;
	*out = (enum oauth_provider)i;
	return 0;
}

const char *
oauth_provider_name(enum oauth_provider p)
{
	if ((size_t)p >= NELEM(provider_names))
		return "unknown";
	return provider_names[p];
}

int
oauth_auth_parse(const char *s, enum oauth_auth *out)
{
	int i = oauth_name_index(auth_names, NELEM(auth_names), s);

	if (i < 0)
		return -1;
	*out = (enum oauth_auth)i;
	return 0;
}

const char *
oauth_auth_name(enum oauth_auth a)
{
	if ((size_t)a >= NELEM(auth_names))
		return "unknown";
	return auth_names[a];
}

const char *
oauth_resource_name(enum oauth_resource r)
{
	if ((size_t)r >= NELEM(resource_names))
		return "unknown";
	return resource_names[r];
}

/* ---- clouds ---- */

struct oauth_cloud {
	const char *name;
	const char *login;
	const char *graph;
	const char *smtp;
	const char *graph_resource;
	const char *outlook_resource;
	const char *outlook_app;
};

/*
 * microsoft-reference §5. The Exchange resource URIs outside the global cloud are unconfirmed
 * by Microsoft documentation (they follow the host names of each cloud's endpoint list), and
 * so are smtp.office365.us and smtp.partner.outlook.cn; delegated and app-only SMTP tokens
 * use the same resource there. Overrides change hosts only, never these identifiers.
 */
static const struct oauth_cloud clouds[] = {
    {"global", "https://login.microsoftonline.com", "https://graph.microsoft.com",
     "smtp://smtp.office365.com:587", "https://graph.microsoft.com", "https://outlook.office.com",
     "https://outlook.office365.com"},
    {"usgov", "https://login.microsoftonline.us", "https://graph.microsoft.us",
     "smtp://smtp.office365.us:587", "https://graph.microsoft.us", "https://outlook.office365.us",
     "https://outlook.office365.us"},
    {"usgov-dod", "https://login.microsoftonline.us", "https://dod-graph.microsoft.us",
     "smtp://outlook-dod.office365.us:587", "https://dod-graph.microsoft.us",
     "https://outlook-dod.office365.us", "https://outlook-dod.office365.us"},
    {"china", "https://login.partner.microsoftonline.cn", "https://microsoftgraph.chinacloudapi.cn",
     "smtp://smtp.partner.outlook.cn:587", "https://microsoftgraph.chinacloudapi.cn",
     "https://partner.outlook.cn", "https://partner.outlook.cn"},
};

static const struct oauth_cloud *
oauth_cloud_find(const char *name)
{
	if (name == NULL || *name == '\0')
		return &clouds[0];
	for (size_t i = 0; i < NELEM(clouds); i++) {
		if (strcmp(clouds[i].name, name) == 0)
			return &clouds[i];
	}
	return NULL;
}

/* The authority is checked for what would surprise: userinfo ("https://a@b") and ports that
 * are not numbers. */
static bool
oauth_authority_is_sane(const char *auth, size_t len)
{
	const char *port = NULL;

	if (len == 0 || memchr(auth, '@', len) != NULL)
		return false;
	if (auth[0] == '[') {
		const char *end = memchr(auth, ']', len);

		if (end == NULL || end == auth + 1)
			return false;
		if (end + 1 < auth + len) {
			if (end[1] != ':')
				return false;
			port = end + 2;
		}
	} else {
		port = memchr(auth, ':', len);
		if (port == auth)
			return false;
		if (port)
			port++;
	}
	if (port) {
		const char *p;

		if (port >= auth + len)
			return false;
		for (p = port; p < auth + len; p++) {
			if (*p < '0' || *p > '9')
				return false;
		}
		if (p - port > 5)
			return false;
	}
	return true;
}

static int
oauth_url_override(const char *key, const char *url, bool smtp, char *out, size_t outlen,
                   struct mb_err *err)
{
	static const char http_rule[] =
	    "must start with https:// (or http:// for a test server on loopback: "
	    "127.0.0.1, [::1] or localhost)";
	static const char smtp_rule[] =
	    "must start with smtp:// (STARTTLS, port 587) or smtps:// (TLS, port 465)";
	const char *rule = smtp ? smtp_rule : http_rule;
	size_t len = strlen(url), skip, alen;

	for (const char *p = url; *p; p++) {
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			mb_err_set(err, MB_EINVAL,
			           "%s must be a URL without spaces or control characters", key);
			return -1;
		}
	}
	if (smtp) {
		if (mb_str_has_prefix_ci(url, "smtp://"))
			skip = strlen("smtp://");
		else if (mb_str_has_prefix_ci(url, "smtps://"))
			skip = strlen("smtps://");
		else
			goto bad_scheme;
	} else if (mb_str_has_prefix_ci(url, "https://")) {
		skip = strlen("https://");
	} else if (mb_str_has_prefix_ci(url, "http://")) {
		skip = strlen("http://");
	} else {
		goto bad_scheme;
	}
	while (len > skip && url[len - 1] == '/')
		len--;
	alen = strcspn(url + skip, "/?#");
	if (alen > len - skip)
		alen = len - skip;
	if (!oauth_authority_is_sane(url + skip, alen)) {
		mb_err_set(err, MB_EINVAL, "%s = %.200s has no valid host[:port] after the scheme",
		           key, url);
		return -1;
	}
	if (!smtp && skip == strlen("http://") && !mb_url_host_is_loopback(url + skip)) {
		mb_err_set(err, MB_EINVAL,
		           "%s = %.200s uses http:// to a host that is not loopback; use https:// "
		           "(http:// is only for a test server on 127.0.0.1, [::1] or localhost)",
		           key, url);
		return -1;
	}
	if (strchr(url + skip, '?') || strchr(url + skip, '#')) {
		mb_err_set(err, MB_EINVAL, "%s = %.200s must have no query (?) or fragment (#)",
		           key, url);
		return -1;
	}
	if (smtp && alen != len - skip) {
		mb_err_set(err, MB_EINVAL, "%s = %.200s must be scheme://host:port with no path",
		           key, url);
		return -1;
	}
	if (len >= outlen) {
		mb_err_set(err, MB_EINVAL, "%s is longer than %zu characters", key, outlen - 1);
		return -1;
	}
	memcpy(out, url, len);
	out[len] = '\0';
	return 0;

bad_scheme:
	mb_err_set(err, MB_EINVAL, "%s = %.200s %s", key, url, rule);
	return -1;
}

int
oauth_endpoints_resolve(const char *cloud, const char *login_url, const char *graph_url,
                        const char *smtp_url, struct oauth_endpoints *out, struct mb_err *err)
{
	const struct oauth_cloud *c = oauth_cloud_find(cloud);
	struct oauth_endpoints e;

	if (c == NULL) {
		mb_err_set(err, MB_EINVAL,
		           "cloud = %.64s is not one of global, usgov, usgov-dod, china", cloud);
		return -1;
	}
	memset(&e, 0, sizeof(e));
	snprintf(e.login, sizeof(e.login), "%s", c->login);
	snprintf(e.graph, sizeof(e.graph), "%s", c->graph);
	snprintf(e.smtp, sizeof(e.smtp), "%s", c->smtp);
	snprintf(e.graph_resource, sizeof(e.graph_resource), "%s", c->graph_resource);
	snprintf(e.outlook_resource, sizeof(e.outlook_resource), "%s", c->outlook_resource);
	snprintf(e.outlook_app, sizeof(e.outlook_app), "%s", c->outlook_app);
	if (login_url && *login_url &&
	    oauth_url_override("login_url", login_url, false, e.login, sizeof(e.login), err) < 0)
		return -1;
	if (graph_url && *graph_url &&
	    oauth_url_override("graph_url", graph_url, false, e.graph, sizeof(e.graph), err) < 0)
		return -1;
	if (smtp_url && *smtp_url &&
	    oauth_url_override("smtp_url", smtp_url, true, e.smtp, sizeof(e.smtp), err) < 0)
		return -1;
	*out = e;
	return 0;
}

void
oauth_endpoint_url(const struct oauth_endpoints *e, const char *tenant, const char *what,
                   struct mb_buf *out)
{
	mb_buf_puts(out, e->login);
	mb_buf_puts(out, "/");
	for (const unsigned char *p = (const unsigned char *)tenant; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~')
			mb_buf_append(out, p, 1);
		else
			mb_buf_printf(out, "%%%02X", *p);
	}
	mb_buf_puts(out, "/oauth2/v2.0/");
	mb_buf_puts(out, what);
}

/* ---- scopes ---- */

bool
oauth_provider_needs(enum oauth_provider p, enum oauth_resource r)
{
	/* microsoft-smtp learns the account from the id_token, so it needs no Graph token. */
	switch (p) {
	case OAUTH_PROVIDER_GRAPH:
		return r == OAUTH_RES_GRAPH;
	case OAUTH_PROVIDER_MSSMTP:
		return r == OAUTH_RES_OUTLOOK;
	case OAUTH_PROVIDER_SMTP:
		return false;
	}
	return false;
}

void
oauth_scopes_authorize(const struct oauth_endpoints *e, enum oauth_provider p, bool upload_sessions,
                       struct mb_buf *out)
{
	const char *g = e->graph_resource;

	if (p != OAUTH_PROVIDER_GRAPH && p != OAUTH_PROVIDER_MSSMTP)
		return;
	mb_buf_printf(out, "offline_access openid profile %s/Mail.Send %s/User.Read", g, g);
	if (upload_sessions)
		mb_buf_printf(out, " %s/Mail.ReadWrite", g);
	if (p == OAUTH_PROVIDER_MSSMTP)
		mb_buf_printf(out, " %s/SMTP.Send", e->outlook_resource);
}

void
oauth_scopes_token(const struct oauth_endpoints *e, enum oauth_provider p, enum oauth_auth a,
                   enum oauth_resource r, bool upload_sessions, struct mb_buf *out)
{
	const char *g = e->graph_resource;

	if (p != OAUTH_PROVIDER_GRAPH && p != OAUTH_PROVIDER_MSSMTP)
		return;
	if (a == OAUTH_AUTH_APP_ONLY) {
		/* client credentials: .default only, one resource, never offline_access */
		mb_buf_printf(out, "%s/.default", r == OAUTH_RES_GRAPH ? g : e->outlook_app);
		return;
	}
	if (r == OAUTH_RES_OUTLOOK) {
		mb_buf_printf(out, "%s/SMTP.Send offline_access", e->outlook_resource);
		return;
	}
	mb_buf_printf(out, "%s/Mail.Send %s/User.Read offline_access", g, g);
	if (upload_sessions)
		mb_buf_printf(out, " %s/Mail.ReadWrite", g);
}
