// faults-link: a point-to-point IP link between two network namespaces, with
// netem's faults applied in user space, for kernels built without sch_netem
// (CONFIG_NET_SCH_NETEM unset, as on this project's 2-core VM). scripts/faults.sh
// builds and runs it when `tc qdisc add ... netem` is refused.
//
//   faults-link --ns-a /run/netns/A --dev-a NAME --ns-b /run/netns/B --dev-b NAME
//               --config FILE --stats FILE [--seed N]
//
// It makes one TUN device in each namespace (setns, then TUNSETIFF, so each
// device lives where it was made), and forwards every IP packet one device
// sends to the other, in both directions, after the faults the config file
// names (one line, every key optional):
//
//   loss=PCT delay_ms=N jitter_ms=N reorder=PCT duplicate=PCT limit=N
//
// as `tc qdisc ... netem loss PCT delay N JITTER reorder PCT duplicate PCT
// limit N` would, both ways: each packet is lost with probability loss; else
// it leaves after delay ± jitter (uniform), so jitter reorders, as netem's
// does; with reorder, that fraction leaves at once, ahead of the delayed ones
// (netem's "reorder" needs a delay too); with duplicate, a second copy leaves
// with it. No correlation. At most `limit` packets wait (default 10000);
// beyond that a packet is dropped and counted as overflow. loss=100 is a
// black hole: a half-open connection's peer, gone without a FIN or RST.
//
// Signals: SIGHUP re-reads the config and zeroes the counters; SIGUSR1 writes
// the counters to the stats file (to FILE.tmp, then renamed: a reader never
// sees half a file), one line of key=value per direction plus the same for
// IPv4 UDP alone (udp_ keys), which is what the UDP scenarios count;
// SIGTERM and SIGINT end it. It prints "ready" on stdout once both devices
// exist.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_PACKET 65536

struct config {
  double loss, reorder, duplicate;
  long delay_ms, jitter_ms, limit;
};

struct counters {
  // Packets read from the sending device, forwarded (copies written),
  // lost (the loss draw), duplicated (extra copies made), sent early (the
  // reorder draw), dropped for the limit, refused by the receiving device.
  unsigned long in, out, lost, duplicated, early, overflow, write_errors;
};

struct packet {
  uint64_t due;  // CLOCK_MONOTONIC ns
  uint64_t order;  // ties leave in arrival order
  int to;  // 0: to device a, 1: to device b
  int udp;
  size_t length;
  unsigned char *bytes;
};

static struct config config = {0, 0, 0, 0, 0, 10000};
// [direction][kind]: direction 0 is a->b, 1 is b->a; kind 0 every packet, 1 IPv4 UDP.
static struct counters counts[2][2];
static struct packet *heap;
static size_t heap_count, heap_capacity;
static uint64_t next_order;
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static const char *config_path, *stats_path;

static void die(const char *what) {
  fprintf(stderr, "faults-link: %s: %s\n", what, strerror(errno));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

// xorshift64*: reproducible with --seed.
static double uniform(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static void read_config(void) {
  struct config next = {0, 0, 0, 0, 0, 10000};
  FILE *f = fopen(config_path, "re");
  if (!f) die(config_path);
  char key[64];
  double value;
  while (fscanf(f, " %63[a-z_]=%lf", key, &value) == 2) {
    if (!strcmp(key, "loss")) next.loss = value / 100;
    else if (!strcmp(key, "delay_ms")) next.delay_ms = (long)value;
    else if (!strcmp(key, "jitter_ms")) next.jitter_ms = (long)value;
    else if (!strcmp(key, "reorder")) next.reorder = value / 100;
    else if (!strcmp(key, "duplicate")) next.duplicate = value / 100;
    else if (!strcmp(key, "limit")) next.limit = (long)value;
    else fprintf(stderr, "faults-link: unknown key %s ignored\n", key);
  }
  fclose(f);
  config = next;
  memset(counts, 0, sizeof counts);
}

static void write_counters(FILE *f, const char *prefix, const struct counters *c) {
  fprintf(f, "%sin=%lu %sout=%lu %slost=%lu %sduplicated=%lu %searly=%lu %soverflow=%lu %swrite_errors=%lu",
          prefix, c->in, prefix, c->out, prefix, c->lost, prefix, c->duplicated, prefix, c->early, prefix,
          c->overflow, prefix, c->write_errors);
}

static void write_stats(void) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", stats_path);
  FILE *f = fopen(tmp, "we");
  if (!f) die(tmp);
  for (int d = 0; d < 2; d++) {
    fprintf(f, "direction=%s waiting=%zu ", d == 0 ? "a_to_b" : "b_to_a", heap_count);
    write_counters(f, "", &counts[d][0]);
    fputc(' ', f);
    write_counters(f, "udp_", &counts[d][1]);
    fputc('\n', f);
  }
  fclose(f);
  if (rename(tmp, stats_path) != 0) die("rename");
}

static int earlier(const struct packet *x, const struct packet *y) {
  return x->due < y->due || (x->due == y->due && x->order < y->order);
}

static void heap_push(struct packet p) {
  if (heap_count == heap_capacity) {
    heap_capacity = heap_capacity ? heap_capacity * 2 : 1024;
    heap = realloc(heap, heap_capacity * sizeof *heap);
    if (!heap) die("realloc");
  }
  size_t i = heap_count++;
  heap[i] = p;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(&heap[i], &heap[parent])) break;
    struct packet t = heap[i];
    heap[i] = heap[parent];
    heap[parent] = t;
    i = parent;
  }
}

