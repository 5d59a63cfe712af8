/* Logging: stderr, one line per event; journald priority prefixes when run by systemd,
 * or one JSON object per line with log_format = json. */
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum mb_log_level log_min = MB_LOG_INFO;
static enum mb_log_format log_format = MB_LOG_TEXT;
static int log_journal = -1;

static const char *const level_names[] = {"debug", "info", "warn", "fatal"};
static const int level_syslog[] = {7, 6, 4, 2};

void
mb_log_setup(enum mb_log_level min, enum mb_log_format format)
{
	log_min = min;
	log_format = format;
}

bool
mb_log_is_enabled(enum mb_log_level level)
{
	return level >= log_min;
}

void
mb_err_set(struct mb_err *err, enum mb_errc code, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

void
mb_log(enum mb_log_level level, const char *fmt, ...)
{
	struct mb_buf line = {0};
	char text[4096];
	char date[40];
	va_list ap;

	if (level < log_min)
		return;
	if (log_journal < 0)
		log_journal = getenv("JOURNAL_STREAM") != NULL;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (log_format == MB_LOG_JSON) {
		mb_iso_date(mb_now_ms(), date, sizeof(date));
		mb_buf_printf(&line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", date,
		              level_names[level]);
		mb_buf_json_str(&line, text);
		mb_buf_puts(&line, "}\n");
	} else if (log_journal) {
		mb_buf_printf(&line, "<%d>%s\n", level_syslog[level], text);
	} else {
		mb_iso_date(mb_now_ms(), date, sizeof(date));
		mb_buf_printf(&line, "%s %s %s\n", date, level_names[level], text);
	}
	/* One write per line, so lines from several processes do not interleave. */
	if (write(STDERR_FILENO, line.data, line.len) < 0) {
		/* nowhere left to report it */
	}
	mb_buf_release(&line);
}
