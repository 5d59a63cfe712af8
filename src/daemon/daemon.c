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
	struct ev_timer *retention;
	int64_t pruned;
	uint64_t watchdog_us;
	int64_t stop_deadline_ms;
	bool stopping;
	daemon_reload_cb reload;
	void *reload_arg;
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

#define RETENTION_BATCH 500

static void on_retention(void *arg);

static void
pruned(void *arg, int status, int64_t n)
{
	struct daemon *d = arg;

	if (status < 0) {
		mb_warn("daemon: retention: a batch failed; trying again in an hour");
		ev_timer_start(d->retention, 3600 * 1000);
		return;
	}
	d->pruned += n;
	if (n >= RETENTION_BATCH) {
		/* more to go: small batches, so intake commits go in between */
		ev_timer_start(d->retention, 200);
		return;
	}
	if (d->pruned)
		mb_info("daemon: retention: %lld messages older than %lld days removed",
		        (long long)d->pruned, (long long)d->cfg->server.log_retention_days);
	d->pruned = 0;
	ev_timer_start(d->retention, 3600 * 1000);
}

/* Delivered and failed messages (body and log entry) go after log_retention_days. */
static void
on_retention(void *arg)
{
	struct daemon *d = arg;
	int64_t cutoff = mb_now_ms() - d->cfg->server.log_retention_days * 86400 * 1000;

	if (d->stopping)
		return;
	store_writer_prune(d->writer, cutoff, RETENTION_BATCH, pruned, d);
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

static enum mb_log_level log_level(const char *s);

static bool
lists_differ(const struct config_list *a, const struct config_list *b)
{
	if (a->n != b->n)
		return true;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return true;
	return false;
}

static bool
str_differ(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") != 0;
}

/* SIGHUP: read the config again. A bad one is refused, with its reason, and the old one
 * stays in force; a good one applies without dropping sessions or deliveries. */
static void
on_hup(void *arg)
{
	struct daemon *d = arg;
	struct mb_err err = {0};
	struct config *old = d->cfg, *c;

	if (d->stopping || d->reload == NULL)
		return;
	sd_notify(0, "RELOADING=1");
	c = d->reload(d->reload_arg, &err);
	if (c == NULL) {
		mb_warn("daemon: reload refused, the running config stays: %s", err.msg);
		sd_notify(0, "READY=1\nSTATUS=reload refused: see the log");
		return;
	}
	if (smtp_server_set_config(d->smtp, c, &err) < 0 ||
	    deliver_set_config(d->deliver, c, &err) < 0 || oauth_conns_sync(c, d->st, &err) < 0) {
		mb_warn("daemon: reload refused, the running config stays: %s", err.msg);
		smtp_server_set_config(d->smtp, old, NULL);
		deliver_set_config(d->deliver, old, NULL);
		config_free(c);
		sd_notify(0, "READY=1");
		return;
	}
	if (lists_differ(&old->server.smtp_listen, &c->server.smtp_listen) ||
	    lists_differ(&old->server.http_listen, &c->server.http_listen) ||
	    str_differ(old->server.data_dir, c->server.data_dir) ||
	    str_differ(old->server.key_file, c->server.key_file))
		mb_warn("daemon: reload: smtp_listen, http_listen, data_dir and key_file changes "
		        "take effect at the next restart");
	admin_set_config(d->admin, c);
	oauth_tm_set_config(d->tm, c);
	mb_log_setup(log_level(c->server.log_level),
	             strcmp(c->server.log_format, "json") == 0 ? MB_LOG_JSON : MB_LOG_TEXT);
	d->cfg = c;
	config_free(old);
	mb_info("daemon: reloaded %s", c->path ? c->path : "(built-in defaults)");
	sd_notify(0, "READY=1");
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
daemon_run(struct config *cfg, daemon_reload_cb reload, void *reload_arg)
{
	struct daemon d = {.cfg = cfg, .reload = reload, .reload_arg = reload_arg};
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
		struct admin_deps deps = {cfg, d.st, &d.key, d.http, d.tm, d.smtp, d.deliver};
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
	d.retention = ev_timer_new(d.loop, on_retention, &d);
	ev_timer_start(d.retention, 60 * 1000);
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
	ev_timer_free(d.retention);
	ev_timer_free(d.watchdog);
	ev_loop_free(d.loop);
	config_free(d.cfg);
	mb_info("daemon: stopped");
	return rc;
}