static struct packet heap_pop(void) {
  struct packet top = heap[0];
  heap[0] = heap[--heap_count];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < heap_count && earlier(&heap[l], &heap[m])) m = l;
    if (r < heap_count && earlier(&heap[r], &heap[m])) m = r;
    if (m == i) break;
    struct packet t = heap[i];
    heap[i] = heap[m];
    heap[m] = t;
    i = m;
  }
  return top;
}

static int open_tun(const char *netns, const char *name) {
  int ns = open(netns, O_RDONLY | O_CLOEXEC);
  if (ns < 0) die(netns);
  if (setns(ns, CLONE_NEWNET) != 0) die("setns");
  close(ns);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) die("/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) die("TUNSETIFF");
  return fd;
}

static int is_udp4(const unsigned char *p, size_t n) { return n >= 20 && (p[0] >> 4) == 4 && p[9] == 17; }

static void enqueue(int direction, const unsigned char *bytes, size_t length, uint64_t due) {
  int udp = is_udp4(bytes, length);
  if ((long)heap_count >= config.limit) {
    counts[direction][0].overflow++;
    if (udp) counts[direction][1].overflow++;
    return;
  }
  struct packet p = {due, next_order++, direction == 0 ? 1 : 0, udp, length, malloc(length)};
  if (!p.bytes) die("malloc");
  memcpy(p.bytes, bytes, length);
  heap_push(p);
}

// One packet from the device of `direction`'s sending side.
static void arrived(int direction, const unsigned char *bytes, size_t length, uint64_t now) {
  int udp = is_udp4(bytes, length);
  struct counters *all = &counts[direction][0], *u = &counts[direction][1];
  all->in++;
  if (udp) u->in++;
  if (config.loss > 0 && uniform() < config.loss) {
    all->lost++;
    if (udp) u->lost++;
    return;
  }
  int64_t delay = config.delay_ms * 1000000LL;
  if (config.jitter_ms > 0) delay += (int64_t)((uniform() * 2 - 1) * (double)config.jitter_ms * 1e6);
  if (delay < 0) delay = 0;
  if (config.reorder > 0 && delay > 0 && uniform() < config.reorder) {
    delay = 0;
    all->early++;
    if (udp) u->early++;
  }
  enqueue(direction, bytes, length, now + (uint64_t)delay);
  if (config.duplicate > 0 && uniform() < config.duplicate) {
    all->duplicated++;
    if (udp) u->duplicated++;
    enqueue(direction, bytes, length, now + (uint64_t)delay);
  }
}

int main(int argc, char **argv) {
  const char *ns_a = NULL, *dev_a = NULL, *ns_b = NULL, *dev_b = NULL;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--ns-a")) ns_a = argv[i + 1];
    else if (!strcmp(argv[i], "--dev-a")) dev_a = argv[i + 1];
    else if (!strcmp(argv[i], "--ns-b")) ns_b = argv[i + 1];
    else if (!strcmp(argv[i], "--dev-b")) dev_b = argv[i + 1];
    else if (!strcmp(argv[i], "--config")) config_path = argv[i + 1];
    else if (!strcmp(argv[i], "--stats")) stats_path = argv[i + 1];
    else if (!strcmp(argv[i], "--seed")) rng_state = strtoull(argv[i + 1], NULL, 10) | 1;
    else {
      fprintf(stderr, "faults-link: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (!ns_a || !dev_a || !ns_b || !dev_b || !config_path || !stats_path) {
    fprintf(stderr, "usage: faults-link --ns-a PATH --dev-a NAME --ns-b PATH --dev-b NAME --config FILE "
                    "--stats FILE [--seed N]\n");
    return 2;
  }
  read_config();
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR1);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  if (sigprocmask(SIG_BLOCK, &signals, NULL) != 0) die("sigprocmask");
  int sfd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  int fds[2] = {open_tun(ns_a, dev_a), open_tun(ns_b, dev_b)};
  printf("ready\n");
  fflush(stdout);

  static unsigned char buffer[MAX_PACKET];
  for (;;) {
    uint64_t now = now_ns();
    while (heap_count > 0 && heap[0].due <= now) {
      struct packet p = heap_pop();
      int direction = p.to == 1 ? 0 : 1;
      if (write(fds[p.to], p.bytes, p.length) == (ssize_t)p.length) {
        counts[direction][0].out++;
        if (p.udp) counts[direction][1].out++;
      } else {
        counts[direction][0].write_errors++;
        if (p.udp) counts[direction][1].write_errors++;
      }
      free(p.bytes);
    }
    struct timespec timeout, *wait = NULL;
    if (heap_count > 0) {
      uint64_t left = heap[0].due - now;
      timeout.tv_sec = (time_t)(left / 1000000000ULL);
      timeout.tv_nsec = (long)(left % 1000000000ULL);
      wait = &timeout;
    }
    struct pollfd entries[3] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}, {sfd, POLLIN, 0}};
    if (ppoll(entries, 3, wait, NULL) < 0) {
      if (errno == EINTR) continue;
      die("ppoll");
    }
    if (entries[2].revents & POLLIN) {
      struct signalfd_siginfo info;
      while (read(sfd, &info, sizeof info) == (ssize_t)sizeof info) {
        switch (info.ssi_signo) {
        case SIGHUP: read_config(); break;
        case SIGUSR1: write_stats(); break;
        default: return 0;
        }
      }
    }
    now = now_ns();
    for (int d = 0; d < 2; d++) {
      if (!(entries[d].revents & POLLIN)) continue;
      for (int burst = 0; burst < 256; burst++) {
        ssize_t n = read(fds[d], buffer, sizeof buffer);
        if (n <= 0) break;
        arrived(d, buffer, (size_t)n, now);
      }
    }
  }
}
