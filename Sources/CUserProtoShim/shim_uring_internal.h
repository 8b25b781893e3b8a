// Private to the shim's io_uring .c files: liburing.h is included here, never
// by the public header (its sys/select.h clashes with SwiftGlibc).
#ifndef C_USERPROTO_SHIM_URING_INTERNAL_H
#define C_USERPROTO_SHIM_URING_INTERNAL_H

#include "shim_internal.h"

#include <liburing.h>

struct up_ring {
  struct io_uring ring;
  struct io_uring_probe *probe;
};

static inline struct io_uring_sqe *get_sqe(up_ring *r) {
  return io_uring_get_sqe(&r->ring);
}

#endif
