// Helpers shared by the peer benchmark programs (header-only).
#ifndef PEERS_COMMON_H
#define PEERS_COMMON_H
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static inline void sleep_ns(uint64_t ns) {
  struct timespec t = {.tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull)};
  while (nanosleep(&t, &t) < 0 && errno == EINTR) {
  }
}

static inline void put_u64be(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)(v & 0xff);
    v >>= 8;
  }
}

static inline uint64_t get_u64be(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static inline void put_u32be(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static inline uint32_t get_u32be(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline int send_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static inline int recv_all(int fd, uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

// Sum of the on-CPU time of every thread of `pid` (schedstat), in ns.
static inline uint64_t process_cpu_ns(int pid) {
  if (pid <= 0) return 0;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *dir = opendir(path);
  if (!dir) return 0;
  uint64_t total = 0;
  struct dirent *e;
  while ((e = readdir(dir))) {
    if (e->d_name[0] == '.') continue;
    char file[300];
    snprintf(file, sizeof file, "/proc/%d/task/%s/schedstat", pid, e->d_name);
    FILE *f = fopen(file, "r");
    if (!f) continue;
    unsigned long long run = 0;
    if (fscanf(f, "%llu", &run) == 1) total += run;
    fclose(f);
  }
  closedir(dir);
  return total;
}

// The number of threads of `pid`.
static inline int process_threads(int pid) {
  if (pid <= 0) return 0;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *dir = opendir(path);
  if (!dir) return 0;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dir)))
    if (e->d_name[0] != '.') n++;
  closedir(dir);
  return n;
}

// Exits when standard input, a pipe, reaches end of file: the benchmark
// that started this process is gone. Call from a thread of its own.
static inline void *exit_when_input_closes(void *unused) {
  (void)unused;
  char byte;
  for (;;) {
    ssize_t n = read(0, &byte, 1);
    if (n == 0 || (n < 0 && errno != EINTR)) exit(0);
  }
  return NULL;
}

static inline int stdin_is_pipe(void) {
  struct stat st;
  return fstat(0, &st) == 0 && S_ISFIFO(st.st_mode);
}

static inline int compare_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* One connection's round-trip latencies, in ns (capped at UINT32_MAX). */
struct latencies {
  uint32_t *v;
  size_t count, capacity;
};

static inline void latencies_add(struct latencies *l, uint64_t ns) {
  if (l->count == l->capacity) {
    l->capacity = l->capacity ? l->capacity * 2 : 65536;
    l->v = realloc(l->v, l->capacity * sizeof *l->v);
  }
  l->v[l->count++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

/* Merges (and frees) every connection's latencies and prints the clients'
 * common result fields, without the newline: trips, seconds, rate, p50/p99
 * and the server's CPU time per trip. */
static inline void print_trips(struct latencies *const *each, int n, uint64_t elapsed_ns, uint64_t server_cpu_ns) {
  size_t total = 0, k = 0;
  for (int i = 0; i < n; i++) total += each[i]->count;
  uint32_t *all = malloc((total ? total : 1) * sizeof *all);
  for (int i = 0; i < n; i++) {
    if (each[i]->count) memcpy(all + k, each[i]->v, each[i]->count * sizeof *all);
    k += each[i]->count;
    free(each[i]->v);
  }
  qsort(all, total, sizeof *all, compare_u32);
  double elapsed = (double)elapsed_ns / 1e9;
  double p50 = total ? all[total / 2] / 1e3 : 0;
  double p99 = total ? all[(size_t)((double)total * 0.99)] / 1e3 : 0;
  printf("trips=%zu seconds=%.3f rate=%.1f p50_us=%.2f p99_us=%.2f server_cpu_ns=%llu cpu_us_per_trip=%.3f", total,
         elapsed, (double)total / elapsed, p50, p99, (unsigned long long)server_cpu_ns,
         total ? (double)server_cpu_ns / 1e3 / (double)total : 0.0);
  free(all);
}
#endif
