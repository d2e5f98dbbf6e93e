// SPDX-License-Identifier: GPL-2.0-only
/*
 * kernel-stress: random operations on /dev/ummunot from several threads
 * at once, checked against a per-thread model, then the slab count must be
 * back where it started.
 *
 * Each thread owns a fenced arena, a private fd and a cookie space, and
 * also registers in its arena on one fd all threads share (and read).
 * Operations: REGISTER, UNREGISTER, read, poll, counter mmap/munmap,
 * munmap+remap, mremap away and back, MADV_DONTNEED, writes, fork (the
 * child must get EIO), close+reopen.  Oracle on the private fd: every
 * event names a live registration with a hint inside it, and every
 * registration whose range was invalidated (munmap, mremap, madvise) since
 * the last drain is reported in the next drain.  Extra events are allowed:
 * the kernel may invalidate for its own reasons (VMA splits, CoW after a
 * fork by another thread).  The VM harness fails the run on any kernel
 * splat.
 *
 * Usage: kernel-stress [--ops N] [--threads N] [--seed N] [--progress N]
 *                      [--seconds N]
 *   --ops N      operations in all (default 20000; the debug kernel's
 *                matrix row runs 100000, or 1000000 in the full matrix)
 *   --progress N a progress line (operations, rate, slab count) every N
 *                operations (default 100000; 0: none)
 *   --seconds N  stop after N seconds even if fewer operations ran: the
 *                checks still run, the exit status is 3 (incomplete run)
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ummunot.h>

#include "slab_count.h"

#define MAX_THREADS 16
#define ARENA_PAGES 128
#define NREG 48               /* cookies per thread and fd */
#define EVBUF 64

struct reg_model {
	int live;
	int expect;           /* invalidated since the last drain */
	uint64_t start, end;
};

struct worker {
	int id;
	uint64_t rng;
	uint64_t ops;
	char *arena;          /* ARENA_PAGES, fenced by PROT_NONE pages */
	char *spare;          /* mremap target, ARENA_PAGES */
	int fd;               /* private */
	struct reg_model priv[NREG];
	int shared_live[NREG];
	uint64_t events, drains;
	uint64_t op_ns[16];   /* time spent per operation kind */
};

static int shared_fd;
static size_t pg;
static atomic_int failed;
/* Operations done by all threads, for the progress lines and the total. */
static atomic_ullong ops_done;
static uint64_t progress_every = 100000;
/* CLOCK_MONOTONIC times: start, and when to stop (0: run all operations). */
static uint64_t start_ns, deadline_ns;

static void fail(const struct worker *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "kernel-stress: thread %d op %llu: ", w ? w->id : -1,
		w ? (unsigned long long)w->ops : 0ULL);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	atomic_store(&failed, 1);
}

static uint64_t next(struct worker *w)
{
	w->rng ^= w->rng >> 12;
	w->rng ^= w->rng << 25;
	w->rng ^= w->rng >> 27;
	return w->rng * 2685821657736338717ULL;
}

static uint64_t below(struct worker *w, uint64_t n)
{
	return next(w) % n;
}

static uint64_t cookie_of(const struct worker *w, unsigned int k)
{
	return ((uint64_t)w->id << 32) | k;
}

static int do_register(int fd, uint64_t start, uint64_t end, uint64_t cookie)
{
	struct ummunot_register_ioctl r = {
		.start = start, .end = end, .user_cookie = cookie,
	};

	return ioctl(fd, UMMUNOT_REGISTER_REGION, &r) ? errno : 0;
}

static int do_unregister(int fd, uint64_t cookie)
{
	return ioctl(fd, UMMUNOT_UNREGISTER_REGION, &cookie) ? errno : 0;
}

static void op_register(struct worker *w)
{
	unsigned int k = (unsigned int)below(w, NREG);
	uint64_t first = below(w, ARENA_PAGES - 8), len = 1 + below(w, 8);
	uint64_t s = (uint64_t)(uintptr_t)w->arena + first * pg;
	uint64_t e = s + len * pg;
	int shared = below(w, 4) == 0;
	int fd = shared ? shared_fd : w->fd;
	int live = shared ? w->shared_live[k] : w->priv[k].live;
	int err = do_register(fd, s, e, cookie_of(w, k));

	if (err != (live ? EEXIST : 0)) {
		fail(w, "REGISTER %s cookie %u: %s (live %d)",
		     shared ? "shared" : "private", k, strerror(err), live);
		return;
	}
	if (shared) {
		w->shared_live[k] = 1;
	} else if (!err) {
		w->priv[k] = (struct reg_model){ 1, 0, s, e };
	}
}

