/* The embedded web UI: static files compiled into the binary. */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

#include "store/store.h"

bool
admin_ui_serve(struct admin *a, struct ev_http_req *req)
{
	return false;
}
