/* /api/v1 messages: the log, one message, resend, queue retry and delete, test send,
 * stats. */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

#include "store/store.h"

/* ---- GET /api/v1/stats ---- */

static void
api_stats(struct admin *a, struct ev_http_req *req, const struct admin_caller *c,
          const struct api_params *p)
{
	json_t *j = json_object(), *by = json_object();
	struct mb_err err = {0};
	int64_t queue = 0;

	for (int s = 0; s < STORE_STATE_COUNT; s++) {
		int64_t n = store_msg_count(a->d.st, (enum store_state)s, &err);
		if (n < 0) {
			json_decref(j);
			json_decref(by);
			admin_reply_store_error(req, &err);
			return;
		}
		if (s == STORE_QUEUED || s == STORE_SENDING || s == STORE_DEFERRED)
			queue += n;
		json_object_set_new(by, store_state_name((enum store_state)s), json_integer(n));
	}
	json_object_set_new(j, "messages", by);
	json_object_set_new(j, "queue", json_integer(queue));
	json_object_set_new(j, "usable_connections",
	                    json_integer(store_conn_usable_count(a->d.st)));
	admin_reply_json(req, 200, j);
}

const struct api_route admin_routes_msg[] = {
    {"GET", "stats", api_stats, false},
    {NULL, NULL, NULL, false},
};