static void op_unregister(struct worker *w)
{
	unsigned int k = (unsigned int)below(w, NREG);
	int shared = below(w, 4) == 0;
	int fd = shared ? shared_fd : w->fd;
	int live = shared ? w->shared_live[k] : w->priv[k].live;
	int err = do_unregister(fd, cookie_of(w, k));

	if (err != (live ? 0 : ENOENT))
		fail(w, "UNREGISTER cookie %u: %s (live %d)", k, strerror(err),
		     live);
	if (shared)
		w->shared_live[k] = 0;
	else
		w->priv[k].live = w->priv[k].expect = 0;
}

static int event_sane(const struct ummunot_event *e)
{
	if (e->type == UMMUNOT_EVENT_TYPE_LAST)
		return e->flags == 0;
	return e->type == UMMUNOT_EVENT_TYPE_INVAL &&
	       (e->flags & UMMUNOT_EVENT_FLAG_HINT) &&
	       e->hint_start < e->hint_end;
}

/* Reads the private fd until LAST or EAGAIN; checks against the model. */
static void op_drain(struct worker *w)
{
	struct ummunot_event ev[EVBUF];
	int seen[NREG] = { 0 };
	int done = 0;

	while (!done) {
		ssize_t n = read(w->fd, ev, sizeof(ev));

		if (n < 0) {
			if (errno != EAGAIN)
				fail(w, "read: %s", strerror(errno));
			break;
		}
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(ev[0]); i++) {
			const struct ummunot_event *e = &ev[i];
			uint64_t c = e->user_cookie_counter;
			const struct reg_model *m;

			if (!event_sane(e)) {
				fail(w, "bad event type %u flags %#x", e->type,
				     e->flags);
				return;
			}
			if (e->type == UMMUNOT_EVENT_TYPE_LAST) {
				done = 1;
				break;
			}
			m = (c >> 32) == (uint64_t)w->id && (c & 0xffffffff) < NREG ?
			    &w->priv[c & 0xffffffff] : NULL;
			if (!m || !m->live || e->hint_start < m->start ||
			    e->hint_end > m->end) {
				fail(w, "event for cookie %#llx hint [%#llx,%#llx) not a live registration containing it",
				     (unsigned long long)c,
				     (unsigned long long)e->hint_start,
				     (unsigned long long)e->hint_end);
				return;
			}
			seen[c & 0xffffffff] = 1;
			w->events++;
		}
	}
	for (unsigned int k = 0; k < NREG; k++) {
		if (w->priv[k].expect && !seen[k])
			fail(w, "lost event: cookie %u [%#llx,%#llx)", k,
			     (unsigned long long)w->priv[k].start,
			     (unsigned long long)w->priv[k].end);
		w->priv[k].expect = 0;
	}
	w->drains++;
}

static void op_read_shared(struct worker *w)
{
	struct ummunot_event ev[EVBUF];
	ssize_t n = read(shared_fd, ev, sizeof(ev));

	if (n < 0 && errno != EAGAIN)
		fail(w, "shared read: %s", strerror(errno));
	for (ssize_t i = 0; i < n / (ssize_t)sizeof(ev[0]); i++)
		if (!event_sane(&ev[i]))
			fail(w, "bad shared event type %u", ev[i].type);
}

static void op_poll(struct worker *w)
{
	struct pollfd p[2] = {
		{ .fd = w->fd, .events = POLLIN },
		{ .fd = shared_fd, .events = POLLIN },
	};

	if (poll(p, 2, 0) < 0 || ((p[0].revents | p[1].revents) & ~POLLIN))
		fail(w, "poll: revents %#x %#x", p[0].revents, p[1].revents);
}

