// SPDX-License-Identifier: BSD-2-Clause
/*
 * The userfaultfd monitor's hit-path check (check(), preload/monitor_uffd.c):
 * the kernel behaviour it relies on, the check itself, and the cache on
 * top of it against the replacements userfaultfd reports late (an unmap
 * racing with another thread's remap and registration) or never
 * (shmat(SHM_REMAP)).  UMMUSHIM_TEST_NO_PROBE=1 opens the monitor without
 * the probe: the tests that need it must then fail.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cache.h"
#include "monitor.h"
#include "monitor_uffd.h"
#include "stats.h"

#define PD ((void *)0x1000)
#define CTX ((void *)0xc1)
#define RACE_ROUNDS 1000
#define RACE_LEN (4 * 4096)
#define N_HOGS 2	/* keep both CPUs of the test machine busy */

static long page;

static unsigned int open_flags(void)
{
	const char *no = getenv("UMMUSHIM_TEST_NO_PROBE");

	return no && strcmp(no, "1") == 0 ? UFFD_OPEN_FORCE_NO_PROBE : 0;
}

static struct monitor *open_mon(void)
{
	struct monitor *m = monitor_uffd_open_flags(open_flags(), 0);

	ck_assert_msg(m, "monitor_uffd_open: %s", strerror(errno));
	return m;
}

static char *map_anon(void *at, size_t len)
{
	char *p = mmap(at, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1,
		       0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	memset(p, 0x5a, len);
	return p;
}

/* shmat(SHM_REMAP) a fresh segment over [p, p + len): no uffd event. */
static void shm_remap(char *p, size_t len)
{
	int id = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
	char *q;

	ck_assert_int_ge(id, 0);
	q = shmat(id, p, SHM_REMAP);
	ck_assert_ptr_eq(q, p);
	shmctl(id, IPC_RMID, NULL);	/* freed once detached */
}

struct got {
	int n;
	bool covers;
	uintptr_t start, end;	/* the range that must be covered */
};

static void collect(void *ctx, uint64_t cookie, uintptr_t start, uintptr_t end,
		    unsigned int flags)
{
	struct got *g = ctx;

	(void)cookie;
	(void)flags;
	g->n++;
	if (start <= g->start && end >= g->end)
		g->covers = true;
}

static bool drain_covers(struct monitor *m, void *p, size_t len)
{
	struct got g = { .start = (uintptr_t)p, .end = (uintptr_t)p + len };

	ck_assert_int_ge(m->ops->drain(m, collect, &g), 0);
	return g.covers;
}

static void setup(void)
{
	page = sysconf(_SC_PAGESIZE);
}

/* ---- the kernel behaviour the probe relies on ---------------------------- */

static int raw_probe(int uffd, void *p)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)p, .len = (uint64_t)page },
		.mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
	};

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) ? errno : 0;
}

static void *unmap_first_page(void *p)
{
	munmap(p, (size_t)page);	/* sleeps until its event is read */
	return NULL;
}

/*
 * From the start of an unmap until its UNMAP event is read, probing any
 * registered page fails with EAGAIN; afterwards the unmapped page fails
 * with ENOENT and a registered one succeeds.
 */
