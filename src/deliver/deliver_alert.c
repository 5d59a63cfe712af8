/* Alerts: a permanent failure or a connection that needs re-authorization is told to a
 * webhook (Slack and Teams incoming webhooks take {"text": ...}) and/or by mail. The caller
 * limits them to one per minute per cause. */
#include "deliver_internal.h"

#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "http/http.h"
#include "store/store.h"

static void
on_posted(void *arg, const struct http_response *resp)
{
	if (resp->result != HTTP_OK || resp->status >= 300)
		mb_warn("deliver: alert webhook failed: %s",
		        resp->result == HTTP_OK ? "HTTP error status" : resp->error);
}

static void
on_queued(void *arg, int status, const char *errmsg)
{
	if (status < 0)
		mb_warn("deliver: alert mail not queued: %s", errmsg ? errmsg : "?");
}

void
deliver_alert_send(const struct config *cfg, struct store *st, struct http_client *http,
                   struct store_writer *writer, const char *text)
{
	char *url = store_server_setting(st, cfg, "alert_webhook", NULL);
	char *to = store_server_setting(st, cfg, "alert_email", NULL);

	if (url && *url) {
		static const char *const hdrs[] = {"Content-Type: application/json", NULL};
		struct mb_buf body = {0};
		struct http_request req = {
		    .method = "POST", .url = url, .headers = hdrs, .timeout_ms = 15000};
		mb_buf_puts(&body, "{\"text\":");
		mb_buf_json_str(&body, text);
		mb_buf_puts(&body, "}");
		req.body = body.data;
		req.body_len = body.len;
		http_request_start(http, &req, on_posted, NULL);
		mb_buf_release(&body);
	}
	if (to && *to && writer) {
		struct store_msg *m = store_msg_new();
		char date[64];
		mb_id_new(m->id);
		mb_rfc5322_date(mb_now_ms(), date, sizeof(date));
		m->sender = mb_strdup("");
		store_msg_add_rcpt(m, to);
		m->received_ms = mb_now_ms();
		m->client = mb_strdup("mailbridge alert");
		m->body =
		    mb_asprintf("From: mailbridge <%s>\r\nTo: <%s>\r\nDate: %s\r\n"
		                "Subject: mailbridge alert\r\nAuto-Submitted: auto-generated\r\n"
		                "Content-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		                to, to, date, text);
		m->body_len = strlen(m->body);
		store_writer_submit(writer, m, on_queued, NULL);
	}
	free(url);
	free(to);
}
