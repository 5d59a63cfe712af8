/* The one parameter table: parsing, validation, `config show` and mailbridge.conf(5) read it. */
#include "config/config_impl.h"

#include <stddef.h>
#include <string.h>

#define KIB  ((int64_t)1024)
#define MIB  (1024 * KIB)
#define HOUR ((int64_t)3600)

#define SRV(field, type, def, min, max, choices, doc)                                              \
	{                                                                                          \
		CONFIG_SEC_SERVER, #field, type, def, min, max, choices,                           \
		    offsetof(struct config_server, field), doc                                     \
	}
#define CONN_F(key, field, type, def, choices, doc)                                                \
	{                                                                                          \
		CONFIG_SEC_CONNECTION, key, type, def, 0, 0, choices,                              \
		    offsetof(struct config_conn, field), doc                                       \
	}
#define CONN(field, type, def, choices, doc) CONN_F(#field, field, type, def, choices, doc)
#define CONN_N(field, type, def, min, max, doc)                                                    \
	{                                                                                          \
		CONFIG_SEC_CONNECTION, #field, type, def, min, max, NULL,                          \
		    offsetof(struct config_conn, field), doc                                       \
	}
#define USER(field, type, def, doc)                                                                \
	{                                                                                          \
		CONFIG_SEC_USER, #field, type, def, 0, 0, NULL,                                    \
		    offsetof(struct config_user, field), doc                                       \
	}

