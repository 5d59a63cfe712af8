/* Shared between the cli_*.c files only. */
#ifndef MB_CLI_INTERNAL_H
#define MB_CLI_INTERNAL_H

#include <stdbool.h>

#include "config/config.h"

struct cli_opts {
	const char *config; /* -c FILE */
	bool config_given;
	bool json;
	char **sets; /* --set KEY=VALUE */
	int nsets;
	const char *status;
	long long limit;
	bool raw;
	char **to; /* --to ADDR, repeatable */
	int nto;
	const char *from;
	const char *connection;
	int nargs;
	char **args; /* positional arguments */
};

/* Parses the options every data command shares; allowed lists the long options the
 * command accepts besides -c ("json,set,status,limit,raw"). Prints the error itself. */
int cli_opts_parse(int argc, char **argv, const char *allowed, struct cli_opts *o);
void cli_opts_free(struct cli_opts *o);

/* Loads the config named by -c (must exist), or the default path (defaults if missing),
 * applies --set and validates. Prints the error itself. */
struct config *cli_config_load(const struct cli_opts *o);
/* The same, with the reason in err instead of on stderr (for a reload). */
struct config *cli_config_load_err(const struct cli_opts *o, struct mb_err *err);

/* One line from stdin, without echo on a terminal (after printing prompt to stderr). Free
 * it with mb_secret_free. */
char *cli_read_secret(const char *prompt);

#endif
