// SPDX-License-Identifier: MIT
/*
 * init: the /init of the UserProto test guest (static: gcc -static).
 *
 * 1. Mounts /proc, /sys, /dev (devtmpfs), /tmp (tmpfs), and the cgroup v1
 *    memory controller on /sys/fs/cgroup/memory when the kernel has it;
 *    brings the loopback interface up when the kernel has IPv4.
 * 2. Runs the commands given (a) as its own arguments (the words after " -- "
 *    on the kernel command line, one command per word; quote a command
 *    with spaces: "/bin/prog --flag") and then (b) one per line from
 *    /guest-tests.txt when that file exists.
 *    A command line is split like a simple shell would: whitespace separates
 *    words, '...' and "..." quote, backslash escapes the next character.
 *    Leading NAME=VALUE words are added to that command's environment.
 *    USERPROTO_TIMEOUT=SECS among them kills the command after SECS seconds.
 *    Lines that are empty or start with '#' are ignored.
 * 3. Prints, for each command:
 *        USERPROTO-GUEST-RUN: <line>
 *        USERPROTO-GUEST-EXIT: <status> <line>      (status: exit code, or
 *                                                    "signal N", "timeout",
 *                                                    "exec-failed")
 *    and at the end exactly one of
 *        USERPROTO-GUEST-RESULT: PASS
 *        USERPROTO-GUEST-RESULT: FAIL <number of failed commands>
 *    A run with no command at all is a FAIL.
 * 4. Powers off: reboot(RB_POWER_OFF) (falls back to RB_AUTOBOOT, which
 *    QEMU's -no-reboot turns into an exit).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TESTS_FILE "/guest-tests.txt"
#define MAX_WORDS 256
#define MAX_ENV 256

extern char **environ;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

static void try_mount(const char *src, const char *dst, const char *type, const char *opts, int quiet)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, 0, opts) < 0 && errno != EBUSY && !quiet)
		say("init: mount %s on %s failed: %s\n", type, dst, strerror(errno));
}

static void setup_mounts(void)
{
	struct stat sb;

	try_mount("proc", "/proc", "proc", NULL, 0);
	try_mount("sysfs", "/sys", "sysfs", NULL, 0);
	try_mount("devtmpfs", "/dev", "devtmpfs", NULL, 0);
	try_mount("tmpfs", "/tmp", "tmpfs", "mode=1777", 0);
	/* cgroup v1 memory controller, only where the kernel has cgroups. */
	if (stat("/sys/fs/cgroup", &sb) == 0) {
		try_mount("cgroup-root", "/sys/fs/cgroup", "tmpfs", "mode=755", 1);
		try_mount("memory", "/sys/fs/cgroup/memory", "cgroup", "memory", 1);
	}
	/* The serial console may be slow to open later; make sure it is ours. */
	if (fcntl(1, F_GETFD) < 0) {
		int fd = open("/dev/console", O_RDWR);

		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
	}
}

/* Bring the loopback interface up (the kernel then gives it 127.0.0.1/8). */
static void loopback_up(void)
{
	struct ifreq ifr;
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (s < 0)
		return; /* no IPv4 in this kernel */
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, "lo", sizeof(ifr.ifr_name) - 1);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
			say("init: bringing lo up failed: %s\n", strerror(errno));
	}
	close(s);
}

/* Split `line` in place into words; returns the count or -1 on bad quoting. */
static int split_words(char *line, char **words, int max)
{
	char *r = line, *w = line;
	int n = 0;

	for (;;) {
		char quote = 0;

		while (*r == ' ' || *r == '\t')
			r++;
		if (!*r)
			return n;
		if (n == max)
			return -1;
		words[n++] = w;
		while (*r && (quote || (*r != ' ' && *r != '\t'))) {
			if (quote) {
				if (*r == quote) {
					quote = 0;
					r++;
				} else if (*r == '\\' && quote == '"' && r[1]) {
					r++;
					*w++ = *r++;
				} else {
					*w++ = *r++;
				}
			} else if (*r == '\'' || *r == '"') {
				quote = *r++;
			} else if (*r == '\\' && r[1]) {
				r++;
				*w++ = *r++;
			} else {
				*w++ = *r++;
			}
		}
		if (quote)
			return -1;
		if (*r)
			r++;
		*w++ = 0;
	}
}

static int is_assignment(const char *s)
{
	const char *eq = strchr(s, '=');

	if (!eq || eq == s)
		return 0;
	for (const char *p = s; p < eq; p++)
		if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (p > s && *p >= '0' && *p <= '9')))
			return 0;
	return 1;
}

/* Base environment plus the command's own NAME=VALUE words (later wins). */
static int build_env(char **env, char **assign, int nassign)
{
	static char *base[] = { "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "TMPDIR=/tmp",
				"TERM=dumb", "USER=root", "LOGNAME=root", NULL };
	int n = 0;

	for (char **e = environ; e && *e && n < MAX_ENV - 1; e++)
		env[n++] = *e;
	for (char **b = base; *b && n < MAX_ENV - 1; b++) {
		size_t klen = (size_t)(strchr(*b, '=') - *b) + 1;
		int dup = 0;

		for (int i = 0; i < n; i++)
			if (!strncmp(env[i], *b, klen))
				dup = 1;
		if (!dup)
			env[n++] = *b;
	}
	for (int a = 0; a < nassign; a++) {
		size_t klen = (size_t)(strchr(assign[a], '=') - assign[a]) + 1;
		int replaced = 0;

		for (int i = 0; i < n; i++) {
			if (!strncmp(env[i], assign[a], klen)) {
				env[i] = assign[a];
				replaced = 1;
			}
		}
		if (!replaced && n < MAX_ENV - 1)
			env[n++] = assign[a];
	}
	env[n] = NULL;
	return n;
}

