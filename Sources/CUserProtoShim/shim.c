#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "CUserProtoShim.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <liburing.h>
#include <stddef.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

const int up_EFD_CLOEXEC = O_CLOEXEC;
const int up_EFD_NONBLOCK = O_NONBLOCK;

static inline int neg_errno(void) { return -errno; }

int up_eventfd2(unsigned int initval, int flags) {
  long r = syscall(SYS_eventfd2, initval, flags);
  return r < 0 ? neg_errno() : (int)r;
}

ssize_t up_efd_mask_write(int fd, uint32_t events, uint64_t data) {
  up_efd_mask m = {.events = events, .data = data};
  ssize_t r;
  do {
    r = write(fd, &m, sizeof m);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? neg_errno() : r;
}

static unsigned long up_forks;
static pthread_once_t up_fork_once = PTHREAD_ONCE_INIT;

static void up_fork_child(void) { __atomic_add_fetch(&up_forks, 1, __ATOMIC_RELAXED); }

static void up_fork_register(void) { pthread_atfork(NULL, NULL, up_fork_child); }

unsigned long up_fork_generation(void) {
  pthread_once(&up_fork_once, up_fork_register);
  return __atomic_load_n(&up_forks, __ATOMIC_RELAXED);
}

ssize_t up_efd_mask_read(int fd, uint32_t *events, uint64_t *data) {
  up_efd_mask m;
  memset(&m, 0, sizeof m);
  ssize_t r;
  do {
    r = read(fd, &m, sizeof m);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return neg_errno();
  *events = m.events;
  *data = m.data;
  return r;
}

int up_accept(int fd) {
  int r;
  do {
    r = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  } while (r < 0 && errno == EINTR);
  return r < 0 ? neg_errno() : r;
}

void up_set_thread_name(const char *name) {
  char buf[16];
  strncpy(buf, name, sizeof buf - 1);
  buf[sizeof buf - 1] = 0;
  pthread_setname_np(pthread_self(), buf);
}

// MARK: - io_uring

struct up_ring {
  struct io_uring ring;
  struct io_uring_probe *probe;
};

up_ring *up_ring_create(unsigned entries, unsigned flags, int *error) {
  up_ring *r = calloc(1, sizeof *r);
  if (!r) {
    *error = -ENOMEM;
    return NULL;
  }
  // liburing creates the ring fd close-on-exec.
  int rc = io_uring_queue_init(entries, &r->ring, flags);
  if (rc < 0) {
    free(r);
    *error = rc;
    return NULL;
  }
  r->probe = io_uring_get_probe_ring(&r->ring);
  *error = 0;
  return r;
}

void up_ring_destroy(up_ring *r) {
  if (!r) return;
  if (r->probe) io_uring_free_probe(r->probe);
  io_uring_queue_exit(&r->ring);
  free(r);
}

int up_ring_enable(up_ring *r) {
  // liburing 2.3 declares io_uring_enable_rings but does not export it.
  long rc = syscall(__NR_io_uring_register, r->ring.ring_fd,
                    IORING_REGISTER_ENABLE_RINGS, NULL, 0);
  return rc < 0 ? neg_errno() : 0;
}

uint32_t up_ring_setup_flags(const up_ring *r) { return r->ring.flags; }

int up_ring_opcode_supported(up_ring *r, int opcode) {
  if (!r->probe) return -ENOSYS;
  return io_uring_opcode_supported(r->probe, opcode) ? 1 : 0;
}

static struct io_uring_sqe *get_sqe(up_ring *r) {
  return io_uring_get_sqe(&r->ring);
}

int up_ring_prep_poll_add(up_ring *r, int fd, uint32_t events,
                          uint64_t user_data, int multishot) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  if (multishot)
    io_uring_prep_poll_multishot(sqe, fd, events);
  else
    io_uring_prep_poll_add(sqe, fd, events);
  io_uring_sqe_set_data64(sqe, user_data);
  return 0;
}

int up_ring_prep_poll_remove(up_ring *r, uint64_t target, uint64_t user_data) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_poll_remove(sqe, target);
  io_uring_sqe_set_data64(sqe, user_data);
  return 0;
}

int up_ring_prep_accept(up_ring *r, int fd, int multishot, uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  if (multishot)
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL,
                                   SOCK_CLOEXEC | SOCK_NONBLOCK);
  else
    io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

