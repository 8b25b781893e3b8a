// rr-client: the one request/reply client PeerBench drives every server with.
//
// Blocking sockets, TCP_NODELAY, one pthread per connection, one request in
// flight per connection. Each round trip sends one frame and reads the whole
// reply (its size is known) before the next. Wire formats:
//
//   sp   SP/TCP REQ (req0): 8-byte header 00 'S' 'P' 00 00 0x30 00 00 sent
//        once (the REP's header 00 'S' 'P' 00 00 0x31 00 00 is checked), then
//        frames of u64 big-endian length + 4-byte request id (top bit set) +
//        body; the reply must carry the same id and body. Drives our
//        EchoServer and NNG's rep0 alike.
//   raw  u64 big-endian length + body, echoed back by floor-server (the
//        floor: no protocol at all).
//
// After WARMUP seconds it measures for SECONDS and prints one line:
//   trips=N seconds=S rate=R p50_us=X p99_us=Y server_cpu_ns=C cpu_us_per_trip=Z server_threads=T
//
//   rr-client sp|raw HOST PORT CONNECTIONS SIZE SECONDS WARMUP SERVER_PID
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>

static atomic_int measuring;
static atomic_int stopping;
static pthread_barrier_t barrier;
static int sp_mode;

struct worker {
  int fd;
  size_t size;
  uint32_t id;
  struct latencies lat;
  int failed;
};

static void *run(void *arg) {
  struct worker *w = arg;
  size_t head = sp_mode ? 12 : 8;
  size_t frame = head + w->size;
  uint8_t *out = malloc(frame), *in = malloc(frame);
  put_u64be(out, sp_mode ? 4 + w->size : w->size);
  for (size_t i = 0; i < w->size; i++) out[head + i] = (uint8_t)(i * 7 + 1);
  pthread_barrier_wait(&barrier);
  while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
    int counted = atomic_load_explicit(&measuring, memory_order_relaxed);
    if (sp_mode) {
      w->id = (w->id + 1) | 0x80000000u;
      put_u32be(out + 8, w->id);
    }
    uint64_t t0 = now_ns();
    if (send_all(w->fd, out, frame) < 0 || recv_all(w->fd, in, frame) < 0) {
      w->failed = 1;
      break;
    }
    uint64_t dt = now_ns() - t0;
    if (memcmp(out, in, frame) != 0) {
      fprintf(stderr, "rr-client: the reply differs from the request\n");
      w->failed = 1;
      break;
    }
    if (!counted) continue;
    latencies_add(&w->lat, dt);
  }
  free(out);
  free(in);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 9 || (strcmp(argv[1], "sp") && strcmp(argv[1], "raw"))) {
    fprintf(stderr, "usage: rr-client sp|raw HOST PORT CONNECTIONS SIZE SECONDS WARMUP SERVER_PID\n");
    return 2;
  }
  sp_mode = strcmp(argv[1], "sp") == 0;
  const char *host = argv[2];
  int port = atoi(argv[3]);
  int connections = atoi(argv[4]);
  size_t size = (size_t)atol(argv[5]);
  double seconds = atof(argv[6]);
  double warmup = atof(argv[7]);
  int server = atoi(argv[8]);

  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &address.sin_addr) != 1) {
    fprintf(stderr, "rr-client: bad host %s\n", host);
    return 2;
  }
  struct worker *workers = calloc((size_t)connections, sizeof *workers);
  pthread_t *threads = calloc((size_t)connections, sizeof *threads);
  srand((unsigned)now_ns());
  for (int i = 0; i < connections; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fd < 0 || connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
      fprintf(stderr, "rr-client: connect: %s\n", strerror(errno));
      return 2;
    }
    if (sp_mode) {
      static const uint8_t req[8] = {0, 'S', 'P', 0, 0, 0x30, 0, 0};
      static const uint8_t rep[8] = {0, 'S', 'P', 0, 0, 0x31, 0, 0};
      uint8_t peer[8];
      if (send_all(fd, req, 8) < 0 || recv_all(fd, peer, 8) < 0 || memcmp(peer, rep, 8) != 0) {
        fprintf(stderr, "rr-client: SP handshake failed\n");
        return 2;
      }
    }
    workers[i].fd = fd;
    workers[i].size = size;
    workers[i].id = (uint32_t)rand();
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
    close(workers[i].fd);
  }
  if (failed) {
    fprintf(stderr, "rr-client: a connection failed\n");
    return 1;
  }
  print_trips(each, connections, t1 - t0, cpu1 - cpu0);
  printf(" server_threads=%d\n", server_threads);
  return 0;
}
