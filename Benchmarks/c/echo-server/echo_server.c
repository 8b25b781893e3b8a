// echo-server-c: the floor for EchoBench. A blocking TCP echo server on
// 127.0.0.1, one pthread per connection, TCP_NODELAY. Prints "PORT n" once
// listening, then serves until killed.
//
//   echo-server-c [PORT]   (exits when its standard input, a pipe, closes)
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void *serve(void *arg) {
  int fd = (int)(intptr_t)arg;
  uint8_t *buffer = malloc(64 * 1024);
  for (;;) {
    ssize_t n = recv(fd, buffer, 64 * 1024, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    uint8_t *p = buffer;
    while (n > 0) {
      ssize_t w = send(fd, p, (size_t)n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) goto done;
      p += w;
      n -= w;
    }
  }
done:
  free(buffer);
  close(fd);
  return NULL;
}

// Exits when standard input reaches end of file: the benchmark that started
// this server is gone.
static void *watch_input(void *unused) {
  (void)unused;
  char byte;
  for (;;) {
    ssize_t n = read(0, &byte, 1);
    if (n == 0 || (n < 0 && errno != EINTR)) exit(0);
  }
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
    perror("echo-server-c: bind/listen");
    return 1;
  }
  getsockname(listener, (struct sockaddr *)&address, &length);
  struct stat input;
  if (fstat(0, &input) == 0 && S_ISFIFO(input.st_mode)) {
    pthread_t watcher;
    pthread_create(&watcher, NULL, watch_input, NULL);
  }
  printf("PORT %d\n", ntohs(address.sin_port));
  fflush(stdout);
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      perror("echo-server-c: accept");
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
