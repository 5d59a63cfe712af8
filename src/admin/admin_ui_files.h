/* The web UI's files, compiled in: the table is generated at build time from ui/ by
 * cmake/embed_ui.cmake (see CMakeLists.txt) and served by admin_ui.c. */
#ifndef MB_ADMIN_UI_FILES_H
#define MB_ADMIN_UI_FILES_H

#include <stddef.h>

struct admin_ui_file {
	const char *name;          /* "index.html", "app.js": a name under ui/ */
	const unsigned char *data; /* len bytes (and a NUL after them) */
	size_t len;
	const char *etag; /* a strong ETag: the quoted start of the file's SHA-256 */
};

/* Ended by an entry whose name is NULL. */
extern const struct admin_ui_file admin_ui_files[];

#endif
