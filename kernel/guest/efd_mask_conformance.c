// SPDX-License-Identifier: MIT
/*
 * efd_mask_conformance: checks the EFD_MASK eventfd ABI of the running kernel
 * and that every in-kernel eventfd consumer that user space can reach in a
 * small guest refuses a mask-mode eventfd, each with a positive control.
 *
 * Build: gcc -static -O2 -Wall -Wextra -o efd_mask_conformance efd_mask_conformance.c
 *
 * The full run includes an SMP stress (test_smp_stress): a writer alternating
 * {0}/{IN} records, a poll(2) and an edge-triggered epoll waiter that must
 * be woken by every IN write, and a reader that must never see a torn
 * (events, data) pair.  Boot the guest with 2 or more CPUs for it.
 *
 * Modes:
 *   (none)             full conformance; the kernel must have EFD_MASK
 *   --expect-fallback  the kernel must NOT have EFD_MASK: checks that
 *                      eventfd2(EFD_MASK) fails, that the probe chooses the
 *                      fallback, and runs the counter-eventfd controls
 *   --device PATH      module mode: the same full conformance run on mask
 *                      fds from open(PATH, O_RDWR) (the efd_mask module's
 *                      /dev/efd_mask) instead of eventfd2(EFD_MASK), with
 *                      device checks (mode 0666, each open a new 0/0 mask,
 *                      O_CLOEXEC/O_NONBLOCK, O_RDONLY/O_WRONLY refused,
 *                      any user may open) in place of the eventfd2 flag
 *                      checks; io_uring, aio and memcg must refuse the
 *                      module's fd as they refuse a mask-mode eventfd
 *   --probe            only the backend probe, with the same checks as
 *                      MaskCore's (KernelProbe.swift); prints the
 *                      decision. With --expect-kernel / --expect-module /
 *                      --expect-fallback the exit status says whether it
 *                      matched (--device PATH probes the device).
 *   --strict           a skipped check counts as a failure
 *   --no-memcg-v1      the kernel was built without CONFIG_MEMCG_V1 (the
 *                      harness read its config): the memcg section checks
 *                      that cgroup v1 memory is absent instead of skipping
 *
 * Output is TAP-like ("ok N - ...", "not ok N - ...", "# diag") and ends
 * with a plan line and one summary line:
 *   efd-mask-kernel: P passed, F failed, S skipped
 * (efd-mask-module: ... with --device, efd-mask-fallback: ... in
 * --expect-fallback mode, efd-mask-probe: ... for --probe). Exit status 0 when nothing failed.
 *
 * Uses raw system calls only (no liburing, no libaio), and defines the
 * EFD_MASK ABI itself because the host's headers predate it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/aio_abi.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- the ABI under test (include/uapi/linux/eventfd.h of the patch) ---- */
#define T_EFD_SEMAPHORE (1 << 0)
#define T_EFD_MASK (1 << 1)
#define T_EFD_CLOEXEC O_CLOEXEC
#define T_EFD_NONBLOCK O_NONBLOCK

struct t_efd_mask {
	uint32_t events;
	uint64_t data;
} __attribute__((packed));

_Static_assert(sizeof(struct t_efd_mask) == 12, "efd_mask is 12 bytes");
_Static_assert(offsetof(struct t_efd_mask, data) == 4, "data at offset 4");

#define VALID_EVENTS (POLLIN | POLLPRI | POLLOUT | POLLERR | POLLHUP)
_Static_assert(VALID_EVENTS == 0x1f, "the five poll bits are 0x1f");

/* ---- tiny TAP reporter ---------------------------------------------------- */
static int n_tests, n_fail, n_skip;
static bool strict;

static void vreport(int pass, const char *skip_reason, const char *fmt, va_list ap)
{
	char msg[512];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	n_tests++;
	if (skip_reason) {
		n_skip++;
		printf("ok %d - %s # SKIP %s\n", n_tests, msg, skip_reason);
	} else if (pass) {
		printf("ok %d - %s\n", n_tests, msg);
	} else {
		n_fail++;
		printf("not ok %d - %s\n", n_tests, msg);
	}
	fflush(stdout);
}

__attribute__((format(printf, 2, 3))) static int check(int pass, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(pass, NULL, fmt, ap);
	va_end(ap);
	return pass;
}

__attribute__((format(printf, 2, 3))) static void skip(const char *why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(1, why, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 1, 2))) static void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
}

static const char *ename(int e)
{
	const char *n = strerrorname_np(e);

	return n ? n : "E?";
}

/* ---- small helpers -------------------------------------------------------- */
static int efd_create(unsigned int initval, int flags)
{
	return (int)syscall(SYS_eventfd2, initval, flags);
}

/*
 * --device PATH (module mode): mask fds come from open(PATH, O_RDWR | ...)
 * (the efd_mask module's /dev/efd_mask) instead of eventfd2(EFD_MASK).
 */
static const char *device;

/* A new mask fd; `flags` is a subset of T_EFD_CLOEXEC | T_EFD_NONBLOCK. */
static int mask_create(int flags)
{
	if (device)
		return open(device, O_RDWR | (flags & (O_CLOEXEC | O_NONBLOCK)));
	return efd_create(0, T_EFD_MASK | flags);
}

/* What makes the mask fds, for messages. */
static const char *mask_source(void)
{
	return device ? device : "eventfd2(EFD_MASK)";
}

static ssize_t mask_write(int fd, uint32_t events, uint64_t data)
{
	struct t_efd_mask m = { .events = events, .data = data };

	return write(fd, &m, sizeof(m));
}

/* 1 when the read returned 12 bytes that equal (events, data). */
static int mask_is(int fd, uint32_t events, uint64_t data)
{
	struct t_efd_mask m = { 0xdeadbeef, 0xdeadbeefdeadbeefULL };

	if (read(fd, &m, sizeof(m)) != (ssize_t)sizeof(m))
		return 0;
	return m.events == events && m.data == data;
}

/* revents of a zero-timeout poll(2) asking for `req`; -1 on error. */
static int poll_now(int fd, short req)
{
	struct pollfd p = { .fd = fd, .events = req };
	int r = poll(&p, 1, 0);

	if (r < 0)
		return -1;
	return r == 0 ? 0 : p.revents;
}

/* events of a zero-timeout epoll_wait; 0 when none; -1 on error. */
static int64_t epoll_now(int ep)
{
	struct epoll_event e[2];
	int r = epoll_wait(ep, e, 2, 0);

	if (r < 0)
		return -1;
	if (r == 0)
		return 0;
	if (r != 1)
		return -2;
	return e[0].events;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait until `pid` is asleep (state S) in the kernel, up to 3 s. */
static int wait_sleeping(pid_t pid)
{
	char path[64], buf[512];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 3000; i++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n;
		char *rp;

		if (fd < 0)
			return 0;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			return 0;
		buf[n] = 0;
		rp = strrchr(buf, ')');
		if (rp && rp[1] == ' ' && rp[2] == 'S')
			return 1;
		msleep(1);
	}
	return 0;
}

/* waitpid with a deadline; returns the exit status, or -1 (then kills). */
static int wait_exit(pid_t pid, int timeout_ms)
{
	int st;

	for (int i = 0; i < timeout_ms; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0)
			return -1;
		msleep(1);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return (int)n;
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int e;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	e = errno;
	close(fd);
	if (n < 0)
		return -e;
	return 0;
}

static uint64_t counter_read_nb(int efd)
{
	uint64_t v = 0;

	if (read(efd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		return 0;
	return v;
}

/* Wait up to timeout_ms for a counter eventfd to become readable and read it. */
static uint64_t counter_wait(int efd, int timeout_ms)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) != 1)
		return 0;
	return counter_read_nb(efd);
}

/* ---- the probe: MaskCore's checks (Sources/MaskCore/KernelProbe.swift) ---- */
/*
 * The same sequence of checks as KernelProbe.check() in MaskCore, in the same
 * order and with the same values, so the C probe and the Swift probe decide
 * alike on any kernel; keep the two in sync:
 *   1. eventfd2(0, EFD_MASK|EFD_CLOEXEC|EFD_NONBLOCK) succeeds (with --device:
 *      open(device, O_RDWR|O_CLOEXEC|O_NONBLOCK), as MaskCore's module probe);
 *   2. a 12-byte read of the new fd returns 12 with events 0, and poll
 *      (asking for all five bits) reports nothing;
 *   3. for {IN|PRI|ERR, 0x0123456789abcdef}, {0, 0xfedcba9876543210} and
 *      {OUT|HUP, 42}: the 12-byte write returns 12, the read-back matches,
 *      and poll reports exactly the events;
 *   4. a write with the invalid bit 0x20 (POLLNVAL) fails with EINVAL and the
 *      record still reads {OUT|HUP, 42}.
 */
struct probe_result {
	bool passed; /* the fd behaves like the seed's EFD_MASK */
	char reason[256];
};

/* revents (limited to the five mask bits) of poll(2) asking for all five. */
static int probe_poll(int fd)
{
	struct pollfd p = { .fd = fd, .events = VALID_EVENTS };

	if (poll(&p, 1, 0) < 0)
		return -1;
	return p.revents & VALID_EVENTS;
}

