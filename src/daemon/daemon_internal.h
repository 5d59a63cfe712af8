/* Shared between the daemon_*.c files only. */
#ifndef MB_DAEMON_INTERNAL_H
#define MB_DAEMON_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"
#include "ev/ev.h"

struct store_writer;
struct smtp_server;
struct store;
struct http_client;
struct oauth_tm;
struct deliver;
struct admin;

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

/* Signals and timers (daemon_life.c). */
void daemon_on_stop(void *arg);
void daemon_on_drain(void *arg);
void daemon_on_hup(void *arg);
void daemon_on_retention(void *arg);
int64_t daemon_retention_days(struct daemon *d);
void daemon_on_watchdog(void *arg);
void daemon_on_queued(void *arg);
enum mb_log_level daemon_log_level(const char *s);

#endif