static const struct config_param config_table[] = {
    /* [server] */
    SRV(data_dir, CONFIG_STR, "/var/lib/mailbridge", 0, 0, NULL,
        "Directory for the message store and the key file."),
    SRV(smtp_listen, CONFIG_LIST, "127.0.0.1:2525", 0, 0, NULL,
        "Addresses (host:port, [ipv6]:port) where clients submit mail; a non-loopback address "
        "needs smtp_allow or smtp_auth = required."),
    SRV(http_listen, CONFIG_LIST, "127.0.0.1:8025", 0, 0, NULL,
        "Addresses (host:port) of the admin UI, the JSON API and the OAuth callback."),
    SRV(public_url, CONFIG_STR, "http://localhost:8025", 0, 0, NULL,
        "URL the browser uses to reach http_listen; the OAuth redirect URI is "
        "{public_url}/oauth/callback."),
    SRV(smtp_hostname, CONFIG_STR, NULL, 0, 0, NULL,
        "Name in the SMTP greeting and in Received: headers; unset means the system host name."),
    SRV(max_message_size, CONFIG_SIZE, "35M", 1 * KIB, 150 * MIB, NULL,
        "Largest message accepted (SIZE in EHLO); bigger messages are refused with 552."),
    SRV(smtp_max_line_length, CONFIG_SIZE, "64K", 1000, 1 * MIB, NULL,
        "Longest line accepted in SMTP commands and in DATA, CRLF included."),
    SRV(smtp_max_recipients, CONFIG_INT, "1000", 1, 100000, NULL,
        "Most RCPT TO commands accepted for one message; further ones get 452."),
    SRV(smtp_max_sessions, CONFIG_INT, "1000", 1, 100000, NULL,
        "Most SMTP connections open at once; further ones get 421 and are closed."),
    SRV(smtp_timeout, CONFIG_DURATION, "5m", 1, 1 * HOUR, NULL,
        "How long an SMTP client may stay idle while a command is awaited."),
    SRV(smtp_data_timeout, CONFIG_DURATION, "10m", 1, 1 * HOUR, NULL,
        "How long an SMTP client may stay silent in the middle of DATA."),
    SRV(smtp_max_errors, CONFIG_INT, "10", 1, 1000, NULL,
        "Protocol errors a client may make in one session before it is disconnected."),
    SRV(smtp_auth, CONFIG_ENUM, "optional", 0, 0, "optional|required",
        "Whether SMTP clients must log in with AUTH as a [user] before sending."),
    SRV(smtp_allow, CONFIG_LIST, "", 0, 0, NULL,
        "Networks (CIDR, e.g. 192.0.2.0/24) whose clients may send without AUTH."),
    SRV(smtp_auth_plaintext, CONFIG_BOOL, "no", 0, 0, NULL,
        "Allow AUTH without TLS on non-loopback connections (passwords would cross in clear)."),
    SRV(tls_cert, CONFIG_STR, NULL, 0, 0, NULL,
        "PEM certificate chain for STARTTLS on smtp_listen; set together with tls_key."),
    SRV(tls_key, CONFIG_STR, NULL, 0, 0, NULL,
        "PEM private key of tls_cert; set together with tls_cert."),
    SRV(commit_batch_max, CONFIG_INT, "512", 1, 100000, NULL,
        "Most messages made durable by one group commit of the store."),
    SRV(log_level, CONFIG_ENUM, "info", 0, 0, "debug|info|warn", "Least severe log lines written."),
    SRV(log_format, CONFIG_ENUM, "text", 0, 0, "text|json",
        "Log line format: text for people, json (one object per line) for collectors."),
    SRV(log_retention_days, CONFIG_INT, "14", 1, 3650, NULL,
        "Days that the delivery log is kept in the store."),
    SRV(key_file, CONFIG_STR, NULL, 0, 0, NULL,
        "File with the key that encrypts stored secrets and tokens; unset means "
        "{data_dir}/secret.key (created, mode 0600)."),
    SRV(retry_schedule, CONFIG_LIST, "1m,5m,15m,30m,1h,2h,4h", 0, 0, NULL,
        "Waits between delivery attempts after a temporary failure (the last one repeats), "
        "each with jitter; Retry-After wins when longer."),
    SRV(max_queue_lifetime, CONFIG_DURATION, "5d", 1 * HOUR, 30 * 24 * HOUR, NULL,
        "How long a message may wait for delivery before it is marked failed."),
    SRV(delivery_concurrency, CONFIG_INT, "32", 1, 1024, NULL,
        "Most deliveries in flight at once, over all connections."),
    SRV(alert_webhook, CONFIG_STR, NULL, 0, 0, NULL,
        "URL that gets a JSON POST ({\"text\": ...}, Slack/Teams compatible) on a permanent "
        "failure or a connection that needs re-authorization."),
    SRV(alert_email, CONFIG_STR, NULL, 0, 0, NULL,
        "Address that gets the same alerts by mail, through a working connection."),

    /* [connection NAME] */
    CONN(provider, CONFIG_ENUM, "microsoft-graph", "microsoft-graph|microsoft-smtp|smtp",
         "How mail leaves: Microsoft Graph sendMail, Microsoft 365 SMTP with XOAUTH2, or plain "
         "SMTP."),
    CONN(sender, CONFIG_STR, NULL, NULL,
         "Mailbox that sends (required); mail whose envelope From is this address routes here."),
    CONN(senders, CONFIG_LIST, NULL, NULL,
         "Further From addresses routed to this connection (shared mailboxes, aliases)."),
    CONN(auth, CONFIG_ENUM, "delegated", "delegated|app-only",
         "OAuth flow: delegated (a user signs in once in the UI) or app-only (client "
         "credentials)."),
    CONN(tenant, CONFIG_STR, NULL, NULL,
         "Microsoft Entra tenant: GUID, verified domain, or organizations."),
    CONN(client_id, CONFIG_STR, NULL, NULL, "Application (client) ID of the app registration."),
    CONN(client_secret, CONFIG_SECRET, NULL, NULL,
         "Client secret inline; prefer client_secret_file or client_secret_env."),
    CONN(client_secret_file, CONFIG_STR, NULL, NULL, "File whose first line is the client secret."),
    CONN(client_secret_env, CONFIG_STR, NULL, NULL,
         "Environment variable that holds the client secret."),
    CONN(cloud, CONFIG_ENUM, "global", "global|usgov|usgov-dod|china",
         "Microsoft national cloud; picks the default login, Graph and SMTP endpoints."),
    CONN(login_url, CONFIG_STR, NULL, NULL,
         "Identity platform base URL, overriding cloud (https://, or http:// to loopback for "
         "tests)."),
    CONN(graph_url, CONFIG_STR, NULL, NULL,
         "Microsoft Graph base URL, overriding cloud (https://, or http:// to loopback for "
         "tests)."),
    CONN(smtp_url, CONFIG_STR, NULL, NULL,
         "Upstream SMTP server: smtps://host:465 (TLS) or smtp://host:587 (STARTTLS)."),
    CONN(ca_file, CONFIG_STR, NULL, NULL,
         "Extra PEM trust anchors for this connection (test CA, TLS-inspecting proxy)."),
    CONN_F("default", is_default, CONFIG_BOOL, "no", NULL,
           "Route mail from senders that match no connection here; at most one connection."),
    CONN(fallback, CONFIG_STR, NULL, NULL,
         "Another connection that takes the mail when this one cannot deliver it."),
    CONN(force_from, CONFIG_BOOL, "no", NULL,
         "Rewrite the From: header to sender, for upstreams that refuse other addresses."),
    CONN(large_messages, CONFIG_ENUM, "fail", "fail|upload-session|smtp",
         "What to do with a message too big for one Graph request: fail, upload in pieces, or "
         "send by SMTP."),
    CONN_N(max_inflight, CONFIG_INT, "0", 0, 16,
           "Most deliveries in flight for this mailbox; 0 means Microsoft's limits: 4 Graph "
           "requests, 3 SMTP sessions."),
    CONN_N(messages_per_minute, CONFIG_INT, "0", 0, 10000,
           "Pacing: most messages sent per minute (Exchange allows 30); 0 means no pacing."),
    CONN_N(daily_recipients, CONFIG_INT, "10000", 0, 1000000,
           "Recipients per rolling 24 hours before mail is deferred rather than refused by "
           "Microsoft (Exchange allows 10,000); 0 means no budget."),
    CONN_N(fallback_after, CONFIG_INT, "3", 1, 100,
           "Temporary failures of a message before the fallback connection is tried."),
    CONN_N(request_timeout, CONFIG_DURATION, "60s", 1, 600,
           "How long one request to Microsoft Graph may take before it counts as a timeout "
           "(the guide's \"cURL error 28\"); SMTP sessions get twice as long."),
    CONN(tls, CONFIG_ENUM, "required", "required|none",
         "For provider = smtp: TLS to the upstream is required unless this says none."),
    CONN(username, CONFIG_STR, NULL, NULL,
         "Login name for provider = smtp, when it differs from sender."),
    CONN(password_file, CONFIG_STR, NULL, NULL,
         "File whose first line is the SMTP password (provider = smtp)."),
    CONN(password_env, CONFIG_STR, NULL, NULL,
         "Environment variable that holds the SMTP password (provider = smtp)."),

    /* [user NAME] */
    USER(password_hash, CONFIG_SECRET, NULL,
         "scrypt hash ($scrypt$...) of the password this SMTP client gives with AUTH; required."),
};

const struct config_param *
config_params(size_t *n)
{
	*n = sizeof(config_table) / sizeof(config_table[0]);
	return config_table;
}

size_t
config_param_index(const struct config_param *p)
{
	return (size_t)(p - config_table);
}

const struct config_param *
config_param_find(enum config_section section, const char *name)
{
	for (size_t i = 0; i < sizeof(config_table) / sizeof(config_table[0]); i++) {
		if (config_table[i].section == section && strcmp(config_table[i].name, name) == 0)
			return &config_table[i];
	}
	return NULL;
}
