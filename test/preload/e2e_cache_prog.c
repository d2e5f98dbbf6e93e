// SPDX-License-Identifier: BSD-2-Clause
/*
 * Interposition cases that need the shim to cache (run by e2e.sh with
 * UMMUSHIM_MONITOR=uffd), against the libibverbs test double:
 *
 *   cancel  a thread is cancelled while the real registration it made
 *           through the shim blocks (in read(), a cancellation point); the
 *           registration must complete and the same key must stay usable
 *           (a cancelled pending entry would hang every later caller).
 *   fork    a child made with the raw fork system call (no fork handlers)
 *           frees its PD and closes the device: the parent's cached MRs
 *           must never be deregistered from the child.
 *   rereg   ibv_rereg_mr of a cached MR held twice fails with EBUSY
 *           without reaching the library; held once, it goes through.
 *   forkfirst  a child forked (with fork handlers) before the first
 *           registration caches on its own.
 *   sigdereg   a signal handler deregisters a cached MR while the thread
 *           is inside the shim: the MR must not be freed behind the
 *           cache (the next hit would return a dead MR).
 *   sigexit    the same, but the handler ends its thread (pthread_exit)
 *           before the thread returns from the shim: the queued dereg must
 *           still be done, once (another thread's next call does it), so
 *           the MR's PD can be freed.
 *   rights-all    (UMMUSHIM_SUBRANGE=all) a buffer registered with
 *           LOCAL_WRITE, then with REMOTE_READ (Open MPI's ofi_rxm): the
 *           second registers it once with both rights, and every later use
 *           of either kind hits that registration.
 *   rights-exact  (local or off) the same calls: each flag set gets a
 *           registration of its own, never one with more rights.
 *   rights-invalid  (any mode) remote write or atomic access without
 *           local write fails with EINVAL, as without the shim, even inside
 *           a cached region registered with all three.
 *
 * Prints "e2e-cache CASE: ok"; exits non-zero on failure.  A watchdog
 * alarm turns a hang into a failure.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fake_ibverbs.h"

#define LEN (1 << 16)

#define CHECK(cond)                                                       \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "%s:%d: check failed: %s\n",      \
				__FILE__, __LINE__, #cond);               \
			return 1;                                         \
		}                                                         \
	} while (0)

static struct ibv_pd *g_pd;

/*
 * A buffer with an inaccessible page on either side, so that two buffers
 * never touch (the cache would merge touching regions of one PD).
 */
