/* `mailbridge serve`: start-up, the loop, shutdown. */
#include "daemon_internal.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>

#include "admin/admin.h"
#include "ev/ev.h"
#include "deliver/deliver.h"
#include "http/http.h"
#include "oauth/oauth.h"
#include "smtp/smtp.h"
#include "store/store.h"

int
daemon_run(struct config *cfg, daemon_reload_cb reload, void *reload_arg)
{
	struct daemon d = {.cfg = cfg, .reload = reload, .reload_arg = reload_arg};
	struct mb_err err = {0};
	int rc = EX_OK;

	mb_log_setup(daemon_log_level(cfg->server.log_level),
	             strcmp(cfg->server.log_format, "json") == 0 ? MB_LOG_JSON : MB_LOG_TEXT);
	signal(SIGPIPE, SIG_IGN);
	d.loop = ev_loop_new();
	if (d.loop == NULL) {
		mb_fatal("daemon: cannot create the event loop");
		config_free(cfg);
		return EX_OSERR;
	}
	d.writer =
	    store_writer_new(cfg->server.data_dir, d.loop, cfg->server.commit_batch_max, &err);
	if (d.writer == NULL) {
		mb_fatal("daemon: %s", err.msg);
		rc = EX_CANTCREAT;
		goto out;
	}
	d.smtp = smtp_server_new(d.loop, cfg, d.writer, &err);
	if (d.smtp == NULL) {
		mb_fatal("daemon: %s", err.msg);
		rc = EX_UNAVAILABLE;
		goto out;
	}
	d.st = store_open(cfg->server.data_dir, false, &err);
	if (d.st == NULL) {
		mb_fatal("daemon: %s", err.msg);
		rc = EX_CANTCREAT;
		goto out;
	}
	if (mb_key_load(cfg->server.key_file, cfg->server.data_dir, true, &d.key, &err) < 0) {
		mb_fatal("daemon: %s", err.msg);
		rc = EX_CONFIG;
		goto out;
	}
	if (oauth_conns_sync(cfg, d.st, &err) < 0) {
		mb_fatal("daemon: %s", err.msg);
		rc = EX_CANTCREAT;
		goto out;
	}
	d.http = http_client_new(d.loop);
	d.tm = oauth_tm_new(d.loop, d.http, cfg, d.st, &d.key);
	{
		struct deliver_deps dd = {d.loop, cfg, d.st, d.writer, &d.key, d.http, d.tm};
		d.deliver = deliver_new(&dd, &err);
		if (d.deliver == NULL) {
			mb_fatal("daemon: %s", err.msg);
			rc = EX_CONFIG;
			goto out;
		}
		smtp_server_on_queued(d.smtp, daemon_on_queued, &d);
	}
	{
		struct admin_deps deps = {cfg, d.st, &d.key, d.http, d.tm, d.smtp, d.deliver};
		d.admin = admin_new(d.loop, &deps, &err);
	}
	if (d.admin == NULL) {
		mb_fatal("daemon: %s", err.msg);
		rc = EX_UNAVAILABLE;
		goto out;
	}
	d.sigterm = ev_signal_new(d.loop, SIGTERM, daemon_on_stop, &d);
	d.sigint = ev_signal_new(d.loop, SIGINT, daemon_on_stop, &d);
	d.sighup = ev_signal_new(d.loop, SIGHUP, daemon_on_hup, &d);
	d.drain = ev_timer_new(d.loop, daemon_on_drain, &d);
	d.retention = ev_timer_new(d.loop, daemon_on_retention, &d);
	ev_timer_start(d.retention, 60 * 1000);
	if (sd_watchdog_enabled(0, &d.watchdog_us) > 0 && d.watchdog_us > 0) {
		d.watchdog = ev_timer_new(d.loop, daemon_on_watchdog, &d);
		daemon_on_watchdog(&d);
	}
	sd_notifyf(0, "READY=1\nSTATUS=queue open on %s",
	           cfg->server.smtp_listen.n ? cfg->server.smtp_listen.v[0] : "(no SMTP listener)");
	mb_info("daemon: ready: mailbridge %s data_dir=%s", MB_VERSION, cfg->server.data_dir);
	admin_setup_offer(d.admin); /* the one-time setup link, while no admin password is set */
	if (ev_loop_run(d.loop) < 0)
		rc = EX_SOFTWARE;
out:
	/* sessions first; commits in flight then finish in the writer and find no session */
	admin_free(d.admin);
	smtp_server_close(d.smtp);
	deliver_stop(d.deliver);
	http_client_free(d.http); /* ends deliveries and token requests in flight */
	/* the writer's last callbacks (a claim, a prune) still reach the deliverer and us */
	store_writer_free(d.writer);
	deliver_free(d.deliver);
	smtp_server_free(d.smtp);
	oauth_tm_free(d.tm);
	store_close(d.st);
	mb_key_wipe(&d.key);
	ev_signal_free(d.sigterm);
	ev_signal_free(d.sigint);
	ev_signal_free(d.sighup);
	ev_timer_free(d.drain);
	ev_timer_free(d.retention);
	ev_timer_free(d.watchdog);
	ev_loop_free(d.loop);
	config_free(d.cfg);
	mb_info("daemon: stopped");
	return rc;
}
