// nng-pub: NNG's pub0 publisher, the peer for pub/sub throughput. Waits for
// SUBSCRIBERS connections, then publishes SIZE-byte messages as fast as
// nng_send takes them for SECONDS (each body starts with a u64 big-endian
// sequence number), waits DRAIN seconds, prints one line and closes:
//
//   published=N seconds=S publisher_cpu_ns=C send_buffer=B
//
// pub0 never blocks: when a subscriber's queue (NNG_OPT_SENDBUF messages,
// default 16) is full the message is dropped for it, with no error and no
// counter, so drops are computed as published - received by the
// subscriber.
//
//   nng-pub SIZE SECONDS SUBSCRIBERS [DRAIN_SECONDS [SENDBUF]]
#include "common.h"

#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <stdatomic.h>
#include <sys/resource.h>

static atomic_int pipes;

static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg) {
  (void)p;
  (void)arg;
  if (ev == NNG_PIPE_EV_ADD_POST) atomic_fetch_add(&pipes, 1);
  if (ev == NNG_PIPE_EV_REM_POST) atomic_fetch_sub(&pipes, 1);
}

static uint64_t self_cpu_ns(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (uint64_t)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000ull +
         (uint64_t)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000ull;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: nng-pub SIZE SECONDS SUBSCRIBERS [DRAIN_SECONDS [SENDBUF]]\n");
    return 2;
  }
  size_t size = (size_t)atol(argv[1]);
  double seconds = atof(argv[2]);
  int subscribers = atoi(argv[3]);
  double drain = argc > 4 ? atof(argv[4]) : 1.0;
  int sendbuf = argc > 5 ? atoi(argv[5]) : 0;
  if (size < 8) size = 8;
  nng_socket sock;
  int rv;
  if ((rv = nng_pub0_open(&sock)) != 0) {
    fprintf(stderr, "nng-pub: %s\n", nng_strerror(rv));
    return 1;
  }
  if (sendbuf > 0) nng_socket_set_int(sock, NNG_OPT_SENDBUF, sendbuf);
  int effective = 0;
  nng_socket_get_int(sock, NNG_OPT_SENDBUF, &effective);
  nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, pipe_event, NULL);
  nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, pipe_event, NULL);
  nng_listener listener;
  if ((rv = nng_listen(sock, "tcp://127.0.0.1:0", &listener, 0)) != 0) {
    fprintf(stderr, "nng-pub: listen: %s\n", nng_strerror(rv));
    return 1;
  }
  int port = 0;
  nng_listener_get_int(listener, NNG_OPT_TCP_BOUND_PORT, &port);
  printf("PORT %d\n", port);
  fflush(stdout);
  uint64_t deadline = now_ns() + 30ull * 1000000000ull;
  while (atomic_load(&pipes) < subscribers) {
    if (now_ns() > deadline) {
      fprintf(stderr, "nng-pub: only %d of %d subscribers connected\n", atomic_load(&pipes), subscribers);
      return 1;
    }
    sleep_ns(1000000);
  }
  sleep_ns(200000000);  // let every subscriber's header exchange finish
  uint8_t *body = malloc(size);
  for (size_t i = 8; i < size; i++) body[i] = (uint8_t)(i * 7 + 1);
  uint64_t published = 0;
  uint64_t cpu0 = self_cpu_ns();
  uint64_t t0 = now_ns(), end = t0 + (uint64_t)(seconds * 1e9), t = t0;
  while (t < end) {
    for (int k = 0; k < 64; k++) {
      put_u64be(body, published);
      if ((rv = nng_send(sock, body, size, 0)) != 0) {
        fprintf(stderr, "nng-pub: send: %s\n", nng_strerror(rv));
        return 1;
      }
      published++;
    }
    t = now_ns();
  }
  uint64_t cpu1 = self_cpu_ns();
  sleep_ns((uint64_t)(drain * 1e9));
  printf("published=%llu seconds=%.3f publisher_cpu_ns=%llu send_buffer=%d\n", (unsigned long long)published,
         (double)(t - t0) / 1e9, (unsigned long long)(cpu1 - cpu0), effective);
  fflush(stdout);
  nng_close(sock);
  return 0;
}
