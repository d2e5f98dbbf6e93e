// SPDX-License-Identifier: BSD-2-Clause
/*
 * Benchmark (not a test) of the invalidation monitors, side by side:
 *  - changed_ns: the cache's hit-path check, nothing pending;
 *  - munmap_plain_ns / munmap_watched_ns: munmap of one unwatched /
 *    watched page (for uffd the latter includes the event round trip to
 *    the reader thread, which the unmapping thread waits for);
 *  - inval_to_drain_ns: from the start of munmap until drain() has
 *    reported the range, in the unmapping thread;
 *  - inval_seen_other_ns: from the start of munmap in one thread until
 *    another thread, spinning on changed(), sees it;
 *  - watch_unwatch_ns(size): watch + unwatch of a fresh mapping;
 *  - watch_unwatch_4k_<N>vmas_ns: the same with N more mappings in the
 *    process below the buffer (uffd reads /proc/self/maps up to it).
 * Medians of many rounds, in nanoseconds.
 *
 * Usage: bench_uffd [BACKEND...]   (default: uffd ummunot; ummunot needs
 * the module, i.e. the VM).  Backends that cannot open are reported as
 * unavailable, with the reason.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

#define ROUNDS 2000
#define CHANGED_CALLS 50000000L

static long page;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static uint64_t median(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[n / 2];
}

static char *map_touched(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	memset(p, 1, len);
	return p;
}

static void ignore_inval(void *ctx, uint64_t cookie, uintptr_t s, uintptr_t e,
			 unsigned int flags)
{
	(void)flags;
	(void)cookie;
	(void)s;
	(void)e;
	++*(int *)ctx;
}

static double bench_changed(struct monitor *m)
{
	uint64_t t0 = now_ns();
	long hits = 0;

	for (long i = 0; i < CHANGED_CALLS; i++)
		hits += m->ops->changed(m);
	if (hits)
		fprintf(stderr, "note: changed() was true %ld times\n", hits);
	return (double)(now_ns() - t0) / CHANGED_CALLS;
}

static int watch(struct monitor *m, uint64_t cookie, char *p, size_t len)
{
	return m->ops->watch(m, cookie, (uintptr_t)p, (uintptr_t)p + len);
}

/* munmap of an unwatched page, for reference. */
static uint64_t bench_munmap_plain(void)
{
	static uint64_t t[ROUNDS];

	for (int i = 0; i < ROUNDS; i++) {
		char *p = map_touched(page);
		uint64_t t0 = now_ns();

		munmap(p, page);
		t[i] = now_ns() - t0;
	}
	return median(t, ROUNDS);
}

/* munmap of a watched page, and until drain() has reported it. */
static int bench_munmap_watched(struct monitor *m, uint64_t *munmap_ns,
				uint64_t *drain_ns)
{
	static uint64_t tm[ROUNDS], td[ROUNDS];

	for (int i = 0; i < ROUNDS; i++) {
		char *p = map_touched(page);
		int got = 0, rc;
		uint64_t t0, t1;

		rc = watch(m, 1, p, page);
		if (rc < 0)
			return rc;
		t0 = now_ns();
		munmap(p, page);
		t1 = now_ns();
		while (!m->ops->changed(m))
			;
		while (!got) {
			if (m->ops->drain(m, ignore_inval, &got) < 0)
				return -EIO;
		}
		tm[i] = t1 - t0;
		td[i] = now_ns() - t0;
		m->ops->unwatch(m, 1);
	}
	*munmap_ns = median(tm, ROUNDS);
	*drain_ns = median(td, ROUNDS);
	return 0;
}

struct spinner {
	struct monitor *m;
	atomic_int phase;	/* 1: spin on changed(); 2: seen; 3: quit */
	atomic_uint_fast64_t seen_at;
};

static void *spin_main(void *arg)
{
	struct spinner *s = arg;

	for (;;) {
		int ph = atomic_load(&s->phase);

		if (ph == 3)
			return NULL;
		if (ph == 1 && s->m->ops->changed(s->m)) {
			atomic_store(&s->seen_at, now_ns());
			atomic_store(&s->phase, 2);
		}
	}
}