static volatile sig_atomic_t timed_out;
static void on_alarm(int sig)
{
	(void)sig;
	timed_out = 1;
}

/* Runs one command line; returns 1 if it failed. */
static int run_line(const char *orig)
{
	char *line = strdup(orig);
	char *words[MAX_WORDS + 1], *env[MAX_ENV];
	int nw, first = 0, status, limit = 0;
	char result[64];
	pid_t pid;
	struct timespec t0, t1;

	say("USERPROTO-GUEST-RUN: %s\n", orig);
	if (!line)
		return 1;
	nw = split_words(line, words, MAX_WORDS);
	if (nw < 0) {
		say("USERPROTO-GUEST-EXIT: bad-quoting %s\n", orig);
		free(line);
		return 1;
	}
	while (first < nw && is_assignment(words[first])) {
		if (!strncmp(words[first], "USERPROTO_TIMEOUT=", 18))
			limit = atoi(words[first] + 18);
		first++;
	}
	if (first == nw) {
		say("USERPROTO-GUEST-EXIT: no-command %s\n", orig);
		free(line);
		return 1;
	}
	words[nw] = NULL;
	build_env(env, words, first);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	if (pid == 0) {
		const char *prog = words[first];

		signal(SIGALRM, SIG_DFL);
		if (strchr(prog, '/')) {
			execve(prog, &words[first], env);
		} else {
			static const char *dirs[] = { "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin", NULL };
			char path[4096];

			for (const char **d = dirs; *d; d++) {
				snprintf(path, sizeof(path), "%s/%s", *d, prog);
				execve(path, &words[first], env);
			}
		}
		fprintf(stderr, "init: exec %s: %s\n", prog, strerror(errno));
		_exit(127);
	}
	if (pid < 0) {
		say("USERPROTO-GUEST-EXIT: fork-failed %s\n", orig);
		free(line);
		return 1;
	}
	timed_out = 0;
	if (limit > 0)
		alarm((unsigned int)limit);
	for (;;) {
		pid_t r = waitpid(-1, &status, 0); /* also reaps orphans */

		if (r == pid)
			break;
		if (r < 0 && errno == EINTR && timed_out) {
			kill(pid, SIGKILL);
			continue;
		}
		if (r < 0 && errno == ECHILD)
			break;
	}
	alarm(0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (timed_out)
		snprintf(result, sizeof(result), "timeout");
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		snprintf(result, sizeof(result), "exec-failed");
	else if (WIFEXITED(status))
		snprintf(result, sizeof(result), "%d", WEXITSTATUS(status));
	else
		snprintf(result, sizeof(result), "signal %d", WTERMSIG(status));
	say("USERPROTO-GUEST-EXIT: %s %s\n", result, orig);
	say("init: took %.2f s\n", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	free(line);
	return !(WIFEXITED(status) && WEXITSTATUS(status) == 0 && !timed_out);
}

static void power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* Only reached if the kernel refused; -no-reboot makes QEMU exit on reset. */
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_alarm };
	struct utsname u;
	int ran = 0, failed = 0;
	FILE *f;

	setvbuf(stdout, NULL, _IOLBF, 0);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	setup_mounts();
	loopback_up();
	if (uname(&u) == 0)
		say("USERPROTO-GUEST-BEGIN: %s %s\n", u.release, u.version);

	for (int i = 1; i < argc; i++) {
		failed += run_line(argv[i]);
		ran++;
	}
	f = fopen(TESTS_FILE, "re");
	if (f) {
		char *buf = NULL;
		size_t cap = 0;
		ssize_t n;

		while ((n = getline(&buf, &cap, f)) >= 0) {
			char *s = buf;

			while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
				buf[--n] = 0;
			while (*s == ' ' || *s == '\t')
				s++;
			if (!*s || *s == '#')
				continue;
			failed += run_line(s);
			ran++;
		}
		free(buf);
		fclose(f);
	}
	{
		char up[64] = "";
		FILE *uf = fopen("/proc/uptime", "re");

		if (uf) {
			if (!fgets(up, sizeof(up), uf))
				up[0] = 0;
			fclose(uf);
		}
		up[strcspn(up, " \n")] = 0;
		say("init: %d command(s), %d failed, uptime %s s\n", ran, failed, up[0] ? up : "?");
	}
	if (ran == 0) {
		say("init: no command to run (none on the command line, no %s)\n", TESTS_FILE);
		failed = 1;
	}
	if (failed)
		say("USERPROTO-GUEST-RESULT: FAIL %d\n", failed);
	else
		say("USERPROTO-GUEST-RESULT: PASS\n");
	power_off();
	return 0;
}