static char *new_buf(void)
{
	long page = sysconf(_SC_PAGESIZE);
	char *b = mmap(NULL, LEN + 2 * (size_t)page, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (b == MAP_FAILED)
		return NULL;
	b += page;
	if (mprotect(b, LEN, PROT_READ | PROT_WRITE))
		return NULL;
	memset(b, 1, LEN);
	return b;
}

static struct ibv_mr *reg(char *buf)
{
	return ibv_reg_mr(g_pd, buf, LEN, IBV_ACCESS_LOCAL_WRITE);
}

/* ---- cancel ------------------------------------------------------------- */

struct canceled {
	char *buf;
	struct ibv_mr *_Atomic mr;
};

static void *reg_then_cancel_point(void *arg)
{
	struct canceled *c = arg;

	atomic_store(&c->mr, reg(c->buf));
	pthread_testcancel();
	return NULL;
}

static int case_cancel(void)
{
	struct canceled c = { .buf = new_buf() };
	struct timespec until;
	struct ibv_mr *mr;
	pthread_t t;
	int p[2];

	CHECK(c.buf && pipe(p) == 0);
	fake_ibv_reg_block_fd = p[0];
	CHECK(pthread_create(&t, NULL, reg_then_cancel_point, &c) == 0);
	while (__atomic_load_n(&fake_ibv_counts.reg_mr_iova2, __ATOMIC_SEQ_CST) == 0)
		sched_yield();
	/* The thread is blocked in read() inside the real registration. */
	CHECK(pthread_cancel(t) == 0);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	/* Without protection the cancel takes effect in read() at once. */
	if (pthread_timedjoin_np(t, NULL, &until) == 0)
		fprintf(stderr, "cancel: the thread died inside ibv_reg_mr\n");
	fake_ibv_reg_block_fd = -1;
	CHECK(write(p[1], "x", 1) == 1);
	pthread_join(t, NULL);
	CHECK(atomic_load(&c.mr) && fake_ibv_mr_is_live(atomic_load(&c.mr)));
	/* The key is usable: no pending entry left behind (watchdog). */
	mr = reg(c.buf);
	CHECK(mr && fake_ibv_mr_is_live(mr));
	CHECK(ibv_dereg_mr(mr) == 0);
	return 0;
}

/* ---- fork --------------------------------------------------------------- */

static int child_after_raw_fork(struct ibv_context *ctx)
{
	int deregs = fake_ibv_counts.dereg_mr;
	char *other = new_buf();
	struct ibv_mr *mr;

	/* A new registration in the child passes through. */
	CHECK(other);
	mr = reg(other);
	CHECK(mr && fake_ibv_mr_is_live(mr));
	CHECK(ibv_dereg_mr(mr) == 0);
	CHECK(fake_ibv_counts.dereg_mr == deregs + 1);
	/* Releasing the PD and the device must not touch the parent's MRs. */
	(void)ibv_dealloc_pd(g_pd);
	CHECK(fake_ibv_counts.dereg_mr == deregs + 1);
	CHECK(ibv_close_device(ctx) == 0);
	CHECK(fake_ibv_counts.dereg_mr == deregs + 1);
	CHECK(fake_ibv_counts.dead_mr_calls == 0);
	return 0;
}

/* Is every other thread of this process asleep (state S) right now? */
static int others_asleep(void)
{
	DIR *d = opendir("/proc/self/task");
	pid_t self = (pid_t)syscall(SYS_gettid);
	struct dirent *t;
	int asleep = 1;

	if (!d)
		return 0;
	while (asleep && (t = readdir(d))) {
		char path[300], buf[256], *rp;
		FILE *f;

		if (t->d_name[0] == '.' || atoi(t->d_name) == self)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", t->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;	/* exited meanwhile */
		rp = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		asleep = rp && rp[1] == ' ' && rp[2] == 'S';
		fclose(f);
	}
	closedir(d);
	return asleep;
}

/*
 * A raw SYS_fork child inherits every lock another thread held at that
 * instant (the shim's reader and releaser threads, just started by the
 * first registration, may still be inside the C library's or a
 * sanitizer's thread start-up).  Fork once they are parked in poll() or
 * read(): seen asleep twice, 10 ms apart (at most 2 s).
 */
static void wait_shim_threads_parked(void)
{
	const struct timespec tick = { 0, 10 * 1000 * 1000 };
	int seen = 0;

	for (int i = 0; i < 200 && seen < 2; i++) {
		seen = others_asleep() ? seen + 1 : 0;
		nanosleep(&tick, NULL);
	}
}

static int case_fork(struct ibv_context *ctx)
{
	char *idle_buf = new_buf(), *busy_buf = new_buf();
	struct ibv_mr *idle, *busy;
	int status, regs;
	pid_t pid;

	CHECK(idle_buf && busy_buf);
	idle = reg(idle_buf);
	busy = reg(busy_buf);
	CHECK(idle && busy && ibv_dereg_mr(idle) == 0);
	wait_shim_threads_parked();
	fflush(NULL);
	pid = (pid_t)syscall(SYS_fork);
	CHECK(pid >= 0);
	if (pid == 0)	/* exit(), not _exit(): destructors run (statistics) */
		exit(child_after_raw_fork(ctx));
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The parent still has its cached MR. */
	regs = fake_ibv_counts.reg_mr_iova2;
	CHECK(reg(idle_buf) == idle && fake_ibv_counts.reg_mr_iova2 == regs);
	CHECK(fake_ibv_mr_is_live(idle) && fake_ibv_mr_is_live(busy));
	return 0;
}

/* ---- rereg -------------------------------------------------------------- */

static int case_rereg(void)
{
	char *buf = new_buf();
	struct ibv_mr *a, *b;

	CHECK(buf);
	a = reg(buf);
	b = reg(buf);
	CHECK(a && a == b);		/* cached: one MR, two holders */
	errno = 0;
	CHECK(ibv_rereg_mr(a, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0,
			   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ) ==
	      IBV_REREG_MR_ERR_INPUT);
	CHECK(errno == EBUSY);
	CHECK(fake_ibv_counts.rereg_mr == 0);
	CHECK(ibv_dereg_mr(b) == 0);
	/* One holder left: allowed, and the MR leaves the cache. */
	CHECK(ibv_rereg_mr(a, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0,
			   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ) == 0);
	CHECK(fake_ibv_counts.rereg_mr == 1);
	CHECK(ibv_dereg_mr(a) == 0 && !fake_ibv_mr_is_live(a));
	return 0;
}

/* ---- forkfirst ------------------------------------------------------------ */

static int child_caches(void)
{
	char *buf = new_buf();
	struct ibv_mr *a, *b;
	int regs;

	CHECK(buf);
	regs = fake_ibv_counts.reg_mr_iova2;
	a = reg(buf);
	CHECK(a && ibv_dereg_mr(a) == 0);
	b = reg(buf);
	CHECK(b == a);					/* a hit */
	CHECK(fake_ibv_counts.reg_mr_iova2 == regs + 1);
	CHECK(ibv_dereg_mr(b) == 0);
	return 0;
}

static int case_forkfirst(void)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		_exit(child_caches());
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return child_caches();	/* and the parent too */
}

