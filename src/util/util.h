/*
 * util: the small things every module uses.
 *
 * Logging (one line per event, "<module>: <event>: <detail> key=value"), errors
 * (struct mb_err, filled only on failure, never allocated), allocation that aborts on
 * out-of-memory, growable byte buffers, time, message ids, base64 (OpenSSL underneath),
 * secret wiping, and network address helpers (host:port, CIDR lists, loopback tests).
 *
 * Nothing here owns global state except the logger's settings.
 */
#ifndef MB_UTIL_H
#define MB_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define MB_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- errors ---- */

enum mb_errc {
	MB_EOK = 0,
	MB_EINVAL,   /* bad input from a caller, a file or a peer */
	MB_EIO,      /* the system or a library failed */
	MB_ETEMP,    /* temporary: try again later */
	MB_ENOTFOUND /* the thing asked for does not exist */
};

struct mb_err {
	enum mb_errc code;
	char msg[512];
};

void mb_err_set(struct mb_err *err, enum mb_errc code, const char *fmt, ...) MB_PRINTF(3, 4);

/* ---- logging ---- */

enum mb_log_level { MB_LOG_DEBUG, MB_LOG_INFO, MB_LOG_WARN, MB_LOG_FATAL };
enum mb_log_format { MB_LOG_TEXT, MB_LOG_JSON };

void mb_log_setup(enum mb_log_level min, enum mb_log_format format);
bool mb_log_is_enabled(enum mb_log_level level);
void mb_log(enum mb_log_level level, const char *fmt, ...) MB_PRINTF(2, 3);
#define mb_debug(...)                                                                              \
	do {                                                                                       \
		if (mb_log_is_enabled(MB_LOG_DEBUG))                                               \
			mb_log(MB_LOG_DEBUG, __VA_ARGS__);                                         \
	} while (0)
#define mb_info(...)  mb_log(MB_LOG_INFO, __VA_ARGS__)
#define mb_warn(...)  mb_log(MB_LOG_WARN, __VA_ARGS__)
#define mb_fatal(...) mb_log(MB_LOG_FATAL, __VA_ARGS__)

/* ---- allocation (aborts on out-of-memory) ---- */

void *mb_malloc(size_t n);
void *mb_calloc(size_t nmemb, size_t size);
void *mb_realloc(void *p, size_t n);
char *mb_strdup(const char *s);
char *mb_strndup(const char *s, size_t n);
char *mb_asprintf(const char *fmt, ...) MB_PRINTF(1, 2);

/* ---- buffers ---- */

struct mb_buf {
	char *data; /* always NUL-terminated after the first append */
	size_t len;
	size_t cap;
};

void mb_buf_reserve(struct mb_buf *b, size_t extra);
void mb_buf_append(struct mb_buf *b, const void *data, size_t len);
void mb_buf_puts(struct mb_buf *b, const char *s);
void mb_buf_printf(struct mb_buf *b, const char *fmt, ...) MB_PRINTF(2, 3);
void mb_buf_vprintf(struct mb_buf *b, const char *fmt, va_list ap) MB_PRINTF(2, 0);
void mb_buf_reset(struct mb_buf *b);
/* Frees the storage; the struct itself is left empty and reusable. */
void mb_buf_release(struct mb_buf *b);
/* Like mb_buf_release, but wipes the bytes first: for secrets. */
void mb_buf_wipe(struct mb_buf *b);
/* Hands the storage to the caller (NUL-terminated, maybe NULL if empty). */
char *mb_buf_steal(struct mb_buf *b);

/* ---- secrets ---- */

void mb_secret_wipe(void *p, size_t n);
/* Frees a NUL-terminated secret string after wiping it; NULL does nothing. */
void mb_secret_free(char *s);
/* A short non-reversible fingerprint for logs: "sha256:" + 8 hex digits. */
void mb_fingerprint(const void *data, size_t len, char out[24]);

/* ---- passwords (scrypt, OpenSSL) ---- */

/* "$scrypt$ln=14,r=8,p=1$<salt>$<hash>" (base64). Returns a new string. */
char *mb_password_hash(const char *password);
/* Constant-time check; false for a malformed stored hash. Costs ~50 ms of CPU. */
bool mb_password_verify(const char *password, const char *stored);

/* ---- secrets at rest: AES-256-GCM under one key file ---- */

#define MB_KEY_LEN 32

