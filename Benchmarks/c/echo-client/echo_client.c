// echo-client: the one client EchoBench drives every echo server with.
//
// Blocking sockets, TCP_NODELAY, one pthread per connection. Each thread
// does request/response round trips: send SIZE bytes, read SIZE bytes back,
// record the round trip's latency. After a warm-up, it measures for SECONDS
// and prints one line:
//
//   trips=N seconds=S rate=R p50_us=X p99_us=Y server_cpu_ns=C cpu_us_per_trip=Z
//
// server_cpu_ns is the CPU time (user+system, from /proc/PID/task/*/schedstat,
// nanosecond resolution) the server process used during the measured window.
//
//   echo-client HOST PORT CONNECTIONS SIZE SECONDS WARMUP_SECONDS SERVER_PID
#define _GNU_SOURCE
#include "../peers/common.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  fprintf(stderr, "echo-client: %s: %s\n", what, strerror(errno));
  exit(2);
}

static atomic_int measuring;
static atomic_int stopping;
static pthread_barrier_t barrier;

struct worker {
  int fd;
  size_t size;
  struct latencies lat;
  int failed;
};

static void *run(void *arg) {
  struct worker *w = arg;
  uint8_t *out = malloc(w->size), *in = malloc(w->size);
  for (size_t i = 0; i < w->size; i++) out[i] = (uint8_t)(i * 7 + 1);
  pthread_barrier_wait(&barrier);
  while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
    int counted = atomic_load_explicit(&measuring, memory_order_relaxed);
    uint64_t t0 = now_ns();
    if (send_all(w->fd, out, w->size) < 0 || recv_all(w->fd, in, w->size) < 0) {
      w->failed = 1;
      break;
    }
    uint64_t dt = now_ns() - t0;
    if (!counted) continue;
    latencies_add(&w->lat, dt);
  }
  if (memcmp(out, in, w->size) != 0 && !w->failed) {
    fprintf(stderr, "echo-client: the echo differs from the request\n");
    w->failed = 1;
  }
  free(out);
  free(in);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: echo-client HOST PORT CONNECTIONS SIZE SECONDS WARMUP_SECONDS SERVER_PID\n");
    return 2;
  }
  const char *host = argv[1];
  int port = atoi(argv[2]);
  int connections = atoi(argv[3]);
  size_t size = (size_t)atol(argv[4]);
  double seconds = atof(argv[5]);
  double warmup = atof(argv[6]);
  int server = atoi(argv[7]);

  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &address.sin_addr) != 1) die("inet_pton");

  struct worker *workers = calloc((size_t)connections, sizeof *workers);
  pthread_t *threads = calloc((size_t)connections, sizeof *threads);
  for (int i = 0; i < connections; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) die("connect");
    workers[i].fd = fd;
    workers[i].size = size;
  }
  pthread_barrier_init(&barrier, NULL, (unsigned)connections + 1);
  for (int i = 0; i < connections; i++) pthread_create(&threads[i], NULL, run, &workers[i]);
  pthread_barrier_wait(&barrier);

  sleep_ns((uint64_t)(warmup * 1e9));
  uint64_t cpu0 = process_cpu_ns(server);
  uint64_t t0 = now_ns();
  atomic_store(&measuring, 1);
  sleep_ns((uint64_t)(seconds * 1e9));
  atomic_store(&measuring, 0);
  uint64_t t1 = now_ns();
  uint64_t cpu1 = process_cpu_ns(server);
  atomic_store(&stopping, 1);

  struct latencies *each[connections];
  int failed = 0;
  for (int i = 0; i < connections; i++) {
    pthread_join(threads[i], NULL);
    each[i] = &workers[i].lat;
    failed |= workers[i].failed;
    close(workers[i].fd);
  }
  if (failed) {
    fprintf(stderr, "echo-client: a connection failed\n");
    return 1;
  }
  print_trips(each, connections, t1 - t0, cpu1 - cpu0);
  printf("\n");
  return 0;
}
