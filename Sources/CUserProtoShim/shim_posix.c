// accept4(2) and thread naming.
#include "shim_internal.h"

#include <pthread.h>
#include <string.h>
#include <sys/socket.h>

int up_accept(int fd) {
  int r;
  do {
    r = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? neg_errno() : r;
}

void up_set_thread_name(const char *name) {
  char buf[16];
  strncpy(buf, name, sizeof buf - 1);
  buf[sizeof buf - 1] = 0;
  pthread_setname_np(pthread_self(), buf);
}
