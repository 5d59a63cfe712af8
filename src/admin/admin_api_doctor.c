/*
 * /api/v1/doctor: the doctor's checklist, run in a child process.
 *
 * Doctor blocks (network probes with timeouts), so the daemon never runs it on its loop: it
 * runs `mailbridge doctor --json --no-refresh [NAME]` as a child of the same binary
 * (/proc/self/exe) with the daemon's config file and --set overrides, reads its output through
 * the loop, and answers the deferred request when the child exits; after 60 s it kills that
 * child and answers 504. One run at a time: a POST while one runs waits for the same result.
 *
 * Tokens: the daemon's token manager owns the refresh token, and Microsoft rotates it on every
 * refresh. A child forcing a refresh of its own would race the daemon's refreshes with the same
 * refresh token (one of them may be refused, and a refused refresh marks the connection "needs
 * re-authorization" in the shared store). So before the child starts, the daemon asks its own
 * token manager for each token the connection needs (no force: a fresh cached token is enough,
 * else the manager refreshes it, single flight, and saves it), and the child runs with
 * --no-refresh: it checks the access token the store holds and makes no token request.
 */
#include "admin_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "oauth/oauth.h"
#include "store/store.h"

#define DOCTOR_DEADLINE_MS (60 * 1000)
#define DOCTOR_OUT_MAX     (2 * 1024 * 1024)
#define DOCTOR_ERR_MAX     4096
#define REAP_POLL_MS       20

struct doctor_waiter {
	struct ev_http *server;
	uint64_t id;
	struct doctor_waiter *next;
};

/* The daemon's token manager answers these; it may outlive the run (then ds is NULL). */
struct doctor_prewarm {
	struct admin_doctors *ds;
	int pending;
};

struct doctor_pipe {
	struct admin_doctors *ds;
	int fd;
	struct ev_io *io;
	struct mb_buf buf;
	size_t max;
	bool eof;
};

struct admin_doctors {
	struct admin *a;
	bool running;
	char *conn; /* the connection asked for, NULL = doctor's choice (the default) */
	struct doctor_waiter *waiters;
	struct doctor_prewarm *prewarm;
	pid_t pid;
	struct doctor_pipe out, err;
	struct ev_timer *deadline, *reap;
	bool timed_out;
	int64_t started_ms;
	json_t *last; /* the last report */
};

static void run_finish(struct admin_doctors *ds, int wstatus, bool reaped);

/* ---- replies ---- */

static void
reply_all(struct admin_doctors *ds, int status, json_t *j)
{
	struct doctor_waiter *w = ds->waiters;

	ds->waiters = NULL;
	while (w) {
		struct doctor_waiter *next = w->next;
		struct ev_http_req *req = ev_http_deferred(w->server, w->id);

		if (req)
			admin_reply_json(req, status, json_incref(j));
		free(w);
		w = next;
	}
	json_decref(j);
}

static json_t *
error_json(const char *code, const char *message, const char *fix)
{
	return json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", message, "fix",
	                 fix);
}

static void
add_waiter(struct admin_doctors *ds, struct admin *a, struct ev_http_req *req)
{
	struct doctor_waiter *w = mb_calloc(1, sizeof(*w));

	w->server = admin_server_of(a, req);
	w->id = ev_http_req_defer(w->server, req);
	w->next = ds->waiters;
	ds->waiters = w;
}

/* ---- the child ---- */

static void
pipe_close(struct doctor_pipe *p)
{
	ev_io_free(p->io);
	p->io = NULL;
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	p->eof = true;
}

static void
on_reap(void *arg)
{
	struct admin_doctors *ds = arg;
	int wstatus = 0;
	pid_t r = waitpid(ds->pid, &wstatus, WNOHANG);

	if (r == 0) {
		ev_timer_start(ds->reap, REAP_POLL_MS);
		return;
	}
	run_finish(ds, wstatus, r == ds->pid);
}

static void
on_pipe(void *arg, int fd, int events)
{
	struct doctor_pipe *p = arg;
	struct admin_doctors *ds = p->ds;
	char chunk[8192];

	(void)events;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n > 0) {
			if (p->buf.len + (size_t)n <= p->max)
				mb_buf_append(&p->buf, chunk, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		break; /* EOF or an error: this pipe is done */
	}
	pipe_close(p);
	/* both pipes closed: the child is exiting; reap it without blocking */
	if (ds->out.eof && ds->err.eof)
		on_reap(ds);
}

