/*
 * The embedded web UI: static files compiled into the binary (ui/ → admin_ui_files.c by
 * cmake/embed_ui.cmake). "/" is ui/index.html; "/assets/NAME" is any other file of ui/. GET
 * and HEAD only. Every answer carries the UI's Content-Security-Policy (no inline script or
 * style, nothing from another origin), refuses framing and sends no Referer. The files are
 * revalidated on each use (Cache-Control: no-cache) against a strong ETag, so a browser keeps
 * them and an upgraded binary is picked up at once.
 */
#include "admin_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin_ui_files.h"

#define UI_ASSETS "/assets/"
#define UI_CSP                                                                                     \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "          \
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

static const struct {
	const char *ext;
	const char *type;
} ui_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
};

static const char *
ui_content_type(const char *name)
{
	const char *dot = strrchr(name, '.');

	for (size_t i = 0; dot && i < sizeof(ui_types) / sizeof(ui_types[0]); i++)
		if (strcmp(dot, ui_types[i].ext) == 0)
			return ui_types[i].type;
	return "application/octet-stream";
}

static const struct admin_ui_file *
ui_file_find(const char *name)
{
	for (const struct admin_ui_file *f = admin_ui_files; f->name; f++)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

/* Whether an If-None-Match header (a list of entity tags, or "*") names etag; a weak tag
 * matches too, as RFC 9110 wants for If-None-Match. */
static bool
ui_etag_matches(const char *header, const char *etag)
{
	size_t n = strlen(etag);

	while (header && *header) {
		const char *end;
		size_t len;

		while (*header == ' ' || *header == '\t' || *header == ',')
			header++;
		if (*header == '\0')
			break;
		end = strchr(header, ',');
		len = end ? (size_t)(end - header) : strlen(header);
		while (len > 0 && (header[len - 1] == ' ' || header[len - 1] == '\t'))
			len--;
		if (len == 1 && header[0] == '*')
			return true;
		if (len > 2 && strncmp(header, "W/", 2) == 0) {
			header += 2;
			len -= 2;
		}
		if (len == n && memcmp(header, etag, n) == 0)
			return true;
		header = end;
	}
	return false;
}

static void
ui_add_headers(struct ev_http_req *req)
{
	ev_http_add_header(req, "Content-Security-Policy", UI_CSP);
	ev_http_add_header(req, "X-Frame-Options", "DENY");
	ev_http_add_header(req, "Referrer-Policy", "no-referrer");
}

/* The file a UI path names (NULL: not a UI path); *asset says whether it is under /assets/. */
static const char *
ui_name_of(const char *path, bool *asset)
{
	*asset = false;
	if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0)
		return "index.html";
	if (strncmp(path, UI_ASSETS, strlen(UI_ASSETS)) != 0)
		return NULL;
	*asset = true;
	return path + strlen(UI_ASSETS);
}

static void
ui_reply_file(struct ev_http_req *req, const struct admin_ui_file *f)
{
	const char *inm = ev_http_req_header(req, "If-None-Match");

	ev_http_add_header(req, "ETag", f->etag);
	ev_http_add_header(req, "Cache-Control", "no-cache");
	if (inm && ui_etag_matches(inm, f->etag)) {
		ev_http_reply(req, 304, NULL, "", 0);
		return;
	}
	/* libevent drops the body of a HEAD answer and its Content-Length with it: give the
	 * length a GET would have (for a GET libevent adds it itself) */
	if (strcmp(ev_http_req_method(req), "HEAD") == 0) {
		char len[24];
		snprintf(len, sizeof(len), "%zu", f->len);
		ev_http_add_header(req, "Content-Length", len);
	}
	ev_http_reply(req, 200, ui_content_type(f->name), f->data, f->len);
}

bool
admin_ui_serve(struct admin *a, struct ev_http_req *req)
{
	const char *method = ev_http_req_method(req);
	const struct admin_ui_file *f = NULL;
	bool asset;
	const char *name = ui_name_of(ev_http_req_path(req), &asset);

	(void)a;
	if (name == NULL)
		return false;
	ui_add_headers(req);
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		ev_http_add_header(req, "Allow", "GET, HEAD");
		admin_reply_error(req, 405, "method_not_allowed", "this method is not allowed here",
		                  "use GET or HEAD: this is the web UI");
		return true;
	}
	/* under /assets/ only the page's parts: the page itself has one address, "/" */
	if (!asset || strcasecmp(ui_content_type(name), "text/html; charset=utf-8") != 0)
		f = ui_file_find(name);
	if (f == NULL) {
		admin_reply_error(req, 404, "not_found", "no such file in the web UI",
		                  "open the web UI at / ; its files are under /assets/");
		return true;
	}
	ui_reply_file(req, f);
	return true;
}
