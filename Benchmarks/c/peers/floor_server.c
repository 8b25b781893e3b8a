// floor-server: the floor for request/reply. A blocking TCP server on
// 127.0.0.1, one pthread per connection, TCP_NODELAY, no protocol: it reads
// a u64 big-endian length and that many bytes, and sends the frame back in
// one send. Prints "PORT n" once listening; exits when its standard input
// (a pipe) closes.
//
//   floor-server [PORT]
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>

static void *serve(void *arg) {
  int fd = (int)(intptr_t)arg;
  size_t capacity = 64 * 1024;
  uint8_t *buffer = malloc(capacity);
  for (;;) {
    if (recv_all(fd, buffer, 8) < 0) break;
    uint64_t n = get_u64be(buffer);
    if (n > (1u << 20)) break;
    if (8 + n > capacity) {
      capacity = 8 + n;
      buffer = realloc(buffer, capacity);
    }
    if (recv_all(fd, buffer + 8, n) < 0 || send_all(fd, buffer, 8 + n) < 0) break;
  }
  free(buffer);
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof address;
  if (bind(listener, (struct sockaddr *)&address, length) < 0 || listen(listener, 512) < 0) {
    perror("floor-server: bind/listen");
    return 1;
  }
  getsockname(listener, (struct sockaddr *)&address, &length);
  if (stdin_is_pipe()) {
    pthread_t watcher;
    pthread_create(&watcher, NULL, exit_when_input_closes, NULL);
  }
  printf("PORT %d\n", ntohs(address.sin_port));
  fflush(stdout);
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("floor-server: accept");
      return 1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t thread;
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, 256 * 1024);
    pthread_create(&thread, &attributes, serve, (void *)(intptr_t)fd);
    pthread_attr_destroy(&attributes);
  }
}