/* ---- sigdereg ------------------------------------------------------------- */

static struct ibv_mr *g_sig_mr;
static volatile sig_atomic_t g_sig_rc = -1;

static void dereg_in_handler(int sig)
{
	(void)sig;
	g_sig_rc = ibv_dereg_mr(g_sig_mr);
}

static void raise_once(void)
{
	fake_ibv_reg_hook = NULL;
	raise(SIGUSR1);
}

static int case_sigdereg(void)
{
	char *cached = new_buf(), *other = new_buf();
	struct ibv_mr *mr, *again, *o;

	CHECK(cached && other);
	CHECK(signal(SIGUSR1, dereg_in_handler) != SIG_ERR);
	mr = reg(cached);			/* cached, held once */
	CHECK(mr);
	g_sig_mr = mr;
	/* The handler runs inside the real registration of @other. */
	fake_ibv_reg_hook = raise_once;
	o = reg(other);
	CHECK(o && g_sig_rc == 0);
	CHECK(fake_ibv_mr_is_live(mr));	/* not freed behind the cache */
	again = reg(cached);
	CHECK(again == mr && fake_ibv_mr_is_live(again));
	CHECK(ibv_dereg_mr(again) == 0 && ibv_dereg_mr(o) == 0);
	CHECK(fake_ibv_counts.dead_mr_calls == 0);
	return 0;
}

/* ---- sigexit -------------------------------------------------------------- */

static void dereg_and_exit(int sig)
{
	(void)sig;
	g_sig_rc = ibv_dereg_mr(g_sig_mr);
	pthread_exit(NULL);
}

/* The handler runs inside this (uncached: on-demand) registration. */
static void *sigexit_thread(void *arg)
{
	fake_ibv_reg_hook = raise_once;
	ibv_reg_mr(g_pd, arg, LEN, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_ON_DEMAND);
	return arg;	/* not reached */
}

static int case_sigexit(void)
{
	char *cached = new_buf(), *other = new_buf();
	struct ibv_mr *mr;
	pthread_t t;
	void *ret = other;

	CHECK(cached && other);
	CHECK(signal(SIGUSR1, dereg_and_exit) != SIG_ERR);
	mr = reg(cached);			/* cached, held once */
	CHECK(mr);
	g_sig_mr = mr;
	CHECK(pthread_create(&t, NULL, sigexit_thread, other) == 0);
	CHECK(pthread_join(t, &ret) == 0);
	CHECK(ret == NULL && g_sig_rc == 0);	/* ended in the handler */
	CHECK(fake_ibv_mr_is_live(mr));		/* not freed behind the cache */
	/* Idle now (the queued dereg done here): released with its PD. */
	CHECK(ibv_dealloc_pd(g_pd) == 0);
	CHECK(!fake_ibv_mr_is_live(mr));
	CHECK(fake_ibv_counts.dead_mr_calls == 0);
	return 0;
}

/* ---- rights ------------------------------------------------------------- */

