/* The doctor's report: freeing it, and printing it as text or JSON. */
#include "doctor.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

void
doctor_report_free(struct doctor_report *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->items[i].evidence);
		free(r->items[i].fix);
	}
	free(r->items);
	free(r->connection);
	memset(r, 0, sizeof(*r));
}

bool
doctor_report_failed(const struct doctor_report *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->items[i].status == DOCTOR_FAIL)
			return true;
	return false;
}

const char *
doctor_status_name(enum doctor_status s)
{
	switch (s) {
	case DOCTOR_PASS:
		return "pass";
	case DOCTOR_WARN:
		return "warn";
	case DOCTOR_FAIL:
		return "fail";
	case DOCTOR_INFO:
		return "info";
	case DOCTOR_UNKNOWN:
	default:
		return "unknown";
	}
}

static const char *
label(enum doctor_status s)
{
	switch (s) {
	case DOCTOR_PASS:
		return "PASS";
	case DOCTOR_WARN:
		return "WARN";
	case DOCTOR_FAIL:
		return "FAIL";
	case DOCTOR_INFO:
		return "INFO";
	case DOCTOR_UNKNOWN:
	default:
		return "????";
	}
}

void
doctor_report_text(const struct doctor_report *r, struct mb_buf *out)
{
	size_t npass = 0, nfail = 0, nwarn = 0, nunk = 0;

	if (r->connection)
		mb_buf_printf(out, "mailbridge doctor: connection %s\n", r->connection);
	for (size_t i = 0; i < r->n; i++) {
		const struct doctor_item *it = &r->items[i];

		mb_buf_printf(out, "%s  %s — %s\n", label(it->status), it->title,
		              it->evidence ? it->evidence : "");
		if (it->fix && it->status != DOCTOR_PASS && it->status != DOCTOR_INFO)
			mb_buf_printf(out, "      fix: %s\n", it->fix);
		npass += it->status == DOCTOR_PASS;
		nfail += it->status == DOCTOR_FAIL;
		nwarn += it->status == DOCTOR_WARN;
		nunk += it->status == DOCTOR_UNKNOWN;
	}
	mb_buf_printf(out, "%zu passed, %zu failed, %zu warnings, %zu can't tell\n", npass, nfail,
	              nwarn, nunk);
}

/* json_string() refuses invalid UTF-8 (a server's reply may hold any bytes): such bytes
 * become '?'. */
static json_t *
json_text(const char *s)
{
	json_t *j = json_string(s ? s : "");
	char *c;

	if (j)
		return j;
	c = mb_strdup(s);
	for (char *p = c; *p; p++)
		if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
			*p = '?';
	j = json_string(c);
	free(c);
	return j;
}

void
doctor_report_json(const struct doctor_report *r, struct mb_buf *out)
{
	json_t *a = json_array();
	char *s;

	for (size_t i = 0; i < r->n; i++) {
		const struct doctor_item *it = &r->items[i];
		json_t *o = json_object();

		json_object_set_new(o, "id", json_string(it->id));
		json_object_set_new(o, "title", json_string(it->title));
		json_object_set_new(o, "status", json_string(doctor_status_name(it->status)));
		json_object_set_new(o, "evidence", json_text(it->evidence));
		json_object_set_new(o, "fix", it->fix ? json_text(it->fix) : json_null());
		json_object_set_new(o, "checklist", json_string(it->checklist));
		if (r->connection)
			json_object_set_new(o, "connection", json_string(r->connection));
		json_array_append_new(a, o);
	}
	s = json_dumps(a, JSON_INDENT(2));
	mb_buf_puts(out, s);
	mb_buf_puts(out, "\n");
	free(s);
	json_decref(a);
}