static void probe(struct probe_result *res)
{
	static const struct t_efd_mask sets[] = {
		{ POLLIN | POLLPRI | POLLERR, 0x0123456789abcdefULL },
		{ 0, 0xfedcba9876543210ULL },
		{ POLLOUT | POLLHUP, 42 },
	};
	const size_t nsets = sizeof(sets) / sizeof(sets[0]);
	struct t_efd_mask back = { 0xffffffffu, ~0ULL };
	int fd = mask_create(T_EFD_CLOEXEC | T_EFD_NONBLOCK);
	ssize_t r, w;
	int rev;

	res->passed = false;
	if (fd < 0) {
		snprintf(res->reason, sizeof(res->reason), "%s%s failed: %s (%s)", device ? "open " : "",
			 mask_source(), ename(errno), strerror(errno));
		return;
	}
	r = read(fd, &back, sizeof(back));
	if (r != (ssize_t)sizeof(back)) {
		snprintf(res->reason, sizeof(res->reason), "a 12-byte read of a new fd returned %zd (%s)", r,
			 r < 0 ? ename(errno) : "short");
		goto out;
	}
	if (back.events != 0) {
		snprintf(res->reason, sizeof(res->reason), "a new fd reports events 0x%x instead of none",
			 back.events);
		goto out;
	}
	rev = probe_poll(fd);
	if (rev > 0) {
		snprintf(res->reason, sizeof(res->reason), "poll on a new fd reports 0x%x", rev);
		goto out;
	}
	for (size_t i = 0; i < nsets; i++) {
		w = write(fd, &sets[i], sizeof(sets[i]));
		if (w != (ssize_t)sizeof(sets[i])) {
			snprintf(res->reason, sizeof(res->reason),
				 "12-byte write of events 0x%x returned %zd (%s)",
				 sets[i].events, w, w < 0 ? ename(errno) : "short");
			goto out;
		}
		back = (struct t_efd_mask){ 0xffffffffu, ~0ULL };
		r = read(fd, &back, sizeof(back));
		if (r != (ssize_t)sizeof(back) || back.events != sets[i].events ||
		    back.data != sets[i].data) {
			snprintf(res->reason, sizeof(res->reason),
				 "read-back after writing events 0x%x returned %zd bytes, events 0x%x data 0x%" PRIx64,
				 sets[i].events, r, back.events, (uint64_t)back.data);
			goto out;
		}
		rev = probe_poll(fd);
		if (rev != (int)sets[i].events) {
			snprintf(res->reason, sizeof(res->reason),
				 "poll reported 0x%x for written events 0x%x", rev, sets[i].events);
			goto out;
		}
	}
	/* Invalid bits must be refused and change nothing. */
	w = mask_write(fd, 0x20, 7);
	if (!(w < 0 && errno == EINVAL)) {
		snprintf(res->reason, sizeof(res->reason),
			 "a write with the invalid bit 0x20 was not refused with EINVAL (returned %zd %s)", w,
			 w < 0 ? ename(errno) : "");
		goto out;
	}
	back = (struct t_efd_mask){ 0xffffffffu, ~0ULL };
	r = read(fd, &back, sizeof(back));
	if (back.events != sets[nsets - 1].events || back.data != sets[nsets - 1].data) {
		snprintf(res->reason, sizeof(res->reason),
			 "a refused write changed the state (read %zd: events 0x%x data 0x%" PRIx64 ")", r,
			 back.events, (uint64_t)back.data);
		goto out;
	}
	res->passed = true;
	snprintf(res->reason, sizeof(res->reason),
		 "%s passed MaskCore's probe: new fd 0/none, write/read-back/poll of 3 event sets, "
		 "invalid bit 0x20 refused without a state change",
		 mask_source());
out:
	close(fd);
}

/* The backend the probe chose: in module mode a passing device means "module". */
static const char *probe_backend(const struct probe_result *pr)
{
	return !pr->passed ? "fallback" : device ? "module" : "kernel";
}

static void print_probe(const struct probe_result *pr)
{
	printf("probe: %s: %s\n", probe_backend(pr), pr->reason);
	printf("USERPROTO-PROBE: backend=%s\n", probe_backend(pr));
	fflush(stdout);
}

/* ---- creation and flags ----------------------------------------------------- */
static void test_create(void)
{
	int fd, fl;

	fd = efd_create(0, T_EFD_MASK);
	check(fd >= 0, "eventfd2(0, EFD_MASK) creates an fd%s%s", fd < 0 ? ": " : "",
	      fd < 0 ? ename(errno) : "");
	if (fd >= 0) {
		check(mask_is(fd, 0, 0), "a new mask fd reads back events 0, data 0");
		check(poll_now(fd, POLLIN | POLLPRI | POLLOUT) == 0, "a new mask fd polls as no events");
		close(fd);
	}

	fd = efd_create(42, T_EFD_MASK);
	check(fd >= 0 && mask_is(fd, 0, 0), "initval is ignored in mask mode (eventfd2(42, EFD_MASK) reads 0/0)");
	if (fd >= 0)
		close(fd);

	errno = 0;
	fd = efd_create(0, T_EFD_MASK | T_EFD_SEMAPHORE);
	check(fd < 0 && errno == EINVAL, "EFD_MASK|EFD_SEMAPHORE fails with EINVAL (got %d, %s)", fd,
	      ename(errno));
	if (fd >= 0)
		close(fd);

	errno = 0;
	fd = efd_create(0, T_EFD_MASK | T_EFD_SEMAPHORE | T_EFD_NONBLOCK | T_EFD_CLOEXEC);
	check(fd < 0 && errno == EINVAL, "EFD_MASK|EFD_SEMAPHORE|EFD_NONBLOCK|EFD_CLOEXEC fails with EINVAL");
	if (fd >= 0)
		close(fd);

	errno = 0;
	fd = efd_create(0, T_EFD_MASK | (1 << 2));
	check(fd < 0 && errno == EINVAL, "an unknown flag bit next to EFD_MASK fails with EINVAL");
	if (fd >= 0)
		close(fd);

	fd = efd_create(0, T_EFD_MASK | T_EFD_CLOEXEC | T_EFD_NONBLOCK);
	fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
	check(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC) && fl >= 0 && (fl & O_NONBLOCK) &&
		      (fl & O_ACCMODE) == O_RDWR,
	      "EFD_MASK|EFD_CLOEXEC|EFD_NONBLOCK gives a close-on-exec, non-blocking O_RDWR fd");
	if (fd >= 0)
		close(fd);
}

/* ---- creation through the device (module mode) ------------------------------- */
/* Exit status of `/proc/self/exe --fd-closed N` after an execve: 0 when fd N is closed. */
static int fd_survives_exec(int fd)
{
	char num[16];
	pid_t pid;

	snprintf(num, sizeof(num), "%d", fd);
	pid = fork();
	if (pid == 0) {
		char *args[] = { "efd_mask_conformance", "--fd-closed", num, NULL };

		execv("/proc/self/exe", args);
		_exit(127);
	}
	return pid > 0 ? wait_exit(pid, 5000) : -1;
}

static void test_create_device(void)
{
	struct stat st = { 0 };
	int fd, fd2, fl;
	pid_t pid;

	check(stat(device, &st) == 0 && S_ISCHR(st.st_mode) && (st.st_mode & 07777) == 0666,
	      "%s is a character device with mode 0666 (mode %04o)", device, (unsigned)(st.st_mode & 07777));
	fd = open(device, O_RDWR);
	check(fd >= 0, "open(%s, O_RDWR) gives an fd%s%s", device, fd < 0 ? ": " : "", fd < 0 ? ename(errno) : "");
	if (fd < 0)
		return;
	check(mask_is(fd, 0, 0), "a new mask fd reads back events 0, data 0");
	check(poll_now(fd, POLLIN | POLLPRI | POLLOUT) == 0, "a new mask fd polls as no events");
	fd2 = open(device, O_RDWR);
	check(fd2 >= 0 && mask_write(fd, POLLIN, 1) == 12 && mask_is(fd2, 0, 0) && mask_is(fd, POLLIN, 1),
	      "each open is a new mask: writing one leaves another at 0/0");
	if (fd2 >= 0)
		close(fd2);
	fl = fcntl(fd, F_GETFL);
	check(!(fcntl(fd, F_GETFD) & FD_CLOEXEC) && fl >= 0 && !(fl & O_NONBLOCK) && (fl & O_ACCMODE) == O_RDWR,
	      "open without flags: inherited across exec, blocking, O_RDWR");
	check(fd_survives_exec(fd) == 1, "without O_CLOEXEC the fd is still open after execve");
	close(fd);

	fd = open(device, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
	check(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC) && fl >= 0 && (fl & O_NONBLOCK) && (fl & O_ACCMODE) == O_RDWR,
	      "O_RDWR|O_CLOEXEC|O_NONBLOCK gives a close-on-exec, non-blocking O_RDWR fd");
	check(fd >= 0 && fd_survives_exec(fd) == 0, "with O_CLOEXEC the fd is closed in an execve'd child");
	if (fd >= 0)
		close(fd);

	errno = 0;
	fd = open(device, O_RDONLY | O_CLOEXEC);
	check(fd < 0 && errno == EINVAL, "open O_RDONLY fails with EINVAL (%s)", fd < 0 ? ename(errno) : "opened");
	if (fd >= 0)
		close(fd);
	errno = 0;
	fd = open(device, O_WRONLY | O_CLOEXEC);
	check(fd < 0 && errno == EINVAL, "open O_WRONLY fails with EINVAL (%s)", fd < 0 ? ename(errno) : "opened");
	if (fd >= 0)
		close(fd);

	/* Any user may create a mask fd, as any user may create an eventfd. */
	pid = fork();
	if (pid == 0) {
		int ufd;

		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		ufd = open(device, O_RDWR | O_CLOEXEC);
		if (ufd < 0) {
			diag("as uid 65534: open(%s): %s", device, ename(errno));
			_exit(3);
		}
		_exit(mask_write(ufd, POLLOUT, 5) == 12 && mask_is(ufd, POLLOUT, 5) ? 0 : 4);
	}
	fl = pid > 0 ? wait_exit(pid, 5000) : -1;
	check(fl == 0, "user nobody (uid 65534) opens, writes and reads a mask fd (status %d)", fl);

	/* Not an eventfd: eventfd2(EFD_MASK) is still whatever the kernel says. */
	errno = 0;
	fd = efd_create(0, T_EFD_MASK | T_EFD_CLOEXEC);
	diag("eventfd2(EFD_MASK) on this kernel: %s", fd >= 0 ? "accepted (a patched kernel)" : ename(errno));
	if (fd >= 0)
		close(fd);
}

