/* mailbridge doctor [NAME] [--json] [--admin] [--no-refresh] [--timeout SECONDS] [-c FILE]: the
 * seed guide's checklist run against reality (src/doctor). --admin signs an administrator in
 * with a device code (shown on stderr) to check the app registration itself. Exit status: 0
 * when no item failed, 1 when one did, EX_USAGE / EX_CONFIG when the check could not run. */
#include "cli.h"
#include "cli_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "doctor/doctor.h"
#include "oauth/oauth.h"
#include "store/store.h"
#include "util/util.h"

static int
usage(void)
{
	fprintf(stderr, "usage: mailbridge doctor [NAME] [--json] [--admin] [--no-refresh] "
	                "[--client-id-bootstrap ID] [--timeout SECONDS] [-c FILE] "
	                "[--set KEY=VALUE]\n");
	return EX_USAGE;
}

int
cli_doctor_main(int argc, char **argv)
{
	struct cli_opts o;
	struct config *cfg = NULL;
	struct store *st = NULL;
	struct mb_key key;
	struct mb_err err = {0};
	struct doctor_opts dopts = {.connection = NULL, .timeout_ms = 10000};
	struct doctor_report rep;
	struct mb_buf out = {0};
	char **av = mb_calloc((size_t)argc + 1, sizeof(char *));
	int ac = 0, rc;

	/* --timeout, --admin, --no-refresh and --client-id-bootstrap are doctor's own; the rest
	 * are the shared options */
	for (int i = 0; i < argc; i++) {
		const char *v = NULL;
		int64_t secs;

		if (strcmp(argv[i], "--admin") == 0) {
			dopts.admin = true;
			continue;
		}
		if (strcmp(argv[i], "--no-refresh") == 0) {
			dopts.no_refresh = true;
			continue;
		}
		if (strcmp(argv[i], "--client-id-bootstrap") == 0 && i + 1 < argc) {
			dopts.bootstrap_id = argv[++i];
			continue;
		}
		if (strncmp(argv[i], "--client-id-bootstrap=", 22) == 0) {
			dopts.bootstrap_id = argv[i] + 22;
			continue;
		}
		if (strcmp(argv[i], "--client-id-bootstrap") == 0) {
			free(av);
			return usage();
		}
		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			v = argv[++i];
		else if (strncmp(argv[i], "--timeout=", 10) == 0)
			v = argv[i] + 10;
		else if (strcmp(argv[i], "--timeout") == 0) {
			free(av);
			return usage();
		}
		if (v == NULL) {
			av[ac++] = argv[i];
			continue;
		}
		if (mb_parse_int(v, &secs) < 0 || secs < 1 || secs > 300) {
			fprintf(stderr, "mailbridge doctor: --timeout needs 1..300 seconds\n");
			free(av);
			return EX_USAGE;
		}
		dopts.timeout_ms = secs * 1000;
	}
	if (cli_opts_parse(ac, av, "json,set", &o) < 0) {
		free(av);
		return EX_USAGE;
	}
	if (o.nargs > 1) {
		cli_opts_free(&o);
		free(av);
		return usage();
	}
	dopts.connection = o.nargs == 1 ? o.args[0] : NULL;
	cfg = cli_config_load(&o);
	if (cfg == NULL) {
		cli_opts_free(&o);
		free(av);
		return EX_CONFIG;
	}
	st = store_open(cfg->server.data_dir, true, &err);
	if (st == NULL ||
	    mb_key_load(cfg->server.key_file, cfg->server.data_dir, true, &key, &err) < 0 ||
	    oauth_conns_sync(cfg, st, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		store_close(st);
		config_free(cfg);
		cli_opts_free(&o);
		free(av);
		return EX_CONFIG;
	}
	if (dopts.connection && config_conn_find(cfg, dopts.connection) == NULL) {
		struct store_conn *sc = store_conn_get(st, dopts.connection, NULL);
		if (sc == NULL) {
			fprintf(stderr, "mailbridge: no connection named %s\n", dopts.connection);
			rc = EX_USAGE;
			goto out_nokey;
		}
		store_conn_free(sc);
	}
	if (doctor_run(cfg, st, &key, &dopts, &rep, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = EX_SOFTWARE;
		goto out_nokey;
	}
	if (o.json)
		doctor_report_json(&rep, &out);
	else
		doctor_report_text(&rep, &out);
	fwrite(out.data, 1, out.len, stdout);
	rc = doctor_report_failed(&rep) ? 1 : EX_OK;
	doctor_report_free(&rep);
	mb_buf_release(&out);
out_nokey:
	mb_key_wipe(&key);
	store_close(st);
	config_free(cfg);
	cli_opts_free(&o);
	free(av);
	return rc;
}
