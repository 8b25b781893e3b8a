// CUserProtoShim: the few things Swift cannot import cleanly.
//
// - The packed 12-byte `efd_mask` ABI struct of the EFD_MASK eventfd proposal,
//   with its size and offsets asserted at compile time.
// - eventfd2 through the raw syscall (sys/eventfd.h is not in SwiftGlibc).
// - accept4 and thread naming helpers.
// - A thin, opaque wrapper over liburing. liburing.h is included only by the
//   .c files (through shim_uring_internal.h): its sys/select.h clashes with
//   SwiftGlibc.
//
// Implemented by shim_mask.c (EFD_MASK, eventfd2, fork generation),
// shim_posix.c (accept4, thread names), shim_uring.c (the ring, SQEs,
// submitting and reaping), shim_uring_msg.c (datagram messages) and
// shim_uring_bufring.c (provided buffers).
//
// Every function returns -errno on failure unless documented otherwise.
#ifndef C_USERPROTO_SHIM_H
#define C_USERPROTO_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - EFD_MASK ABI

/// The EFD_MASK flag of eventfd2 (1 << 1 in the seed patch).
#define UP_EFD_MASK (1 << 1)

/// The seed's `struct efd_mask`: written and read as exactly 12 bytes.
typedef struct __attribute__((packed)) up_efd_mask {
  uint32_t events;
  uint64_t data;
} up_efd_mask;

_Static_assert(sizeof(up_efd_mask) == 12, "efd_mask must be 12 bytes");
_Static_assert(offsetof(up_efd_mask, events) == 0, "events at offset 0");
_Static_assert(offsetof(up_efd_mask, data) == 4, "data at offset 4");

extern const int up_EFD_CLOEXEC;
extern const int up_EFD_NONBLOCK;

/// eventfd2(2) by raw syscall. Returns the fd or -errno.
int up_eventfd2(unsigned int initval, int flags);
/// Writes one 12-byte efd_mask. Returns bytes written or -errno.
ssize_t up_efd_mask_write(int fd, uint32_t events, uint64_t data);
/// Reads one 12-byte efd_mask. Returns bytes read or -errno.
ssize_t up_efd_mask_read(int fd, uint32_t *events, uint64_t *data);

/// How many fork()s separate this process from the one that first called
/// this function: 0 there, incremented in each child (pthread_atfork).
/// The first call registers the handler; later calls are one atomic load.
unsigned long up_fork_generation(void);

// MARK: - Sockets and threads
// (The tests' C helpers, select, SCM_RIGHTS, pipe2 and seccomp, are in
// Tests/CUserProtoTestShim.)

/// accept4(2) with SOCK_CLOEXEC|SOCK_NONBLOCK. Returns the fd or -errno.
int up_accept(int fd);
/// Names the calling thread (at most 15 bytes are kept).
void up_set_thread_name(const char *name);

// MARK: - io_uring (liburing, opaque)

typedef struct up_ring up_ring;

typedef struct up_cqe {
  uint64_t user_data;
  int32_t res;
  uint32_t flags;
} up_cqe;

/// Creates a ring with `entries` SQEs. On failure returns NULL and stores
/// -errno in *error.
up_ring *up_ring_create(unsigned entries, unsigned flags, int *error);
void up_ring_destroy(up_ring *ring);
/// Enables a ring created with IORING_SETUP_R_DISABLED; with
/// IORING_SETUP_SINGLE_ISSUER the calling thread becomes its submitter.
int up_ring_enable(up_ring *ring);
/// The IORING_SETUP_* flags the ring was created with.
uint32_t up_ring_setup_flags(const up_ring *ring);
/// 1 if the kernel supports the io_uring opcode, 0 if not, -errno on failure.
int up_ring_opcode_supported(up_ring *ring, int opcode);

int up_ring_prep_poll_add(up_ring *ring, int fd, uint32_t events,
                          uint64_t user_data, int multishot);
int up_ring_prep_poll_remove(up_ring *ring, uint64_t target_user_data,
                             uint64_t user_data);

int up_ring_prep_accept(up_ring *ring, int fd, int multishot, uint64_t user_data);
/// `addr` must stay valid until the completion arrives.
int up_ring_prep_connect(up_ring *ring, int fd, const void *addr,
                         uint32_t addrlen, uint64_t user_data);
/// recv(2) with `flags` (MSG_TRUNC for a datagram: the completion reports
/// its real length, which may exceed `len`). `buf` must stay valid until the
/// completion arrives.
int up_ring_prep_recv(up_ring *ring, int fd, void *buf, size_t len, int flags,
                      uint64_t user_data);