/* ---- the 32 valid event combinations ---------------------------------------- */
static void test_all_combinations(void)
{
	int fd = mask_create(T_EFD_NONBLOCK);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ee = { .events = EPOLLIN | EPOLLPRI | EPOLLOUT, .data.u64 = 7 };

	if (fd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee) < 0) {
		check(0, "set up mask fd and level-triggered epoll for the 32 combinations");
		return;
	}
	for (uint32_t ev = 0; ev < 32; ev++) {
		uint64_t data = 0x0123456789abcdefULL ^ ((uint64_t)ev * 0x0001000100010001ULL);
		char why[256] = "";
		size_t wl = 0;
		ssize_t w = mask_write(fd, ev, data);
		int rev, rin;
		int64_t epe, epe2;
		fd_set rs, ws, xs;
		struct timeval tv = { 0, 0 };
		bool sr, sw, sx;

#define WHY(...) (wl += (size_t)snprintf(why + wl, wl < sizeof(why) ? sizeof(why) - wl : 0, __VA_ARGS__))
		if (w != 12)
			WHY(" write=%zd(%s)", w, ename(errno));
		if (!mask_is(fd, ev, data))
			WHY(" read-back differs");
		rev = poll_now(fd, POLLIN | POLLPRI | POLLOUT);
		if (rev != (int)ev)
			WHY(" poll=0x%x", rev);
		/* Asking only for POLLIN: poll adds ERR and HUP itself. */
		rin = poll_now(fd, POLLIN);
		if (rin != (int)(ev & (POLLIN | POLLERR | POLLHUP)))
			WHY(" poll(IN)=0x%x", rin);
		epe = epoll_now(ep);
		epe2 = epoll_now(ep);
		if (epe != (int64_t)ev || epe2 != (int64_t)ev)
			WHY(" epoll-LT=0x%" PRIx64 "/0x%" PRIx64, (uint64_t)epe, (uint64_t)epe2);
		FD_ZERO(&rs);
		FD_ZERO(&ws);
		FD_ZERO(&xs);
		FD_SET(fd, &rs);
		FD_SET(fd, &ws);
		FD_SET(fd, &xs);
		if (select(fd + 1, &rs, &ws, &xs, &tv) < 0) {
			WHY(" select failed");
		} else {
			sr = FD_ISSET(fd, &rs);
			sw = FD_ISSET(fd, &ws);
			sx = FD_ISSET(fd, &xs);
			if (sr != !!(ev & (POLLIN | POLLHUP | POLLERR)) || sw != !!(ev & (POLLOUT | POLLERR)) ||
			    sx != !!(ev & POLLPRI))
				WHY(" select r%d w%d x%d", sr, sw, sx);
		}
#undef WHY
		check(why[0] == 0, "events 0x%02x%s%s%s%s%s: write, read-back, poll, epoll LT, select agree%s",
		      ev, ev & POLLIN ? " IN" : "", ev & POLLPRI ? " PRI" : "", ev & POLLOUT ? " OUT" : "",
		      ev & POLLERR ? " ERR" : "", ev & POLLHUP ? " HUP" : "", why);
	}
	close(ep);
	close(fd);
}

/* ---- invalid input ------------------------------------------------------------ */
static void test_invalid(void)
{
	static const uint32_t bad[] = { 0x20 /* POLLNVAL */, 0x40 /* RDNORM */, 0x100 /* WRNORM */,
					0x2000 /* RDHUP */, 0x80000000u, 0xffffffffu, POLLIN | 0x20 };
	int fd = mask_create(T_EFD_NONBLOCK);
	const uint64_t keep = 0x5555aaaa5555aaaaULL;
	unsigned char big[16];
	struct t_efd_mask m;
	void *noaccess;
	ssize_t r;

	if (fd < 0 || mask_write(fd, POLLIN | POLLOUT, keep) != 12) {
		check(0, "set up mask fd for the invalid-input checks");
		return;
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		r = mask_write(fd, bad[i], 1);
		check(r < 0 && errno == EINVAL && mask_is(fd, POLLIN | POLLOUT, keep) &&
			      poll_now(fd, POLLIN | POLLPRI | POLLOUT) == (POLLIN | POLLOUT),
		      "events 0x%08x are refused with EINVAL and the state is unchanged (r=%zd %s)", bad[i], r,
		      ename(errno));
	}

	m.events = POLLHUP;
	m.data = 1;
	for (size_t len = 0; len < 12; len += (len < 4 ? 4 : 3)) {
		errno = 0;
		r = write(fd, &m, len);
		check(r < 0 && errno == EINVAL && mask_is(fd, POLLIN | POLLOUT, keep),
		      "a %zu-byte write fails with EINVAL and changes nothing (r=%zd %s)", len, r, ename(errno));
	}
	errno = 0;
	r = read(fd, &m, 11);
	check(r < 0 && errno == EINVAL, "an 11-byte read fails with EINVAL (r=%zd %s)", r, ename(errno));
	errno = 0;
	r = read(fd, &m, 8);
	check(r < 0 && errno == EINVAL, "an 8-byte read fails with EINVAL (r=%zd %s)", r, ename(errno));

	/* Longer buffers: the first 12 bytes count, as eventfd does with 8. */
	memset(big, 0xee, sizeof(big));
	m.events = POLLPRI;
	m.data = 0x0102030405060708ULL;
	memcpy(big, &m, sizeof(m));
	r = write(fd, big, sizeof(big));
	check(r == 12 && mask_is(fd, POLLPRI, 0x0102030405060708ULL),
	      "a 16-byte write returns 12 and uses the first 12 bytes (r=%zd)", r);
	memset(big, 0xcc, sizeof(big));
	r = read(fd, big, sizeof(big));
	memcpy(&m, big, sizeof(m));
	check(r == 12 && m.events == POLLPRI && m.data == 0x0102030405060708ULL && big[12] == 0xcc &&
		      big[15] == 0xcc,
	      "a 16-byte read returns 12 and leaves bytes 12..15 untouched (r=%zd)", r);
	{
		struct t_efd_mask v;
		char *p = (char *)&v;
		struct iovec iov[2] = { { p, 5 }, { p + 5, 7 } };

		memset(&v, 0, sizeof(v));
		r = readv(fd, iov, 2);
		check(r == 12 && v.events == POLLPRI && v.data == 0x0102030405060708ULL,
		      "readv into 5+7 byte segments returns the whole record (r=%zd)", r);
	}

	noaccess = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (noaccess != MAP_FAILED) {
		errno = 0;
		r = write(fd, noaccess, 12);
		check(r < 0 && errno == EFAULT && mask_is(fd, POLLPRI, 0x0102030405060708ULL),
		      "a write from an unreadable buffer fails with EFAULT and changes nothing (r=%zd %s)", r,
		      ename(errno));
		errno = 0;
		r = read(fd, noaccess, 12);
		check(r < 0 && errno == EFAULT, "a read into an unwritable buffer fails with EFAULT (r=%zd %s)", r,
		      ename(errno));
		munmap(noaccess, 4096);
	} else {
		skip("mmap failed", "EFAULT checks");
	}
	close(fd);
}

/* ---- blocking behaviour ---------------------------------------------------- */
static volatile sig_atomic_t alarmed;
static void on_alarm(int sig)
{
	(void)sig;
	alarmed = 1;
}

static void test_never_blocks(void)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	int fd = mask_create(0); /* blocking */
	struct t_efd_mask m;
	ssize_t r1, r2;
	double t0;
	int ok = 1;

	if (fd < 0) {
		check(0, "create blocking mask fd");
		return;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: a blocked read returns EINTR */
	alarmed = 0;
	alarm(5);
	t0 = now_s();
	r1 = read(fd, &m, sizeof(m));
	r2 = read(fd, &m, sizeof(m));
	alarm(0);
	check(r1 == 12 && r2 == 12 && !alarmed && now_s() - t0 < 1.0,
	      "read on a blocking mask fd with no events returns at once, twice (%zd, %zd)", r1, r2);

	mask_write(fd, POLLIN, 9);
	check(mask_is(fd, POLLIN, 9) && mask_is(fd, POLLIN, 9) && poll_now(fd, POLLIN) == POLLIN,
	      "read does not consume: POLLIN stays set and the record is unchanged");

	alarm(5);
	for (int i = 0; i < 1000 && ok; i++)
		ok = mask_write(fd, (uint32_t)i & VALID_EVENTS, (uint64_t)i) == 12;
	alarm(0);
	check(ok && !alarmed && mask_is(fd, 999 & VALID_EVENTS, 999),
	      "1000 writes on a blocking mask fd never block and the last one wins");
	close(fd);
}

/* ---- epoll edge-triggered and one-shot --------------------------------------- */
static void test_epoll_et(void)
{
	int fd = mask_create(T_EFD_NONBLOCK);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ee = { .events = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET, .data.u64 = 1 };
	int64_t a, b;

	if (fd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee) < 0) {
		check(0, "set up edge-triggered epoll");
		return;
	}
	check(epoll_now(ep) == 0, "ET: no event while the mask is 0");
	mask_write(fd, POLLIN, 1);
	a = epoll_now(ep);
	b = epoll_now(ep);
	check(a == EPOLLIN && b == 0, "ET: writing IN gives one IN edge, then nothing (0x%" PRIx64 ", 0x%" PRIx64 ")",
	      (uint64_t)a, (uint64_t)b);
	mask_write(fd, POLLIN, 2);
	a = epoll_now(ep);
	b = epoll_now(ep);
	check(a == EPOLLIN && b == 0, "ET: rewriting the same mask gives a new edge (0x%" PRIx64 ", 0x%" PRIx64 ")",
	      (uint64_t)a, (uint64_t)b);
	mask_write(fd, 0, 3);
	check(epoll_now(ep) == 0, "ET: writing 0 reports nothing");
	mask_write(fd, POLLOUT | POLLHUP, 4);
	a = epoll_now(ep);
	check(a == (EPOLLOUT | EPOLLHUP), "ET: writing OUT|HUP gives OUT|HUP (0x%" PRIx64 ")", (uint64_t)a);
	mask_write(fd, POLLERR, 5);
	a = epoll_now(ep);
	check(a == EPOLLERR, "ET: ERR is reported without being asked for (0x%" PRIx64 ")", (uint64_t)a);
	mask_write(fd, POLLPRI | POLLIN, 6);
	a = epoll_now(ep);
	check(a == (EPOLLPRI | EPOLLIN), "ET: PRI|IN (0x%" PRIx64 ")", (uint64_t)a);

	ee.events = EPOLLIN | EPOLLONESHOT;
	check(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ee) == 0, "ONESHOT: EPOLL_CTL_MOD");
	a = epoll_now(ep);
	b = epoll_now(ep);
	mask_write(fd, POLLIN, 7);
	check(a == EPOLLIN && b == 0 && epoll_now(ep) == 0,
	      "ONESHOT: one IN event, then disabled even across a write");
	check(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ee) == 0 && epoll_now(ep) == EPOLLIN,
	      "ONESHOT: re-arming with EPOLL_CTL_MOD reports the level again");
	close(ep);
	close(fd);
}

