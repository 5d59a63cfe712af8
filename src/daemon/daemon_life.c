/* The daemon's life after start-up: stop, reload, retention, the systemd watchdog. */
#include "daemon_internal.h"

#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "admin/admin.h"
#include "deliver/deliver.h"
#include "oauth/oauth.h"
#include "smtp/smtp.h"
#include "store/store.h"

void
daemon_on_drain(void *arg)
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
void
daemon_on_stop(void *arg)
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
	daemon_on_drain(d);
}

#define RETENTION_BATCH 500

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
		        (long long)d->pruned, (long long)daemon_retention_days(d));
	d->pruned = 0;
	ev_timer_start(d->retention, 3600 * 1000);
}

/* log_retention_days: the config file's, else the one set through the API, else the
 * default (store_server_setting). */
int64_t
daemon_retention_days(struct daemon *d)
{
	char *v = store_server_setting(d->st, d->cfg, "log_retention_days", NULL);
	int64_t days = v ? strtoll(v, NULL, 10) : 0;

	free(v);
	return days >= 1 && days <= 3650 ? days : d->cfg->server.log_retention_days;
}

/* Delivered and failed messages (body and log entry) go after log_retention_days. */
void
daemon_on_retention(void *arg)
{
	struct daemon *d = arg;
	int64_t cutoff = mb_now_ms() - daemon_retention_days(d) * 86400 * 1000;

	if (d->stopping)
		return;
	store_writer_prune(d->writer, cutoff, RETENTION_BATCH, pruned, d);
}

void
daemon_on_watchdog(void *arg)
{
	struct daemon *d = arg;

	sd_notify(0, "WATCHDOG=1");
	ev_timer_start(d->watchdog, (int64_t)(d->watchdog_us / 2000));
}

void
daemon_on_queued(void *arg)
{
	struct daemon *d = arg;

	deliver_kick(d->deliver);
}

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
void
daemon_on_hup(void *arg)
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
	mb_log_setup(daemon_log_level(c->server.log_level),
	             strcmp(c->server.log_format, "json") == 0 ? MB_LOG_JSON : MB_LOG_TEXT);
	d->cfg = c;
	config_free(old);
	mb_info("daemon: reloaded %s", c->path ? c->path : "(built-in defaults)");
	sd_notify(0, "READY=1");
}

enum mb_log_level
daemon_log_level(const char *s)
{
	if (strcmp(s, "debug") == 0)
		return MB_LOG_DEBUG;
	if (strcmp(s, "warn") == 0)
		return MB_LOG_WARN;
	return MB_LOG_INFO;
}
