/*
 * config: the INI file, read with inih through one typed parameter table.
 *
 * Every key is a row of config_params(): section, name, type, default, bounds and a one-line
 * description. The same table drives parsing, validation, `mailbridge config show` and the
 * generated mailbridge.conf(5) page, so they cannot drift apart.
 *
 * Sections: [server] (once), [connection NAME] and [user NAME] (any number).
 * An unknown section or key, a bad value or a missing file is an error carrying
 * "file:line: reason". config_validate() then checks what spans several keys (the open-relay
 * rule, TLS pairs, connection references) and names the line of the key at fault.
 *
 * Ownership: a struct config owns all of its strings; config_free() releases them. Secret
 * values (inline client_secret, password_hash) are wiped on free and printed masked.
 */
#ifndef MB_CONFIG_H
#define MB_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "util/util.h"

enum config_type {
	CONFIG_STR,
	CONFIG_SECRET,   /* like STR, masked in `config show`, wiped on free */
	CONFIG_INT,      /* int64_t */
	CONFIG_SIZE,     /* int64_t bytes; accepts K, M, G suffixes */
	CONFIG_DURATION, /* int64_t seconds; accepts s, m, h, d, w suffixes */
	CONFIG_BOOL,     /* bool */
	CONFIG_ENUM,     /* char *, one of the '|'-separated choices */
	CONFIG_LIST      /* struct config_list, comma-separated */
};

enum config_section { CONFIG_SEC_SERVER, CONFIG_SEC_CONNECTION, CONFIG_SEC_USER };

struct config_param {
	enum config_section section;
	const char *name;
	enum config_type type;
	const char *def; /* default, as it would be written in the file; NULL = unset */
	int64_t min, max;
	const char *choices; /* CONFIG_ENUM: "a|b|c" */
	size_t offset;       /* into struct config_server / config_conn / config_user */
	const char *doc;
};

struct config_list {
	char **v;
	size_t n;
};

struct config_server {
	char *data_dir;
	struct config_list smtp_listen;
	struct config_list http_listen;
	char *public_url;
	char *smtp_hostname;
	int64_t max_message_size;
	int64_t smtp_max_line_length;
	int64_t smtp_max_recipients;
	int64_t smtp_max_sessions;
	int64_t smtp_timeout;
	int64_t smtp_data_timeout;
	int64_t smtp_max_errors;
	char *smtp_auth; /* optional | required */
	struct config_list smtp_allow;
	bool smtp_auth_plaintext;
	char *tls_cert;
	char *tls_key;
	int64_t commit_batch_max;
	char *log_level;  /* debug | info | warn */
	char *log_format; /* text | json */
	int64_t log_retention_days;
	char *key_file;
	struct config_list retry_schedule;
	int64_t max_queue_lifetime;
	int64_t delivery_concurrency;
	char *alert_webhook;
	char *alert_email;
};

struct config_conn {
	char *name;
	int line;       /* where its section starts, for messages */
	char *provider; /* microsoft-graph | microsoft-smtp | smtp */
	char *sender;
	struct config_list senders;
	char *auth; /* delegated | app-only */
	char *tenant;
	char *client_id;
	char *client_secret;
	char *client_secret_file;
	char *client_secret_env;
	char *cloud; /* global | usgov | usgov-dod | china */
	char *login_url;
	char *graph_url;
	char *smtp_url;
	char *ca_file;
	bool is_default;
	char *fallback;
	bool force_from;
	char *large_messages; /* fail | upload-session | smtp */
	int64_t max_inflight;
	int64_t messages_per_minute;
	int64_t daily_recipients;
	int64_t fallback_after;
	int64_t request_timeout;
	char *tls;
	char *username;
	char *password_file;
	char *password_env;
	int *lines; /* [param index] -> line, as in config.server_lines */
};

struct config_user {
	char *name;
	int line;
	char *password_hash;
	int *lines; /* [param index] -> line, as in config.server_lines */
};

struct config {
	char *path; /* NULL when built from defaults only */
	struct config_server server;
	struct config_conn *conns;
	size_t nconns;
	struct config_user *users;
	size_t nusers;
	/* line of each key as set, per section instance: [param index] -> line, 0 = default,
	 * CONFIG_LINE_SET = set with config_set() */
	int *server_lines;
};

#define CONFIG_LINE_SET (-1)

#define CONFIG_DEFAULT_PATH "/etc/mailbridge/mailbridge.conf"

/* The parameter table; *n receives its length. */
const struct config_param *config_params(size_t *n);

/* The row for a key of a section, or NULL. */
const struct config_param *config_param_find(enum config_section section, const char *name);

/* The path to use: explicit, else $MAILBRIDGE_CONFIG, else CONFIG_DEFAULT_PATH. */
const char *config_default_path(const char *explicit_path);

/* Built-in defaults only. */
struct config *config_new_defaults(void);

/* Reads and type-checks a file. Errors: "file:line: reason", or "file: cannot open: reason"
 * (MB_ENOTFOUND when it does not exist). */
struct config *config_load(const char *path, struct mb_err *err);

/* Like config_load, on text in memory; name is used in messages ("name:line: reason"). This is
 * the core that config_load runs on the file. */
struct config *config_parse_string(const char *text, const char *name, struct mb_err *err);

/* Sets one key as if read from a file: "server.data_dir", "connection.NAME.sender". Used for
 * the --set option. */
int config_set(struct config *c, const char *dotted_key, const char *value, struct mb_err *err);

/* Checks the rules that span keys. Errors name file:line of the key at fault. */
int config_validate(const struct config *c, struct mb_err *err);

/* Writes the effective values, one "key = value" per line, secrets masked: every [server] key,
 * then each [connection NAME] and [user NAME] with the keys that are set. */
void config_show(const struct config *c, FILE *out);

const struct config_conn *config_conn_find(const struct config *c, const char *name);
const struct config_user *config_user_find(const struct config *c, const char *name);

/* Every key with its type, default, bounds and meaning, as Markdown (docs/config.md). */
void config_doc_markdown(FILE *out);

/* The complete mailbridge.conf(5) page in roff (man macros): the file format, then every key
 * with its type, default, bounds and meaning (docs/mailbridge.conf.5). */
void config_doc_man(FILE *out);

void config_free(struct config *c);

#endif