/* ---- waking a blocked process ----------------------------------------------- */
static void test_wakeups(void)
{
	int fd = mask_create(0);
	pid_t pid;
	int st;
	double t0;

	if (fd < 0) {
		check(0, "create mask fd for wakeups");
		return;
	}
	/* poll(POLLIN) in a child; an OUT write must not satisfy it, IN must. */
	pid = fork();
	if (pid == 0) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, 10000);

		_exit(r == 1 && p.revents == POLLIN ? 0 : r == 0 ? 2 : 3);
	}
	check(pid > 0 && wait_sleeping(pid), "a child blocks in poll(POLLIN) on the mask fd");
	mask_write(fd, POLLOUT, 1);
	msleep(50);
	check(waitpid(pid, &st, WNOHANG) == 0, "writing OUT does not end a poll that waits for IN");
	t0 = now_s();
	mask_write(fd, POLLIN, 2);
	st = wait_exit(pid, 5000);
	check(st == 0, "writing IN wakes the blocked poll with revents IN (status %d, %.1f ms)", st,
	      (now_s() - t0) * 1e3);

	/* HUP ends a poll that asked only for IN: poll always reports HUP. */
	mask_write(fd, 0, 0);
	pid = fork();
	if (pid == 0) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, 10000);

		_exit(r == 1 && p.revents == POLLHUP ? 0 : r == 0 ? 2 : 3);
	}
	check(pid > 0 && wait_sleeping(pid), "a second child blocks in poll(POLLIN)");
	mask_write(fd, POLLHUP, 3);
	st = wait_exit(pid, 5000);
	check(st == 0, "writing HUP wakes a poll(POLLIN) with revents HUP (status %d)", st);

	/* epoll_wait (edge-triggered) in a child, woken by a rewrite of an unchanged mask. */
	mask_write(fd, POLLPRI, 4);
	pid = fork();
	if (pid == 0) {
		int ep = epoll_create1(0);
		struct epoll_event ee = { .events = EPOLLPRI | EPOLLET }, out;

		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee) < 0)
			_exit(4);
		if (epoll_wait(ep, &out, 1, 0) != 1) /* consume the current edge */
			_exit(5);
		_exit(epoll_wait(ep, &out, 1, 10000) == 1 && out.events == EPOLLPRI ? 0 : 3);
	}
	check(pid > 0 && wait_sleeping(pid), "a child blocks in edge-triggered epoll_wait");
	mask_write(fd, POLLPRI, 5);
	st = wait_exit(pid, 5000);
	check(st == 0, "rewriting the same PRI mask wakes the ET epoll_wait (status %d)", st);

	/* A write from another process is seen by this one (shared open file). */
	pid = fork();
	if (pid == 0)
		_exit(mask_write(fd, POLLIN | POLLERR, 0xabcdef) == 12 ? 0 : 1);
	st = wait_exit(pid, 5000);
	check(st == 0 && mask_is(fd, POLLIN | POLLERR, 0xabcdef), "a write by a child process is read back by the parent");
	close(fd);
}

/* ---- a refused write wakes nobody ------------------------------------------------ */
/* voluntary_ctxt_switches of `pid`, or -1: it grows each time the task
 * sleeps again, so a wakeup that does not end its poll still shows. */
static long nvcsw_of(pid_t pid)
{
	char path[64], buf[2048];
	const char *p;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	p = strstr(buf, "\nvoluntary_ctxt_switches:");
	return p ? strtol(p + strlen("\nvoluntary_ctxt_switches:"), NULL, 10) : -1;
}

/*
 * Writes that fail (invalid bits, too short, unreadable buffer) must change
 * nothing, and that includes the wait queue: no ET edge and no wakeup.  An
 * empty mask must not wake anyone either.  A task blocked in poll(2) that is
 * woken but finds nothing it asked for goes back to sleep, which only its
 * voluntary context-switch count shows; the control is a PRI write (woken
 * unkeyed, so the poller wakes and sleeps again).
 */
static void test_refused_writes_wake_nobody(void)
{
	int fd = mask_create(T_EFD_NONBLOCK);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ee = { .events = EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLET, .data.u64 = 1 };
	struct t_efd_mask m = { POLLIN, 1 };
	void *noaccess;
	int64_t a, b, c;
	ssize_t r1, r2, r3 = -1;
	int e1, e2, e3 = EFAULT, st;
	long n0, n1, n2;
	pid_t pid;

	if (fd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee) < 0) {
		check(0, "set up edge-triggered epoll for the refused-write checks");
		return;
	}
	mask_write(fd, POLLIN, 1);
	a = epoll_now(ep);
	errno = 0;
	r1 = mask_write(fd, POLLIN | 0x20, 2);
	e1 = errno;
	errno = 0;
	r2 = write(fd, &m, 8);
	e2 = errno;
	noaccess = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (noaccess != MAP_FAILED) {
		errno = 0;
		r3 = write(fd, noaccess, 12);
		e3 = errno;
		munmap(noaccess, 4096);
	}
	b = epoll_now(ep);
	mask_write(fd, POLLIN, 3);
	c = epoll_now(ep);
	check(a == EPOLLIN && r1 < 0 && e1 == EINVAL && r2 < 0 && e2 == EINVAL && r3 < 0 && e3 == EFAULT && b == 0 &&
		      c == EPOLLIN,
	      "ET: refused writes (invalid bit, 8 bytes, EFAULT) make no edge; the next valid write does "
	      "(edges 0x%" PRIx64 "/0x%" PRIx64 "/0x%" PRIx64 ")",
	      (uint64_t)a, (uint64_t)b, (uint64_t)c);
	close(ep);

	mask_write(fd, 0, 0);
	pid = fork();
	if (pid == 0) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, 10000);

		_exit(r == 1 && p.revents == POLLIN ? 0 : r == 0 ? 2 : 3);
	}
	if (!check(pid > 0 && wait_sleeping(pid), "a child blocks in poll(POLLIN) for the no-wakeup checks")) {
		if (pid > 0)
			wait_exit(pid, 0);
		close(fd);
		return;
	}
	n0 = nvcsw_of(pid);
	errno = 0;
	r1 = mask_write(fd, POLLIN | 0x40, 4); /* POLLIN plus the invalid RDNORM */
	e1 = errno;
	r2 = write(fd, &m, 11);
	r3 = mask_write(fd, 0, 5); /* valid, empty */
	msleep(100);
	n1 = nvcsw_of(pid);
	check(n0 >= 0 && n1 == n0 && r1 < 0 && e1 == EINVAL && r2 < 0 && r3 == 12 && waitpid(pid, &st, WNOHANG) == 0,
	      "refused writes (IN|RDNORM, 11 bytes) and an empty-mask write wake nobody "
	      "(sleeper's voluntary switches %ld -> %ld)",
	      n0, n1);
	mask_write(fd, POLLPRI, 6); /* unkeyed wakeup: the poller wakes, finds no IN, sleeps */
	msleep(100);
	wait_sleeping(pid);
	n2 = nvcsw_of(pid);
	check(n2 > n1 && waitpid(pid, &st, WNOHANG) == 0,
	      "control: a PRI write does wake the poll(POLLIN) sleeper, which sleeps on (voluntary switches %ld -> %ld)",
	      n1, n2);
	mask_write(fd, POLLIN, 7);
	st = wait_exit(pid, 5000);
	check(st == 0, "the sleeper then wakes for IN (status %d)", st);
	close(fd);
}

/* ---- concurrency: writer, two waiters and a reader on 2+ CPUs --------------------- */
/*
 * The writer alternates {0} and {IN} records; the data word encodes the
 * sequence number and the events, so a read that paired the events of one
 * write with the data of another is detected:
 *   data = seq << 32 | (events ^ (seq * 0x9e3779b1)),  events = seq odd ? IN : 0
 * Round r writes seq 2r ({0}), releases both waiters (a counter eventfd
 * each), waits a random moment, writes seq 2r+1 ({IN}), and blocks until
 * both waiters have acknowledged seq 2r+1 (another counter eventfd).  So each
 * waiter's wait races the IN write, and nothing changes the record until both
 * have seen it.  One waiter sleeps in poll(2), the other in edge-triggered
 * epoll_wait(2).  A missed wakeup is a wait that ends only through its
 * timeout: epoll_wait returning 0 (it returns 0 only when no wakeup came), or
 * poll(2) returning after the whole timeout (its last pass after the timeout
 * finds IN either way, so the elapsed time is the tell).  A reader, at nice
 * 19 so that it uses the idle time, reads the record in a loop and checks
 * every pair and that the sequence never goes backwards.  The last write is
 * an IN record both waiters must end on.
 */
#define STRESS_MAX_ROUNDS 20000
#define STRESS_SECONDS 8.0
#define STRESS_MIN_ROUNDS 50
#define STRESS_POLL_TIMEOUT_MS 3000
#define STRESS_EPOLL_TIMEOUT_MS 1000
#define STRESS_ACK_TIMEOUT_MS 10000
#define STRESS_MAX_MISSES 3

struct stress_shm {
	uint64_t in_written;    /* writer: {IN} of this round written */
	uint64_t final_seq;     /* writer: 0, or the seq of the last write */
	uint64_t acked[2];      /* waiters: last round whose IN they saw */
	uint64_t early[2];      /* waiters: began waiting before the IN write */
	uint64_t missed[2];     /* waiters: IN found only through the timeout */
	uint64_t torn[3];       /* waiters, reader: inconsistent read-backs */
	uint64_t backwards[3];  /* waiters, reader: sequence went backwards */
	uint64_t reads[3];
	uint64_t ended_on[2];   /* waiters: the seq they ended on */
	uint64_t first_torn_events, first_torn_data;
	int done, abort_run;
};

static uint64_t stress_data(uint64_t seq, uint32_t events)
{
	return seq << 32 | (uint32_t)(events ^ (uint32_t)(seq * 0x9e3779b1u));
}

static uint32_t stress_events(uint64_t seq)
{
	return (seq & 1) ? POLLIN : 0;
}

#define LD(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)
#define ST(p, v) __atomic_store_n(&(p), (v), __ATOMIC_RELEASE)
#define INC(p) __atomic_fetch_add(&(p), 1, __ATOMIC_RELAXED)

/* Read the record; returns its seq, or -1 (counted) when it is inconsistent. */
static int64_t stress_read(int fd, struct stress_shm *sh, int who, uint64_t *last_seq)
{
	struct t_efd_mask m;
	uint64_t seq;

	if (read(fd, &m, sizeof(m)) != (ssize_t)sizeof(m))
		return -2;
	INC(sh->reads[who]);
	seq = m.data >> 32;
	if (m.events != stress_events(seq) || m.data != stress_data(seq, m.events)) {
		if (INC(sh->torn[who]) == 0 && who == 2) {
			sh->first_torn_events = m.events;
			sh->first_torn_data = m.data;
		}
		return -1;
	}
	if (seq < *last_seq)
		INC(sh->backwards[who]);
	*last_seq = seq;
	return (int64_t)seq;
}

/* Block until the counter eventfd `efd` is signalled; false on timeout. */
static bool stress_take(int efd, int timeout_ms)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };
	uint64_t v;

	for (;;) {
		int r = poll(&p, 1, timeout_ms);

		if (r < 0 && errno == EINTR)
			continue;
		if (r != 1)
			return false;
		return read(efd, &v, sizeof(v)) == (ssize_t)sizeof(v);
	}
}

