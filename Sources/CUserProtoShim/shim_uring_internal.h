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

// Under ThreadSanitizer: liburing maps the rings with its own mmap system
// call, which TSan does not intercept, so a ring mapped at the address of
// one another thread used and unmapped looks like a race between the two
// (a report seen once in MaskCoreTests: two tests' rings at one address).
// Telling TSan the memory is new when a ring is made ends that; outside
// TSan builds this is nothing.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
void AnnotateNewMemory(const char *file, int line, const volatile void *mem, unsigned long size);
#define UP_TSAN_NEW_MEMORY(pointer, size) AnnotateNewMemory(__FILE__, __LINE__, (pointer), (size))
#endif
#endif
#ifndef UP_TSAN_NEW_MEMORY
#define UP_TSAN_NEW_MEMORY(pointer, size) ((void)0)
#endif

static inline struct io_uring_sqe *get_sqe(up_ring *r) {
  return io_uring_get_sqe(&r->ring);
}

#endif
