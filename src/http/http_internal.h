/* Shared between the http_*.c files only. */
#ifndef MB_HTTP_INTERNAL_H
#define MB_HTTP_INTERNAL_H

#include <curl/curl.h>

#include "http.h"

/* Copies the value of the header line p (n bytes, the name and its colon namelen of them) into
 * out, leading blanks and the line end dropped, cut to outlen - 1 bytes. */
void http_header_value(const char *p, size_t n, size_t namelen, char *out, size_t outlen);
/* For CURLOPT_SSL_CTX_FUNCTION: adds ca_file's certificates to OpenSSL's store in ssl_ctx, on
 * top of the system's; CURLE_SSL_CACERT_BADFILE if it cannot be read or holds none. */
CURLcode http_ssl_ctx_add_ca(void *ssl_ctx, const char *ca_file);
/* Keeps one reply line the server sent (data, size bytes) in out without its line end, cut to
 * outlen - 1 bytes. */
void http_reply_line_keep(const char *data, size_t size, char *out, size_t outlen);

#endif
