/* mailbridge queue and mailbridge log: read the store directly, daemon or not. */
#include "cli.h"
#include "cli_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "deliver/deliver.h"
#include "store/store.h"
#include "util/util.h"

struct list_ctx {
	bool json;
	json_t *arr;
	int count;
};

static json_t *
msg_json(const struct store_msg *m)
{
	json_t *o = json_object(), *r = json_array();
	char date[40];

	for (size_t i = 0; i < m->nrcpts; i++)
		json_array_append_new(r, json_string(m->rcpts[i]));
	mb_iso_date(m->received_ms, date, sizeof(date));
	json_object_set_new(o, "id", json_string(m->id));
	json_object_set_new(o, "state", json_string(store_state_name(m->state)));
	json_object_set_new(o, "received", json_string(date));
	json_object_set_new(o, "size", json_integer(m->size));
	json_object_set_new(o, "sender", json_string(m->sender ? m->sender : ""));
	json_object_set_new(o, "recipients", r);
	json_object_set_new(o, "subject", m->subject ? json_string(m->subject) : json_null());
	json_object_set_new(o, "from", m->from_hdr ? json_string(m->from_hdr) : json_null());
	json_object_set_new(o, "attempts", json_integer(m->attempts));
	json_object_set_new(o, "last_error",
	                    m->last_error ? json_string(m->last_error) : json_null());
	json_object_set_new(o, "connection",
	                    m->connection ? json_string(m->connection) : json_null());
	json_object_set_new(o, "client", m->client ? json_string(m->client) : json_null());
	return o;
}

static int
list_one(void *arg, const struct store_msg *m)
{
	struct list_ctx *ctx = arg;
	char date[40];

	ctx->count++;
	if (ctx->json) {
		json_array_append_new(ctx->arr, msg_json(m));
		return 0;
	}
	mb_iso_date(m->received_ms, date, sizeof(date));
	printf("%-16s  %-8s  %s  %8lld  <%s> -> %s%s", m->id, store_state_name(m->state), date,
	       (long long)m->size, m->sender ? m->sender : "", m->nrcpts ? m->rcpts[0] : "",
	       m->nrcpts > 1 ? " ..." : "");
	if (m->nrcpts > 1)
		printf(" (%zu recipients)", m->nrcpts);
	if (m->subject)
		printf("  \"%.60s\"", m->subject);
	printf("\n");
	if (m->last_error)
		printf("%18s%s\n", "", m->last_error);
	return 0;
}