/* From munmap in this thread to changed() true in another thread. */
static int bench_seen_other(struct monitor *m, uint64_t *ns)
{
	static uint64_t t[ROUNDS / 4];
	struct spinner s = { .m = m };
	pthread_t th;

	pthread_create(&th, NULL, spin_main, &s);
	for (int i = 0; i < ROUNDS / 4; i++) {
		char *p = map_touched(page);
		int got = 0;
		uint64_t t0;

		if (watch(m, 1, p, page) < 0) {
			atomic_store(&s.phase, 3);
			pthread_join(th, NULL);
			return -EIO;
		}
		atomic_store(&s.phase, 1);
		t0 = now_ns();
		munmap(p, page);
		while (atomic_load(&s.phase) != 2)
			;
		t[i] = atomic_load(&s.seen_at) - t0;
		while (!got)
			if (m->ops->drain(m, ignore_inval, &got) < 0)
				break;
		m->ops->unwatch(m, 1);
		atomic_store(&s.phase, 0);
	}
	atomic_store(&s.phase, 3);
	pthread_join(th, NULL);
	*ns = median(t, ROUNDS / 4);
	return 0;
}

static uint64_t bench_watch_unwatch(struct monitor *m, size_t len)
{
	static uint64_t t[200];
	int rounds = len >= (16u << 20) ? 20 : 200;

	for (int i = 0; i < rounds; i++) {
		char *p = map_touched(len);
		uint64_t t0 = now_ns();

		if (watch(m, 1, p, len) < 0)
			return 0;
		m->ops->unwatch(m, 1);
		t[i] = now_ns() - t0;
		munmap(p, len);
		while (m->ops->changed(m)) {
			int got = 0;

			m->ops->drain(m, ignore_inval, &got);
		}
	}
	return median(t, (size_t)rounds);
}

/* watch + unwatch of one page with @n extra mappings listed before it. */
static uint64_t bench_many_vmas(struct monitor *m, int n)
{
	static uint64_t t[200];
	char *buf = map_touched(page);
	char **extra = calloc((size_t)n, sizeof(*extra));

	for (int i = 0; i < n; i++) {
		/* Alternating protections keep them from merging. */
		extra[i] = mmap(NULL, page, i % 2 ? PROT_READ : PROT_NONE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	for (int i = 0; i < 200; i++) {
		uint64_t t0 = now_ns();

		if (watch(m, 1, buf, page) < 0)
			return 0;
		m->ops->unwatch(m, 1);
		t[i] = now_ns() - t0;
	}
	for (int i = 0; i < n; i++)
		munmap(extra[i], page);
	free(extra);
	munmap(buf, page);
	while (m->ops->changed(m)) {
		int got = 0;

		m->ops->drain(m, ignore_inval, &got);
	}
	return median(t, 200);
}

static void run(const char *name, struct monitor *(*open_fn)(void))
{
	static const size_t sizes[] = { 4096, 65536, 1 << 20, 16 << 20 };
	struct monitor *m = open_fn();
	uint64_t plain, munmap_w, drain, other;

	if (!m) {
		printf("%s: unavailable (%s)\n", name, strerror(errno));
		return;
	}
	printf("%s: changed_ns=%.2f", name, bench_changed(m));
	plain = bench_munmap_plain();
	if (bench_munmap_watched(m, &munmap_w, &drain) == 0)
		printf(" munmap_plain_ns=%llu munmap_watched_ns=%llu inval_to_drain_ns=%llu",
		       (unsigned long long)plain, (unsigned long long)munmap_w,
		       (unsigned long long)drain);
	if (bench_seen_other(m, &other) == 0)
		printf(" inval_seen_other_ns=%llu", (unsigned long long)other);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		printf(" watch_unwatch_%zuk_ns=%llu", sizes[i] >> 10,
		       (unsigned long long)bench_watch_unwatch(m, sizes[i]));
	printf(" watch_unwatch_4k_2000vmas_ns=%llu",
	       (unsigned long long)bench_many_vmas(m, 2000));
	printf("\n");
	fflush(stdout);
	m->ops->close(m);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		struct monitor *(*open)(void);
	} backends[] = {
		{ "uffd", monitor_uffd_open },
		{ "ummunot", monitor_ummunot_open },
	};
	const char *defaults[] = { "uffd", "ummunot" };
	const char **want = argc > 1 ? (const char **)argv + 1 : defaults;
	int n = argc > 1 ? argc - 1 : 2;

	page = sysconf(_SC_PAGESIZE);
	for (int i = 0; i < n; i++) {
		bool known = false;

		for (size_t b = 0; b < sizeof(backends) / sizeof(backends[0]); b++) {
			if (strcmp(want[i], backends[b].name) == 0) {
				run(backends[b].name, backends[b].open);
				known = true;
			}
		}
		if (!known) {
			fprintf(stderr, "unknown backend %s\n", want[i]);
			return 2;
		}
	}
	return 0;
}
