/* mailbridge: the one binary. A table of subcommands, nothing else. */
#include <stdio.h>
#include <string.h>
#include <sysexits.h>

#include "cli/cli.h"

struct subcommand {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *usage;
};

static const struct subcommand subcommands[] = {
    {"serve", cli_serve_main, "serve [-c FILE] [--set KEY=VALUE]...  run the gateway"},
    {"sendmail", cli_sendmail_main, "sendmail [-t] [-i] [-f FROM] [-F NAME] [--] [RCPT...]"},
    {"config", cli_config_main, "config check|show|reference [-c FILE]"},
    {"queue", cli_queue_main, "queue [list | show ID [--raw] | retry ID | delete ID] [--json]"},
    {"log", cli_log_main, "log [--status S] [--limit N] [--json] | log resend ID [--to ADDR]..."},
    {"connection", cli_connection_main,
     "connection list|show NAME|remove NAME|default NAME|add NAME --provider P --sender ADDR "
     "..."},
    {"auth", cli_auth_main, "auth login NAME [--device | --browser] | auth status [NAME]"},
    {"test", cli_test_main, "test --to ADDR [--from ADDR] [--connection NAME]  the Email Test"},
    {"doctor", cli_doctor_main,
     "doctor [NAME] [--json] [--timeout SECONDS]  the guide's checklist, run for real"},
    {"setup", cli_setup_main,
     "setup microsoft [--name N] [--sender ADDR] [--provider P] [--app-only] [--sign-in]  "
     "register the app through Graph"},
    {"admin", cli_admin_main,
     "admin password | admin token create NAME | token list [--json] | token revoke NAME  "
     "API access"},
    {"backup", cli_backup_main, "backup FILE  a consistent copy of the live store"},
    {"hash-password", cli_hash_password_main, "hash-password  (reads a password on stdin)"},
};

#define NSUBCOMMANDS (sizeof(subcommands) / sizeof(subcommands[0]))

static int
usage(FILE *out)
{
	fprintf(out, "usage: mailbridge COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < NSUBCOMMANDS; i++)
		fprintf(out, "  mailbridge %s\n", subcommands[i].usage);
	fprintf(out, "\nEvery command takes -c FILE (default %s, or $MAILBRIDGE_CONFIG).\n",
	        "/etc/mailbridge/mailbridge.conf");
	return out == stderr ? EX_USAGE : EX_OK;
}

int
main(int argc, char **argv)
{
	const char *self = strrchr(argv[0], '/');

	self = self ? self + 1 : argv[0];
	if (strcmp(self, "sendmail") == 0)
		return cli_sendmail_main(argc, argv);
	if (argc < 2)
		return usage(stderr);
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("mailbridge %s\n", MB_VERSION);
		return EX_OK;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)
		return usage(stdout);
	for (size_t i = 0; i < NSUBCOMMANDS; i++)
		if (strcmp(argv[1], subcommands[i].name) == 0)
			return subcommands[i].main(argc - 1, argv + 1);
	fprintf(stderr, "mailbridge: unknown command '%s'\n", argv[1]);
	return usage(stderr);
}
