// CUserProtoTestShim: C helpers for the tests and the test helper programs
// only (never linked into a product): select(2) and SCM_RIGHTS, whose macros
// do not import into Swift, pipe2(2), and a seccomp filter that refuses
// io_uring.
//
// Every function returns -errno on failure unless documented otherwise.
#ifndef C_USERPROTO_TEST_SHIM_H
#define C_USERPROTO_TEST_SHIM_H

#ifdef __cplusplus
extern "C" {
#endif

/// select(2) on one fd with a timeout in microseconds (-1: block).
/// Returns a bit set: 1 readable, 2 writable, 4 exceptional; or -errno.
int up_select_one(int fd, long timeout_us);

/// pipe2(2) with O_CLOEXEC. Returns 0 or -errno.
int up_pipe_cloexec(int fds[2]);

/// Sends one fd over a connected AF_UNIX socket with SCM_RIGHTS.
int up_send_fd(int sock, int fd);
/// Receives one fd (made close-on-exec) sent with SCM_RIGHTS.
int up_recv_fd(int sock);

/// Installs a seccomp filter making the io_uring syscalls fail with `err`
/// in this process and its children. Returns 0 or -errno.
int up_seccomp_deny_io_uring(int err);

#ifdef __cplusplus
}
#endif

#endif