START_TEST(kernel_probe_eagain_then_enoent)
{
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_EVENT_UNMAP };
	char *p = map_anon(NULL, 2 * (size_t)page);
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)p, .len = 2 * (uint64_t)page },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	struct uffd_msg msg;
	pthread_t t;

	ck_assert_int_ge(uffd, 0);
	ck_assert_int_eq(ioctl(uffd, UFFDIO_API, &api), 0);
	ck_assert_int_eq(ioctl(uffd, UFFDIO_REGISTER, &r), 0);
	ck_assert_int_eq(raw_probe(uffd, p + page), 0);
	pthread_create(&t, NULL, unmap_first_page, p);
	ck_assert_int_eq(poll(&pfd, 1, 10000), 1);
	ck_assert_int_eq(pfd.revents, POLLIN);	/* the event is queued */
	ck_assert_int_eq(raw_probe(uffd, p + page), EAGAIN);
	ck_assert_int_eq(read(uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	ck_assert_int_eq(msg.event, UFFD_EVENT_UNMAP);
	pthread_join(t, NULL);
	ck_assert_int_eq(raw_probe(uffd, p + page), 0);
	map_anon(p, (size_t)page);	/* a new mapping starts unregistered */
	ck_assert_int_eq(raw_probe(uffd, p), ENOENT);
	close(uffd);	/* first: nobody would read the next UNMAP event */
	munmap(p, 2 * (size_t)page);
}
END_TEST

/* ---- check() -------------------------------------------------------------- */

START_TEST(check_passes_on_intact_watch)
{
	struct monitor *m = open_mon();
	char *p = map_anon(NULL, 4 * (size_t)page);

	ck_assert_int_eq(m->ops->watch(m, 1, (uintptr_t)p,
				       (uintptr_t)p + 4 * page), 0);
	ck_assert(monitor_check(m, (uintptr_t)p, (uintptr_t)p + 4 * page));
	ck_assert(!m->ops->changed(m));
	m->ops->unwatch(m, 1);
	munmap(p, 4 * (size_t)page);
	m->ops->close(m);
}
END_TEST

/* A failed check keeps changed() true until a drain reports the range. */
START_TEST(failed_check_reported_by_drain)
{
	struct monitor *m = open_mon();
	char *p = map_anon(NULL, 2 * (size_t)page);
	uintptr_t s = (uintptr_t)p, e = s + 2 * (uintptr_t)page;

	ck_assert(!monitor_check(m, s, e));	/* never watched */
	ck_assert(m->ops->changed(m));
	ck_assert(!monitor_check(m, s, e));
	ck_assert(drain_covers(m, p, 2 * (size_t)page));
	ck_assert(!m->ops->changed(m));
	munmap(p, 2 * (size_t)page);
	m->ops->close(m);
}
END_TEST

/* Many failed checks before a drain: all reported, none lost. */
START_TEST(many_failed_checks_all_reported)
{
	struct monitor *m = open_mon();
	char *p = map_anon(NULL, 200 * (size_t)page);
	struct got g = { .start = (uintptr_t)p,
			 .end = (uintptr_t)p + 200 * page };

	for (int i = 0; i < 200; i++)
		ck_assert(!monitor_check(m, (uintptr_t)p + i * page,
					 (uintptr_t)p + (i + 1) * page));
	ck_assert_int_ge(m->ops->drain(m, collect, &g), 1);
	ck_assert(g.covers);	/* beyond the queue: everything */
	ck_assert(!m->ops->changed(m));
	munmap(p, 200 * (size_t)page);
	m->ops->close(m);
}
END_TEST

/*
 * shmat(SHM_REMAP) over watched memory: userfaultfd reports nothing (the
 * kernel maps it with no userfaultfd context); check() sees the new,
 * unregistered mapping on the range's first page.
 */
static void check_shm_remap(size_t at, size_t len)
{
	struct monitor *m = open_mon();
	char *p = map_anon(NULL, 8 * (size_t)page);

	ck_assert_int_eq(m->ops->watch(m, 1, (uintptr_t)p,
				       (uintptr_t)p + 8 * page), 0);
	shm_remap(p + at * page, len * page);
	ck_assert_msg(!m->ops->changed(m), "the kernel now reports SHM_REMAP");
	ck_assert_msg(!monitor_check(m, (uintptr_t)p, (uintptr_t)p + 8 * page),
		      "check() passed after SHM_REMAP over pages %zu..%zu",
		      at, at + len - 1);
	ck_assert(drain_covers(m, p, 8 * (size_t)page));
	m->ops->unwatch(m, 1);
	shmdt(p + at * page);
	munmap(p, 8 * (size_t)page);
	m->ops->close(m);
}

START_TEST(shm_remap_caught)
{
	check_shm_remap(0, 8);	/* all of it */
	check_shm_remap(0, 2);	/* its first pages */
}
END_TEST

/* ---- the cache on the uffd monitor ----------------------------------------- */

struct fake_mr {
	uint64_t stamp;	/* first word of the memory when "pinned" */
};

static void *fake_reg(void *arg, const struct cache_key *key, int how)
{
	struct fake_mr *mr = malloc(sizeof(*mr));

	(void)arg;
	(void)how;
	if (mr)
		memcpy(&mr->stamp, (void *)key->addr, sizeof(mr->stamp));
	return mr;
}

static int fake_dereg(void *arg, void *mr)
{
	(void)arg;
	free(mr);
	return 0;
}

static struct monitor *mon;
static struct cache *cache;
static struct shim_stats stats;

static void setup_cache(void)
{
	static const struct cache_ops ops = { .reg = fake_reg, .dereg = fake_dereg };
	struct cache_limits lim = { .max_entries = 1000, .max_bytes = 1ULL << 40 };

	setup();
	memset(&stats, 0, sizeof(stats));
	mon = open_mon();
	cache = cache_create(&ops, mon, &lim, &stats);
	ck_assert_ptr_nonnull(cache);
}

static void teardown_cache(void)
{
	cache_destroy(cache);
	mon->ops->close(mon);
}

static struct fake_mr *reg(void *p, size_t len)
{
	struct cache_key k = { PD, (uintptr_t)p, len, (uintptr_t)p, 7 };
	struct fake_mr *mr = cache_reg(cache, &k, CTX, 0);

	ck_assert_ptr_nonnull(mr);
	return mr;
}

static void stamp(char *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}

/* Register @p (stamped @v) and deregister: the cache keeps the MR idle. */
static struct fake_mr *reg_idle(char *p, size_t len, uint64_t v)
{
	struct fake_mr *mr;

	stamp(p, v);
	mr = reg(p, len);
	ck_assert_uint_eq(mr->stamp, v);
	ck_assert_int_eq(cache_dereg(cache, mr), 0);
	return mr;
}

/* The registration of @p now: it must hold what @p holds (@v). */
static void expect_fresh(char *p, size_t len, uint64_t v)
{
	struct fake_mr *mr = reg(p, len);

	ck_assert_msg(mr->stamp == v, "stale cached MR (stamp %llu, memory %llu)",
		      (unsigned long long)mr->stamp, (unsigned long long)v);
	ck_assert_int_eq(cache_dereg(cache, mr), 0);
}

START_TEST(cache_shm_remap_not_served)
{
	size_t len = 4 * (size_t)page;
	char *p = map_anon(NULL, len);

	reg_idle(p, len, 1);
	shm_remap(p, len);
	stamp(p, 2);
	expect_fresh(p, len, 2);
	shmdt(p);
}
END_TEST

/* mremap(MREMAP_DONTUNMAP) leaves the old range empty: a REMAP event. */
START_TEST(cache_mremap_dontunmap_not_served)
{
	size_t len = 4 * (size_t)page;
	char *p = map_anon(NULL, len), *q;

	reg_idle(p, len, 1);
	q = mremap(p, len, len, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, NULL);
	ck_assert_ptr_ne(q, MAP_FAILED);
	stamp(p, 2);	/* a fresh zero page behind p now */
	expect_fresh(p, len, 2);
	expect_fresh(q, len, 1);
	munmap(p, len);
	munmap(q, len);
}
END_TEST

/* MAP_FIXED_NOREPLACE never replaces: the cached MR stays valid. */
START_TEST(cache_map_fixed_noreplace_keeps_entry)
{
	size_t len = 4 * (size_t)page;
	char *p = map_anon(NULL, len);
	struct fake_mr *mr = reg_idle(p, len, 1);

	ck_assert_ptr_eq(mmap(p, len, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			      -1, 0), MAP_FAILED);
	ck_assert_int_eq(errno, EEXIST);
	ck_assert_ptr_eq(reg(p, len), mr);
	ck_assert_int_eq(cache_dereg(cache, mr), 0);
	munmap(p, len);
}
END_TEST

/* MADV_DONTNEED keeps the mapping but empties it: a REMOVE event. */
START_TEST(cache_dontneed_not_served)
{
	size_t len = 4 * (size_t)page;
	char *p = map_anon(NULL, len);

	reg_idle(p, len, 1);
	ck_assert_int_eq(madvise(p, len, MADV_DONTNEED), 0);
	stamp(p, 2);
	expect_fresh(p, len, 2);
	munmap(p, len);
}
END_TEST

/*
 * Unmap in one thread racing remap + registration in another (the race of
 * test/rdma/unmap_race.c without a NIC), with both CPUs kept busy.
 */
static char *_Atomic race_target;
static atomic_int race_phase;	/* 0 idle, 1 unmap now, 2 unmapped, 3 exit */
static atomic_bool hogs_stop;

static void *race_unmapper(void *arg)
{
	(void)arg;
	for (;;) {
		int ph;

		while ((ph = atomic_load(&race_phase)) == 0 || ph == 2)
			sched_yield();
		if (ph == 3)
			return NULL;
		munmap(atomic_load(&race_target), RACE_LEN);
		atomic_store(&race_phase, 2);
	}
}

static void *hog(void *arg)
{
	volatile unsigned long n = 0;

	(void)arg;
	while (!atomic_load_explicit(&hogs_stop, memory_order_relaxed))
		n++;
	return NULL;
}

START_TEST(cache_unmap_race_no_stale)
{
	pthread_t unmapper, hogs[N_HOGS];
	int stale = 0;

	atomic_store(&hogs_stop, false);
	atomic_store(&race_phase, 0);
	pthread_create(&unmapper, NULL, race_unmapper, NULL);
	for (int i = 0; i < N_HOGS; i++)
		pthread_create(&hogs[i], NULL, hog, NULL);
	for (uint64_t i = 0; i < RACE_ROUNDS; i++) {
		char *x = map_anon(NULL, RACE_LEN), *y;
		struct fake_mr *mr;

		reg_idle(x, RACE_LEN, 2 * i + 1);
		atomic_store(&race_target, x);
		atomic_store(&race_phase, 1);
		while ((y = mmap(x, RACE_LEN, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS |
				 MAP_FIXED_NOREPLACE, -1, 0)) == MAP_FAILED)
			;	/* until the unmapper's munmap freed X */
		stamp(y, 2 * i + 2);
		mr = reg(y, RACE_LEN);
		stale += mr->stamp != 2 * i + 2;
		ck_assert_int_eq(cache_dereg(cache, mr), 0);
		while (atomic_load(&race_phase) != 2)
			sched_yield();
		atomic_store(&race_phase, 0);
		munmap(y, RACE_LEN);
	}
	atomic_store(&race_phase, 3);
	pthread_join(unmapper, NULL);
	atomic_store(&hogs_stop, true);
	for (int i = 0; i < N_HOGS; i++)
		pthread_join(hogs[i], NULL);
	printf("uffd unmap race: rounds=%d stale=%d%s\n", RACE_ROUNDS, stale,
	       open_flags() ? " (no probe)" : "");
	ck_assert_msg(stale == 0, "%d stale hits of %d rounds", stale,
		      RACE_ROUNDS);
}
END_TEST

static Suite *probe_suite(void)
{
	Suite *s = suite_create("uffd_probe");
	TCase *kernel = tcase_create("kernel");
	TCase *check = tcase_create("check");
	TCase *on_cache = tcase_create("cache");

	tcase_add_checked_fixture(kernel, setup, NULL);
	tcase_add_checked_fixture(check, setup, NULL);
	tcase_add_checked_fixture(on_cache, setup_cache, teardown_cache);
	tcase_set_timeout(on_cache, 300);	/* the race, on a loaded machine */
	tcase_add_test(kernel, kernel_probe_eagain_then_enoent);
	tcase_add_test(check, check_passes_on_intact_watch);
	tcase_add_test(check, failed_check_reported_by_drain);
	tcase_add_test(check, many_failed_checks_all_reported);
	tcase_add_test(check, shm_remap_caught);
	tcase_add_test(on_cache, cache_shm_remap_not_served);
	tcase_add_test(on_cache, cache_mremap_dontunmap_not_served);
	tcase_add_test(on_cache, cache_map_fixed_noreplace_keeps_entry);
	tcase_add_test(on_cache, cache_dontneed_not_served);
	tcase_add_test(on_cache, cache_unmap_race_no_stale);
	suite_add_tcase(s, kernel);
	suite_add_tcase(s, check);
	suite_add_tcase(s, on_cache);
	return s;
}

int main(void)
{
	return check_run_suite(probe_suite());
}