static void stress_give(int efd)
{
	uint64_t one = 1;

	if (write(efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		_exit(12);
}

/* Waiter `who` (0: poll, 1: ET epoll).  Exit status 0, or where it failed. */
static int stress_waiter(int fd, int startfd, int ackfd, struct stress_shm *sh, int who)
{
	struct epoll_event ee = { .events = EPOLLIN | EPOLLET }, out;
	uint64_t last_seq = 0, round = 1;
	bool need_start = true;
	int ep = -1;

	if (who == 1) {
		ep = epoll_create1(0);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ee) < 0)
			return 10;
	}
	for (;;) {
		double t0, el;
		int64_t seq;
		int r;

		/* The writer has written this round's {0}; the IN write races our wait. */
		if (need_start) {
			while (!stress_take(startfd, 1000))
				if (LD(sh->abort_run))
					return 0;
			need_start = false;
			if (LD(sh->in_written) < round)
				INC(sh->early[who]);
		}
		if (LD(sh->abort_run))
			return 0;
		t0 = now_s();
		if (who == 0) {
			struct pollfd p = { .fd = fd, .events = POLLIN };

			r = poll(&p, 1, STRESS_POLL_TIMEOUT_MS);
		} else {
			r = epoll_wait(ep, &out, 1, STRESS_EPOLL_TIMEOUT_MS);
		}
		el = now_s() - t0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return 11;
		seq = stress_read(fd, sh, who, &last_seq);
		/* Torn (counted), or still this round's {0}: wait again. */
		if (seq < 0 || (uint64_t)seq != 2 * round + 1)
			continue;
		/* This round's IN record: did a wakeup bring us here, or the timeout? */
		if (who == 0 ? el * 1e3 >= STRESS_POLL_TIMEOUT_MS : r == 0) {
			if (INC(sh->missed[who]) + 1 >= STRESS_MAX_MISSES)
				ST(sh->abort_run, 1);
		}
		ST(sh->acked[who], round);
		if (LD(sh->final_seq) == (uint64_t)seq)
			ST(sh->ended_on[who], (uint64_t)seq);
		stress_give(ackfd);
		if (LD(sh->final_seq) == (uint64_t)seq)
			return 0;
		round++;
		need_start = true;
	}
}

static int stress_reader(int fd, struct stress_shm *sh)
{
	uint64_t last_seq = 0;

	if (nice(19) < 0 && errno)
		return 13;
	while (!LD(sh->done))
		stress_read(fd, sh, 2, &last_seq);
	stress_read(fd, sh, 2, &last_seq);
	return 0;
}

static void test_smp_stress(void)
{
	struct stress_shm *sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int fd = mask_create(0);
	int startfd[2] = { efd_create(0, 0), efd_create(0, 0) }, ackfd = efd_create(0, 0);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t rounds = 0, final_seq = 0, rng = 0x9e3779b97f4a7c15ULL, slow = 0;
	pid_t kids[3] = { -1, -1, -1 };
	int st[3];
	double t0, el;
	bool stuck = false;
	struct t_efd_mask last;

	if (sh == MAP_FAILED || fd < 0 || startfd[0] < 0 || startfd[1] < 0 || ackfd < 0) {
		check(0, "SMP stress: set up shared memory, a blocking mask fd and the handshake eventfds");
		return;
	}
	memset(sh, 0, sizeof(*sh));
	if (cpus >= 2)
		check(1, "SMP stress runs on %ld CPUs", cpus);
	else
		skip("the guest has 1 CPU: the stress only interleaves, it never runs in parallel (boot with --smp 2)",
		     "SMP stress runs on at least 2 CPUs");
	mask_write(fd, 0, stress_data(0, 0));
	for (int i = 0; i < 3; i++) {
		kids[i] = fork();
		if (kids[i] == 0)
			_exit(i < 2 ? stress_waiter(fd, startfd[i], ackfd, sh, i) : stress_reader(fd, sh));
	}
	t0 = now_s();
	for (uint64_t r = 1; r <= STRESS_MAX_ROUNDS && !LD(sh->abort_run); r++) {
		double tw;
		bool last_round;

		mask_write(fd, 0, stress_data(2 * r, 0));
		stress_give(startfd[0]);
		stress_give(startfd[1]);
		/* A random moment: at once, after a yield, or after a spin. */
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		switch (rng & 3) {
		case 0:
			break;
		case 1:
			sched_yield();
			break;
		default:
			for (volatile unsigned int i = (unsigned int)(rng >> 40) & 0xfff; i; i--)
				;
		}
		last_round = r == STRESS_MAX_ROUNDS || now_s() - t0 >= STRESS_SECONDS;
		if (last_round)
			ST(sh->final_seq, 2 * r + 1);
		mask_write(fd, POLLIN, stress_data(2 * r + 1, POLLIN));
		ST(sh->in_written, r);
		rounds = r;
		tw = now_s();
		while (LD(sh->acked[0]) < r || LD(sh->acked[1]) < r) {
			if (LD(sh->abort_run))
				break;
			if (!stress_take(ackfd, STRESS_ACK_TIMEOUT_MS)) {
				stuck = true;
				ST(sh->abort_run, 1);
				break;
			}
		}
		if (now_s() - tw > 0.5)
			slow++;
		if (last_round) {
			final_seq = 2 * r + 1;
			break;
		}
	}
	el = now_s() - t0;
	/* Let the reader see the final state, then stop everyone. */
	msleep(20);
	ST(sh->done, 1);
	ST(sh->abort_run, LD(sh->abort_run) | 2);
	for (int i = 0; i < 3; i++)
		st[i] = kids[i] > 0 ? wait_exit(kids[i], 5000) : -1;
	check(!stuck && !(LD(sh->abort_run) & 1) && rounds >= STRESS_MIN_ROUNDS && final_seq,
	      "SMP stress: %" PRIu64 " rounds of {} / {IN} writes in %.1f s (%.0f us a round; at least %d needed; "
	      "writer %s; rounds slower than 0.5 s: %" PRIu64 ")",
	      rounds, el, rounds ? el / (double)rounds * 1e6 : 0.0, STRESS_MIN_ROUNDS,
	      stuck ? "stuck waiting for an acknowledgement" : (LD(sh->abort_run) & 1) ? "aborted" : "finished", slow);
	/* "early": the waiter began its wait before the IN write, so only a
	 * wakeup (or winning the race to the check) could end it in time. */
	check(st[0] == 0 && LD(sh->missed[0]) == 0 && LD(sh->early[0]) > 0,
	      "SMP stress: the poll(2) waiter was woken by every IN write (missed %" PRIu64 " of %" PRIu64
	      "; %" PRIu64 " waits began before the IN write; status %d)",
	      LD(sh->missed[0]), rounds, LD(sh->early[0]), st[0]);
	check(st[1] == 0 && LD(sh->missed[1]) == 0 && LD(sh->early[1]) > 0,
	      "SMP stress: the edge-triggered epoll waiter was woken by every IN write (missed %" PRIu64 " of %" PRIu64
	      "; %" PRIu64 " waits began before the IN write; status %d)",
	      LD(sh->missed[1]), rounds, LD(sh->early[1]), st[1]);
	last = (struct t_efd_mask){ 0, 0 };
	check(final_seq && LD(sh->ended_on[0]) == final_seq && LD(sh->ended_on[1]) == final_seq &&
		      read(fd, &last, sizeof(last)) == 12 && last.events == POLLIN &&
		      last.data == stress_data(final_seq, POLLIN),
	      "SMP stress: both waiters saw the final state {IN, seq %" PRIu64 "} (ended on %" PRIu64 " and %" PRIu64 ")",
	      final_seq, LD(sh->ended_on[0]), LD(sh->ended_on[1]));
	check(st[2] == 0 && LD(sh->reads[2]) > 0 && !LD(sh->torn[0]) && !LD(sh->torn[1]) && !LD(sh->torn[2]) &&
		      !LD(sh->backwards[0]) && !LD(sh->backwards[1]) && !LD(sh->backwards[2]),
	      "SMP stress: %" PRIu64 " concurrent reads, every (events, data) pair consistent and the sequence never "
	      "went backwards (torn %" PRIu64 "/%" PRIu64 "/%" PRIu64 ", first torn events 0x%" PRIx64 " data 0x%" PRIx64
	      ", backwards %" PRIu64 "/%" PRIu64 "/%" PRIu64 ")",
	      LD(sh->reads[0]) + LD(sh->reads[1]) + LD(sh->reads[2]), LD(sh->torn[0]), LD(sh->torn[1]),
	      LD(sh->torn[2]), LD(sh->first_torn_events), LD(sh->first_torn_data), LD(sh->backwards[0]),
	      LD(sh->backwards[1]), LD(sh->backwards[2]));
	close(fd);
	close(startfd[0]);
	close(startfd[1]);
	close(ackfd);
	munmap(sh, sizeof(*sh));
}

/* ---- fdinfo ---------------------------------------------------------------------- */
/*
 * The lines after the generic pos/flags/mnt_id/ino: exactly
 *   eventfd-mask: %x        (lower-case hex, no padding: the seed's line)
 *   eventfd-data: %016llx
 *   eventfd-id: %d
 * for the patched eventfd and the module alike.  Returns 1 when they match
 * for the given events and data; `shown` gets the fdinfo on one line.
 */
static int fdinfo_matches(int fd, uint32_t events, uint64_t data, char *shown, size_t len)
{
	char path[64], buf[1024], want_mask[64], want_data[64];
	char *lines[32], *save = NULL, *l;
	int n = 0, at = -1;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (read_file(path, buf, sizeof(buf)) < 0) {
		snprintf(shown, len, "cannot read %s: %s", path, ename(errno));
		return 0;
	}
	snprintf(shown, len, "%s", buf);
	for (char *p = shown; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = *p == '\n' ? '|' : ' ';
	for (l = strtok_r(buf, "\n", &save); l && n < 32; l = strtok_r(NULL, "\n", &save))
		lines[n++] = l;
	snprintf(want_mask, sizeof(want_mask), "eventfd-mask: %x", events);
	snprintf(want_data, sizeof(want_data), "eventfd-data: %016" PRIx64, data);
	for (int i = 0; i < n; i++) {
		if (strstr(lines[i], "eventfd-count"))
			return 0;
		if (!strncmp(lines[i], "eventfd-mask:", 13))
			at = at < 0 ? i : -2; /* exactly one mask line */
	}
	if (at < 0 || at + 2 >= n)
		return 0;
	if (strcmp(lines[at], want_mask) || strcmp(lines[at + 1], want_data) ||
	    strncmp(lines[at + 2], "eventfd-id: ", 12))
		return 0;
	for (const char *p = lines[at + 2] + 12; *p; p++)
		if (*p < '0' || *p > '9')
			return 0;
	return lines[at + 2][12] != 0;
}

static void test_fdinfo(void)
{
	static const struct t_efd_mask cases[] = {
		{ POLLIN | POLLOUT, 0xfeedface12345678ULL }, /* "5" */
		{ VALID_EVENTS, 0 },                        /* "1f": lower case, data zero-padded */
		{ 0, 0x0123456789abcdefULL },               /* "0" */
	};
	int fd = mask_create(T_EFD_NONBLOCK);
	int cfd = efd_create(5, T_EFD_NONBLOCK);
	char path[64], buf[1024];

	if (fd < 0 || cfd < 0) {
		check(0, "create fds for fdinfo");
		return;
	}
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	if (access(path, R_OK) < 0) {
		skip("no /proc", "fdinfo of a mask fd");
	} else {
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			mask_write(fd, cases[i].events, cases[i].data);
			check(fdinfo_matches(fd, cases[i].events, cases[i].data, buf, sizeof(buf)),
			      "fdinfo after writing {0x%x, 0x%" PRIx64 "}: \"eventfd-mask: %x\", then eventfd-data "
			      "(%%016llx) and eventfd-id, no count [%s]",
			      cases[i].events, (uint64_t)cases[i].data, cases[i].events, buf);
		}
	}
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", cfd);
	if (read_file(path, buf, sizeof(buf)) >= 0)
		check(strstr(buf, "eventfd-count:") && !strstr(buf, "eventfd-mask"),
		      "fdinfo of a counter eventfd is unchanged (eventfd-count, no mask)");
	close(fd);
	close(cfd);
}

