/* mailbridge test: the "Email Test" — one message right now through a connection, outside
 * the queue and without fallback; prints the time it took or the explained error. */
#include "cli.h"
#include "cli_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "deliver/deliver.h"
#include "deliver/deliver_test.h"
#include "ev/ev.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

struct test_run {
	struct ev_loop *loop;
	int rc;
};

static void
done(void *arg, const struct deliver_outcome *o, int64_t ms, const char *upstream)
{
	struct test_run *t = arg;

	if (o->result == DELIVER_OK) {
		if (upstream && strlen(upstream) > 4 && *upstream >= '2' && *upstream <= '5' &&
		    upstream[3] == ' ')
			printf("delivered in %lld ms (%s)\n", (long long)ms, upstream); /* SMTP */
		else if (upstream && *upstream)
			printf("delivered in %lld ms (request-id %s)\n", (long long)ms, upstream);
		else
			printf("delivered in %lld ms\n", (long long)ms);
		t->rc = EX_OK;
	} else {
		fprintf(stderr, "not delivered (%s, after %lld ms): %s\n  fix: %s\n  detail: %s\n",
		        deliver_result_name(o->result), (long long)ms, o->cause, o->fix, o->detail);
		t->rc = o->result == DELIVER_TEMPFAIL ? EX_TEMPFAIL : EX_UNAVAILABLE;
	}
	ev_loop_stop(t->loop);
}

int
cli_test_main(int argc, char **argv)
{
	struct cli_opts o;
	struct config *cfg = NULL;
	struct store *st = NULL;
	struct mb_key key;
	struct mb_err err = {0};
	struct test_run t = {NULL, EX_SOFTWARE};
	struct http_client *http = NULL;
	struct oauth_tm *tm = NULL;
	struct deliver *d = NULL;
	struct store_msg *m;
	struct oauth_conn *oc = NULL;
	char *conn = NULL;
	int rc = EX_OK;

	if (cli_opts_parse(argc, argv, "set,to,from,connection", &o) < 0)
		return EX_USAGE;
	if (o.nto != 1 || o.nargs > 0) {
		fprintf(stderr,
		        "usage: mailbridge test --to ADDR [--from ADDR] [--connection NAME] "
		        "[-c FILE]\n");
		cli_opts_free(&o);
		return EX_USAGE;
	}
	cfg = cli_config_load(&o);
	if (cfg == NULL) {
		cli_opts_free(&o);
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
		return EX_CONFIG;
	}
	conn = o.connection ? mb_strdup(o.connection) : store_default_connection(cfg, st);
	if (conn == NULL) {
		fprintf(stderr,
		        "mailbridge: no --connection and no default connection (set one with "
		        "mailbridge connection default NAME)\n");
		rc = EX_USAGE;
		goto out;
	}
	oc = oauth_conn_load(cfg, st, &key, conn, &err);
	if (oc == NULL) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = EX_CONFIG;
		goto out;
	}
	{
		/* the subject names the connection, for telling test runs apart */
		char *subject = mb_asprintf("mailbridge test through %s", conn);
		struct deliver_test_spec spec = {.from = o.from ? o.from : oc->sender,
		                                 .to = o.to[0],
		                                 .connection = conn,
		                                 .subject = subject};
		m = deliver_test_message(&spec);
		free(subject);
	}
	t.loop = ev_loop_new();
	http = http_client_new(t.loop);
	tm = oauth_tm_new(t.loop, http, cfg, st, &key);
	{
		struct deliver_deps dd = {t.loop, cfg, st, NULL, &key, http, tm};
		d = deliver_new(&dd, &err);
	}
	if (d == NULL) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		store_msg_free(m);
		rc = EX_CONFIG;
		goto out;
	}
	printf("sending a test message to %s through %s (%s)...\n", o.to[0], conn,
	       oauth_provider_name(oc->provider));
	fflush(stdout);
	deliver_send_now(d, conn, m, done, &t);
	if (t.rc == EX_SOFTWARE)
		ev_loop_run(t.loop);
	rc = t.rc;
out:
	deliver_stop(d);
	http_client_free(http);
	deliver_free(d);
	oauth_tm_free(tm);
	ev_loop_free(t.loop);
	oauth_conn_free(oc);
	free(conn);
	mb_key_wipe(&key);
	store_close(st);
	config_free(cfg);
	cli_opts_free(&o);
	return rc;
}
