/*
 * tm_probe: drives the real token manager against a running identity platform, for the
 * sign-in tests. It asks for N tokens at once and reports, as one JSON line, how many
 * succeeded, how many token requests the manager sent, the distinct tokens seen (as
 * fingerprints, never the tokens) and the explanation of the first failure.
 *
 *   tm_probe -c CONF CONNECTION graph|outlook N [--force] [--run-ms MS]
 *
 * --run-ms keeps the loop running after the answers, so background refreshes happen.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "ev/ev.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "store/store.h"

struct probe {
	struct ev_loop *loop;
	int want, answered, ok;
	char fps[64][24];
	int nfps;
	struct oauth_explain first;
	char first_cause[512];
	bool failed;
	int64_t run_ms;
	struct ev_timer *stop;
};

static void
stop(void *arg)
{
	struct probe *p = arg;

	ev_loop_stop(p->loop);
}

static void
got(void *arg, int status, const char *token, const struct oauth_explain *ex)
{
	struct probe *p = arg;

	p->answered++;
	if (status == 0) {
		char fp[24];
		int i;
		p->ok++;
		mb_fingerprint(token, strlen(token), fp);
		for (i = 0; i < p->nfps && strcmp(p->fps[i], fp) != 0; i++)
			;
		if (i == p->nfps && p->nfps < 64)
			snprintf(p->fps[p->nfps++], 24, "%s", fp);
	} else if (!p->failed) {
		p->failed = true;
		p->first = *ex;
		snprintf(p->first_cause, sizeof(p->first_cause), "%s", ex->cause);
		p->first.cause = p->first_cause;
	}
	if (p->answered == p->want)
		ev_timer_start(p->stop, p->run_ms);
}

int
main(int argc, char **argv)
{
	struct probe p = {0};
	struct mb_err err = {0};
	struct config *cfg;
	struct store *st;
	struct mb_key key;
	struct http_client *http;
	struct oauth_tm *tm;
	struct mb_buf out = {0};
	enum oauth_resource r;
	bool force = false;

	if (argc < 6 || strcmp(argv[1], "-c") != 0) {
		fprintf(stderr, "usage: tm_probe -c CONF CONNECTION graph|outlook N [--force] "
		                "[--run-ms MS]\n");
		return 64;
	}
	r = strcmp(argv[4], "outlook") == 0 ? OAUTH_RES_OUTLOOK : OAUTH_RES_GRAPH;
	p.want = atoi(argv[5]);
	for (int i = 6; i < argc; i++) {
		if (strcmp(argv[i], "--force") == 0)
			force = true;
		else if (strcmp(argv[i], "--run-ms") == 0 && i + 1 < argc)
			p.run_ms = atoll(argv[++i]);
	}
	cfg = config_load(argv[2], &err);
	if (cfg == NULL || (st = store_open(cfg->server.data_dir, true, &err)) == NULL ||
	    mb_key_load(cfg->server.key_file, cfg->server.data_dir, true, &key, &err) < 0 ||
	    oauth_conns_sync(cfg, st, &err) < 0) {
		fprintf(stderr, "tm_probe: %s\n", err.msg);
		return 78;
	}
	p.loop = ev_loop_new();
	p.stop = ev_timer_new(p.loop, stop, &p);
	http = http_client_new(p.loop);
	tm = oauth_tm_new(p.loop, http, cfg, st, &key);
	for (int i = 0; i < p.want; i++)
		oauth_tm_get(tm, argv[3], r, force, got, &p);
	if (p.answered < p.want || p.run_ms > 0)
		ev_loop_run(p.loop);
	mb_buf_printf(&out, "{\"ok\":%d,\"failed\":%d,\"requests\":%llu,\"tokens\":[", p.ok,
	              p.answered - p.ok, (unsigned long long)oauth_tm_requests(tm));
	for (int i = 0; i < p.nfps; i++) {
		mb_buf_puts(&out, i ? "," : "");
		mb_buf_json_str(&out, p.fps[i]);
	}
	mb_buf_puts(&out, "]");
	if (p.failed) {
		mb_buf_printf(&out, ",\"class\":%d,\"aadsts\":%ld,\"cause\":", (int)p.first.cls,
		              p.first.aadsts);
		mb_buf_json_str(&out, p.first.cause);
		mb_buf_puts(&out, ",\"fix\":");
		mb_buf_json_str(&out, p.first.fix);
	}
	mb_buf_puts(&out, "}\n");
	fputs(out.data, stdout);
	mb_buf_release(&out);
	http_client_free(http);
	oauth_tm_free(tm);
	ev_timer_free(p.stop);
	ev_loop_free(p.loop);
	store_close(st);
	mb_key_wipe(&key);
	config_free(cfg);
	return 0;
}