/* ---- the counter eventfd still behaves (regression) -------------------------- */
static void test_counter_regression(void)
{
	int fd = efd_create(3, T_EFD_NONBLOCK);
	int sfd = efd_create(2, T_EFD_NONBLOCK | T_EFD_SEMAPHORE);
	uint64_t v = 5;
	ssize_t r;

	check(fd >= 0 && counter_read_nb(fd) == 3, "counter eventfd: initval 3 reads 3");
	check(fd >= 0 && write(fd, &v, 8) == 8 && counter_read_nb(fd) == 5, "counter eventfd: write 5, read 5");
	errno = 0;
	r = fd >= 0 ? read(fd, &v, 8) : 0;
	check(r < 0 && errno == EAGAIN, "counter eventfd: empty non-blocking read gives EAGAIN");
	check(fd >= 0 && poll_now(fd, POLLIN | POLLOUT) == POLLOUT, "counter eventfd: empty polls as OUT only");
	check(sfd >= 0 && counter_read_nb(sfd) == 1 && counter_read_nb(sfd) == 1 && counter_read_nb(sfd) == 0,
	      "EFD_SEMAPHORE eventfd: reads 1, 1, then nothing");
	if (fd >= 0)
		close(fd);
	if (sfd >= 0)
		close(sfd);
}

/* ---- io_uring through raw system calls --------------------------------------- */
struct ring {
	int fd;
	unsigned int *sq_tail, *sq_mask, *sq_array;
	unsigned int *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
	void *sq_ptr, *cq_ptr;
	size_t sq_len, cq_len, sqes_len;
};

static int ring_init(struct ring *r, unsigned int entries)
{
	struct io_uring_params p;

	memset(&p, 0, sizeof(p));
	memset(r, 0, sizeof(*r));
	r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
	if (r->fd < 0)
		return -errno;
	r->sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned int);
	r->cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (r->cq_len > r->sq_len)
			r->sq_len = r->cq_len;
		r->cq_len = r->sq_len;
	}
	r->sq_ptr = mmap(NULL, r->sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
			 IORING_OFF_SQ_RING);
	if (r->sq_ptr == MAP_FAILED)
		return -errno;
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		r->cq_ptr = r->sq_ptr;
	} else {
		r->cq_ptr = mmap(NULL, r->cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
				 IORING_OFF_CQ_RING);
		if (r->cq_ptr == MAP_FAILED)
			return -errno;
	}
	r->sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
	r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd,
		       IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		return -errno;
	r->sq_tail = (unsigned int *)((char *)r->sq_ptr + p.sq_off.tail);
	r->sq_mask = (unsigned int *)((char *)r->sq_ptr + p.sq_off.ring_mask);
	r->sq_array = (unsigned int *)((char *)r->sq_ptr + p.sq_off.array);
	r->cq_head = (unsigned int *)((char *)r->cq_ptr + p.cq_off.head);
	r->cq_tail = (unsigned int *)((char *)r->cq_ptr + p.cq_off.tail);
	r->cq_mask = (unsigned int *)((char *)r->cq_ptr + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)((char *)r->cq_ptr + p.cq_off.cqes);
	return 0;
}

static void ring_exit(struct ring *r)
{
	if (r->sqes && r->sqes != MAP_FAILED)
		munmap(r->sqes, r->sqes_len);
	if (r->cq_ptr && r->cq_ptr != MAP_FAILED && r->cq_ptr != r->sq_ptr)
		munmap(r->cq_ptr, r->cq_len);
	if (r->sq_ptr && r->sq_ptr != MAP_FAILED)
		munmap(r->sq_ptr, r->sq_len);
	if (r->fd >= 0)
		close(r->fd);
}

/* Queue one SQE and submit it; returns io_uring_enter's result. */
static int ring_submit_one(struct ring *r, uint8_t opcode, int fd, uint32_t poll_events, uint32_t len,
			   uint64_t user_data)
{
	unsigned int tail = *r->sq_tail;
	unsigned int idx = tail & *r->sq_mask;
	struct io_uring_sqe *sqe = &r->sqes[idx];

	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = opcode;
	sqe->fd = fd;
	sqe->poll32_events = poll_events;
	sqe->len = len;
	sqe->user_data = user_data;
	r->sq_array[idx] = idx;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	return (int)syscall(__NR_io_uring_enter, r->fd, 1, 0, 0, NULL, 0);
}

