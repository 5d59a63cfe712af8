/*
 * daemon: `mailbridge serve`. Wires the modules together on one loop: the store writer,
 * the SMTP server, signals. Returns a sysexits.h code when the loop ends.
 */
#ifndef MB_DAEMON_H
#define MB_DAEMON_H

#include "config/config.h"

/* Reads the config again for SIGHUP; NULL with err when it is not usable. */
typedef struct config *(*daemon_reload_cb)(void *arg, struct mb_err *err);

/* Runs in the foreground until SIGTERM or SIGINT. Takes ownership of cfg. */
int daemon_run(struct config *cfg, daemon_reload_cb reload, void *reload_arg);

#endif
