/* mailbridge setup microsoft: the app registration, the connection, the sender's sign-in and
 * a test mail in one command (src/setup). The sign-in and the test mail are the ordinary
 * `mailbridge auth login` and `mailbridge test`, run in-process. */
#include "cli.h"
#include "cli_internal.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "oauth/oauth.h"
#include "setup/setup.h"
#include "store/store.h"
#include "util/util.h"

static int
usage(void)
{
	fprintf(stderr, "usage: mailbridge setup microsoft [--name N] [--sender ADDR] [--tenant T] "
	                "[--provider microsoft-graph|microsoft-smtp] [--app-only] [--sign-in] "
	                "[--no-test] [--client-id-bootstrap ID] [--display-name NAME] [--cloud C] "
	                "[--login-url U] [--graph-url U] [--smtp-url U] [--ca-file F] [-c FILE]\n");
	return EX_USAGE;
}

/* argv for a sibling command: its words, then -c and --set as given to setup */
static char **
sub_argv(const struct cli_opts *o, const char *const *words, int *argc)
{
	char **av = mb_calloc((size_t)o->nsets * 2 + 12, sizeof(char *));
	int n = 0;

	for (; *words; words++)
		av[n++] = (char *)*words;
	if (o->config_given) {
		av[n++] = "-c";
		av[n++] = (char *)o->config;
	}
	for (int i = 0; i < o->nsets; i++) {
		av[n++] = "--set";
		av[n++] = o->sets[i];
	}
	*argc = n;
	return av;
}

static int
run_sub(const struct cli_opts *o, const char *const *words, int (*fn)(int, char **))
{
	int ac, rc;
	char **av = sub_argv(o, words, &ac);

	fflush(stdout);
	rc = fn(ac, av);
	fflush(stdout);
	free(av);
	return rc;
}

/* Whether the connection holds a sign-in (delegated) or a token (app-only). */
static bool
signed_in(struct store *st, const char *name)
{
	struct store_conn *sc = store_conn_get(st, name, NULL);
	bool ok = sc && sc->state && strcmp(sc->state, STORE_CONN_AUTHORIZED) == 0;

	store_conn_free(sc);
	return ok;
}