/* Wait up to timeout_ms for a CQE; 1 when one was reaped into *out. */
static int ring_wait_cqe(struct ring *r, struct io_uring_cqe *out, int timeout_ms)
{
	double end = now_s() + timeout_ms / 1e3;

	for (;;) {
		unsigned int head = *r->cq_head;
		unsigned int tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
		struct pollfd p = { .fd = r->fd, .events = POLLIN };
		int left;

		if (head != tail) {
			*out = r->cqes[head & *r->cq_mask];
			__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
			return 1;
		}
		left = (int)((end - now_s()) * 1e3);
		if (left <= 0)
			return 0;
		/* task_work (e.g. poll completions) runs on the way back to user space */
		if (poll(&p, 1, left > 50 ? 50 : left) < 0 && errno != EINTR)
			return 0;
		syscall(__NR_io_uring_enter, r->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
	}
}

static int ring_register(struct ring *r, unsigned int op, int efd)
{
	return (int)syscall(__NR_io_uring_register, r->fd, op, op == IORING_UNREGISTER_EVENTFD ? NULL : &efd,
			    op == IORING_UNREGISTER_EVENTFD ? 0 : 1);
}

static void test_io_uring(int maskfd, bool have_mask)
{
	struct ring r;
	struct io_uring_cqe cqe;
	int cfd = efd_create(0, T_EFD_NONBLOCK | T_EFD_CLOEXEC);
	int rc = ring_init(&r, 8);
	uint64_t v;

	if (rc < 0) {
		skip(ename(-rc), "io_uring: io_uring_setup failed, io_uring checks");
		ring_exit(&r);
		close(cfd);
		return;
	}
	if (have_mask) {
		errno = 0;
		rc = ring_register(&r, IORING_REGISTER_EVENTFD, maskfd);
		check(rc < 0 && errno == EINVAL, "io_uring: IORING_REGISTER_EVENTFD refuses a mask fd with EINVAL (%d %s)",
		      rc, ename(errno));
		if (rc == 0)
			ring_register(&r, IORING_UNREGISTER_EVENTFD, -1);
		errno = 0;
		rc = ring_register(&r, IORING_REGISTER_EVENTFD_ASYNC, maskfd);
		check(rc < 0 && errno == EINVAL,
		      "io_uring: IORING_REGISTER_EVENTFD_ASYNC refuses a mask fd with EINVAL (%d %s)", rc, ename(errno));
		if (rc == 0)
			ring_register(&r, IORING_UNREGISTER_EVENTFD, -1);
		rc = ring_submit_one(&r, IORING_OP_NOP, -1, 0, 0, 11);
		check(rc == 1 && ring_wait_cqe(&r, &cqe, 2000) && cqe.user_data == 11,
		      "io_uring: a NOP completes normally after the refusals");
	}
	rc = ring_register(&r, IORING_REGISTER_EVENTFD, cfd);
	check(rc == 0, "io_uring control: IORING_REGISTER_EVENTFD accepts a counter eventfd (%d %s)", rc,
	      rc ? ename(errno) : "");
	rc = ring_submit_one(&r, IORING_OP_NOP, -1, 0, 0, 12);
	v = counter_wait(cfd, 2000);
	check(rc == 1 && ring_wait_cqe(&r, &cqe, 2000) && cqe.user_data == 12 && v >= 1,
	      "io_uring control: a NOP completion signals the registered counter eventfd (count %" PRIu64 ")", v);

	if (have_mask) {
		/* POLL_ADD on a mask fd; its completion also signals the counter. */
		mask_write(maskfd, 0, 0);
		rc = ring_submit_one(&r, IORING_OP_POLL_ADD, maskfd, POLLIN, 0, 13);
		check(rc == 1 && !ring_wait_cqe(&r, &cqe, 100), "io_uring: POLL_ADD(IN) on a mask fd with no events stays pending");
		mask_write(maskfd, POLLIN | POLLOUT, 1);
		v = 0;
		rc = ring_wait_cqe(&r, &cqe, 3000);
		if (rc)
			v = counter_wait(cfd, 2000);
		check(rc && cqe.user_data == 13 && (cqe.res & POLLIN) && v >= 1,
		      "io_uring: writing IN completes POLL_ADD (res 0x%x) and signals the counter (count %" PRIu64 ")",
		      rc ? cqe.res : -1, v);
		/* PRI alone: io_uring matches wake keys without EPOLLPRI, so the
		 * kernel must wake such a change unkeyed for this to complete. */
		mask_write(maskfd, 0, 0);
		counter_read_nb(cfd);
		rc = ring_submit_one(&r, IORING_OP_POLL_ADD, maskfd, POLLPRI, 0, 14);
		check(rc == 1 && !ring_wait_cqe(&r, &cqe, 100), "io_uring: POLL_ADD(PRI) on a mask fd with no events stays pending");
		mask_write(maskfd, POLLPRI, 3);
		rc = ring_wait_cqe(&r, &cqe, 3000);
		check(rc && cqe.user_data == 14 && cqe.res == POLLPRI,
		      "io_uring: writing PRI alone completes POLL_ADD(PRI) with res PRI (res 0x%x)", rc ? cqe.res : -1);
		mask_write(maskfd, 0, 0);
	}
	ring_register(&r, IORING_UNREGISTER_EVENTFD, -1);
	ring_exit(&r);
	close(cfd);
}

/* Reap every CQE already posted (running pending task work first). */
static int ring_drain(struct ring *r, uint64_t tag, uint32_t *res_or, int *ended)
{
	int n = 0;

	syscall(__NR_io_uring_enter, r->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0);
	for (;;) {
		unsigned int head = *r->cq_head;
		unsigned int tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
		struct io_uring_cqe c;

		if (head == tail)
			return n;
		c = r->cqes[head & *r->cq_mask];
		__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
		if (c.user_data != tag)
			continue;
		n++;
		if (c.res > 0)
			*res_or |= (uint32_t)c.res;
		if (!(c.flags & IORING_CQE_F_MORE))
			*ended = 1;
	}
}

/*
 * A multishot POLL_ADD on a mask fd, through every transition between the 32
 * states: each write that leaves a requested bit set must post a CQE (this
 * kernel wakes the waiters on every write of a non-empty mask: keyed with the
 * new events, or unkeyed when the mask contains PRI, because io_uring drops
 * EPOLLPRI before comparing keys), a write of 0 must post none (it wakes
 * nobody), and the multishot must stay armed throughout.
 */
static void test_io_uring_multishot(int maskfd)
{
	const uint64_t tag = 31;
	struct ring r;
	int rc = ring_init(&r, 64), missing = 0, spurious = 0, ended = 0, wrong_res = 0;
	char first_bad[128] = "";
	uint32_t res;

	if (rc < 0) {
		skip(ename(-rc), "io_uring multishot: io_uring_setup failed");
		ring_exit(&r);
		return;
	}
	mask_write(maskfd, 0, 0);
	rc = ring_submit_one(&r, IORING_OP_POLL_ADD, maskfd, VALID_EVENTS, IORING_POLL_ADD_MULTI, tag);
	if (!check(rc == 1, "io_uring multishot: POLL_ADD with IORING_POLL_ADD_MULTI on a mask fd is accepted")) {
		ring_exit(&r);
		return;
	}
	for (uint32_t from = 0; from < 32; from++) {
		for (uint32_t to = 0; to < 32; to++) {
			int n;

			res = 0;
			mask_write(maskfd, from, from);
			ring_drain(&r, tag, &res, &ended);
			res = 0;
			mask_write(maskfd, to, to);
			n = ring_drain(&r, tag, &res, &ended);
			if (to && n == 0)
				missing++;
			if (!to && n != 0)
				spurious++;
			if (to && n && (res & ~to & VALID_EVENTS))
				wrong_res++;
			if (!first_bad[0] && ((to && n == 0) || (!to && n) || ended))
				snprintf(first_bad, sizeof(first_bad), " (first: 0x%02x -> 0x%02x gave %d CQEs%s)", from,
					 to, n, ended ? ", multishot ended" : "");
			if (ended)
				goto out;
		}
	}
out:
	check(!missing && !spurious && !ended && !wrong_res,
	      "io_uring multishot: 1024 transitions, a CQE for every write of a non-empty mask, none for 0 "
	      "(missing %d, spurious %d, res outside the new mask %d, ended %d)%s",
	      missing, spurious, wrong_res, ended, first_bad);
	/* resignal: rewriting the same non-empty mask posts a new CQE */
	missing = 0;
	for (uint32_t ev = 1; ev < 32 && !ended; ev++) {
		res = 0;
		mask_write(maskfd, ev, 1);
		ring_drain(&r, tag, &res, &ended);
		res = 0;
		mask_write(maskfd, ev, 2);
		if (ring_drain(&r, tag, &res, &ended) == 0)
			missing++;
	}
	check(!missing && !ended, "io_uring multishot: rewriting the same mask posts a new CQE for all 31 masks (missing %d)",
	      missing);
	mask_write(maskfd, 0, 0);
	ring_exit(&r);
}

/* ---- Linux native aio --------------------------------------------------------- */
static void test_aio(int maskfd, bool have_mask)
{
	aio_context_t ctx = 0;
	char path[] = "/tmp/efd-mask-aio.XXXXXX";
	char buf[4096], data[4096];
	struct iocb cb, *cbs[1] = { &cb };
	struct io_event ev;
	struct timespec ts = { 2, 0 };
	int cfd = efd_create(0, T_EFD_NONBLOCK | T_EFD_CLOEXEC);
	int ffd;
	long rc;
	uint64_t v;

	if (syscall(__NR_io_setup, 8, &ctx) < 0) {
		skip(ename(errno), "aio: io_setup failed, aio checks");
		close(cfd);
		return;
	}
	ffd = mkstemp(path);
	memset(data, 'x', sizeof(data));
	if (ffd < 0 || write(ffd, data, sizeof(data)) != (ssize_t)sizeof(data)) {
		skip("cannot create a file in /tmp", "aio checks");
		syscall(__NR_io_destroy, ctx);
		close(cfd);
		return;
	}
	unlink(path);

	memset(&cb, 0, sizeof(cb));
	cb.aio_lio_opcode = IOCB_CMD_PREAD;
	cb.aio_fildes = (uint32_t)ffd;
	cb.aio_buf = (uint64_t)(uintptr_t)buf;
	cb.aio_nbytes = sizeof(buf);
	cb.aio_flags = IOCB_FLAG_RESFD;
	cb.aio_data = 21;
	if (have_mask) {
		cb.aio_resfd = (uint32_t)maskfd;
		errno = 0;
		rc = syscall(__NR_io_submit, ctx, 1, cbs);
		check(rc < 0 && errno == EINVAL, "aio: io_submit with IOCB_FLAG_RESFD = mask fd fails with EINVAL (%ld %s)", rc,
		      ename(errno));
		if (rc == 1)
			syscall(__NR_io_getevents, ctx, 1, 1, &ev, &ts);
	}
	cb.aio_resfd = (uint32_t)cfd;
	rc = syscall(__NR_io_submit, ctx, 1, cbs);
	check(rc == 1, "aio control: io_submit with IOCB_FLAG_RESFD = counter eventfd is accepted (%ld %s)", rc,
	      rc < 0 ? ename(errno) : "");
	if (rc == 1) {
		rc = syscall(__NR_io_getevents, ctx, 1, 1, &ev, &ts);
		v = counter_wait(cfd, 2000);
		check(rc == 1 && ev.data == 21 && ev.res == (int64_t)sizeof(buf) && v == 1,
		      "aio control: the read completes and signals the counter eventfd (count %" PRIu64 ")", v);
	}

	if (have_mask) {
		/* IOCB_CMD_POLL on the mask fd, completion reported through a counter
		 * eventfd: the wakeup comes from a mask write, inside the
		 * in_eventfd recursion guard, so aio must defer the signal. */
		mask_write(maskfd, 0, 0);
		memset(&cb, 0, sizeof(cb));
		cb.aio_lio_opcode = IOCB_CMD_POLL;
		cb.aio_fildes = (uint32_t)maskfd;
		cb.aio_buf = POLLIN;
		cb.aio_flags = IOCB_FLAG_RESFD;
		cb.aio_resfd = (uint32_t)cfd;
		cb.aio_data = 22;
		rc = syscall(__NR_io_submit, ctx, 1, cbs);
		check(rc == 1, "aio: IOCB_CMD_POLL(IN) on a mask fd is accepted (%ld %s)", rc, rc < 0 ? ename(errno) : "");
		if (rc == 1) {
			struct timespec zero = { 0, 0 };

			check(syscall(__NR_io_getevents, ctx, 0, 1, &ev, &zero) == 0,
			      "aio: the poll stays pending while the mask has no IN");
			mask_write(maskfd, POLLIN, 2);
			rc = syscall(__NR_io_getevents, ctx, 1, 1, &ev, &ts);
			v = counter_wait(cfd, 2000);
			check(rc == 1 && ev.data == 22 && (ev.res & POLLIN) && v == 1,
			      "aio: writing IN completes the poll (res 0x%llx) and signals the counter (count %" PRIu64 ")",
			      (unsigned long long)ev.res, v);
		}
		mask_write(maskfd, 0, 0);
	}
	syscall(__NR_io_destroy, ctx);
	close(ffd);
	close(cfd);
}

/* ---- cgroup v1 memory controller ------------------------------------------------ */
/*
 * The positive control of the oom_control refusal: a counter eventfd
 * registered for memory.oom_control of a cgroup is signalled when a child in
 * that cgroup runs out of memory.  The OOM killer is disabled for the cgroup
 * (oom_kill_disable 1), so the child just blocks in the memcg OOM wait (the
 * notification is sent from there) until it is killed, and the kernel prints
 * no OOM report.
 */
static void test_memcg_oom_control(const char *root)
{
	char dir[256], p_oom[300], p_ctl[300], p_procs[300], p_limit[300], line[128], buf[512];
	int cfd = -1, ofd = -1, rc, st = -1;
	uint64_t v = 0;
	bool under = false;
	pid_t pid;

	snprintf(dir, sizeof(dir), "%s/efd-mask-oom", root);
	snprintf(p_oom, sizeof(p_oom), "%s/memory.oom_control", dir);
	snprintf(p_ctl, sizeof(p_ctl), "%s/cgroup.event_control", dir);
	snprintf(p_procs, sizeof(p_procs), "%s/cgroup.procs", dir);
	snprintf(p_limit, sizeof(p_limit), "%s/memory.limit_in_bytes", dir);
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		check(0, "memcg v1 oom control: mkdir %s (%s)", dir, ename(errno));
		return;
	}
	rc = write_str(p_limit, "4194304");
	if (rc == 0)
		rc = write_str(p_oom, "1");
	ofd = open(p_oom, O_RDONLY | O_CLOEXEC);
	cfd = efd_create(0, T_EFD_NONBLOCK | T_EFD_CLOEXEC);
	if (!check(rc == 0 && ofd >= 0 && cfd >= 0,
		   "memcg v1 oom control: a cgroup with a 4 MiB limit and oom_kill_disable 1 (%s)",
		   rc ? ename(-rc) : ofd < 0 ? "no memory.oom_control" : "ok"))
		goto out;
	snprintf(line, sizeof(line), "%d %d", cfd, ofd);
	rc = write_str(p_ctl, line);
	check(rc == 0, "memcg v1 oom control: cgroup.event_control accepts a counter eventfd for oom_control (%s)",
	      rc ? ename(-rc) : "ok");
	if (rc != 0)
		goto out;
	pid = fork();
	if (pid == 0) {
		char me[32];
		size_t len = 64u << 20;
		char *m;

		snprintf(me, sizeof(me), "%d", (int)getpid());
		if (write_str(p_procs, me) < 0)
			_exit(2);
		m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			_exit(3);
		for (size_t i = 0; i < len; i += 4096)
			m[i] = 1; /* blocks in the memcg OOM wait past 4 MiB */
		_exit(4);
	}
	if (pid > 0) {
		v = counter_wait(cfd, 10000);
		if (read_file(p_oom, buf, sizeof(buf)) > 0)
			under = strstr(buf, "under_oom 1") != NULL;
		kill(pid, SIGKILL);
		st = wait_exit(pid, 10000);
	}
	check(pid > 0 && v >= 1 && under && st == 128 + SIGKILL,
	      "memcg v1 oom control: a child over the limit signals the counter eventfd (count %" PRIu64
	      ", under_oom %d, child status %d)",
	      v, under, st);
out:
	if (cfd >= 0)
		close(cfd);
	if (ofd >= 0)
		close(ofd);
	for (int i = 0; i < 200 && rmdir(dir) < 0 && errno == EBUSY; i++)
		msleep(10);
}