/* The --set words the daemon was started with (its command line), as "--set" "K=V" pairs. */
static void
daemon_sets(char ***av, size_t *ac)
{
	FILE *f = fopen("/proc/self/cmdline", "re");
	struct mb_buf b = {0};
	char chunk[4096];
	size_t n;

	if (f == NULL)
		return;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		mb_buf_append(&b, chunk, n);
	fclose(f);
	for (size_t i = 0; i < b.len;) {
		const char *w = b.data + i;
		size_t wl = strlen(w);
		const char *v = NULL;

		i += wl + 1;
		if (strcmp(w, "--set") == 0 && i < b.len) {
			v = b.data + i;
			i += strlen(v) + 1;
		} else if (strncmp(w, "--set=", 6) == 0) {
			v = w + 6;
		}
		if (v == NULL)
			continue;
		*av = mb_realloc(*av, (*ac + 3) * sizeof(char *));
		(*av)[(*ac)++] = mb_strdup("--set");
		(*av)[(*ac)++] = mb_strdup(v);
	}
	mb_buf_release(&b);
}

static char **
child_argv(struct admin_doctors *ds)
{
	const struct config *cfg = ds->a->d.cfg;
	char **av = mb_calloc(8, sizeof(char *));
	size_t ac = 0;

	av[ac++] = mb_strdup("mailbridge");
	av[ac++] = mb_strdup("doctor");
	av[ac++] = mb_strdup("--json");
	av[ac++] = mb_strdup("--no-refresh");
	if (cfg->path) {
		av[ac++] = mb_strdup("-c");
		av[ac++] = mb_strdup(cfg->path);
	}
	daemon_sets(&av, &ac);
	av = mb_realloc(av, (ac + 3) * sizeof(char *));
	if (ds->conn) {
		av[ac++] = mb_strdup("--");
		av[ac++] = mb_strdup(ds->conn);
	}
	av[ac] = NULL;
	return av;
}