int up_ring_prep_connect(up_ring *r, int fd, const void *addr, uint32_t len,
                         uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_connect(sqe, fd, (const struct sockaddr *)addr, len);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

int up_ring_prep_recv(up_ring *r, int fd, void *buf, size_t len, int flags,
                      uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_recv(sqe, fd, buf, len, flags);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

int up_ring_prep_recv_multishot(up_ring *r, int fd, uint16_t group,
                                uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = group;
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

int up_ring_prep_send(up_ring *r, int fd, const void *buf, size_t len,
                      uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

struct up_msg {
  struct msghdr header;
  struct iovec vector;
  struct sockaddr_storage address;
  size_t capacity;
  unsigned char data[];
};

up_msg *up_msg_alloc(size_t capacity) {
  up_msg *m = calloc(1, sizeof(up_msg) + (capacity ? capacity : 1));
  if (!m) return NULL;
  m->capacity = capacity;
  m->header.msg_iov = &m->vector;
  m->header.msg_iovlen = 1;
  m->header.msg_name = &m->address;
  m->vector.iov_base = m->data;
  return m;
}

void up_msg_free(up_msg *m) { free(m); }
void *up_msg_data(up_msg *m) { return m->data; }

void up_msg_prepare_receive(up_msg *m) {
  m->header.msg_namelen = sizeof m->address;
  m->header.msg_control = NULL;
  m->header.msg_controllen = 0;
  m->header.msg_flags = 0;
  m->vector.iov_len = m->capacity;
}

void up_msg_prepare_send(up_msg *m, size_t length, const void *addr,
                         uint32_t addrlen) {
  if (addrlen > sizeof m->address) addrlen = sizeof m->address;
  memcpy(&m->address, addr, addrlen);
  m->header.msg_namelen = addrlen;
  m->header.msg_control = NULL;
  m->header.msg_controllen = 0;
  m->header.msg_flags = 0;
  m->vector.iov_len = length < m->capacity ? length : m->capacity;
}

const void *up_msg_address(const up_msg *m, uint32_t *addrlen) {
  *addrlen = m->header.msg_namelen;
  return &m->address;
}

int up_msg_flags(const up_msg *m) { return m->header.msg_flags; }

int up_ring_prep_recvmsg(up_ring *r, int fd, up_msg *m, uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_recvmsg(sqe, fd, &m->header, MSG_TRUNC);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

int up_ring_prep_sendmsg(up_ring *r, int fd, up_msg *m, uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_sendmsg(sqe, fd, &m->header, MSG_NOSIGNAL);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

int up_ring_prep_read(up_ring *r, int fd, void *buf, size_t len, uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_read(sqe, fd, buf, (unsigned)len, 0);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

int up_ring_prep_cancel(up_ring *r, uint64_t target, uint64_t ud) {
  struct io_uring_sqe *sqe = get_sqe(r);
  if (!sqe) return -EBUSY;
  io_uring_prep_cancel64(sqe, target, 0);
  io_uring_sqe_set_data64(sqe, ud);
  return 0;
}

uint32_t up_ring_features(const up_ring *r) { return r->ring.features; }

struct up_bufring {
  struct io_uring_buf_ring *ring;
  size_t ring_bytes;
  unsigned char *buffers;
  unsigned entries;
  unsigned size;
  uint16_t group;
};

up_bufring *up_bufring_create(up_ring *r, unsigned entries, unsigned size,
                              uint16_t group, int *error) {
  up_bufring *br = calloc(1, sizeof *br);
  if (!br) {
    *error = -ENOMEM;
    return NULL;
  }
  br->entries = entries;
  br->size = size;
  br->group = group;
  br->ring_bytes = entries * sizeof(struct io_uring_buf);
  void *mem = mmap(NULL, br->ring_bytes, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) {
    *error = neg_errno();
    free(br);
    return NULL;
  }
  br->ring = mem;
  br->buffers = malloc((size_t)entries * size);
  if (!br->buffers) {
    munmap(mem, br->ring_bytes);
    free(br);
    *error = -ENOMEM;
    return NULL;
  }
  io_uring_buf_ring_init(br->ring);
  struct io_uring_buf_reg reg = {
      .ring_addr = (unsigned long)mem, .ring_entries = entries, .bgid = group};
  int rc = io_uring_register_buf_ring(&r->ring, &reg, 0);
  if (rc < 0) {
    free(br->buffers);
    munmap(mem, br->ring_bytes);
    free(br);
    *error = rc;
    return NULL;
  }
  int mask = io_uring_buf_ring_mask(entries);
  for (unsigned i = 0; i < entries; i++)
    io_uring_buf_ring_add(br->ring, br->buffers + (size_t)i * size, size,
                          (unsigned short)i, mask, (int)i);
  io_uring_buf_ring_advance(br->ring, (int)entries);
  *error = 0;
  return br;
}

void up_bufring_free(up_bufring *br) {
  if (!br) return;
  munmap(br->ring, br->ring_bytes);
  free(br->buffers);
  free(br);
}

void *up_bufring_buffer(up_bufring *br, uint16_t bid) {
  return br->buffers + (size_t)bid * br->size;
}

void up_bufring_recycle(up_bufring *br, uint16_t bid) {
  io_uring_buf_ring_add(br->ring, up_bufring_buffer(br, bid), br->size, bid,
                        io_uring_buf_ring_mask(br->entries), 0);
  io_uring_buf_ring_advance(br->ring, 1);
}

unsigned up_ring_sq_ready(const up_ring *r) { return io_uring_sq_ready(&r->ring); }

int up_ring_submit(up_ring *r) {
  int rc;
  do {
    rc = io_uring_submit(&r->ring);
  } while (rc == -EINTR);
  return rc;
}

int up_ring_submit_and_wait(up_ring *r, unsigned wait_nr, long timeout_us) {
  struct io_uring_cqe *cqe = NULL;
  if (timeout_us < 0) {
    int rc;
    do {
      rc = io_uring_submit_and_wait(&r->ring, wait_nr);
    } while (rc == -EINTR);
    return rc;
  }
  struct __kernel_timespec ts = {.tv_sec = timeout_us / 1000000,
                                 .tv_nsec = (timeout_us % 1000000) * 1000};
  int rc = io_uring_submit_and_wait_timeout(&r->ring, &cqe, wait_nr, &ts, NULL);
  if (rc == -EINTR) rc = 0;
  return rc;
}

unsigned up_ring_reap(up_ring *r, up_cqe *out, unsigned max) {
  unsigned n = 0;
  struct io_uring_cqe *cqe;
  while (n < max && io_uring_peek_cqe(&r->ring, &cqe) == 0 && cqe) {
    out[n].user_data = io_uring_cqe_get_data64(cqe);
    out[n].res = cqe->res;
    out[n].flags = cqe->flags;
    n++;
    io_uring_cqe_seen(&r->ring, cqe);
  }
  return n;
}

const uint32_t up_IORING_CQE_F_MORE = IORING_CQE_F_MORE;
const uint32_t up_IORING_CQE_BUFFER_SHIFT = IORING_CQE_BUFFER_SHIFT;
const uint32_t up_IORING_SETUP_COOP_TASKRUN = IORING_SETUP_COOP_TASKRUN;
const uint32_t up_IORING_SETUP_SINGLE_ISSUER = IORING_SETUP_SINGLE_ISSUER;
const uint32_t up_IORING_SETUP_DEFER_TASKRUN = IORING_SETUP_DEFER_TASKRUN;
const uint32_t up_IORING_SETUP_R_DISABLED = IORING_SETUP_R_DISABLED;
const uint32_t up_IORING_CQE_F_BUFFER = IORING_CQE_F_BUFFER;
const int up_IORING_OP_ACCEPT = IORING_OP_ACCEPT;
const int up_IORING_OP_POLL_ADD = IORING_OP_POLL_ADD;
const int up_IORING_OP_ASYNC_CANCEL = IORING_OP_ASYNC_CANCEL;
const int up_IORING_OP_CONNECT = IORING_OP_CONNECT;
const int up_IORING_OP_RECV = IORING_OP_RECV;
const int up_IORING_OP_SEND = IORING_OP_SEND;
const int up_IORING_OP_RECVMSG = IORING_OP_RECVMSG;
const int up_IORING_OP_SENDMSG = IORING_OP_SENDMSG;
const int up_IORING_OP_READ = IORING_OP_READ;