struct mb_key {
	unsigned char k[MB_KEY_LEN];
	char source[512]; /* where it came from, for messages (never the key itself) */
};

/* Loads the store key from $CREDENTIALS_DIRECTORY/mailbridge.key (systemd), else key_file
 * (if non-NULL and non-empty), else {data_dir}/secret.key, which is created with mode 0600
 * when absent and create is set. A key file readable by group or others is refused. The file
 * holds 32 raw bytes or their base64. */
int mb_key_load(const char *key_file, const char *data_dir, bool create, struct mb_key *out,
                struct mb_err *err);
void mb_key_wipe(struct mb_key *k);
/* Seals plaintext bound to aad (e.g. "token:office365:refresh"): "mb1" nonce ct tag.
 * Returns a new buffer and its length. */
unsigned char *mb_seal(const struct mb_key *k, const void *pt, size_t len, const char *aad,
                       size_t *outlen);
/* Opens what mb_seal made; NULL if the key, the aad or the bytes differ. The result is
 * NUL-terminated; free it with mb_secret_free (or wipe len bytes). */
char *mb_open(const struct mb_key *k, const unsigned char *ct, size_t len, const char *aad,
              size_t *ptlen);

/* ---- time ---- */

int64_t mb_now_ms(void);  /* wall clock, Unix epoch */
int64_t mb_mono_ms(void); /* monotonic */
/* RFC 5322 date, local time zone: "Thu, 26 Nov 2026 21:41:44 +0000". */
void mb_rfc5322_date(int64_t unix_ms, char *out, size_t outlen);
/* ISO 8601 UTC: "2026-11-26T21:41:44Z". */
void mb_iso_date(int64_t unix_ms, char *out, size_t outlen);

/* ---- ids ---- */

#define MB_ID_LEN 16
/* Time-ordered, unique across restarts and nodes: 10 chars of ms time + 6 random, base32. */
void mb_id_new(char out[MB_ID_LEN + 1]);
bool mb_id_is_valid(const char *s);

/* ---- randomness ---- */

void mb_random_bytes(void *out, size_t n);

/* ---- base64 (OpenSSL underneath) ---- */

/* Standard alphabet with padding, no line breaks. Returns a new string. */
char *mb_base64_encode(const void *data, size_t len);
/* Decodes standard base64 (padding optional, whitespace refused). Returns a new buffer
 * (NUL-terminated for convenience) and its length, or NULL on bad input. */
unsigned char *mb_base64_decode(const char *s, size_t slen, size_t *outlen);

/* ---- strings ---- */

bool mb_str_has_prefix_ci(const char *s, const char *prefix);
char *mb_str_trim(char *s);
/* A new string: s with every "from" replaced by "to". */
char *mb_str_replace(const char *s, const char *from, const char *to);
/* Parses "35M", "1024", "64K", "1G": bytes. */
int mb_parse_size(const char *s, int64_t *out);
/* Parses "30", "30s", "5m", "2h", "7d": seconds. */
int mb_parse_duration(const char *s, int64_t *out);
int mb_parse_int(const char *s, int64_t *out);
int mb_parse_bool(const char *s, bool *out);
/* JSON-quotes a string into b (for the JSON log format and CLI --json without jansson). */
void mb_buf_json_str(struct mb_buf *b, const char *s);

/* ---- network addresses ---- */

struct mb_sockaddr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* "127.0.0.1:2525", "[::1]:2525", "localhost:2525" (resolved numerically when possible). */
int mb_sockaddr_parse(const char *hostport, struct mb_sockaddr *out, struct mb_err *err);
bool mb_sockaddr_is_loopback(const struct mb_sockaddr *a);
/* Whether a URL names a loopback host (localhost, 127.0.0.0/8 or ::1), by its text alone;
 * rest is what follows "scheme://". Userinfo ("user@") and a port are skipped. */
bool mb_url_host_is_loopback(const char *rest);
/* "127.0.0.1" or "::1" (no port). */
void mb_sockaddr_host(const struct mb_sockaddr *a, char *out, size_t outlen);
int mb_sockaddr_port(const struct mb_sockaddr *a);

struct mb_cidr {
	int family; /* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int prefix;
};

int mb_cidr_parse(const char *s, struct mb_cidr *out);
bool mb_cidr_match(const struct mb_cidr *c, const struct mb_sockaddr *a);

#endif