static void
argv_free(char **av)
{
	for (size_t i = 0; av && av[i]; i++)
		free(av[i]);
	free(av);
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void
child_exec(char **av, int out_w, int err_w, int devnull)
{
	sigset_t none;

	dup2(devnull, STDIN_FILENO);
	dup2(out_w, STDOUT_FILENO);
	dup2(err_w, STDERR_FILENO);
	close_range(3, ~0U, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	execv("/proc/self/exe", av);
	_exit(127);
}

static int
run_spawn(struct admin_doctors *ds, struct mb_err *err)
{
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, devnull;
	char **av = child_argv(ds);
	pid_t pid;

	devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0 || pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
		mb_err_set(err, MB_EIO, "cannot make the pipes for doctor: %s", strerror(errno));
		goto fail;
	}
	pid = fork();
	if (pid < 0) {
		mb_err_set(err, MB_EIO, "cannot start doctor: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0)
		child_exec(av, po[1], pe[1], devnull);
	close(po[1]);
	close(pe[1]);
	close(devnull);
	argv_free(av);
	ds->pid = pid;
	ds->out = (struct doctor_pipe){ds, po[0], NULL, {0}, DOCTOR_OUT_MAX, false};
	ds->err = (struct doctor_pipe){ds, pe[0], NULL, {0}, DOCTOR_ERR_MAX, false};
	fcntl(po[0], F_SETFL, fcntl(po[0], F_GETFL) | O_NONBLOCK);
	fcntl(pe[0], F_SETFL, fcntl(pe[0], F_GETFL) | O_NONBLOCK);
	ds->out.io = ev_io_new(ds->a->loop, po[0], on_pipe, &ds->out);
	ds->err.io = ev_io_new(ds->a->loop, pe[0], on_pipe, &ds->err);
	ev_io_set(ds->out.io, EV_IO_READ);
	ev_io_set(ds->err.io, EV_IO_READ);
	mb_info("admin: doctor started: pid=%ld connection=%s", (long)pid,
	        ds->conn ? ds->conn : "(default)");
	return 0;
fail:
	for (int i = 0; i < 2; i++) {
		if (po[i] >= 0)
			close(po[i]);
		if (pe[i] >= 0)
			close(pe[i]);
	}
	if (devnull >= 0)
		close(devnull);
	argv_free(av);
	return -1;
}

/* The first line of the child's stderr, printable, for an error message. */
static char *
stderr_line(struct doctor_pipe *p)
{
	size_t n = 0;
	char *s;

	while (n < p->buf.len && n < 300 && p->buf.data[n] != '\n')
		n++;
	s = mb_strndup(p->buf.data ? p->buf.data : "", n);
	for (char *c = s; *c; c++)
		if ((unsigned char)*c < 0x20)
			*c = '?';
	return s;
}

static void
run_reset(struct admin_doctors *ds)
{
	pipe_close(&ds->out);
	pipe_close(&ds->err);
	mb_buf_release(&ds->out.buf);
	mb_buf_release(&ds->err.buf);
	ev_timer_stop(ds->deadline);
	ev_timer_stop(ds->reap);
	if (ds->prewarm) {
		ds->prewarm->ds = NULL; /* its last callback frees it */
		ds->prewarm = NULL;
	}
	free(ds->conn);
	ds->conn = NULL;
	ds->pid = 0;
	ds->running = false;
	ds->timed_out = false;
}

static void
run_finish(struct admin_doctors *ds, int wstatus, bool reaped)
{
	int code = reaped && WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
	json_t *report = NULL;

	if (ds->timed_out) {
		mb_warn("admin: doctor took over %d s: killed pid=%ld", DOCTOR_DEADLINE_MS / 1000,
		        (long)ds->pid);
		reply_all(ds, 504,
		          error_json("timeout", "doctor took over 60 s and was stopped",
		                     "run mailbridge doctor on the command line to see which probe "
		                     "hangs (it has a --timeout per probe)"));
		run_reset(ds);
		return;
	}
	if (code == 0 || code == 1 || !reaped)
		report =
		    json_loadb(ds->out.buf.data ? ds->out.buf.data : "", ds->out.buf.len, 0, NULL);
	if (json_is_array(report)) {
		json_decref(ds->last);
		ds->last = json_incref(report);
		mb_info("admin: doctor finished: pid=%ld exit=%d items=%zu", (long)ds->pid, code,
		        json_array_size(report));
		reply_all(ds, 200, report);
	} else {
		char *why = stderr_line(&ds->err);
		char *msg = why[0] ? mb_asprintf("doctor could not run: %s", why)
		                   : mb_asprintf("doctor could not run (exit status %d)", code);

		json_decref(report);
		mb_warn("admin: doctor failed: pid=%ld exit=%d: %s", (long)ds->pid, code, msg);
		reply_all(ds, 500,
		          error_json("doctor_failed", msg,
		                     "run mailbridge doctor on the command line with the daemon's "
		                     "config; see the daemon's log"));
		free(msg);
		free(why);
	}
	run_reset(ds);
}

static void
on_deadline(void *arg)
{
	struct admin_doctors *ds = arg;

	ds->timed_out = true;
	if (ds->pid > 0) {
		kill(ds->pid, SIGKILL); /* only our child */
		pipe_close(&ds->out);
		pipe_close(&ds->err);
		on_reap(ds);
	} else {
		run_finish(ds, 0, false); /* still waiting for the token manager */
	}
}

static void
run_start_child(struct admin_doctors *ds)
{
	struct mb_err err = {0};

	if (run_spawn(ds, &err) < 0) {
		mb_warn("admin: %s", err.msg);
		reply_all(ds, 500,
		          error_json("doctor_failed", err.msg,
		                     "see the daemon's log; run mailbridge "
		                     "doctor on the command line"));
		run_reset(ds);
	}
}

/* ---- asking the daemon's token manager first ---- */

static void
on_prewarm(void *arg, int status, const char *token, const struct oauth_explain *ex)
{
	struct doctor_prewarm *pw = arg;

	(void)status;
	(void)token;
	(void)ex; /* a failure is recorded on the connection; doctor reports it from there */
	if (--pw->pending > 0)
		return;
	if (pw->ds == NULL) {
		free(pw);
		return;
	}
	pw->ds->prewarm = NULL;
	run_start_child(pw->ds);
	free(pw);
}

struct only_one {
	char *name;
	size_t n;
};

static int
count_conn(void *arg, const struct store_conn *c)
{
	struct only_one *o = arg;

	if (o->n++ == 0)
		o->name = mb_strdup(c->name);
	return 0;
}

/* The connection doctor will check: the one asked for, else the default, else the only one. */
static char *
target_conn(struct admin *a, const char *asked)
{
	struct only_one o = {NULL, 0};
	char *d;

	if (asked)
		return mb_strdup(asked);
	if ((d = store_default_connection(a->d.cfg, a->d.st)) != NULL)
		return d;
	store_conn_list(a->d.st, count_conn, &o, NULL);
	if (o.n == 1)
		return o.name;
	free(o.name);
	return NULL;
}

static void
run_start(struct admin_doctors *ds)
{
	struct admin *a = ds->a;
	char *name = target_conn(a, ds->conn);
	struct oauth_conn *c =
	    name ? oauth_conn_load(a->d.cfg, a->d.st, a->d.key, name, NULL) : NULL;
	struct doctor_prewarm *pw;

	ds->running = true;
	ds->started_ms = mb_mono_ms();
	ev_timer_start(ds->deadline, DOCTOR_DEADLINE_MS);
	if (c == NULL || c->provider == OAUTH_PROVIDER_SMTP || a->d.tm == NULL) {
		oauth_conn_free(c);
		free(name);
		run_start_child(ds);
		return;
	}
	pw = mb_calloc(1, sizeof(*pw));
	pw->ds = ds;
	pw->pending = 1; /* held until every request is out */
	ds->prewarm = pw;
	for (int r = 0; r < OAUTH_RES_COUNT; r++) {
		if (!oauth_provider_needs(c->provider, (enum oauth_resource)r))
			continue;
		pw->pending++;
		oauth_tm_get(a->d.tm, name, (enum oauth_resource)r, false, on_prewarm, pw);
	}
	oauth_conn_free(c);
	free(name);
	on_prewarm(pw, 0, NULL, NULL);
}

/* ---- the routes ---- */

static struct admin_doctors *
state(struct admin *a)
{
	if (a->doctors == NULL) {
		struct admin_doctors *ds = mb_calloc(1, sizeof(*ds));

		ds->a = a;
		ds->out.fd = ds->err.fd = -1;
		ds->out.eof = ds->err.eof = true;
		ds->deadline = ev_timer_new(a->loop, on_deadline, ds);
		ds->reap = ev_timer_new(a->loop, on_reap, ds);
		a->doctors = ds;
	}
	return a->doctors;
}

static void
doctor_post(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
            const struct api_params *p)
{
	struct admin_doctors *ds = state(a);
	const char *conn = NULL;
	size_t len = 0;
	json_t *body = NULL;

	(void)c;
	(void)p;
	ev_http_req_body(req, &len);
	if (len > 0 && (body = admin_body_json(req)) == NULL)
		return;
	if (body && json_object_get(body, "connection") &&
	    !json_is_null(json_object_get(body, "connection"))) {
		conn = json_string_value(json_object_get(body, "connection"));
		if (conn == NULL || *conn == '\0') {
			admin_reply_error(
			    req, 400, "invalid", "connection must be a connection's name",
			    "send {\"connection\": \"NAME\"} or no body for the default");
			goto out;
		}
		if (!admin_conn_exists(a, conn)) {
			admin_reply_conn_not_found(req, conn);
			goto out;
		}
	}
	if (ds->running) {
		if ((conn == NULL) != (ds->conn == NULL) || (conn && strcmp(conn, ds->conn) != 0)) {
			admin_reply_error(req, 409, "conflict",
			                  "doctor is already running for another connection",
			                  "wait for it (at most 60 s), then try again");
			goto out;
		}
		add_waiter(ds, a, req); /* the same run: the same answer */
		goto out;
	}
	ds->conn = conn ? mb_strdup(conn) : NULL;
	add_waiter(ds, a, req);
	run_start(ds);
out:
	json_decref(body);
}

static void
doctor_get(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
           const struct api_params *p)
{
	(void)c;
	(void)p;
	if (a->doctors == NULL || a->doctors->last == NULL) {
		admin_reply_error(req, 404, "not_found",
		                  "doctor has not run since the daemon started",
		                  "POST /api/v1/doctor runs it");
		return;
	}
	admin_reply_json(req, 200, json_incref(a->doctors->last));
}

const struct api_route admin_routes_doctor[] = {
    {"POST", "doctor", doctor_post, false},
    {"GET", "doctor", doctor_get, false},
    {NULL, NULL, NULL, false},
};

void
admin_doctor_state_free(struct admin *a)
{
	struct admin_doctors *ds = a->doctors;

	if (ds == NULL)
		return;
	if (ds->pid > 0) {
		kill(ds->pid, SIGKILL); /* only our child; it dies at once, so this wait is short */
		waitpid(ds->pid, NULL, 0);
	}
	if (ds->running)
		reply_all(ds, 503,
		          error_json("shutting_down", "the daemon is stopping",
		                     "run doctor again once it is back"));
	run_reset(ds);
	ev_timer_free(ds->deadline);
	ev_timer_free(ds->reap);
	json_decref(ds->last);
	free(ds);
	a->doctors = NULL;
}
