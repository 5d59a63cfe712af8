/* Shared by admin_api_msg.c, admin_api_test.c and admin_msg_view.c only: reading a stored message
 * for people. */
#ifndef MB_ADMIN_MSG_H
#define MB_ADMIN_MSG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The preview's limit in bytes (UTF-8, cut on a character boundary). */
#define ADMIN_PREVIEW_MAX 4096

/* Adds to o, from the raw message: "headers": [{name, value}] (unfolded, RFC 2047 decoded,
 * in order; at most 200), "preview": plain text of at most ADMIN_PREVIEW_MAX bytes (the first
 * text/plain part that is not an attachment, else the first text/html one with its tags,
 * scripts, styles and comments removed; transfer encoding and charset decoded), "html": whether
 * the message has a text/html part, and "preview_truncated". Every string is valid UTF-8
 * without control characters other than newline and tab. */
void admin_msg_view(const char *body, size_t len, json_t *o);

/* text without its HTML: tags, comments, script/style/head contents dropped, entities
 * decoded, whitespace collapsed. A new string. */
char *admin_html_to_text(const char *html);

/* s as a JSON string: valid UTF-8 (bad bytes become U+FFFD), control characters made spaces;
 * RFC 2047 encoded-words decoded first when header. */
json_t *admin_json_text(const char *s, bool header);

struct ev_http_req;

/* An e-mail address as the API takes it: local@domain, no spaces, brackets or controls. */
bool admin_msg_addr_ok(const char *s);
/* A string as JSON (made valid UTF-8: a stored header may be 8-bit), or null. */
json_t *admin_msg_str_json(const char *s);

#endif
