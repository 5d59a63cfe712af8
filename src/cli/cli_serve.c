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
#include "store/store.h"
#include "util/util.h"

static struct config *
reload(void *arg, struct mb_err *err)
{
	return cli_config_load_err(arg, err);
}

int
cli_serve_main(int argc, char **argv)
{
	struct cli_opts o;
	struct config *c;
	int rc;

	if (cli_opts_parse(argc, argv, "set", &o) < 0)
		return EX_USAGE;
	if (o.nargs > 0) {
		fprintf(stderr, "mailbridge serve: unexpected argument '%s'\n", o.args[0]);
		cli_opts_free(&o);
		return EX_USAGE;
	}
	c = cli_config_load(&o);
	if (c == NULL) {
		cli_opts_free(&o);
		return EX_CONFIG;
	}
	if (c->path == NULL)
		mb_info("config: no file at %s: using built-in defaults",
		        config_default_path(NULL));
	rc = daemon_run(c, reload, &o);
	cli_opts_free(&o);
	return rc;
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
char *
cli_read_secret(const char *prompt)
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
	pw = cli_read_secret("password: ");
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

int
cli_backup_main(int argc, char **argv)
{
	struct cli_opts o;
	struct config *c;
	struct mb_err err = {0};
	int rc = EX_OK;

	if (cli_opts_parse(argc, argv, "set", &o) < 0)
		return EX_USAGE;
	if (o.nargs != 1) {
		fprintf(stderr, "usage: mailbridge backup FILE [-c FILE]\n");
		cli_opts_free(&o);
		return EX_USAGE;
	}
	c = cli_config_load(&o);
	if (c == NULL) {
		cli_opts_free(&o);
		return EX_CONFIG;
	}
	if (access(o.args[0], F_OK) == 0) {
		fprintf(stderr, "mailbridge: %s exists; give a new file name\n", o.args[0]);
		rc = EX_CANTCREAT;
	} else if (store_backup(c->server.data_dir, o.args[0], &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		unlink(o.args[0]);
		rc = EX_IOERR;
	} else {
		printf("backed up %s/%s to %s\n", c->server.data_dir, STORE_DB_NAME, o.args[0]);
		printf("keep the key file (%s) with it: stored secrets and tokens need it\n",
		       c->server.key_file && *c->server.key_file ? c->server.key_file
		                                                 : "data_dir/secret.key");
	}
	config_free(c);
	cli_opts_free(&o);
	return rc;
}
