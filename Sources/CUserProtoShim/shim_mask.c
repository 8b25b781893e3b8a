// The EFD_MASK ABI: eventfd2 by raw syscall, the 12-byte efd_mask writes and
// reads, and the fork generation.
#include "shim_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

const int up_EFD_CLOEXEC = O_CLOEXEC;
const int up_EFD_NONBLOCK = O_NONBLOCK;

int up_eventfd2(unsigned int initval, int flags) {
  long r = syscall(SYS_eventfd2, initval, flags);
  return r < 0 ? neg_errno() : (int)r;
}

ssize_t up_efd_mask_write(int fd, uint32_t events, uint64_t data) {
  up_efd_mask m = {.events = events, .data = data};
  ssize_t r;
  do {
    r = write(fd, &m, sizeof m);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? neg_errno() : r;
}

static unsigned long up_forks;
static pthread_once_t up_fork_once = PTHREAD_ONCE_INIT;

static void up_fork_child(void) { __atomic_add_fetch(&up_forks, 1, __ATOMIC_RELAXED); }

static void up_fork_register(void) { pthread_atfork(NULL, NULL, up_fork_child); }

unsigned long up_fork_generation(void) {
  pthread_once(&up_fork_once, up_fork_register);
  return __atomic_load_n(&up_forks, __ATOMIC_RELAXED);
}

ssize_t up_efd_mask_read(int fd, uint32_t *events, uint64_t *data) {
  up_efd_mask m;
  memset(&m, 0, sizeof m);
  ssize_t r;
  do {
    r = read(fd, &m, sizeof m);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return neg_errno();
  *events = m.events;
  *data = m.data;
  return r;
}
