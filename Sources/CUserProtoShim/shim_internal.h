// Private to the shim's .c files (not in include/, so Swift never sees it).
#ifndef C_USERPROTO_SHIM_INTERNAL_H
#define C_USERPROTO_SHIM_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "CUserProtoShim.h"

#include <errno.h>

static inline int neg_errno(void) { return -errno; }

#endif
