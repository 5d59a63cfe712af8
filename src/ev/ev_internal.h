/* Shared between the ev_*.c files only. */
#ifndef MB_EV_INTERNAL_H
#define MB_EV_INTERNAL_H

struct event_base;

struct ev_loop {
	struct event_base *base;
};

#endif
