/* `mailbridge serve`: start-up, the loop, shutdown. */
#include "daemon.h"

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

struct daemon {
	struct config *cfg;
	struct ev_loop *loop;
	struct store_writer *writer;
	struct smtp_server *smtp;
	struct store *st; /* the loop's own handle: connections, tokens, settings */
	struct mb_key key;
	struct http_client *http;
	struct oauth_tm *tm;
	struct deliver *deliver;
	struct admin *admin;
	struct ev_signal *sigterm, *sigint, *sighup;
	struct ev_timer *drain;    /* while stopping: waits for sessions and deliveries */
	struct ev_timer *watchdog; /* systemd's WatchdogSec, when set */
	uint64_t watchdog_us;
	int64_t stop_deadline_ms;
	bool stopping;
};

/* How long a stop may wait for messages in DATA and deliveries in flight. */
#define STOP_GRACE_MS 15000

static void
on_drain(void *arg)
{
	struct daemon *d = arg;
	size_t sessions = smtp_server_session_count(d->smtp);
	size_t deliveries = deliver_inflight(d->deliver);

	if ((sessions == 0 && deliveries == 0) || mb_mono_ms() > d->stop_deadline_ms) {
		if (sessions || deliveries)
			mb_warn(
			    "daemon: stop: %zu sessions and %zu deliveries still open after %d s; "
			    "deliveries go back to the queue",
			    sessions, deliveries, STOP_GRACE_MS / 1000);
		ev_loop_stop(d->loop);
		return;
	}
	ev_timer_start(d->drain, 100);
}

/* SIGTERM: no new sessions; open ones finish their message or get 421; deliveries in flight
 * complete, or go back to the queue, within STOP_GRACE_MS. A second signal stops at once. */
static void
on_stop(void *arg)
{
	struct daemon *d = arg;

	if (d->stopping) {
		mb_info("daemon: stopping now");
		ev_loop_stop(d->loop);
		return;
	}
	d->stopping = true;
	mb_info("daemon: stopping: finishing open messages and deliveries (at most %d s)",
	        STOP_GRACE_MS / 1000);
	sd_notify(0, "STOPPING=1");
	d->stop_deadline_ms = mb_mono_ms() + STOP_GRACE_MS;
	smtp_server_drain(d->smtp);
	deliver_stop(d->deliver);
	on_drain(d);
}

static void
on_watchdog(void *arg)
{
	struct daemon *d = arg;

	sd_notify(0, "WATCHDOG=1");
	ev_timer_start(d->watchdog, (int64_t)(d->watchdog_us / 2000));
}

static void
on_queued(void *arg)
{
	struct daemon *d = arg;

	deliver_kick(d->deliver);
}

static void
on_hup(void *arg)
{
	/* a reload that keeps sessions open is not written yet; never die on SIGHUP */
	mb_warn("daemon: SIGHUP: reloading the config is not supported yet; restart to apply "
	        "a new one");
}

static enum mb_log_level
log_level(const char *s)
{
	if (strcmp(s, "debug") == 0)
		return MB_LOG_DEBUG;
	if (strcmp(s, "warn") == 0)
		return MB_LOG_WARN;
	return MB_LOG_INFO;
}

int
daemon_run(struct config *cfg)
{
	struct daemon d = {.cfg = cfg};
	struct mb_err err = {0};
	int rc = EX_OK;

	mb_log_setup(log_level(cfg->server.log_level),
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
		smtp_server_on_queued(d.smtp, on_queued, &d);
	}
	{
		struct admin_deps deps = {cfg, d.st, &d.key, d.http, d.tm};
		d.admin = admin_new(d.loop, &deps, &err);
	}
	if (d.admin == NULL) {
		mb_fatal("daemon: %s", err.msg);
		rc = EX_UNAVAILABLE;
		goto out;
	}
	d.sigterm = ev_signal_new(d.loop, SIGTERM, on_stop, &d);
	d.sigint = ev_signal_new(d.loop, SIGINT, on_stop, &d);
	d.sighup = ev_signal_new(d.loop, SIGHUP, on_hup, &d);
	d.drain = ev_timer_new(d.loop, on_drain, &d);
	if (sd_watchdog_enabled(0, &d.watchdog_us) > 0 && d.watchdog_us > 0) {
		d.watchdog = ev_timer_new(d.loop, on_watchdog, &d);
		on_watchdog(&d);
	}
	sd_notifyf(0, "READY=1\nSTATUS=queue open on %s",
	           cfg->server.smtp_listen.n ? cfg->server.smtp_listen.v[0] : "(no SMTP listener)");
	mb_info("daemon: ready: mailbridge %s data_dir=%s", MB_VERSION, cfg->server.data_dir);
	if (ev_loop_run(d.loop) < 0)
		rc = EX_SOFTWARE;
out:
	/* sessions first; commits in flight then finish in the writer and find no session */
	admin_free(d.admin);
	smtp_server_close(d.smtp);
	deliver_stop(d.deliver);
	http_client_free(d.http); /* ends deliveries and token requests in flight */
	deliver_free(d.deliver);
	store_writer_free(d.writer);
	smtp_server_free(d.smtp);
	oauth_tm_free(d.tm);
	store_close(d.st);
	mb_key_wipe(&d.key);
	ev_signal_free(d.sigterm);
	ev_signal_free(d.sigint);
	ev_signal_free(d.sighup);
	ev_timer_free(d.drain);
	ev_timer_free(d.watchdog);
	ev_loop_free(d.loop);
	config_free(cfg);
	mb_info("daemon: stopped");
	return rc;
}