static void op_counter(struct worker *w)
{
	volatile uint64_t *c = mmap(NULL, pg, PROT_READ, MAP_SHARED, w->fd, 0);

	if (c == MAP_FAILED) {
		fail(w, "counter mmap: %s", strerror(errno));
		return;
	}
	(void)*c;
	munmap((void *)c, pg);
}

/* Every live private registration overlapping [s, e) must be reported. */
static void expect_range(struct worker *w, uint64_t s, uint64_t e)
{
	for (unsigned int k = 0; k < NREG; k++)
		if (w->priv[k].live && w->priv[k].start < e &&
		    s < w->priv[k].end)
			w->priv[k].expect = 1;
}

static void pick_chunk(struct worker *w, uint64_t *s, size_t *len)
{
	uint64_t first = below(w, ARENA_PAGES - 4);

	*len = (1 + below(w, 4)) * pg;
	*s = (uint64_t)(uintptr_t)w->arena + first * pg;
}

static void op_memory(struct worker *w)
{
	uint64_t s;
	size_t len;
	void *p;

	pick_chunk(w, &s, &len);
	p = (void *)(uintptr_t)s;
	switch (below(w, 8)) {
	case 0: /* replace */
		if (mmap(p, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p)
			fail(w, "mmap fixed: %s", strerror(errno));
		expect_range(w, s, s + len);
		break;
	case 1: /* away and back */
		if (mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   w->spare) != w->spare ||
		    mremap(w->spare, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   p) != p)
			fail(w, "mremap: %s", strerror(errno));
		expect_range(w, s, s + len);
		break;
	case 2:
	case 3:
	case 4:
	case 5:
		if (madvise(p, len, MADV_DONTNEED))
			fail(w, "madvise: %s", strerror(errno));
		expect_range(w, s, s + len);
		break;
	default: /* writes: maybe an event (CoW after a fork), never needed */
		for (size_t off = 0; off < len; off += pg)
			((volatile char *)p)[off]++;
		break;
	}
}

