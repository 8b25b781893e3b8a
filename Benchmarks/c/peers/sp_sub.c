// sp-sub: the one subscriber client PeerBench drives every publisher with.
// Opens SUBSCRIBERS TCP connections, each speaking SP/TCP SUB (header
// 00 'S' 'P' 00 00 0x21 00 00; the PUB's 00 'S' 'P' 00 00 0x20 00 00 is
// checked), reads every frame (u64 big-endian length + body whose first 8
// bytes are the publisher's sequence number) on one epoll thread, and
// counts per subscriber until every connection is closed by the publisher
// (or TIMEOUT seconds pass). Prints one line per subscriber and a summary:
//
//   sub i received=R gaps=G highest=H
//   subscribers=N received_total=T received_min=A received_max=B
//
// `gaps` counts sequence jumps (messages lost in the middle of the stream);
// drops at the end show only against the publisher's count.
//
//   sp-sub HOST PORT SUBSCRIBERS TIMEOUT_SECONDS
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>

struct sub {
  int fd;
  int open;
  int header_seen;
  uint8_t *buffer;
  size_t used, capacity;
  uint64_t received, gaps;
  int64_t highest;
};

static void consume(struct sub *s) {
  size_t off = 0;
  if (!s->header_seen) {
    if (s->used < 8) return;
    static const uint8_t pub[8] = {0, 'S', 'P', 0, 0, 0x20, 0, 0};
    if (memcmp(s->buffer, pub, 8) != 0) {
      fprintf(stderr, "sp-sub: not an SP PUB header\n");
      exit(1);
    }
    s->header_seen = 1;
    off = 8;
  }
  while (s->used - off >= 8) {
    uint64_t n = get_u64be(s->buffer + off);
    if (s->used - off - 8 < n) {
      if (8 + n > s->capacity) {
        s->capacity = 8 + n + 65536;
        uint8_t *b = malloc(s->capacity);
        memcpy(b, s->buffer + off, s->used - off);
        free(s->buffer);
        s->buffer = b;
        s->used -= off;
        return;
      }
      break;
    }
    if (n >= 8) {
      int64_t seq = (int64_t)get_u64be(s->buffer + off + 8);
      if (seq != s->highest + 1) s->gaps++;
      if (seq > s->highest) s->highest = seq;
    }
    s->received++;
    off += 8 + n;
  }
  memmove(s->buffer, s->buffer + off, s->used - off);
  s->used -= off;
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: sp-sub HOST PORT SUBSCRIBERS TIMEOUT_SECONDS\n");
    return 2;
  }
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  inet_pton(AF_INET, argv[1], &address.sin_addr);
  int count = atoi(argv[3]);
  double timeout = atof(argv[4]);
  struct sub *subs = calloc((size_t)count, sizeof *subs);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  static const uint8_t header[8] = {0, 'S', 'P', 0, 0, 0x21, 0, 0};
  for (int i = 0; i < count; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0 || send_all(fd, header, 8) < 0) {
      fprintf(stderr, "sp-sub: connect: %s\n", strerror(errno));
      return 1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    subs[i] = (struct sub){.fd = fd, .open = 1, .capacity = 512 * 1024, .highest = -1};
    subs[i].buffer = malloc(subs[i].capacity);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  printf("CONNECTED %d\n", count);
  fflush(stdout);
  int open = count;
  uint64_t deadline = now_ns() + (uint64_t)(timeout * 1e9);
  struct epoll_event events[64];
  while (open > 0 && now_ns() < deadline) {
    int n = epoll_wait(ep, events, 64, 100);
    for (int k = 0; k < n; k++) {
      struct sub *s = &subs[events[k].data.u32];
      for (;;) {
        if (s->capacity - s->used < 65536) {
          s->capacity *= 2;
          s->buffer = realloc(s->buffer, s->capacity);
        }
        ssize_t r = recv(s->fd, s->buffer + s->used, s->capacity - s->used, 0);
        if (r > 0) {
          s->used += (size_t)r;
          consume(s);
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
        epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->open = 0;
        open--;
        break;
      }
    }
  }
  uint64_t total = 0, lo = UINT64_MAX, hi = 0;
  for (int i = 0; i < count; i++) {
    printf("sub %d received=%llu gaps=%llu highest=%lld\n", i, (unsigned long long)subs[i].received,
           (unsigned long long)subs[i].gaps, (long long)subs[i].highest);
    total += subs[i].received;
    if (subs[i].received < lo) lo = subs[i].received;
    if (subs[i].received > hi) hi = subs[i].received;
  }
  printf("subscribers=%d received_total=%llu received_min=%llu received_max=%llu still_open=%d\n", count,
         (unsigned long long)total, (unsigned long long)lo, (unsigned long long)hi, open);
  return 0;
}
