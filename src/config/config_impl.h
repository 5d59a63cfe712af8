/*
 * Private to src/config: the value codec shared by loading, --set and `config show`, and the
 * helpers that turn a recorded line into "file:line" for messages.
 */
#ifndef MB_CONFIG_IMPL_H
#define MB_CONFIG_IMPL_H

#include "config/config.h"

/* Room for a reason in messages; the caller adds "file:line: " in front. */
#define CONFIG_WHY_LEN 400

size_t config_param_index(const struct config_param *p);

/* Parses value as p's type into base (struct config_server / _conn / _user), replacing the old
 * value. On failure base is unchanged and why names the key, the value and what is allowed. */
int config_value_parse(const struct config_param *p, const char *value, void *base, char *why,
                       size_t whylen);
/* Frees the value of p in base (wiping secrets) and leaves it zeroed. */
void config_value_clear(const struct config_param *p, void *base);
/* Appends the value as it would be written in the file; secrets are not masked here. */
void config_value_format(const struct config_param *p, const void *base, struct mb_buf *out);
/* "35M", "5m", "1000": the shortest exact spelling of a number of that type. */
void config_num_format(enum config_type type, int64_t v, char *out, size_t outlen);

static inline void *
config_field(void *base, const struct config_param *p)
{
	return (char *)base + p->offset;
}

static inline const void *
config_field_const(const void *base, const struct config_param *p)
{
	return (const char *)base + p->offset;
}

#endif
