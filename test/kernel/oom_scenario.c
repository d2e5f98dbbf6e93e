// SPDX-License-Identifier: GPL-2.0-only
/*
 * The OOM scenario: a process holding 2 x 200,000 registrations over the
 * whole user address space and 2,000 VMAs runs out of memory (in a memory
 * cgroup, so only it is affected).  The OOM killer and reaper then
 * invalidate VMA after VMA; each invalidation must stay cheap, so the
 * victim must be gone within 30 seconds and no task may hang.
 *
 * Runs as root inside the VM (meson test vm-kernel-oom).  The OOM report
 * carries a stack dump that the VM harness would count as a bad log, so
 * this program checks the kernel log around the OOM itself (no hung task,
 * BUG, WARNING...), keeps it in $UMMUNOT_VM_OUT/oom-dmesg.txt and clears
 * it; the harness checks everything logged afterwards.
 *
 * Usage: oom-scenario [REGISTRATIONS_PER_FD [VMAS]]
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ummunot.h>

#define CGROOT "/sys/fs/cgroup"
#define CG CGROOT "/ummunot-oom"
#define MEMORY_MAX "256M"
#define DEADLINE_S 30.0
#define TASK_TOP 0x7ffffffff000ULL
#define BAD_LOG "blocked for more than|BUG[: ]|WARNING:|Oops|KASAN|" \
		"circular locking|RCU stall|detected stall|soft lockup"

static void die(const char *what)
{
	fprintf(stderr, "oom-scenario: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		die(path);
	close(fd);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void setup_cgroup(void)
{
	struct stat st;

	if (stat(CGROOT "/cgroup.controllers", &st) != 0 &&
	    mount("none", CGROOT, "cgroup2", 0, NULL) != 0)
		die("mount cgroup2");
	write_file(CGROOT "/cgroup.subtree_control", "+memory");
	if (mkdir(CG, 0755) != 0 && errno != EEXIST)
		die("mkdir " CG);
	write_file(CG "/memory.max", MEMORY_MAX);
	if (stat(CG "/memory.swap.max", &st) == 0)
		write_file(CG "/memory.swap.max", "0");
}

static void reg(int fd, uint64_t cookie)
{
	struct ummunot_register_ioctl r = {
		.start = 0, .end = TASK_TOP, .user_cookie = cookie,
	};

	if (ioctl(fd, UMMUNOT_REGISTER_REGION, &r) != 0)
		die("REGISTER");
}

/* The victim: registrations, VMAs, then memory until the OOM kill. */
static void victim(int ready, long nregs, long nvmas)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	char pid[32];
	int fds[2];

	snprintf(pid, sizeof(pid), "%d\n", getpid());
	write_file(CG "/cgroup.procs", pid);
	write_file("/proc/self/oom_score_adj", "1000\n");
	for (int f = 0; f < 2; f++) {
		fds[f] = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC);
		if (fds[f] < 0)
			die(UMMUNOT_DEVICE_PATH);
		for (long i = 0; i < nregs; i++)
			reg(fds[f], (uint64_t)i);
	}
	/* Alternate protections so that neighbours never merge. */
	for (long i = 0; i < nvmas; i++) {
		int prot = i % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
		volatile char *p = mmap(NULL, pg, prot,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			die("mmap");
		if (prot & PROT_WRITE)
			p[0] = 1;
		else
			(void)p[0];
	}
	if (write(ready, "r", 1) != 1)
		die("write");
	for (;;) {
		char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			continue;
		for (size_t off = 0; off < 1 << 20; off += pg)
			p[off] = 1;
	}
}

/* Saves the kernel log and returns 1 if it shows a hang or a bug. */
static int check_kernel_log(pid_t victim_pid)
{
	int len = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	const char *out = getenv("UMMUNOT_VM_OUT");
	char *buf, path[4096], killed[64], cmd[8192];
	int n, bad;
	FILE *f;

	if (len <= 0 || !(buf = malloc((size_t)len + 1)))
		die("klogctl size");
	n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, len);
	if (n < 0)
		die("klogctl read");
	buf[n] = 0;
	snprintf(path, sizeof(path), "%s/oom-dmesg.txt",
		 out && *out ? out : "/tmp");
	f = fopen(path, "we");
	if (!f)
		die(path);
	fputs(buf, f);
	fclose(f);
	snprintf(killed, sizeof(killed), "Killed process %d", victim_pid);
	if (!strstr(buf, killed)) {
		fprintf(stderr, "oom-scenario: no \"%s\" in the kernel log (%s)\n",
			killed, path);
		free(buf);
		return 1;
	}
	free(buf);
	snprintf(cmd, sizeof(cmd), "grep -E '%s' '%s'", BAD_LOG, path);
	bad = system(cmd) == 0;
	if (bad)
		fprintf(stderr, "oom-scenario: bad kernel log, see %s\n", path);
	else if (klogctl(5 /* SYSLOG_ACTION_CLEAR */, NULL, 0) < 0)
		die("klogctl clear");
	return bad;
}

int main(int argc, char **argv)
{
	long nregs = argc > 1 ? strtol(argv[1], NULL, 0) : 200000;
	long nvmas = argc > 2 ? strtol(argv[2], NULL, 0) : 2000;
	double t0, elapsed;
	int pipefd[2], status = 0;
	pid_t pid;
	char c;

	setup_cgroup();
	if (pipe(pipefd) != 0)
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(pipefd[0]);
		victim(pipefd[1], nregs, nvmas);
	}
	close(pipefd[1]);
	if (read(pipefd[0], &c, 1) != 1) {
		waitpid(pid, &status, 0);
		fprintf(stderr, "oom-scenario: victim failed during set-up (status %#x)\n",
			status);
		return 1;
	}
	printf("oom-scenario: %ld registrations on each of 2 fds, %ld VMAs; allocating\n",
	       nregs, nvmas);
	t0 = now_s();
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_s() - t0 > DEADLINE_S) {
			fprintf(stderr, "oom-scenario: victim still alive after %.0f s\n",
				DEADLINE_S);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			check_kernel_log(pid);
			return 1;
		}
		usleep(10000);
	}
	elapsed = now_s() - t0;
	printf("oom-scenario: victim gone %.2f s after it started allocating (%s %d)\n",
	       elapsed, WIFSIGNALED(status) ? "signal" : "exit status",
	       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
		fprintf(stderr, "oom-scenario: victim was not OOM-killed\n");
		return 1;
	}
	rmdir(CG);
	return check_kernel_log(pid);
}