static int case_rights(bool widen)
{
	const unsigned int lw = IBV_ACCESS_LOCAL_WRITE, rr = IBV_ACCESS_REMOTE_READ;
	char *buf = new_buf();
	struct ibv_mr *w, *r;
	int regs, live;

	CHECK(buf);
	regs = fake_ibv_counts.reg_mr_iova2;
	live = fake_ibv_counts.live_mrs;
	w = ibv_reg_mr(g_pd, buf, LEN, (int)lw);
	CHECK(w && ibv_dereg_mr(w) == 0);
	r = ibv_reg_mr(g_pd, buf, LEN, (int)rr);
	CHECK(r && r->addr == buf && r->length == LEN);
	CHECK(fake_ibv_counts.reg_mr_iova2 == regs + 2);
	CHECK(fake_ibv_counts.last_access == (widen ? (lw | rr) : rr));
	CHECK(ibv_dereg_mr(r) == 0);
	for (int i = 0; i < 3; i++) {
		w = ibv_reg_mr(g_pd, buf, LEN, (int)lw);
		r = ibv_reg_mr(g_pd, buf, LEN, (int)rr);
		CHECK(w && r && w != r);
		CHECK(w->addr == buf && w->length == LEN);
		CHECK(r->addr == buf && r->length == LEN);
		/* One registration's keys, or each its own. */
		CHECK(widen ? w->rkey == r->rkey : w->rkey != r->rkey);
		CHECK(ibv_dereg_mr(w) == 0 && ibv_dereg_mr(r) == 0);
	}
	CHECK(fake_ibv_counts.reg_mr_iova2 == regs + 2);
	/* all: the LOCAL_WRITE-only one went when the union replaced it. */
	CHECK(fake_ibv_counts.live_mrs == live + (widen ? 1 : 2));
	return 0;
}

/*
 * Invalid rights (remote write or atomics without local write) fail with the
 * shim as without it, even where a cached region holds them all, under
 * every UMMUSHIM_SUBRANGE.
 */
static int case_rights_invalid(void)
{
	const unsigned int lw = IBV_ACCESS_LOCAL_WRITE,
			   rw = IBV_ACCESS_REMOTE_WRITE,
			   ra = IBV_ACCESS_REMOTE_ATOMIC;
	char *buf = new_buf();
	struct ibv_mr *all, *bad;
	int regs;

	CHECK(buf);
	all = ibv_reg_mr(g_pd, buf, LEN, (int)(lw | rw | ra));
	CHECK(all);
	regs = fake_ibv_counts.reg_mr_iova2;
	for (int i = 0; i < 2; i++) {	/* the region in use, then idle */
		errno = 0;
		bad = ibv_reg_mr(g_pd, buf, LEN, (int)rw);
		CHECK(!bad && errno == EINVAL);
		errno = 0;
		bad = ibv_reg_mr(g_pd, buf + 64, 64, (int)ra);
		CHECK(!bad && errno == EINVAL);
		if (i == 0)
			CHECK(ibv_dereg_mr(all) == 0);
	}
	/* Each was the real library's answer. */
	CHECK(fake_ibv_counts.reg_mr_iova2 == regs + 4);
	return 0;
}

int main(int argc, char **argv)
{
	struct ibv_context *ctx = fake_ibv_open();
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: e2e_cache_prog cancel|fork|rereg|forkfirst|sigdereg|sigexit|rights-all|rights-exact|rights-invalid\n");
		return 2;
	}
	alarm(30);	/* a hang is a failure */
	g_pd = ibv_alloc_pd(ctx);
	if (!g_pd)
		return 1;
	if (strcmp(argv[1], "cancel") == 0)
		rc = case_cancel();
	else if (strcmp(argv[1], "fork") == 0)
		rc = case_fork(ctx);
	else if (strcmp(argv[1], "rereg") == 0)
		rc = case_rereg();
	else if (strcmp(argv[1], "forkfirst") == 0)
		rc = case_forkfirst();
	else if (strcmp(argv[1], "sigdereg") == 0)
		rc = case_sigdereg();
	else if (strcmp(argv[1], "sigexit") == 0)
		rc = case_sigexit();
	else if (strcmp(argv[1], "rights-all") == 0)
		rc = case_rights(true);
	else if (strcmp(argv[1], "rights-exact") == 0)
		rc = case_rights(false);
	else if (strcmp(argv[1], "rights-invalid") == 0)
		rc = case_rights_invalid();
	else
		rc = 2;
	if (rc == 0)
		printf("e2e-cache %s: ok\n", argv[1]);
	return rc;
}
