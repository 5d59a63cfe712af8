/* The [server] settings the admin may change at run time: the config file wins, then the
 * store, then the default. The daemon reads them where they are used (retention, alerts), so
 * a change applies without a reload. */
#include "store.h"

#include <inttypes.h>
#include <stdlib.h>

#include "config/config.h"

char *
store_default_connection(const struct config *cfg, struct store *st)
{
	char *v = NULL;

	for (size_t i = 0; i < cfg->nconns; i++)
		if (cfg->conns[i].is_default)
			return mb_strdup(cfg->conns[i].name);
	if (store_setting_get(st, "default_connection", &v, NULL) < 0)
		return NULL;
	return v;
}

bool
store_server_setting_in_config(const struct config *cfg, const char *key)
{
	size_t n = 0;
	const struct config_param *all = config_params(&n);
	const struct config_param *p = config_param_find(CONFIG_SEC_SERVER, key);

	return p && cfg->server_lines && cfg->server_lines[p - all] != 0;
}

/* The config's value of key (the file's or the built-in default) as text. */
static char *
config_value(const struct config *cfg, const struct config_param *p)
{
	const void *field = (const char *)&cfg->server + p->offset;

	switch (p->type) {
	case CONFIG_INT:
	case CONFIG_SIZE:
	case CONFIG_DURATION:
		return mb_asprintf("%" PRId64, *(const int64_t *)field);
	case CONFIG_STR:
	case CONFIG_ENUM: {
		const char *s = *(char *const *)field;
		return s && *s ? mb_strdup(s) : NULL;
	}
	default:
		return NULL; /* not a run-time setting */
	}
}

char *
store_server_setting(struct store *st, const struct config *cfg, const char *key,
                     enum store_setting_source *source)
{
	const struct config_param *p = config_param_find(CONFIG_SEC_SERVER, key);
	enum store_setting_source dummy;
	char *v = NULL;

	if (source == NULL)
		source = &dummy;
	if (p == NULL)
		return NULL;
	if (store_server_setting_in_config(cfg, key)) {
		*source = STORE_SETTING_CONFIG;
		return config_value(cfg, p);
	}
	if (store_setting_get(st, key, &v, NULL) == 0 && v && *v) {
		*source = STORE_SETTING_STORE;
		return v;
	}
	free(v);
	*source = STORE_SETTING_DEFAULT;
	return config_value(cfg, p);
}
