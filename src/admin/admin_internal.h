/* Shared between the admin_*.c files only. */
#ifndef MB_ADMIN_INTERNAL_H
#define MB_ADMIN_INTERNAL_H

#include "admin.h"

struct admin {
	struct admin_deps d;
	struct ev_http **servers;
	size_t nservers;
};

void admin_reply_error(struct ev_http_req *req, int status, const char *code, const char *message,
                       const char *fix);
/* A small self-contained HTML page (no script, no external resources). body is HTML. */
void admin_reply_page(struct ev_http_req *req, int status, const char *title, const char *body);
/* Appends s with HTML escaping. */
void admin_html_escape(struct mb_buf *b, const char *s);
/* The server a request came in on, for deferring its reply. */
struct ev_http *admin_server_of(struct admin *a, struct ev_http_req *req);

void admin_oauth_callback(struct admin *a, struct ev_http_req *req);

#endif
