/* The loop, timers, signals and the cross-thread notifier. */
#include "ev.h"
#include "ev_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

struct ev_timer {
	struct event *ev;
	ev_cb cb;
	void *arg;
};

struct ev_signal {
	struct event *ev;
	ev_cb cb;
	void *arg;
};

struct ev_notify {
	struct event *ev;
	int fd;
	ev_cb cb;
	void *arg;
};

struct ev_loop *
ev_loop_new(void)
{
	struct ev_loop *loop = mb_calloc(1, sizeof(*loop));

	loop->base = event_base_new();
	if (loop->base == NULL) {
		free(loop);
		return NULL;
	}
	return loop;
}

void
ev_loop_free(struct ev_loop *loop)
{
	if (loop == NULL)
		return;
	event_base_free(loop->base);
	free(loop);
}

int
ev_loop_run(struct ev_loop *loop)
{
	return event_base_dispatch(loop->base) < 0 ? -1 : 0;
}

void
ev_loop_stop(struct ev_loop *loop)
{
	event_base_loopbreak(loop->base);
}

static void
timer_fired(evutil_socket_t fd, short what, void *arg)
{
	struct ev_timer *t = arg;

	t->cb(t->arg);
}

struct ev_timer *
ev_timer_new(struct ev_loop *loop, ev_cb cb, void *arg)
{
	struct ev_timer *t = mb_calloc(1, sizeof(*t));

	t->cb = cb;
	t->arg = arg;
	t->ev = evtimer_new(loop->base, timer_fired, t);
	return t;
}

void
ev_timer_start(struct ev_timer *t, int64_t ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	evtimer_add(t->ev, &tv);
}

void
ev_timer_stop(struct ev_timer *t)
{
	evtimer_del(t->ev);
}

bool
ev_timer_is_pending(const struct ev_timer *t)
{
	return evtimer_pending(t->ev, NULL) != 0;
}

void
ev_timer_free(struct ev_timer *t)
{
	if (t == NULL)
		return;
	event_free(t->ev);
	free(t);
}

static void
signal_fired(evutil_socket_t fd, short what, void *arg)
{
	struct ev_signal *s = arg;

	s->cb(s->arg);
}

struct ev_signal *
ev_signal_new(struct ev_loop *loop, int signo, ev_cb cb, void *arg)
{
	struct ev_signal *s = mb_calloc(1, sizeof(*s));

	s->cb = cb;
	s->arg = arg;
	s->ev = evsignal_new(loop->base, signo, signal_fired, s);
	evsignal_add(s->ev, NULL);
	return s;
}

void
ev_signal_free(struct ev_signal *s)
{
	if (s == NULL)
		return;
	event_free(s->ev);
	free(s);
}

static void
notify_fired(evutil_socket_t fd, short what, void *arg)
{
	struct ev_notify *n = arg;
	uint64_t v;

	if (read(n->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		mb_warn("ev: notify: read: errno=%d", errno);
	n->cb(n->arg);
}

struct ev_notify *
ev_notify_new(struct ev_loop *loop, ev_cb cb, void *arg)
{
	struct ev_notify *n = mb_calloc(1, sizeof(*n));

	n->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (n->fd < 0) {
		free(n);
		return NULL;
	}
	n->cb = cb;
	n->arg = arg;
	n->ev = event_new(loop->base, n->fd, EV_READ | EV_PERSIST, notify_fired, n);
	event_add(n->ev, NULL);
	return n;
}

void
ev_notify_fire(struct ev_notify *n)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
	if (write(n->fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		mb_warn("ev: notify: write: errno=%d", errno);
}

void
ev_notify_free(struct ev_notify *n)
{
	if (n == NULL)
		return;
	event_free(n->ev);
	close(n->fd);
	free(n);
}

struct ev_io {
	struct event *ev;
	struct event_base *base;
	int fd;
	ev_io_cb cb;
	void *arg;
};

static void
io_fired(evutil_socket_t fd, short what, void *arg)
{
	struct ev_io *io = arg;
	int events = ((what & EV_READ) ? EV_IO_READ : 0) | ((what & EV_WRITE) ? EV_IO_WRITE : 0);

	io->cb(io->arg, (int)fd, events);
}

struct ev_io *
ev_io_new(struct ev_loop *loop, int fd, ev_io_cb cb, void *arg)
{
	struct ev_io *io = mb_calloc(1, sizeof(*io));

	io->base = loop->base;
	io->fd = fd;
	io->cb = cb;
	io->arg = arg;
	return io;
}

void
ev_io_set(struct ev_io *io, int events)
{
	short what = EV_PERSIST;

	if (io->ev) {
		event_free(io->ev);
		io->ev = NULL;
	}
	if (events == 0)
		return;
	if (events & EV_IO_READ)
		what |= EV_READ;
	if (events & EV_IO_WRITE)
		what |= EV_WRITE;
	io->ev = event_new(io->base, io->fd, what, io_fired, io);
	event_add(io->ev, NULL);
}

void
ev_io_free(struct ev_io *io)
{
	if (io == NULL)
		return;
	if (io->ev)
		event_free(io->ev);
	free(io);
}
