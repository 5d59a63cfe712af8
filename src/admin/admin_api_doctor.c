/* /api/v1/doctor: the doctor's checklist, run in a child process. */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>

#include "store/store.h"

const struct api_route admin_routes_doctor[] = {
    {NULL, NULL, NULL, false},
};

void
admin_doctor_state_free(struct admin *a)
{
}
