// nng-rep: NNG's rep0 echo server, the peer for request/reply. Replies to
// every request with its body, through CONTEXTS asynchronous contexts
// (nng_ctx + nng_aio, NNG's recommended way to serve many requests at
// once). Listens on tcp://127.0.0.1 (an ephemeral port unless given),
// prints "PORT n", exits when its standard input (a pipe) closes.
//
//   nng-rep [CONTEXTS [PORT]]      (libnng 1.5.2, link with -lnng)
#include "common.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>

struct work {
  enum { RECV, SEND } state;
  nng_aio *aio;
  nng_ctx ctx;
};

static void fatal(const char *what, int rv) {
  fprintf(stderr, "nng-rep: %s: %s\n", what, nng_strerror(rv));
  exit(1);
}

static void callback(void *arg) {
  struct work *w = arg;
  int rv = nng_aio_result(w->aio);
  switch (w->state) {
  case RECV:
    if (rv != 0) {
      if (rv == NNG_ECLOSED) return;
      nng_ctx_recv(w->ctx, w->aio);
      return;
    }
    // The message's header holds the backtrace; the body is echoed.
    nng_aio_set_msg(w->aio, nng_aio_get_msg(w->aio));
    w->state = SEND;
    nng_ctx_send(w->ctx, w->aio);
    return;
  case SEND:
    if (rv != 0) nng_msg_free(nng_aio_get_msg(w->aio));
    w->state = RECV;
    nng_ctx_recv(w->ctx, w->aio);
    return;
  }
}

int main(int argc, char **argv) {
  int contexts = argc > 1 ? atoi(argv[1]) : 32;
  int port = argc > 2 ? atoi(argv[2]) : 0;
  nng_socket sock;
  int rv;
  if ((rv = nng_rep0_open(&sock)) != 0) fatal("nng_rep0_open", rv);
  struct work *works = calloc((size_t)contexts, sizeof *works);
  for (int i = 0; i < contexts; i++) {
    if ((rv = nng_aio_alloc(&works[i].aio, callback, &works[i])) != 0) fatal("nng_aio_alloc", rv);
    if ((rv = nng_ctx_open(&works[i].ctx, sock)) != 0) fatal("nng_ctx_open", rv);
  }
  char url[64];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  nng_listener listener;
  if ((rv = nng_listen(sock, url, &listener, 0)) != 0) fatal("nng_listen", rv);
  int bound = 0;
  if ((rv = nng_listener_get_int(listener, NNG_OPT_TCP_BOUND_PORT, &bound)) != 0) fatal("bound port", rv);
  for (int i = 0; i < contexts; i++) {
    works[i].state = RECV;
    nng_ctx_recv(works[i].ctx, works[i].aio);
  }
  printf("PORT %d\n", bound);
  fflush(stdout);
  if (stdin_is_pipe()) exit_when_input_closes(NULL);
  for (;;) pause();
}
