// io_uring through liburing: the ring, the SQEs the loop prepares, submitting
// and reaping. Datagram messages are in shim_uring_msg.c, provided buffers in
// shim_uring_bufring.c.
#include "shim_uring_internal.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

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
  UP_TSAN_NEW_MEMORY(r->ring.sq.ring_ptr, r->ring.sq.ring_sz);
  UP_TSAN_NEW_MEMORY(r->ring.cq.ring_ptr, r->ring.cq.ring_sz);
  UP_TSAN_NEW_MEMORY(r->ring.sq.sqes, r->ring.sq.ring_entries * sizeof(struct io_uring_sqe));
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