static void op_fork(struct worker *w)
{
	pid_t pid = fork();
	int status;

	if (pid < 0) {
		fail(w, "fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		char buf[sizeof(struct ummunot_event)];

		_exit(read(w->fd, buf, sizeof(buf)) == -1 && errno == EIO ? 0 : 1);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0)
		fail(w, "fork child did not get EIO");
}

static void op_reopen(struct worker *w)
{
	close(w->fd);
	w->fd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (w->fd < 0)
		fail(w, "reopen: %s", strerror(errno));
	for (unsigned int k = 0; k < NREG; k++)
		w->priv[k].live = w->priv[k].expect = 0;
}

/*
 * Cumulative shares in per mille.  Forks and VMA changes cost milliseconds
 * under TCG (page-table copies, TLB shootdowns between vCPUs), so they are
 * kept rare enough for 10^6 operations to fit in a CI run.
 */
static const struct {
	unsigned int upto;
	void (*run)(struct worker *w);
} ops[] = {
	{ 300, op_register }, { 480, op_unregister }, { 630, op_drain },
	{ 680, op_read_shared }, { 760, op_poll }, { 780, op_counter },
	{ 997, op_memory }, { 998, op_fork }, { 1000, op_reopen },
};

static char *map_fenced(size_t pages)
{
	char *p = mmap(NULL, (pages + 2) * pg, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	if (mmap(p + pg, pages * pg, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p + pg)
		return NULL;
	return p + pg;
}

static uint64_t ops_per_thread;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void report_progress(uint64_t done)
{
	uint64_t ms = (now_ns() - start_ns) / 1000000 + 1;

	printf("kernel-stress: progress: %llu operations in %llu s (%llu/s), slab %ld\n",
	       (unsigned long long)done, (unsigned long long)ms / 1000,
	       (unsigned long long)(done * 1000 / ms), slab_count_active());
	fflush(stdout);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	while (w->ops < ops_per_thread && !atomic_load(&failed)) {
		unsigned int dice = (unsigned int)below(w, 1000), i = 0;
		uint64_t t0 = now_ns(), t1, done;

		while (dice >= ops[i].upto)
			i++;
		ops[i].run(w);
		t1 = now_ns();
		w->op_ns[i] += t1 - t0;
		w->ops++;
		done = atomic_fetch_add(&ops_done, 1) + 1;
		if (progress_every && done % progress_every == 0)
			report_progress(done);
		if (deadline_ns && t1 >= deadline_ns)
			break;
	}
	op_drain(w);
	close(w->fd);
	return NULL;
}

int main(int argc, char **argv)
{
	static struct worker w[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	uint64_t total = 20000, events = 0, drains = 0;
	unsigned int nthreads = 4, seed = 20261201;
	uint64_t seconds = 0, elapsed_ms;
	const struct timespec nap = { 0, 20 * 1000 * 1000 };
	long slab0, slab1;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--ops"))
			total = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--threads"))
			nthreads = (unsigned int)strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--seed"))
			seed = (unsigned int)strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--progress"))
			progress_every = strtoull(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--seconds"))
			seconds = strtoull(argv[i + 1], NULL, 0);
		else
			argc = 0; /* unknown option: usage */
	}
	if (argc % 2 == 0 || !total || !nthreads || nthreads > MAX_THREADS) {
		fprintf(stderr, "usage: kernel-stress [--ops N] [--threads 1..%d] [--seed N] [--progress N] [--seconds N]\n",
			MAX_THREADS);
		return 2;
	}
	pg = (size_t)sysconf(_SC_PAGESIZE);
	ops_per_thread = (total + nthreads - 1) / nthreads;
	slab0 = slab_count_active();
	if (slab0 < 0) {
		fprintf(stderr, "kernel-stress: no %s slab (module loaded?)\n",
			UMMUNOT_SLAB_NAME);
		return 1;
	}
	printf("kernel-stress: %llu operations, %u threads, seed %u\n",
	       (unsigned long long)(ops_per_thread * nthreads), nthreads, seed);
	fflush(stdout);
	shared_fd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (shared_fd < 0) {
		perror(UMMUNOT_DEVICE_PATH);
		return 1;
	}
	for (unsigned int i = 0; i < nthreads; i++) {
		w[i].id = (int)i;
		w[i].rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)seed << 8) ^ i;
		w[i].arena = map_fenced(ARENA_PAGES);
		w[i].spare = map_fenced(ARENA_PAGES);
		w[i].fd = open(UMMUNOT_DEVICE_PATH,
			       O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (!w[i].arena || !w[i].spare || w[i].fd < 0) {
			perror("set-up");
			return 1;
		}
	}
	start_ns = now_ns();
	if (seconds)
		deadline_ns = start_ns + seconds * 1000000000ULL;
	for (unsigned int i = 0; i < nthreads; i++)
		if (pthread_create(&t[i], NULL, worker_main, &w[i])) {
			perror("pthread_create");
			return 1;
		}
	for (unsigned int i = 0; i < nthreads; i++) {
		pthread_join(t[i], NULL);
		events += w[i].events;
		drains += w[i].drains;
	}
	elapsed_ms = (now_ns() - start_ns) / 1000000 + 1;
	printf("kernel-stress: ms per operation kind (thread 0):");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		printf(" %llu", (unsigned long long)(w[0].op_ns[i] / 1000000));
	printf("\n");
	close(shared_fd);
	slab1 = slab_count_active();
	for (int i = 0; i < 500 && slab1 != slab0; i++) {
		nanosleep(&nap, NULL);
		slab1 = slab_count_active();
	}
	printf("kernel-stress: %llu private events checked over %llu drains; slab %ld -> %ld\n",
	       (unsigned long long)events, (unsigned long long)drains, slab0,
	       slab1);
	if (slab1 != slab0)
		fail(NULL, "slab %s: %ld objects, started at %ld", UMMUNOT_SLAB_NAME,
		     slab1, slab0);
	printf("kernel-stress: %llu of %llu operations done in %llu s (%llu/s)%s\n",
	       (unsigned long long)atomic_load(&ops_done),
	       (unsigned long long)(ops_per_thread * nthreads),
	       (unsigned long long)elapsed_ms / 1000,
	       (unsigned long long)(atomic_load(&ops_done) * 1000 / elapsed_ms),
	       atomic_load(&ops_done) < ops_per_thread * nthreads ?
	       " -- incomplete" : "");
	if (atomic_load(&failed))
		return 1;
	return atomic_load(&ops_done) < ops_per_thread * nthreads ? 3 : 0;
}
