// SPDX-License-Identifier: BSD-2-Clause
/*
 * The registration cache (preload/cache.c) on the userfaultfd monitor,
 * with a test double of the real registration functions that records,
 * like pinning would, what the registered memory held at registration
 * time: a cached MR whose memory was replaced since must never be
 * returned.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "monitor.h"
#include "stats.h"
#include "monitor_uffd.h"

#define PD ((void *)0x1000)
#define CTX ((void *)0xc1)
#define MR_MAGIC 0x4d52u

static long page;

/* ---- test double of the real (de)registration ------------------------- */

struct fake_mr {
	unsigned int magic;
	struct cache_key key;
	uint64_t stamp;	/* first word of the memory when "pinned" */
	int serial;	/* which real registration (pointers get reused) */
};

static atomic_int n_reg, n_dereg;

static void *fake_reg(void *arg, const struct cache_key *key, int how)
{
	struct fake_mr *mr = malloc(sizeof(*mr));

	(void)arg;
	(void)how;
	if (!mr) {
		errno = ENOMEM;
		return NULL;
	}
	mr->magic = MR_MAGIC;
	mr->key = *key;
	memcpy(&mr->stamp, (void *)key->addr, sizeof(mr->stamp));
	mr->serial = atomic_fetch_add(&n_reg, 1) + 1;
	return mr;
}

static int fake_dereg(void *arg, void *p)
{
	struct fake_mr *mr = p;

	(void)arg;
	if (mr->magic != MR_MAGIC)
		return EINVAL;
	mr->magic = 0;
	free(mr);
	atomic_fetch_add(&n_dereg, 1);
	return 0;
}

/* ---- fixture ------------------------------------------------------------ */

static struct monitor *mon;
static struct cache *cache;
static struct shim_stats stats;

static void make_cache(uint64_t max_entries)
{
	static const struct cache_ops ops = { .reg = fake_reg,
					      .dereg = fake_dereg };
	struct cache_limits lim = { .max_entries = max_entries,
				    .max_bytes = 1ULL << 40 };

	mon = monitor_uffd_open();
	ck_assert_msg(mon, "monitor_uffd_open: %s", strerror(errno));
	cache = cache_create(&ops, mon, &lim, &stats);
	ck_assert_ptr_nonnull(cache);
}

static void setup(void)
{
	page = sysconf(_SC_PAGESIZE);
	memset(&stats, 0, sizeof(stats));
	atomic_store(&n_reg, 0);
	atomic_store(&n_dereg, 0);
	make_cache(1000);
}

static void teardown(void)
{
	cache_destroy(cache);
	mon->ops->close(mon);
}

static struct fake_mr *reg(void *addr, size_t len)
{
	struct cache_key k = { PD, (uintptr_t)addr, len, (uintptr_t)addr, 7 };

	return cache_reg(cache, &k, CTX, 0);
}

static void dereg(struct fake_mr *mr)
{
	ck_assert_int_eq(cache_dereg(cache, mr), 0);
}

/* The first word of the memory is what fake_reg() records as its stamp. */
static void write_stamp(char *p, uint64_t stamp)
{
	memcpy(p, &stamp, sizeof(stamp));
}