int
cli_setup_main(int argc, char **argv)
{
	enum {
		O_NAME = 1000,
		O_SENDER,
		O_TENANT,
		O_PROVIDER,
		O_APP_ONLY,
		O_BOOT,
		O_DISPLAY,
		O_CLOUD,
		O_LOGIN,
		O_GRAPH,
		O_SMTP,
		O_CA,
		O_SIGN_IN,
		O_NO_TEST,
		O_CONFIG,
		O_SET
	};
	static const struct option longopts[] = {
	    {"name", required_argument, NULL, O_NAME},
	    {"sender", required_argument, NULL, O_SENDER},
	    {"tenant", required_argument, NULL, O_TENANT},
	    {"provider", required_argument, NULL, O_PROVIDER},
	    {"app-only", no_argument, NULL, O_APP_ONLY},
	    {"client-id-bootstrap", required_argument, NULL, O_BOOT},
	    {"display-name", required_argument, NULL, O_DISPLAY},
	    {"cloud", required_argument, NULL, O_CLOUD},
	    {"login-url", required_argument, NULL, O_LOGIN},
	    {"graph-url", required_argument, NULL, O_GRAPH},
	    {"smtp-url", required_argument, NULL, O_SMTP},
	    {"ca-file", required_argument, NULL, O_CA},
	    {"sign-in", no_argument, NULL, O_SIGN_IN},
	    {"no-test", no_argument, NULL, O_NO_TEST},
	    {"config", required_argument, NULL, O_CONFIG},
	    {"set", required_argument, NULL, O_SET},
	    {NULL, 0, NULL, 0}};
	struct setup_opts so = {0};
	struct setup_result r;
	struct cli_opts o = {0};
	struct config *cfg = NULL;
	struct store *st = NULL;
	struct mb_key key;
	struct mb_err err = {0};
	bool sign_in = false, no_test = false;
	int c, rc = EX_OK;

	if (argc < 2 || strcmp(argv[1], "microsoft") != 0)
		return usage();
	argc--;
	argv++;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "c:", longopts, NULL)) != -1) {
		switch (c) {
		case O_NAME:
			so.name = optarg;
			break;
		case O_SENDER:
			so.sender = optarg;
			break;
		case O_TENANT:
			so.tenant = optarg;
			break;
		case O_PROVIDER:
			so.provider = optarg;
			break;
		case O_APP_ONLY:
			so.app_only = true;
			break;
		case O_BOOT:
			so.bootstrap_id = optarg;
			break;
		case O_DISPLAY:
			so.display_name = optarg;
			break;
		case O_CLOUD:
			so.cloud = optarg;
			break;
		case O_LOGIN:
			so.login_url = optarg;
			break;
		case O_GRAPH:
			so.graph_url = optarg;
			break;
		case O_SMTP:
			so.smtp_url = optarg;
			break;
		case O_CA:
			so.ca_file = optarg;
			break;
		case O_SIGN_IN:
			sign_in = true;
			break;
		case O_NO_TEST:
			no_test = true;
			break;
		case 'c':
		case O_CONFIG:
			o.config = optarg;
			o.config_given = true;
			break;
		case O_SET:
			o.sets = mb_realloc(o.sets, (size_t)(o.nsets + 1) * sizeof(char *));
			o.sets[o.nsets++] = optarg;
			break;
		default:
			free(o.sets);
			return usage();
		}
	}
	if (optind != argc) {
		free(o.sets);
		return usage();
	}
	if (so.sender && strchr(so.sender, '@') == NULL) {
		fprintf(stderr, "mailbridge: --sender must be a mailbox address (user@domain)\n");
		free(o.sets);
		return EX_USAGE;
	}
	cfg = cli_config_load(&o);
	if (cfg == NULL) {
		free(o.sets);
		return EX_CONFIG;
	}
	st = store_open(cfg->server.data_dir, true, &err);
	if (st == NULL ||
	    mb_key_load(cfg->server.key_file, cfg->server.data_dir, true, &key, &err) < 0 ||
	    oauth_conns_sync(cfg, st, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		store_close(st);
		config_free(cfg);
		free(o.sets);
		return EX_CONFIG;
	}
	if (setup_microsoft(cfg, st, &key, &so, &r, stdout) < 0) {
		fflush(stdout);
		fprintf(stderr, "mailbridge: setup stopped; fix the step above and run it again "
		                "(what was done is kept)\n");
		rc = EX_UNAVAILABLE;
		goto out;
	}
	/* 10. the sender's sign-in (delegated) or the app's token (app-only) */
	if (signed_in(st, r.conn) && !r.app_only) {
		printf("%-17s already there: %s is signed in\n", "sign-in", r.conn);
	} else if (r.app_only || sign_in) {
		const char *w[] = {"auth", "login", r.conn, "--device", NULL};
		if (!r.app_only)
			printf("The sender %s signs in now:\n", r.sender);
		if (run_sub(&o, w, cli_auth_main) != EX_OK) {
			printf("%-17s failed: see above; then run: mailbridge auth login %s%s\n",
			       r.app_only ? "token" : "sign-in", r.conn,
			       r.app_only ? "" : " --device");
			r.failed++;
		} else {
			printf("%-17s %s\n", r.app_only ? "token" : "sign-in",
			       r.app_only ? "fetched (client credentials)" : "done");
		}
	} else {
		printf(
		    "%-17s next: the sender %s signs in once: mailbridge auth login %s --device\n",
		    "sign-in", r.sender, r.conn);
	}
	/* 11. a test mail to the sender */
	if (no_test) {
		printf("%-17s skipped (--no-test)\n", "test mail");
	} else if (r.app_only && r.provider == OAUTH_PROVIDER_MSSMTP) {
		printf("%-17s not sent: app-only SMTP needs the Exchange steps below first; then "
		       "run: mailbridge test --to %s --connection %s\n",
		       "test mail", r.sender, r.conn);
	} else if (!signed_in(st, r.conn)) {
		printf("%-17s not sent: %s is not signed in yet; run: mailbridge auth login %s "
		       "--device, then mailbridge test --to %s --connection %s\n",
		       "test mail", r.conn, r.conn, r.sender, r.conn);
	} else {
		const char *w[] = {"test", "--to", r.sender, "--connection", r.conn, NULL};
		printf("%-17s ", "test mail");
		if (run_sub(&o, w, cli_test_main) != EX_OK) {
			printf("%-17s failed: see above\n", "test mail");
			r.failed++;
		}
	}
	/* 12. what Graph cannot do */
	setup_microsoft_powershell(&r, stdout);
	if (r.failed) {
		printf("setup finished with %d step(s) failed; fix them and run setup again\n",
		       r.failed);
		rc = EX_UNAVAILABLE;
	} else {
		printf("setup finished: connection %s is ready%s\n", r.conn,
		       r.provider == OAUTH_PROVIDER_MSSMTP ? " once the PowerShell above has run"
		                                           : "");
	}
	setup_result_free(&r);
out:
	mb_key_wipe(&key);
	store_close(st);
	config_free(cfg);
	free(o.sets);
	return rc;
}
