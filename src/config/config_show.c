/* `mailbridge config show`: the effective values, in the file's own syntax, secrets masked. */
#include "config/config_impl.h"

#include <string.h>

static void
config_show_key(const struct config_param *p, const void *base, FILE *out)
{
	struct mb_buf b = {0};

	config_value_format(p, base, &b);
	if (p->type == CONFIG_SECRET && b.len > 0) {
		char fp[24];

		mb_fingerprint(b.data, b.len, fp);
		fprintf(out, "%s = (set, %s)\n", p->name, fp);
	} else {
		/* "key = ;x" would read back as a comment; "key =;x" does not */
		fprintf(out, "%s =%s%s\n", p->name, b.len > 0 && b.data[0] == ';' ? "" : " ",
		        b.len > 0 ? b.data : "");
	}
	mb_buf_wipe(&b);
}

/* Every server key; of a connection or user, the keys that are set. */
static void
config_show_section(enum config_section sec, const void *base, const int *lines, FILE *out)
{
	const struct config_param *params;
	size_t n;

	params = config_params(&n);
	for (size_t i = 0; i < n; i++) {
		if (params[i].section != sec)
			continue;
		if (sec != CONFIG_SEC_SERVER && lines[i] == 0)
			continue;
		config_show_key(&params[i], base, out);
	}
}

void
config_show(const struct config *c, FILE *out)
{
	fputs("[server]\n", out);
	config_show_section(CONFIG_SEC_SERVER, &c->server, c->server_lines, out);
	for (size_t i = 0; i < c->nconns; i++) {
		fprintf(out, "\n[connection %s]\n", c->conns[i].name);
		config_show_section(CONFIG_SEC_CONNECTION, &c->conns[i], c->conns[i].lines, out);
	}
	for (size_t i = 0; i < c->nusers; i++) {
		fprintf(out, "\n[user %s]\n", c->users[i].name);
		config_show_section(CONFIG_SEC_USER, &c->users[i], c->users[i].lines, out);
	}
}