static int
list(struct store *st, const struct cli_opts *o, const enum store_state *states, size_t n)
{
	struct store_query q = {
	    .states = states, .nstates = n, .limit = o->limit > 0 ? o->limit : 0};
	struct list_ctx ctx = {.json = o->json};
	struct mb_err err = {0};

	if (o->json)
		ctx.arr = json_array();
	if (store_msg_list(st, &q, list_one, &ctx, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		json_decref(ctx.arr);
		return EX_IOERR;
	}
	if (o->json) {
		json_dumpf(ctx.arr, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(ctx.arr);
	} else if (ctx.count == 0) {
		printf("(no messages)\n");
	}
	return EX_OK;
}

static void
attempt_json(void *arg, const struct store_attempt *a)
{
	json_t *o = json_object();
	char date[40];

	mb_iso_date(a->at_ms, date, sizeof(date));
	json_object_set_new(o, "at", json_string(date));
	json_object_set_new(o, "connection",
	                    a->connection ? json_string(a->connection) : json_null());
	json_object_set_new(o, "result", json_string(a->result ? a->result : ""));
	json_object_set_new(o, "detail", a->detail ? json_string(a->detail) : json_null());
	json_object_set_new(o, "upstream_id",
	                    a->upstream_id ? json_string(a->upstream_id) : json_null());
	json_object_set_new(o, "latency_ms", json_integer(a->latency_ms));
	json_array_append_new(arg, o);
}

static void
attempt_text(void *arg, const struct store_attempt *a)
{
	char date[40];

	mb_iso_date(a->at_ms, date, sizeof(date));
	printf("attempt:     %s %s via %s in %lld ms%s%s%s%s\n", date, a->result ? a->result : "",
	       a->connection ? a->connection : "-", (long long)a->latency_ms,
	       a->upstream_id ? " upstream=" : "", a->upstream_id ? a->upstream_id : "",
	       a->detail && *a->detail ? " — " : "", a->detail ? a->detail : "");
}

static int
show(struct store *st, const struct cli_opts *o, const char *id)
{
	struct mb_err err = {0};
	struct store_msg *m = store_msg_get(st, id, true, &err);
	char date[40];

	if (m == NULL) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		return err.code == MB_ENOTFOUND ? EX_NOINPUT : EX_IOERR;
	}
	if (o->raw) {
		fwrite(m->body, 1, m->body_len, stdout);
	} else if (o->json) {
		json_t *j = msg_json(m), *attempts = json_array();
		store_attempts_list(st, id, attempt_json, attempts, NULL);
		json_object_set_new(j, "history", attempts);
		json_object_set_new(j, "message",
		                    json_stringn(m->body ? m->body : "", m->body_len));
		json_dumpf(j, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(j);
	} else {
		mb_iso_date(m->received_ms, date, sizeof(date));
		printf("id:          %s\nstate:       %s\nreceived:    %s\nsize:        %lld\n"
		       "sender:      <%s>\n",
		       m->id, store_state_name(m->state), date, (long long)m->size, m->sender);
		for (size_t i = 0; i < m->nrcpts; i++)
			printf("recipient:   <%s>\n", m->rcpts[i]);
		printf("client:      %s\nattempts:    %d\n", m->client ? m->client : "",
		       m->attempts);
		if (m->connection)
			printf("connection:  %s\n", m->connection);
		if (m->last_error)
			printf("last error:  %s\n", m->last_error);
		store_attempts_list(st, id, attempt_text, NULL, NULL);
		printf("\n");
		/* the header block only; --raw prints the whole message */
		{
			const char *end = strstr(m->body ? m->body : "", "\r\n\r\n");
			size_t n = end ? (size_t)(end - m->body) + 2 : m->body_len;
			fwrite(m->body, 1, n, stdout);
		}
	}
	store_msg_free(m);
	return EX_OK;
}

static struct store *
open_store(const struct cli_opts *o)
{
	struct config *c = cli_config_load(o);
	struct mb_err err = {0};
	struct store *st;

	if (c == NULL)
		return NULL;
	st = store_open(c->server.data_dir, false, &err);
	if (st == NULL)
		fprintf(stderr, "mailbridge: %s\n", err.msg);
	config_free(c);
	return st;
}

int
cli_queue_main(int argc, char **argv)
{
	static const enum store_state pending[] = {STORE_QUEUED, STORE_SENDING, STORE_DEFERRED};
	struct cli_opts o;
	struct store *st;
	const char *verb;
	int rc;

	if (cli_opts_parse(argc, argv, "json,set,limit,raw", &o) < 0)
		return EX_USAGE;
	verb = o.nargs > 0 ? o.args[0] : "list";
	if (!((strcmp(verb, "list") == 0 && o.nargs <= 1) ||
	      ((strcmp(verb, "show") == 0 || strcmp(verb, "delete") == 0 ||
	        strcmp(verb, "retry") == 0) &&
	       o.nargs == 2))) {
		fprintf(stderr,
		        "usage: mailbridge queue [list | show ID [--raw] | retry ID | delete ID] "
		        "[--json] [-c FILE]\n");
		cli_opts_free(&o);
		return EX_USAGE;
	}
	st = open_store(&o);
	if (st == NULL) {
		cli_opts_free(&o);
		return EX_UNAVAILABLE;
	}
	if (strcmp(verb, "list") == 0) {
		rc = list(st, &o, pending, 3);
	} else if (strcmp(verb, "show") == 0) {
		rc = show(st, &o, o.args[1]);
	} else if (strcmp(verb, "retry") == 0) {
		struct mb_err err = {0};
		if (store_msg_requeue(st, o.args[1], &err) < 0) {
			fprintf(stderr, "mailbridge: %s\n", err.msg);
			rc = err.code == MB_ENOTFOUND ? EX_NOINPUT : EX_DATAERR;
		} else {
			printf("%s is queued again; the daemon tries it within a second\n",
			       o.args[1]);
			rc = EX_OK;
		}
	} else {
		struct mb_err err = {0};
		if (store_msg_delete(st, o.args[1], &err) < 0) {
			fprintf(stderr, "mailbridge: %s\n", err.msg);
			rc = err.code == MB_ENOTFOUND ? EX_NOINPUT : EX_IOERR;
		} else {
			printf("deleted %s\n", o.args[1]);
			rc = EX_OK;
		}
	}
	store_close(st);
	cli_opts_free(&o);
	return rc;
}

/* log resend ID [--to ADDR]...: a copy queued anew; to other recipients, its headers name
 * them and only them (Graph reads recipients from the headers). */
static int
resend(struct store *st, const struct cli_opts *o, const char *id)
{
	struct mb_err err = {0};
	struct mb_buf body = {0};
	struct store_msg *orig = NULL;
	char new_id[MB_ID_LEN + 1];
	int rc = EX_OK;

	if (o->nto > 0) {
		orig = store_msg_get(st, id, true, &err);
		if (orig == NULL || orig->body == NULL) {
			fprintf(stderr, "mailbridge: %s\n",
			        orig ? "that message's body was pruned" : err.msg);
			store_msg_free(orig);
			return EX_NOINPUT;
		}
		deliver_readdress(orig->body, orig->body_len, (const char *const *)o->to,
		                  (size_t)o->nto, &body);
	}
	if (store_msg_copy(st, id, (const char *const *)o->to, (size_t)o->nto, body.data, body.len,
	                   new_id, &err) < 0) {
		fprintf(stderr, "mailbridge: %s\n", err.msg);
		rc = err.code == MB_ENOTFOUND ? EX_NOINPUT : EX_IOERR;
	} else {
		printf("queued %s, a copy of %s%s\n", new_id, id,
		       o->nto ? " to the given recipients" : "");
	}
	mb_buf_release(&body);
	store_msg_free(orig);
	return rc;
}

int
cli_log_main(int argc, char **argv)
{
	struct cli_opts o;
	struct store *st;
	enum store_state state;
	int rc;

	if (cli_opts_parse(argc, argv, "json,set,status,limit,to", &o) < 0)
		return EX_USAGE;
	if (o.nargs == 2 && strcmp(o.args[0], "resend") == 0) {
		st = open_store(&o);
		rc = st ? resend(st, &o, o.args[1]) : EX_UNAVAILABLE;
		store_close(st);
		cli_opts_free(&o);
		return rc;
	}
	if (o.nargs > 0 || o.nto > 0) {
		fprintf(stderr,
		        "usage: mailbridge log [--status queued|sending|deferred|sent|failed]"
		        " [--limit N] [--json] [-c FILE]\n"
		        "       mailbridge log resend ID [--to ADDR]...\n");
		cli_opts_free(&o);
		return EX_USAGE;
	}
	if (o.status && store_state_parse(o.status, &state) < 0) {
		fprintf(stderr,
		        "mailbridge log: --status must be one of queued, sending, deferred, "
		        "sent, failed\n");
		cli_opts_free(&o);
		return EX_USAGE;
	}
	st = open_store(&o);
	if (st == NULL) {
		cli_opts_free(&o);
		return EX_UNAVAILABLE;
	}
	if (o.limit < 0)
		o.limit = 50;
	rc = list(st, &o, o.status ? &state : NULL, o.status ? 1 : 0);
	store_close(st);
	cli_opts_free(&o);
	return rc;
}