static char *map_stamped(void *at, size_t len, uint64_t stamp)
{
	char *p = mmap(at, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1,
		       0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	write_stamp(p, stamp);
	return p;
}

/*
 * Register, deregister, register again: the second one must hit.
 * Returns the serial of the cached registration.
 */
static int reg_cached(char *p, size_t len)
{
	struct fake_mr *mr = reg(p, len);
	int before, serial;

	ck_assert_ptr_nonnull(mr);
	serial = mr->serial;
	dereg(mr);
	before = atomic_load(&n_reg);
	ck_assert_ptr_eq(reg(p, len), mr);
	ck_assert_int_eq(atomic_load(&n_reg), before);
	dereg(mr);
	return serial;
}

/* After the memory at @p was replaced: a fresh registration, never @old. */
static void expect_fresh(char *p, size_t len, int old, uint64_t stamp)
{
	int regs = atomic_load(&n_reg), deregs = atomic_load(&n_dereg);
	struct fake_mr *mr = reg(p, len);

	ck_assert_ptr_nonnull(mr);
	ck_assert_int_ne(mr->serial, old);
	ck_assert_int_eq(atomic_load(&n_reg), regs + 1);
	ck_assert_int_eq(atomic_load(&n_dereg), deregs + 1);	/* old one */
	ck_assert_uint_eq(mr->stamp, stamp);
	dereg(mr);
}

/*
 * The replaced pages at @p read as zeroes: stamp them 2 like new contents,
 * then the registration must be fresh, never @old.
 */
static void restamp_expect_fresh(char *p, size_t len, int old)
{
	write_stamp(p, 2);
	expect_fresh(p, len, old, 2);
}

/* ---- invalidation by each kind of replacement --------------------------- */

START_TEST(munmap_evicts)
{
	char *p = map_stamped(NULL, 4 * page, 1);
	int old = reg_cached(p, 4 * page);

	ck_assert_int_eq(munmap(p, 4 * page), 0);
	map_stamped(p, 4 * page, 2);
	expect_fresh(p, 4 * page, old, 2);
	ck_assert_uint_ge(stats_get(&stats.invalidations), 1);
}
END_TEST

START_TEST(raw_munmap_evicts)
{
	char *p = map_stamped(NULL, 2 * page, 1);
	int old = reg_cached(p + 100, page);

	ck_assert_int_eq(syscall(SYS_munmap, p, 2 * page), 0);
	map_stamped(p, 2 * page, 0);
	restamp_expect_fresh(p + 100, page, old);
}
END_TEST

START_TEST(mremap_evicts)
{
	char *p = map_stamped(NULL, 4 * page, 1);
	char *fresh = map_stamped(NULL, 4 * page, 2);
	int old = reg_cached(p, 4 * page);

	ck_assert_ptr_eq(mremap(fresh, 4 * page, 4 * page,
				MREMAP_MAYMOVE | MREMAP_FIXED, p), p);
	expect_fresh(p, 4 * page, old, 2);
}
END_TEST

START_TEST(madvise_dontneed_evicts)
{
	char *p = map_stamped(NULL, 4 * page, 1);
	int old = reg_cached(p, 4 * page);

	ck_assert_int_eq(madvise(p, 4 * page, MADV_DONTNEED), 0);
	restamp_expect_fresh(p, 4 * page, old);
}
END_TEST

START_TEST(mmap_fixed_over_evicts)
{
	char *p = map_stamped(NULL, 2 * page, 1);
	int old = reg_cached(p, 2 * page);

	map_stamped(p, 2 * page, 2);
	expect_fresh(p, 2 * page, old, 2);
}
END_TEST

START_TEST(brk_shrink_evicts)
{
	uintptr_t cur, top;
	char *heap;
	int old;

	/* Let the cache and monitor allocate before the break moves. */
	char *warm = map_stamped(NULL, page, 9);
	reg_cached(warm, page);

	cur = (uintptr_t)sbrk(0);
	top = (cur + page - 1) & ~(uintptr_t)(page - 1);
	ck_assert_ptr_ne(sbrk((intptr_t)(top - cur) + 4 * page), (void *)-1);
	heap = (char *)top;
	write_stamp(heap, 1);
	old = reg_cached(heap, 4 * page);
	/* Shrink over the MR, grow back: new zero pages. */
	ck_assert_ptr_ne(sbrk(-4 * page), (void *)-1);
	ck_assert_ptr_ne(sbrk(4 * page), (void *)-1);
	restamp_expect_fresh(heap, 4 * page, old);
}
END_TEST

START_TEST(writes_keep_entry)
{
	char *p = map_stamped(NULL, 2 * page, 1);
	int serial = reg_cached(p, 2 * page);
	struct fake_mr *mr;

	/* Same pages, new contents: still the same registration. */
	memset(p + 8, 3, page);
	ck_assert_int_eq(mprotect(p, 2 * page, PROT_READ), 0);
	ck_assert_int_eq(mprotect(p, 2 * page, PROT_READ | PROT_WRITE), 0);
	mr = reg(p, 2 * page);
	ck_assert_int_eq(mr->serial, serial);
	dereg(mr);
	ck_assert_uint_eq(stats_get(&stats.invalidations), 0);
}
END_TEST

START_TEST(busy_entry_becomes_stale)
{
	char *p = map_stamped(NULL, 2 * page, 1);
	struct fake_mr *mr = reg(p, 2 * page);
	struct fake_mr *mr2;

	ck_assert_ptr_nonnull(mr);
	/* The application unmaps memory it still has registered (its bug). */
	ck_assert_int_eq(munmap(p, 2 * page), 0);
	map_stamped(p, 2 * page, 2);
	mr2 = reg(p, 2 * page);
	ck_assert_int_ne(mr2->serial, mr->serial);
	ck_assert_uint_eq(mr2->stamp, 2);
	ck_assert_uint_eq(stats_get(&stats.stale), 1);
	dereg(mr);	/* deregistered for real now */
	dereg(mr2);
}
END_TEST

START_TEST(file_backed_passes_through)
{
	char path[] = "/tmp/ummushim-uffd-XXXXXX";
	int fd = mkstemp(path);
	struct fake_mr *a, *b;
	char *p;

	ck_assert_int_ge(fd, 0);
	unlink(path);
	ck_assert_int_eq(ftruncate(fd, 2 * page), 0);
	p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	a = reg(p, 2 * page);
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(cache_registered_count(cache), 0);
	ck_assert_int_eq(cache_dereg(cache, a), 0);	/* real dereg */
	b = reg(p, 2 * page);
	ck_assert_int_eq(atomic_load(&n_reg), 2);
	ck_assert_int_eq(cache_dereg(cache, b), 0);
	ck_assert_uint_eq(stats_get(&stats.passthrough), 2);
	munmap(p, 2 * page);
	close(fd);
}
END_TEST

/* ---- bounded stress ------------------------------------------------------ */

#define STRESS_SECONDS 3
#define WATCHDOG_SECONDS 40
#define N_SLOTS 24
#define N_REGISTRARS 3
#define N_MAPPERS 2
#define N_CHURNERS 2

/*
 * Slot memory is replaced only under the slot's write lock, and every
 * replacement writes a new stamp; registrars hold the read lock from
 * registration to deregistration.  So a returned MR whose stamp differs
 * from the slot's is exactly a stale cache entry.
 */
struct slot {
	pthread_rwlock_t lock;
	char *addr;
	size_t len;
	uint64_t stamp;
};

static struct slot slots[N_SLOTS];
static atomic_uint_fast64_t next_stamp;
static atomic_bool stop_stress;
static atomic_int stale_returned, wrong_mr, reg_failures;
static atomic_long n_hits_seen, n_ops;

static unsigned int rnd(unsigned int *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return *seed >> 8;
}

static void *registrar(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;

	while (!atomic_load(&stop_stress)) {
		struct slot *s = &slots[rnd(&seed) % N_SLOTS];
		size_t off = (rnd(&seed) % 4) * 8;
		struct fake_mr *mr;
		int regs;

		pthread_rwlock_rdlock(&s->lock);
		regs = atomic_load(&n_reg);
		mr = reg(s->addr + off, s->len - off);
		if (!mr) {
			atomic_fetch_add(&reg_failures, 1);
		} else {
			uint64_t now;

			memcpy(&now, s->addr + off, sizeof(now));
			if (mr->magic != MR_MAGIC ||
			    mr->key.addr != (uintptr_t)s->addr + off ||
			    mr->key.length != s->len - off)
				atomic_fetch_add(&wrong_mr, 1);
			else if (mr->stamp != now)
				atomic_fetch_add(&stale_returned, 1);
			if (atomic_load(&n_reg) == regs)
				atomic_fetch_add(&n_hits_seen, 1);
			cache_dereg(cache, mr);
		}
		pthread_rwlock_unlock(&s->lock);
		atomic_fetch_add(&n_ops, 1);
	}
	return NULL;
}

static void stamp_slot(struct slot *s, char *mem)
{
	uint64_t v = atomic_fetch_add(&next_stamp, 1);

	/* One stamp per possible registration offset. */
	for (int i = 0; i < 4; i++)
		memcpy(mem + i * 8, &v, sizeof(v));
	s->stamp = v;
}

/*
 * Map fresh pages where the slot was unmapped.  Another thread (malloc)
 * may have taken the hole meanwhile: never map over it, move the slot.
 */
static void remap_hole(struct slot *s)
{
	char *q = mmap(s->addr, s->len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	if (q == MAP_FAILED)
		q = mmap(NULL, s->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	else if (q != s->addr)	/* kernels before 4.17 ignore the flag */
		abort();
	if (q == MAP_FAILED)
		abort();
	s->addr = q;
}

/* Replace a slot's pages, each time another way. */
static void replace_slot(struct slot *s, unsigned int how)
{
	char *fresh;

	switch (how % 5) {
	case 0:
		munmap(s->addr, s->len);
		remap_hole(s);
		break;
	case 1:
		syscall(SYS_munmap, s->addr, s->len);
		remap_hole(s);
		break;
	case 2:
		madvise(s->addr, s->len, MADV_DONTNEED);
		break;
	case 3:
		fresh = mmap(NULL, s->len, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (fresh == MAP_FAILED)
			abort();
		stamp_slot(s, fresh);
		if (mremap(fresh, s->len, s->len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   s->addr) != s->addr)
			abort();
		return;
	default:
		/* Atomically replaces our own mapping. */
		if (mmap(s->addr, s->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
		    s->addr)
			abort();
		break;
	}
	stamp_slot(s, s->addr);
}

static void *mapper(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;

	while (!atomic_load(&stop_stress)) {
		struct slot *s = &slots[rnd(&seed) % N_SLOTS];

		pthread_rwlock_wrlock(&s->lock);
		replace_slot(s, rnd(&seed));
		pthread_rwlock_unlock(&s->lock);
		usleep(rnd(&seed) % 200);
	}
	return NULL;
}

/*
 * malloc/free (large blocks are mmap/munmap'ed by malloc), registering
 * some blocks and freeing them while the cache still holds them idle.
 */
static void *churner(void *arg)
{
	unsigned int seed = (unsigned int)(uintptr_t)arg;
	void *held[16] = { 0 };

	while (!atomic_load(&stop_stress)) {
		unsigned int i = rnd(&seed) % 16;
		size_t len = 16 + rnd(&seed) % (rnd(&seed) % 2 ? 512 : 256 << 10);

		free(held[i]);
		held[i] = malloc(len);
		if (!held[i])
			continue;
		memset(held[i], 1, len < 64 ? len : 64);
		if (rnd(&seed) % 3 == 0) {
			struct fake_mr *mr = reg(held[i], len);

			if (mr)
				cache_dereg(cache, mr);
		}
	}
	for (int i = 0; i < 16; i++)
		free(held[i]);
	return NULL;
}

static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cond = PTHREAD_COND_INITIALIZER;
static bool wd_done;

/* Fails the test (the whole process) if the stress does not finish. */
static void *watchdog(void *arg)
{
	struct timespec deadline;

	(void)arg;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += WATCHDOG_SECONDS;
	pthread_mutex_lock(&wd_lock);
	while (!wd_done) {
		if (pthread_cond_timedwait(&wd_cond, &wd_lock, &deadline) ==
		    ETIMEDOUT && !wd_done) {
			fprintf(stderr, "uffd stress: HANG, no progress after %d s (ops=%ld)\n",
				WATCHDOG_SECONDS, atomic_load(&n_ops));
			abort();
		}
	}
	pthread_mutex_unlock(&wd_lock);
	return NULL;
}

START_TEST(stress_no_stale_no_hang)
{
	pthread_t reg_t[N_REGISTRARS], map_t[N_MAPPERS], churn_t[N_CHURNERS];
	pthread_t wd;
	long hits, ops;
	int stale, wrong, failures;

	pthread_create(&wd, NULL, watchdog, NULL);
	for (int i = 0; i < N_SLOTS; i++) {
		struct slot *s = &slots[i];

		s->len = (size_t)(1 + i % 4) * page * (i % 3 ? 1 : 16);
		s->addr = map_stamped(NULL, s->len, 0);
		stamp_slot(s, s->addr);
		pthread_rwlock_init(&s->lock, NULL);
	}
	for (int i = 0; i < N_REGISTRARS; i++)
		pthread_create(&reg_t[i], NULL, registrar, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < N_MAPPERS; i++)
		pthread_create(&map_t[i], NULL, mapper, (void *)(uintptr_t)(i + 100));
	for (int i = 0; i < N_CHURNERS; i++)
		pthread_create(&churn_t[i], NULL, churner, (void *)(uintptr_t)(i + 200));
	sleep(STRESS_SECONDS);
	atomic_store(&stop_stress, true);
	for (int i = 0; i < N_REGISTRARS; i++)
		pthread_join(reg_t[i], NULL);
	for (int i = 0; i < N_MAPPERS; i++)
		pthread_join(map_t[i], NULL);
	for (int i = 0; i < N_CHURNERS; i++)
		pthread_join(churn_t[i], NULL);
	pthread_mutex_lock(&wd_lock);
	wd_done = true;
	pthread_cond_signal(&wd_cond);
	pthread_mutex_unlock(&wd_lock);
	pthread_join(wd, NULL);

	hits = atomic_load(&n_hits_seen);
	ops = atomic_load(&n_ops);
	fprintf(stderr, "uffd stress: %ld reg/dereg, %ld hits, %lu invalidations, %lu stale\n",
		ops, hits, (unsigned long)stats_get(&stats.invalidations),
		(unsigned long)stats_get(&stats.stale));
	stale = atomic_load(&stale_returned);
	wrong = atomic_load(&wrong_mr);
	failures = atomic_load(&reg_failures);
	ck_assert_msg(stale == 0, "%d stale MRs returned", stale);
	ck_assert_msg(wrong == 0, "%d wrong MRs returned", wrong);
	ck_assert_msg(failures == 0, "%d registrations failed", failures);
	ck_assert(!cache_is_broken(cache));
	/* The stress must have exercised both paths. */
	ck_assert_int_gt(hits, 0);
	ck_assert_uint_gt(stats_get(&stats.invalidations), 0);
	for (int i = 0; i < N_SLOTS; i++)
		munmap(slots[i].addr, slots[i].len);
}
END_TEST

static Suite *uffd_cache_suite(void)
{
	Suite *s = suite_create("uffd_cache");
	TCase *inval = tcase_create("invalidation");
	TCase *stress = tcase_create("stress");

	tcase_add_checked_fixture(inval, setup, teardown);
	tcase_add_checked_fixture(stress, setup, teardown);
	tcase_set_timeout(inval, 60);
	tcase_set_timeout(stress, 120);
	tcase_add_test(inval, munmap_evicts);
	tcase_add_test(inval, raw_munmap_evicts);
	tcase_add_test(inval, mremap_evicts);
	tcase_add_test(inval, madvise_dontneed_evicts);
	tcase_add_test(inval, mmap_fixed_over_evicts);
	tcase_add_test(inval, brk_shrink_evicts);
	tcase_add_test(inval, writes_keep_entry);
	tcase_add_test(inval, busy_entry_becomes_stale);
	tcase_add_test(inval, file_backed_passes_through);
	tcase_add_test(stress, stress_no_stale_no_hang);
	suite_add_tcase(s, inval);
	suite_add_tcase(s, stress);
	return s;
}

int main(void)
{
	return check_run_suite(uffd_cache_suite());
}
