// Datagrams with their peers' addresses: one allocation holding a msghdr,
// its iovec, a sockaddr_storage and the data, and the RECVMSG and SENDMSG
// SQEs that use it.
#include "shim_uring_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

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
