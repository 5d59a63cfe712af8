/* mailbridge serve, config, hash-password. */
#include "cli.h"
#include "cli_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <termios.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "util/util.h"

int
cli_serve_main(int argc, char **argv)
{
	struct cli_opts o;
	struct config *c;

	if (cli_opts_parse(argc, argv, "set", &o) < 0)
		return EX_USAGE;
	if (o.nargs > 0) {
		fprintf(stderr, "mailbridge serve: unexpected argument '%s'\n", o.args[0]);
		cli_opts_free(&o);
		return EX_USAGE;
	}
	c = cli_config_load(&o);
	cli_opts_free(&o);
	if (c == NULL)
		return EX_CONFIG;
	if (c->path == NULL)
		mb_info("config: no file at %s: using built-in defaults",
		        config_default_path(NULL));
	return daemon_run(c);
}

int
cli_config_main(int argc, char **argv)
{
	struct cli_opts o;
	struct config *c;
	int rc = EX_OK;

	if (cli_opts_parse(argc, argv, "set", &o) < 0)
		return EX_USAGE;
	if (o.nargs == 1 && strcmp(o.args[0], "reference") == 0) {
		config_doc_markdown(stdout);
		cli_opts_free(&o);
		return EX_OK;
	}
	if (o.nargs == 1 && strcmp(o.args[0], "man") == 0) {
		config_doc_man(stdout);
		cli_opts_free(&o);
		return EX_OK;
	}
	if (o.nargs != 1 || (strcmp(o.args[0], "check") != 0 && strcmp(o.args[0], "show") != 0)) {
		fprintf(stderr, "usage: mailbridge config check|show|reference|man [-c FILE] "
		                "[--set KEY=VALUE]\n");
		cli_opts_free(&o);
		return EX_USAGE;
	}
	c = cli_config_load(&o);
	if (c == NULL) {
		rc = EX_CONFIG;
	} else if (strcmp(o.args[0], "check") == 0) {
		printf("%s: ok\n", c->path ? c->path : "(built-in defaults)");
	} else {
		config_show(c, stdout);
	}
	config_free(c);
	cli_opts_free(&o);
	return rc;
}

/* Reads one line from stdin without echo when it is a terminal. */
static char *
read_secret_line(const char *prompt)
{
	struct termios old, quiet;
	bool tty = isatty(STDIN_FILENO);
	struct mb_buf b = {0};
	int ch;

	if (tty) {
		fprintf(stderr, "%s", prompt);
		tcgetattr(STDIN_FILENO, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	while ((ch = getchar()) != EOF && ch != '\n') {
		char c = (char)ch;
		if (b.len < 1024)
			mb_buf_append(&b, &c, 1);
	}
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fprintf(stderr, "\n");
	}
	if (b.len > 0 && b.data[b.len - 1] == '\r')
		b.data[--b.len] = '\0';
	return b.data ? mb_buf_steal(&b) : mb_strdup("");
}

int
cli_hash_password_main(int argc, char **argv)
{
	char *pw, *hash;

	if (argc > 1) {
		fprintf(stderr,
		        "usage: mailbridge hash-password   (reads the password on stdin)\n");
		return EX_USAGE;
	}
	pw = read_secret_line("password: ");
	if (strlen(pw) < 8) {
		fprintf(stderr, "mailbridge: a password needs at least 8 characters\n");
		mb_secret_free(pw);
		return EX_DATAERR;
	}
	hash = mb_password_hash(pw);
	mb_secret_free(pw);
	if (hash == NULL) {
		fprintf(stderr, "mailbridge: hashing failed\n");
		return EX_SOFTWARE;
	}
	printf("%s\n", hash);
	free(hash);
	return EX_OK;
}