/// Multishot recv selecting buffers from buffer group `group`.
int up_ring_prep_recv_multishot(up_ring *ring, int fd, uint16_t group,
                                uint64_t user_data);
/// send(2) with MSG_NOSIGNAL. `buf` must stay valid until completion.
int up_ring_prep_send(up_ring *ring, int fd, const void *buf, size_t len,
                      uint64_t user_data);
int up_ring_prep_read(up_ring *ring, int fd, void *buf, size_t len,
                      uint64_t user_data);

/// A datagram with its peer's address, for recvmsg(2)/sendmsg(2) and their
/// io_uring forms: one allocation holding the msghdr, its iovec, a
/// sockaddr_storage and `capacity` bytes of data. It must stay valid until
/// the operation using it completes.
typedef struct up_msg up_msg;
up_msg *up_msg_alloc(size_t capacity);
void up_msg_free(up_msg *msg);
void *up_msg_data(up_msg *msg);
/// Before a receive: the whole buffer and address space are offered.
void up_msg_prepare_receive(up_msg *msg);
/// Before a send of the first `length` data bytes to `addr`.
void up_msg_prepare_send(up_msg *msg, size_t length, const void *addr,
                         uint32_t addrlen);
/// After a receive: the sender's address and its length.
const void *up_msg_address(const up_msg *msg, uint32_t *addrlen);
/// After a receive: the msghdr's flags (MSG_TRUNC: the datagram was cut).
int up_msg_flags(const up_msg *msg);
/// recvmsg(2) with MSG_TRUNC: the completion reports the datagram's real
/// length, which exceeds the capacity when it was cut (and the msghdr's
/// flags then have MSG_TRUNC).
int up_ring_prep_recvmsg(up_ring *ring, int fd, up_msg *msg,
                         uint64_t user_data);
int up_ring_prep_sendmsg(up_ring *ring, int fd, up_msg *msg,
                         uint64_t user_data);
/// Cancels the request with `target_user_data`.
int up_ring_prep_cancel(up_ring *ring, uint64_t target_user_data,
                        uint64_t user_data);
/// The IORING_FEAT_* bits of the ring.
uint32_t up_ring_features(const up_ring *ring);

/// A ring of provided buffers (IORING_REGISTER_PBUF_RING).
typedef struct up_bufring up_bufring;
up_bufring *up_bufring_create(up_ring *ring, unsigned entries,
                              unsigned buffer_size, uint16_t group,
                              int *error);
/// Frees a buffer ring's memory, after the ring itself was destroyed (which
/// unregisters it: the kernel no longer uses the buffers).
void up_bufring_free(up_bufring *br);
/// The memory of buffer `bid`.
void *up_bufring_buffer(up_bufring *br, uint16_t bid);
/// Hands buffer `bid` back to the kernel.
void up_bufring_recycle(up_bufring *br, uint16_t bid);

/// SQEs queued and not yet submitted.
unsigned up_ring_sq_ready(const up_ring *ring);
/// Submits queued SQEs. Returns the number submitted or -errno.
int up_ring_submit(up_ring *ring);
/// Submits and waits for at least `wait_nr` CQEs, up to timeout_us
/// (-1: no timeout). Returns >= 0 or -errno (-ETIME on timeout).
int up_ring_submit_and_wait(up_ring *ring, unsigned wait_nr, long timeout_us);
/// Copies up to `max` ready CQEs out and marks them seen. Returns the count.
unsigned up_ring_reap(up_ring *ring, up_cqe *out, unsigned max);

extern const uint32_t up_IORING_CQE_F_MORE;
extern const uint32_t up_IORING_CQE_BUFFER_SHIFT;
extern const uint32_t up_IORING_SETUP_COOP_TASKRUN;
extern const uint32_t up_IORING_SETUP_SINGLE_ISSUER;
extern const uint32_t up_IORING_SETUP_DEFER_TASKRUN;
extern const uint32_t up_IORING_SETUP_R_DISABLED;
extern const uint32_t up_IORING_CQE_F_BUFFER;
extern const int up_IORING_OP_ACCEPT;
extern const int up_IORING_OP_POLL_ADD;
extern const int up_IORING_OP_ASYNC_CANCEL;
extern const int up_IORING_OP_CONNECT;
extern const int up_IORING_OP_RECV;
extern const int up_IORING_OP_SEND;
extern const int up_IORING_OP_RECVMSG;
extern const int up_IORING_OP_SENDMSG;
extern const int up_IORING_OP_READ;

#ifdef __cplusplus
}
#endif

#endif
