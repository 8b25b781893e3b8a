// An LD_PRELOAD experiment, not part of any build: adds io_uring setup flags
// to every io_uring_queue_init call (the loop's ring is made with flags 0),
// to test what IORING_SETUP_COOP_TASKRUN would change without editing the
// library. UP_URING_SETUP_FLAGS holds the flags to add (decimal or 0x...).
//
//   gcc -O2 -shared -fPIC -o /tmp/uring_setup_flags.so \
//       Benchmarks/c/experiments/uring_setup_flags.c -ldl
//   UP_URING_SETUP_FLAGS=0x100 LD_PRELOAD=/tmp/uring_setup_flags.so \
//       Benchmarks/.build/release/EchoServers loop-raw --backend io_uring
#define _GNU_SOURCE
#include <dlfcn.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>

int io_uring_queue_init(unsigned entries, struct io_uring *ring, unsigned flags) {
  static int (*real)(unsigned, struct io_uring *, unsigned);
  if (!real) real = (int (*)(unsigned, struct io_uring *, unsigned))dlsym(RTLD_NEXT, "io_uring_queue_init");
  const char *extra = getenv("UP_URING_SETUP_FLAGS");
  if (extra) flags |= (unsigned)strtoul(extra, NULL, 0);
  int rc = real(entries, ring, flags);
  fprintf(stderr, "uring_setup_flags: io_uring_queue_init(%u, flags 0x%x) = %d\n", entries, flags, rc);
  return rc;
}
