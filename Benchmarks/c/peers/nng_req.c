// nng-req: NNG's own req0 client, for NNG end to end (req0 -> rep0). One
// pthread per connection, each with its own req0 socket dialing the server
// and one request in flight (nng_send, then nng_recv). Same output line as
// rr-client.
//
//   nng-req HOST PORT CONNECTIONS SIZE SECONDS WARMUP SERVER_PID
#include "common.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>

static atomic_int measuring;
static atomic_int stopping;
static pthread_barrier_t barrier;

struct worker {
  nng_socket sock;
  size_t size;
  struct latencies lat;
  int failed;
};

static void *run(void *arg) {
  struct worker *w = arg;
  uint8_t *out = malloc(w->size);
  for (size_t i = 0; i < w->size; i++) out[i] = (uint8_t)(i * 7 + 1);
  pthread_barrier_wait(&barrier);
  while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
    int counted = atomic_load_explicit(&measuring, memory_order_relaxed);
    uint64_t t0 = now_ns();
    void *in = NULL;
    size_t n = 0;
    int rv = nng_send(w->sock, out, w->size, 0);
    if (rv == 0) rv = nng_recv(w->sock, &in, &n, NNG_FLAG_ALLOC);
    uint64_t dt = now_ns() - t0;
    if (rv != 0) {
      fprintf(stderr, "nng-req: %s\n", nng_strerror(rv));
      w->failed = 1;
      break;
    }
    int same = n == w->size && memcmp(in, out, n) == 0;
    nng_free(in, n);
    if (!same) {
      fprintf(stderr, "nng-req: the reply differs from the request\n");
      w->failed = 1;
      break;
    }
    if (!counted) continue;
    latencies_add(&w->lat, dt);
  }
  free(out);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: nng-req HOST PORT CONNECTIONS SIZE SECONDS WARMUP SERVER_PID\n");
    return 2;
  }
  char url[128];
  snprintf(url, sizeof url, "tcp://%s:%s", argv[1], argv[2]);
  int connections = atoi(argv[3]);
  size_t size = (size_t)atol(argv[4]);
  double seconds = atof(argv[5]);
  double warmup = atof(argv[6]);
  int server = atoi(argv[7]);
  struct worker *workers = calloc((size_t)connections, sizeof *workers);
  pthread_t *threads = calloc((size_t)connections, sizeof *threads);
  for (int i = 0; i < connections; i++) {
    int rv;
    if ((rv = nng_req0_open(&workers[i].sock)) != 0 ||
        (rv = nng_socket_set_ms(workers[i].sock, NNG_OPT_REQ_RESENDTIME, 60000)) != 0 ||
        (rv = nng_dial(workers[i].sock, url, NULL, 0)) != 0) {
      fprintf(stderr, "nng-req: open/dial %s: %s\n", url, nng_strerror(rv));
      return 2;
    }
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
  int server_threads = process_threads(server);
  atomic_store(&stopping, 1);
  struct latencies *each[connections];
  int failed = 0;
  for (int i = 0; i < connections; i++) {
    pthread_join(threads[i], NULL);
    each[i] = &workers[i].lat;
    failed |= workers[i].failed;
    nng_close(workers[i].sock);
  }
  if (failed) return 1;
  print_trips(each, connections, t1 - t0, cpu1 - cpu0);
  printf(" server_threads=%d\n", server_threads);
  return 0;
}
