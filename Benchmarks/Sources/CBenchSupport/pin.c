#define _GNU_SOURCE
#include "CBenchSupport.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>

int bench_pin_thread(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (cpu < 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET(i, &set);
  } else {
    CPU_SET(cpu, &set);
  }
  return sched_setaffinity(0, sizeof set, &set) == 0 ? 0 : -errno;
}
