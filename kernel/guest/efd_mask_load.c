// SPDX-License-Identifier: MIT
/*
 * efd_mask_load: the guest's insmod for the efd_mask module, with checks.
 *
 * usage: efd_mask_load MODULE.ko
 *
 * Loads the module with finit_module(2) and checks what a user relies on:
 *  - /dev/efd_mask appears as a character device, mode 0666, owned by root;
 *  - the module cannot be unloaded while a mask fd is open (the fops'
 *    owner holds a reference: delete_module(O_NONBLOCK) fails with
 *    EWOULDBLOCK and the fd keeps working), and can be once it is closed,
 *    which removes the device;
 *  - it loads again afterwards (the state the later tests use).
 * Output is TAP-like and ends with "efd-mask-load: P passed, F failed,
 * S skipped"; the exit status is 0 when nothing failed and the module is
 * loaded at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DEVICE "/dev/efd_mask"
#define SYSMOD "/sys/module/efd_mask"

struct rec {
	uint32_t events;
	uint64_t data;
} __attribute__((packed));

static int n_tests, n_fail;

__attribute__((format(printf, 2, 3))) static int check(int pass, const char *fmt, ...)
{
	va_list ap;

	n_tests++;
	if (!pass)
		n_fail++;
	printf("%s %d - ", pass ? "ok" : "not ok", n_tests);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	return pass;
}

static const char *ename(int e)
{
	const char *n = strerrorname_np(e);

	return n ? n : "E?";
}

/* The module's reference count from sysfs, or -1. */
static long refcnt(void)
{
	char buf[32];
	int fd = open(SYSMOD "/refcnt", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

static int load(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int r, e;

	if (fd < 0)
		return -errno;
	r = (int)syscall(SYS_finit_module, fd, "", 0);
	e = errno;
	close(fd);
	return r < 0 ? -e : 0;
}

static bool device_ok(char *why, size_t len)
{
	struct stat st;

	if (stat(DEVICE, &st) < 0) {
		snprintf(why, len, "stat: %s", ename(errno));
		return false;
	}
	snprintf(why, len, "mode %04o, uid %u, %s", (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
		 S_ISCHR(st.st_mode) ? "char device" : "not a char device");
	return S_ISCHR(st.st_mode) && (st.st_mode & 07777) == 0666 && st.st_uid == 0;
}

int main(int argc, char **argv)
{
	char why[128], tainted[32] = "?";
	struct rec w = { POLLIN | POLLHUP, 0x1122334455667788ULL }, r = { 0, 0 };
	int rc, fd, tf;
	long rcnt;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MODULE.ko\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = load(argv[1]);
	check(rc == 0, "finit_module(%s) loads the module (%s)", argv[1], rc ? ename(-rc) : "ok");
	check(access(SYSMOD, F_OK) == 0, SYSMOD " exists");
	check(device_ok(why, sizeof(why)), DEVICE " is a char device, mode 0666, owned by root (%s)", why);
	rcnt = refcnt();
	check(rcnt == 0, "no reference while no mask fd is open (refcnt %ld)", rcnt);

	fd = open(DEVICE, O_RDWR | O_CLOEXEC);
	check(fd >= 0, "open " DEVICE " gives a mask fd (%s)", fd < 0 ? ename(errno) : "ok");
	rcnt = refcnt();
	check(rcnt == 1, "an open mask fd holds one module reference (refcnt %ld)", rcnt);
	errno = 0;
	rc = (int)syscall(SYS_delete_module, "efd_mask", O_NONBLOCK);
	check(rc < 0 && errno == EWOULDBLOCK, "unloading is refused while a mask fd is open (%d %s)", rc,
	      rc < 0 ? ename(errno) : "it unloaded");
	check(fd >= 0 && write(fd, &w, sizeof(w)) == 12 && read(fd, &r, sizeof(r)) == 12 && r.events == w.events &&
		      r.data == w.data,
	      "the mask fd still works after the refused unload");
	if (fd >= 0)
		close(fd);
	rcnt = refcnt();
	check(rcnt == 0, "closing it drops the reference (refcnt %ld)", rcnt);
	rc = (int)syscall(SYS_delete_module, "efd_mask", O_NONBLOCK);
	check(rc == 0 && access(DEVICE, F_OK) < 0 && access(SYSMOD, F_OK) < 0,
	      "with no fd open the module unloads and " DEVICE " goes away (%s)", rc ? ename(errno) : "ok");
	rc = load(argv[1]);
	check(rc == 0 && device_ok(why, sizeof(why)), "it loads again and " DEVICE " is back (%s; %s)",
	      rc ? ename(-rc) : "ok", why);
	tf = open("/proc/sys/kernel/tainted", O_RDONLY | O_CLOEXEC);
	if (tf >= 0) {
		ssize_t n = read(tf, tainted, sizeof(tainted) - 1);

		tainted[n > 0 ? n : 0] = 0;
		tainted[strcspn(tainted, "\n")] = 0;
		close(tf);
	}
	printf("# kernel taint after loading: %s (out-of-tree and unsigned modules taint)\n", tainted);
	printf("1..%d\n", n_tests);
	printf("efd-mask-load: %d passed, %d failed, 0 skipped\n", n_tests - n_fail, n_fail);
	return n_fail ? 1 : 0;
}