/*
 * Set by --no-memcg-v1: the harness read the kernel's config and found
 * CONFIG_MEMCG_V1 unset (6.12 and later build the cgroup v1 memory
 * controller only with it; Debian's 6.12 does not). There is then no
 * cgroup.event_control to refuse a mask fd, and the memcg section checks
 * that absence instead of skipping.
 */
static bool no_memcg_v1;

static void test_memcg(int maskfd, bool have_mask)
{
	const char *root = "/sys/fs/cgroup/memory";
	char mnt[] = "/tmp/efd-mask-memcg";
	char dir[256], p_usage[300], p_oom[300], p_ctl[300], p_procs[300], line[128];
	bool mounted = false;
	struct stat sb;
	int cfd = -1, ufd = -1, ofd = -1, rc;
	pid_t pid;

	snprintf(p_ctl, sizeof(p_ctl), "%s/cgroup.event_control", root);
	if (no_memcg_v1) {
		mkdir(mnt, 0755);
		rc = mount("efd-mask-memcg", mnt, "cgroup", 0, "memory");
		check(rc < 0 && stat(p_ctl, &sb) < 0,
		      "memcg v1: absent, as the kernel config says (CONFIG_MEMCG_V1 unset): mounting cgroup v1 memory "
		      "fails (%s), so no cgroup.event_control exists to take %s",
		      rc < 0 ? ename(errno) : "it succeeded", have_mask ? "a mask fd" : "an eventfd");
		if (rc == 0)
			umount(mnt);
		rmdir(mnt);
		return;
	}
	if (stat(p_ctl, &sb) < 0) {
		root = mnt;
		mkdir(mnt, 0755);
		if (mount("efd-mask-memcg", mnt, "cgroup", 0, "memory") < 0) {
			char why[128];

			snprintf(why, sizeof(why), "cannot mount cgroup v1 memory: %s", ename(errno));
			skip(why, "memcg v1 cgroup.event_control checks");
			rmdir(mnt);
			return;
		}
		mounted = true;
	}
	snprintf(dir, sizeof(dir), "%s/efd-mask-test", root);
	mkdir(dir, 0755);
	snprintf(p_usage, sizeof(p_usage), "%s/memory.usage_in_bytes", dir);
	snprintf(p_oom, sizeof(p_oom), "%s/memory.oom_control", dir);
	snprintf(p_ctl, sizeof(p_ctl), "%s/cgroup.event_control", dir);
	snprintf(p_procs, sizeof(p_procs), "%s/cgroup.procs", dir);
	ufd = open(p_usage, O_RDONLY | O_CLOEXEC);
	ofd = open(p_oom, O_RDONLY | O_CLOEXEC);
	if (ufd < 0 || ofd < 0) {
		skip("no memory.usage_in_bytes / memory.oom_control", "memcg v1 checks");
		goto out;
	}
	if (have_mask) {
		snprintf(line, sizeof(line), "%d %d 1048576", maskfd, ufd);
		rc = write_str(p_ctl, line);
		check(rc == -EINVAL, "memcg v1: cgroup.event_control refuses a mask fd for a usage threshold with EINVAL (%s)",
		      rc ? ename(-rc) : "accepted");
		snprintf(line, sizeof(line), "%d %d", maskfd, ofd);
		rc = write_str(p_ctl, line);
		check(rc == -EINVAL, "memcg v1: cgroup.event_control refuses a mask fd for oom_control with EINVAL (%s)",
		      rc ? ename(-rc) : "accepted");
	}
	cfd = efd_create(0, T_EFD_NONBLOCK | T_EFD_CLOEXEC);
	snprintf(line, sizeof(line), "%d %d 1048576", cfd, ufd);
	rc = write_str(p_ctl, line);
	check(rc == 0, "memcg v1 control: cgroup.event_control accepts a counter eventfd (%s)", rc ? ename(-rc) : "ok");
	if (rc == 0) {
		/* Cross the 1 MiB threshold from a child in the cgroup. */
		pid = fork();
		if (pid == 0) {
			char me[32];
			size_t len = 8u << 20;
			char *m;

			snprintf(me, sizeof(me), "%d", (int)getpid());
			if (write_str(p_procs, me) < 0)
				_exit(2);
			m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED)
				_exit(3);
			for (size_t i = 0; i < len; i += 4096)
				m[i] = 1;
			_exit(0);
		}
		rc = wait_exit(pid, 10000);
		check(rc == 0 && counter_wait(cfd, 3000) >= 1,
		      "memcg v1 control: crossing the usage threshold signals the counter eventfd (child %d)", rc);
	}
	test_memcg_oom_control(root);
out:
	if (cfd >= 0)
		close(cfd);
	if (ufd >= 0)
		close(ufd);
	if (ofd >= 0)
		close(ofd);
	/* Closing the eventfd unregisters the event asynchronously; retry rmdir. */
	for (int i = 0; i < 200 && rmdir(dir) < 0 && errno == EBUSY; i++)
		msleep(10);
	if (mounted) {
		umount2(mnt, MNT_DETACH);
		rmdir(mnt);
	}
}

/* ---- main ------------------------------------------------------------------------- */
static int finish(const char *name)
{
	printf("1..%d\n", n_tests);
	printf("%s: %d passed, %d failed, %d skipped\n", name, n_tests - n_fail - n_skip, n_fail, n_skip);
	fflush(stdout);
	return (n_fail || (strict && n_skip)) ? 1 : 0;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [--strict] [--no-memcg-v1] [--expect-fallback]\n"
		"       %s [--strict] [--no-memcg-v1] --device PATH\n"
		"       %s --probe [--device PATH] [--expect-kernel | --expect-module | --expect-fallback]\n",
		argv0, argv0, argv0);
}

int main(int argc, char **argv)
{
	bool probe_only = false, expect_fallback = false, expect_kernel = false, expect_module = false;
	struct probe_result pr;
	char rel[256] = "?";
	const char *summary;
	int maskfd;

	/* The helper of fd_survives_exec: exit 0 when the fd is closed, 1 when open. */
	if (argc == 3 && !strcmp(argv[1], "--fd-closed"))
		return fcntl(atoi(argv[2]), F_GETFD) < 0 && errno == EBADF ? 0 : 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--device") && i + 1 < argc)
			device = argv[++i];
		else if (!strcmp(argv[i], "--expect-module"))
			expect_module = true;
		else if (!strcmp(argv[i], "--probe"))
			probe_only = true;
		else if (!strcmp(argv[i], "--expect-fallback"))
			expect_fallback = true;
		else if (!strcmp(argv[i], "--expect-kernel"))
			expect_kernel = true;
		else if (!strcmp(argv[i], "--strict"))
			strict = true;
		else if (!strcmp(argv[i], "--no-memcg-v1"))
			no_memcg_v1 = true;
		else {
			usage(argv[0]);
			return 2;
		}
	}
	if (expect_fallback + expect_kernel + expect_module > 1 || (expect_module && !device) ||
	    (expect_kernel && device) || (device && expect_fallback && !probe_only)) {
		usage(argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (read_file("/proc/sys/kernel/osrelease", rel, sizeof(rel)) > 0)
		rel[strcspn(rel, "\n")] = 0;

	if (probe_only) {
		probe(&pr);
		print_probe(&pr);
		if (expect_kernel || expect_module || expect_fallback) {
			const char *want = expect_kernel ? "kernel" : expect_module ? "module" : "fallback";

			check(!strcmp(probe_backend(&pr), want), "probe chooses the %s backend on kernel %s", want, rel);
			return finish("efd-mask-probe");
		}
		return 0;
	}

	diag("efd_mask_conformance on kernel %s, mode %s", rel,
	     expect_fallback ? "expect-fallback" : device ? "module" : "kernel");
	if (expect_fallback) {
		errno = 0;
		maskfd = efd_create(0, T_EFD_MASK | T_EFD_CLOEXEC);
		check(maskfd < 0 && errno == EINVAL, "this kernel lacks EFD_MASK: eventfd2(0, EFD_MASK) fails with EINVAL (%s)",
		      maskfd < 0 ? ename(errno) : "it succeeded");
		if (maskfd >= 0)
			close(maskfd);
		probe(&pr);
		print_probe(&pr);
		check(!pr.passed, "the probe chooses the fallback backend");
		test_counter_regression();
		test_io_uring(-1, false);
		test_aio(-1, false);
		test_memcg(-1, false);
		return finish("efd-mask-fallback");
	}

	summary = device ? "efd-mask-module" : "efd-mask-kernel";
	maskfd = mask_create(T_EFD_CLOEXEC | T_EFD_NONBLOCK);
	if (maskfd < 0) {
		check(0, "%s gives a mask fd: it fails with %s", mask_source(), ename(errno));
		return finish(summary);
	}
	probe(&pr);
	print_probe(&pr);
	check(pr.passed, "the probe chooses the %s backend", probe_backend(&pr));
	if (device)
		test_create_device();
	else
		test_create();
	test_all_combinations();
	test_invalid();
	test_never_blocks();
	test_epoll_et();
	test_wakeups();
	test_refused_writes_wake_nobody();
	test_smp_stress();
	test_fdinfo();
	test_counter_regression();
	test_io_uring(maskfd, true);
	test_io_uring_multishot(maskfd);
	test_aio(maskfd, true);
	test_memcg(maskfd, true);
	/* the mask fd is still fully usable after every refusal */
	check(mask_write(maskfd, POLLOUT, 77) == 12 && mask_is(maskfd, POLLOUT, 77) && poll_now(maskfd, POLLOUT) == POLLOUT,
	      "the mask fd still works after all refusals");
	close(maskfd);
	return finish(summary);
}
