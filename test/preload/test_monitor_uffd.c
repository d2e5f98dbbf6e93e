// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of the userfaultfd monitor (preload/monitor_uffd.c) against
 * the real kernel: every way of replacing watched pages must make
 * changed() true as soon as the replacing call returns, and drain() must
 * then report a range covering the watched one; changes that keep the
 * pages must report nothing.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "monitor.h"
#include "monitor_uffd.h"

#define MAX_GOT 64

static long page;
/* Per test case: which way the monitor reads the memory map. */
static unsigned int open_flags;

struct got {
	int n;
	uintptr_t start[MAX_GOT], end[MAX_GOT];
	bool bad_cookie;
};

static void collect(void *ctx, uint64_t cookie, uintptr_t start, uintptr_t end,
		    unsigned int flags)
{
	(void)flags;
	struct got *g = ctx;

	if (cookie != MONITOR_COOKIE_ANY)
		g->bad_cookie = true;
	if (g->n < MAX_GOT) {
		g->start[g->n] = start;
		g->end[g->n] = end;
	}
	g->n++;
}

static struct monitor *open_mon(void)
{
	struct monitor *m = monitor_uffd_open_flags(open_flags, 0);

	ck_assert_msg(m, "monitor_uffd_open: %s", strerror(errno));
	ck_assert_str_eq(m->ops->name, "uffd");
	return m;
}

static int watch(struct monitor *m, uint64_t cookie, void *p, size_t len)
{
	return m->ops->watch(m, cookie, (uintptr_t)p, (uintptr_t)p + len);
}

static char *map_pages(size_t n)
{
	char *p = mmap(NULL, n * page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	memset(p, 0x5a, n * page);
	return p;
}

/* @n fresh pages watched under @cookie. */
static char *map_watched(struct monitor *m, uint64_t cookie, size_t n)
{
	char *p = map_pages(n);

	ck_assert_int_eq(watch(m, cookie, p, n * page), 0);
	return p;
}

/* The usual end of a test: drop the watch, the pages and the monitor. */
static void unwatch_unmap_close(struct monitor *m, uint64_t cookie, char *p,
				size_t len)
{
	m->ops->unwatch(m, cookie);
	munmap(p, len);
	m->ops->close(m);
}

/* Drain and return whether one reported range covers [p, p + len). */
static bool drain_covers(struct monitor *m, void *p, size_t len)
{
	struct got g = { 0 };
	int rc = m->ops->drain(m, collect, &g);

	ck_assert_int_ge(rc, 0);
	ck_assert(!g.bad_cookie);
	for (int i = 0; i < g.n && i < MAX_GOT; i++)
		if (g.start[i] <= (uintptr_t)p &&
		    g.end[i] >= (uintptr_t)p + len)
			return true;
	return false;
}

/* The replacing call has returned: the change must be visible now. */
static void expect_reported(struct monitor *m, void *p, size_t len)
{
	ck_assert_msg(m->ops->changed(m), "changed() false right after the change");
	ck_assert_msg(drain_covers(m, p, len), "drain() did not report the range");
	ck_assert(!m->ops->changed(m));
}

static void expect_quiet(struct monitor *m)
{
	struct got g = { 0 };

	ck_assert(!m->ops->changed(m));
	ck_assert_int_eq(m->ops->drain(m, collect, &g), 0);
	ck_assert_int_eq(g.n, 0);
}

/* MADV_DONTNEED [p, p + len), which must be reported at once. */
static void dontneed_reported(struct monitor *m, char *p, size_t len)
{
	ck_assert_int_eq(madvise(p, len, MADV_DONTNEED), 0);
	expect_reported(m, p, len);
}

/* MADV_DONTNEED [p, p + len), which nothing watches any more. */
static void dontneed_quiet(struct monitor *m, char *p, size_t len)
{
	ck_assert_int_eq(madvise(p, len, MADV_DONTNEED), 0);
	expect_quiet(m);
}

/* munmap [p, p + len), which must be reported at once. */
static void unmap_reported(struct monitor *m, char *p, size_t len)
{
	ck_assert_int_eq(munmap(p, len), 0);
	expect_reported(m, p, len);
}

/* munmap [p, p + len), which nothing watches any more. */
static void unmap_quiet(struct monitor *m, char *p, size_t len)
{
	ck_assert_int_eq(munmap(p, len), 0);
	expect_quiet(m);
}

static void setup(void)
{
	page = sysconf(_SC_PAGESIZE);
	open_flags = 0;
}

/* The /proc/self/maps text parser, the only way before Linux 6.11. */
static void setup_text(void)
{
	setup();
	open_flags = UFFD_OPEN_FORCE_MAPS_TEXT;
}

/* ---- each way of replacing pages --------------------------------------- */

START_TEST(munmap_reported_at_once)
{
	struct monitor *m = open_mon();

	/* Many rounds: the wake-up race must never show. */
	for (int i = 0; i < 300; i++) {
		char *p = map_watched(m, 1, 4);

		ck_assert(!m->ops->changed(m));
		unmap_reported(m, p, 4 * page);
		m->ops->unwatch(m, 1);
	}
	m->ops->close(m);
}
END_TEST

static bool wait_fd_readable(struct monitor *m, int timeout_ms)
{
	struct pollfd p = { .fd = m->ops->wait_fd(m), .events = POLLIN };

	return poll(&p, 1, timeout_ms) == 1;
}

/* wait_fd (the releaser's): readable from an unmap until the drain. */
START_TEST(wait_fd_readable_until_drained)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 2);

	ck_assert_ptr_nonnull(m->ops->wait_fd);
	ck_assert(!wait_fd_readable(m, 0));
	ck_assert_int_eq(munmap(p, 2 * page), 0);
	ck_assert(wait_fd_readable(m, 10000));
	ck_assert(drain_covers(m, p, 2 * page));
	ck_assert(!wait_fd_readable(m, 0));
	m->ops->unwatch(m, 1);
	m->ops->close(m);
}
END_TEST

START_TEST(raw_munmap_reported)
{
	struct monitor *m = open_mon();
	char *p = map_pages(3);

	ck_assert_int_eq(watch(m, 1, p + page, page), 0);
	ck_assert_int_eq(syscall(SYS_munmap, p, 3 * page), 0);
	expect_reported(m, p + page, page);
	m->ops->close(m);
}
END_TEST

START_TEST(partial_munmap_reported)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 8);

	unmap_reported(m, p + 3 * page, page);
	unwatch_unmap_close(m, 1, p, 8 * page);
}
END_TEST

START_TEST(mremap_move_reported_and_orphan_dropped)
{
	struct monitor *m = open_mon();
	char *p = map_pages(4);
	char *dst = map_pages(4);
	char *q;

	ck_assert_int_eq(watch(m, 1, p, 4 * page), 0);
	q = mremap(p, 4 * page, 4 * page, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	ck_assert_ptr_eq(q, dst);
	expect_reported(m, p, 4 * page);
	m->ops->unwatch(m, 1);
	/* The registration moved with the pages; drain() dropped it. */
	unmap_quiet(m, q, 4 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(mremap_dontunmap_reported)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 4);
	char *q;

	q = mremap(p, 4 * page, 4 * page, MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
		   NULL);
	ck_assert_ptr_ne(q, MAP_FAILED);
	expect_reported(m, p, 4 * page);
	m->ops->unwatch(m, 1);
	munmap(q, 4 * page);
	munmap(p, 4 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(mremap_shrink_reported)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 4);

	ck_assert_ptr_eq(mremap(p, 4 * page, 2 * page, 0), p);
	expect_reported(m, p + 2 * page, 2 * page);
	unwatch_unmap_close(m, 1, p, 2 * page);
}
END_TEST

START_TEST(madvise_dontneed_reported)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 4);

	dontneed_reported(m, p + page, 2 * page);
	/* Still watched: the registration survives DONTNEED. */
	dontneed_reported(m, p, page);
	unwatch_unmap_close(m, 1, p, 4 * page);
}
END_TEST

START_TEST(madvise_free_reported)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 2);

	ck_assert_int_eq(madvise(p, 2 * page, MADV_FREE), 0);
	expect_reported(m, p, 2 * page);
	unwatch_unmap_close(m, 1, p, 2 * page);
}
END_TEST

START_TEST(mmap_fixed_over_reported)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 2);

	ck_assert_ptr_eq(mmap(p, 2 * page, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
			 p);
	expect_reported(m, p, 2 * page);
	unwatch_unmap_close(m, 1, p, 2 * page);
}
END_TEST

START_TEST(brk_shrink_reported)
{
	struct monitor *m = open_mon();
	char *scratch = map_pages(1);
	uintptr_t cur, top;
	char *heap;

	/* Let the monitor allocate its tables before we move the break. */
	ck_assert_int_eq(watch(m, 99, scratch, page), 0);
	m->ops->unwatch(m, 99);

	cur = (uintptr_t)sbrk(0);
	top = (cur + page - 1) & ~(uintptr_t)(page - 1);
	ck_assert_ptr_ne(sbrk((intptr_t)(top - cur) + 8 * page), (void *)-1);
	heap = (char *)top;
	memset(heap, 1, 8 * page);
	ck_assert_int_eq(watch(m, 1, heap, 8 * page), 0);
	ck_assert_ptr_ne(sbrk(-4 * page), (void *)-1);
	expect_reported(m, heap + 4 * page, 4 * page);
	m->ops->unwatch(m, 1);
	m->ops->close(m);
}
END_TEST

/* ---- changes that keep the pages --------------------------------------- */

START_TEST(mprotect_and_writes_quiet)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 4);

	ck_assert_int_eq(mprotect(p, 4 * page, PROT_READ), 0);
	ck_assert_int_eq(p[page], 0x5a);
	ck_assert_int_eq(mprotect(p, 4 * page, PROT_READ | PROT_WRITE), 0);
	memset(p, 7, 4 * page);
	ck_assert_int_eq(madvise(p, 4 * page, MADV_WILLNEED), 0);
	ck_assert_int_eq(mlock(p, page), 0);
	ck_assert_int_eq(munlock(p, page), 0);
	expect_quiet(m);
	unwatch_unmap_close(m, 1, p, 4 * page);
}
END_TEST

START_TEST(unwatched_memory_quiet)
{
	struct monitor *m = open_mon();
	char *p = map_pages(4);
	char *q = map_pages(4);

	ck_assert_int_eq(watch(m, 1, p, 4 * page), 0);
	unmap_quiet(m, q, 4 * page);
	m->ops->unwatch(m, 1);
	unmap_quiet(m, p, 4 * page);
	m->ops->close(m);
}
END_TEST

/* ---- bookkeeping -------------------------------------------------------- */

START_TEST(overlapping_watches_refcounted)
{
	struct monitor *m = open_mon();
	char *p = map_pages(8);

	ck_assert_int_eq(watch(m, 1, p, 4 * page), 0);		/* A: 0-4 */
	ck_assert_int_eq(watch(m, 2, p + 2 * page, 4 * page), 0); /* B: 2-6 */
	ck_assert_int_eq(watch(m, 3, p + 2 * page, 4 * page), 0); /* C = B */
	m->ops->unwatch(m, 1);
	/* Only A covered page 0: no longer watched. */
	dontneed_quiet(m, p, page);
	/* Page 3 is still B's and C's. */
	dontneed_reported(m, p + 3 * page, page);
	m->ops->unwatch(m, 2);
	dontneed_reported(m, p + 5 * page, page);
	m->ops->unwatch(m, 3);
	dontneed_quiet(m, p, 8 * page);
	munmap(p, 8 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(adjacent_watches_refcounted)
{
	struct monitor *m = open_mon();
	char *p = map_pages(6);

	ck_assert_int_eq(watch(m, 1, p, 3 * page), 0);
	ck_assert_int_eq(watch(m, 2, p + 3 * page, 3 * page), 0);
	m->ops->unwatch(m, 1);
	dontneed_quiet(m, p, 3 * page);
	dontneed_reported(m, p + 3 * page, page);
	m->ops->unwatch(m, 2);
	munmap(p, 6 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(many_watches)
{
	enum { N = 500 };
	struct monitor *m = open_mon();
	char *p = map_pages(N + 1);

	/* Overlapping two-page watches over a long run of pages. */
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(watch(m, (uint64_t)i + 1, p + i * page,
				       2 * page), 0);
	for (int i = 0; i < N; i += 2)
		m->ops->unwatch(m, (uint64_t)i + 1);
	/* Pages 1..N are still covered by the watches starting at odd pages. */
	for (int i = 1; i <= N; i += 7)
		dontneed_reported(m, p + i * page, page);
	/* Page 0 is not. */
	dontneed_quiet(m, p, page);
	for (int i = 1; i < N; i += 2)
		m->ops->unwatch(m, (uint64_t)i + 1);
	unmap_quiet(m, p, (N + 1) * page);
	m->ops->close(m);
}
END_TEST

/* Count this process's mappings. */
static size_t map_count(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	size_t n = 0;
	int c;

	ck_assert_ptr_nonnull(f);
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/*
 * Count the mappings that start inside [p, p + len): the splits the test
 * causes, whatever else (an allocator, a sanitizer) maps meanwhile.
 */
static size_t maps_within(const char *p, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long start, end;
	char line[512];
	size_t n = 0;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx", &start, &end) == 2 &&
		    start >= (uintptr_t)p && start < (uintptr_t)p + len)
			n++;
	}
	fclose(f);
	return n;
}

static long max_map_count(void)
{
	FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
	long v = 0;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fscanf(f, "%ld", &v), 1);
	fclose(f);
	return v;
}

/*
 * Watches split mappings: their segments are capped at a quarter of the
 * room vm.max_map_count leaves (two mappings per segment at most), and a
 * watch beyond the cap is refused (ENOSPC) without registering anything.
 */
START_TEST(watches_capped_for_max_map_count)
{
	enum { CAP = 10, N = 40 };
	/* Counted first: the process only gains mappings (allocator, test). */
	long maps_at_open = map_count();
	struct monitor *m = open_mon();
	struct monitor_uffd_counters cnt;
	char *p = map_pages(2 * N);
	size_t before;
	int ok = 0;

	monitor_uffd_get_counters(m, &cnt);
	ck_assert_uint_gt(cnt.max_segments, 0);
	ck_assert_uint_le(cnt.max_segments,
			  (size_t)(max_map_count() - maps_at_open) / 8 + 1);
	monitor_uffd_set_max_segments(m, CAP);
	before = maps_within(p, 2 * N * page);
	/* Disjoint one-page watches: every one splits the mapping. */
	for (int i = 0; i < N; i++) {
		int rc = watch(m, (uint64_t)i + 1, p + 2 * i * page, page);

		ck_assert_msg(rc == 0 || rc == -ENOSPC, "watch: %d", rc);
		ok += rc == 0;
	}
	/* Each adds one segment; a watch may add two: the last one is refused. */
	ck_assert_int_eq(ok, CAP - 1);
	ck_assert_uint_le(maps_within(p, 2 * N * page), before + 2 * CAP);
	/* The refused ranges were not registered: nothing reports them. */
	dontneed_quiet(m, p + 2 * (N - 1) * page, page);
	dontneed_reported(m, p, page);
	/* Room again after an unwatch. */
	m->ops->unwatch(m, 1);
	ck_assert_int_eq(watch(m, 1000, p + 2 * (N - 1) * page, page), 0);
	m->ops->unwatch(m, 1000);
	for (int i = 1; i < CAP - 1; i++)
		m->ops->unwatch(m, (uint64_t)i + 1);
	unmap_quiet(m, p, 2 * N * page);
	m->ops->close(m);
}
END_TEST

START_TEST(nested_watch_stays_safe)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 8);

	ck_assert_int_eq(watch(m, 2, p + 2 * page, 2 * page), 0);
	/* Replaced by shared memory behind both watches' backs... */
	ck_assert_ptr_eq(mmap(p, 8 * page, PROT_READ | PROT_WRITE,
			      MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0), p);
	/* ... a nested watch may succeed, but its range is reported. */
	watch(m, 3, p + 4 * page, page);
	ck_assert(m->ops->changed(m));
	ck_assert(drain_covers(m, p + 4 * page, page));
	m->ops->unwatch(m, 1);
	m->ops->unwatch(m, 2);
	m->ops->unwatch(m, 3);
	unmap_quiet(m, p, 8 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(duplicate_and_unknown_cookies)
{
	struct monitor *m = open_mon();
	char *p = map_pages(2);

	ck_assert_int_eq(watch(m, 5, p, page), 0);
	ck_assert_int_eq(watch(m, 5, p + page, page), -EEXIST);
	m->ops->unwatch(m, 6);	/* unknown: ignored */
	m->ops->unwatch(m, 5);
	m->ops->unwatch(m, 5);
	unmap_quiet(m, p, 2 * page);
	m->ops->close(m);
}
END_TEST

/* ---- what cannot be watched ---------------------------------------------- */

/* Private and shared mappings of a file in @dir must not be watched. */
static void check_file_refused(struct monitor *m, const char *dir)
{
	char path[64];
	int fd;
	char *p;

	snprintf(path, sizeof(path), "%s/ummushim-uffd-XXXXXX", dir);
	fd = mkstemp(path);
	ck_assert_msg(fd >= 0, "mkstemp in %s: %s", dir, strerror(errno));
	unlink(path);
	ck_assert_int_eq(ftruncate(fd, 4 * page), 0);
	p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_lt(watch(m, 1, p, 4 * page), 0);
	munmap(p, 4 * page);
	p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_lt(watch(m, 2, p, 4 * page), 0);
	unmap_quiet(m, p, 4 * page);
	close(fd);
}

START_TEST(file_backed_refused)
{
	struct monitor *m = open_mon();

	/* A disk file (the kernel refuses it) and tmpfs (we must). */
	check_file_refused(m, "/tmp");
	check_file_refused(m, "/dev/shm");
	m->ops->close(m);
}
END_TEST

START_TEST(shared_anonymous_refused)
{
	struct monitor *m = open_mon();
	char *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	/* A forked child could replace these pages behind our back. */
	ck_assert_int_eq(watch(m, 1, p, 4 * page), -EINVAL);
	/* ... and the failed watch left no registration behind. */
	unmap_quiet(m, p, 4 * page);
	m->ops->close(m);
}
END_TEST

/*
 * A watched range replaced by shared memory before the cache has drained
 * the event (its old watch still in place) must not be watched again:
 * the new watch checks the mapping itself instead of trusting the old one.
 */
static void check_remapped_as_shmem(struct monitor *m)
{
	char *p = map_pages(4), *q;

	ck_assert_int_eq(watch(m, 1, p, 4 * page), 0);
	q = mmap(p, 4 * page, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	ck_assert_ptr_eq(q, p);
	ck_assert_int_eq(watch(m, 2, p, 4 * page), -EINVAL);
	m->ops->unwatch(m, 1);
	ck_assert_int_eq(munmap(p, 4 * page), 0);
	m->ops->close(m);
}

START_TEST(remapped_as_shmem_not_watched)
{
	check_remapped_as_shmem(open_mon());
	if (geteuid() == 0) {	/* missing-page mode needs privileges */
		struct monitor *m =
			monitor_uffd_open_flags(open_flags | UFFD_OPEN_FORCE_MISSING, 0);

		ck_assert_msg(m, "open (missing mode): %s", strerror(errno));
		check_remapped_as_shmem(m);
	}
}
END_TEST

START_TEST(hole_and_unmapped_refused)
{
	struct monitor *m = open_mon();
	char *p = map_pages(3);

	ck_assert_int_eq(munmap(p + page, page), 0);
	ck_assert_int_lt(watch(m, 1, p, 3 * page), 0);
	ck_assert_int_lt(watch(m, 2, p + page, page), 0);
	unmap_quiet(m, p, 3 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(read_only_refused)
{
	struct monitor *m = open_mon();
	char *p = mmap(NULL, 2 * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	/* Its zero pages could be replaced by copy-on-write without an event. */
	ck_assert_int_lt(watch(m, 1, p, 2 * page), 0);
	unmap_quiet(m, p, 2 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(busy_with_other_uffd_refused)
{
	struct monitor *a = open_mon();
	struct monitor *b = open_mon();
	char *p = map_pages(2);

	ck_assert_int_eq(watch(a, 1, p, 2 * page), 0);
	ck_assert_int_eq(watch(b, 1, p, 2 * page), -EBUSY);
	/* b's failure must not have stolen a's registration. */
	dontneed_reported(a, p, page);
	expect_quiet(b);
	a->ops->unwatch(a, 1);
	munmap(p, 2 * page);
	a->ops->close(a);
	b->ops->close(b);
}
END_TEST

/* ---- overflow, modes, privileges ------------------------------------------ */

START_TEST(overflow_reports_everything)
{
	struct monitor *m = monitor_uffd_open_flags(0, 4);
	struct monitor_uffd_counters c;
	struct got g = { 0 };
	char *p = map_pages(32);

	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(watch(m, 1, p, 32 * page), 0);
	for (int i = 0; i < 32; i += 2)
		ck_assert_int_eq(madvise(p + i * page, page, MADV_DONTNEED), 0);
	ck_assert(m->ops->changed(m));
	ck_assert_int_eq(m->ops->drain(m, collect, &g), 1);
	ck_assert_int_eq(g.n, 1);
	ck_assert_uint_eq(g.start[0], 0);
	ck_assert_uint_eq(g.end[0], UINTPTR_MAX);
	monitor_uffd_get_counters(m, &c);
	ck_assert_uint_gt(c.overflows, 0);
	/* After the overflow, reporting is exact again. */
	dontneed_reported(m, p + page, page);
	m->ops->close(m);
}
END_TEST

START_TEST(missing_mode_resolves_faults)
{
	struct monitor *m = monitor_uffd_open_flags(UFFD_OPEN_FORCE_MISSING, 0);
	struct monitor_uffd_counters c;
	char *p = map_pages(4);
	int pfd[2];

	if (geteuid() != 0) {
		/* Missing mode needs a uffd that sees kernel faults: privileged. */
		ck_assert_ptr_null(m);
		return;
	}
	ck_assert_msg(m, "open (missing mode): %s", strerror(errno));
	ck_assert_int_eq(watch(m, 1, p, 4 * page), 0);
	dontneed_reported(m, p, 4 * page);
	/* A user fault and a kernel fault on missing pages both complete. */
	ck_assert_int_eq(p[0], 0);
	p[page] = 3;
	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(write(pfd[1], "xy", 2), 2);
	ck_assert_int_eq(read(pfd[0], p + 2 * page, 2), 2);
	ck_assert_int_eq(p[2 * page + 1], 'y');
	monitor_uffd_get_counters(m, &c);
	ck_assert(c.missing_mode);
	ck_assert_uint_ge(c.faults, 2);
	unmap_reported(m, p, 4 * page);
	close(pfd[0]);
	close(pfd[1]);
	m->ops->close(m);
}
END_TEST

START_TEST(devnode_fallback)
{
	struct monitor *m = monitor_uffd_open_flags(UFFD_OPEN_FORCE_DEVNODE, 0);
	struct monitor_uffd_counters c;
	char *p;

	if (access("/dev/userfaultfd", R_OK | W_OK) != 0) {
		/* Not accessible to us: the open must fail, not half-work. */
		ck_assert_ptr_null(m);
		return;
	}
	ck_assert_msg(m, "open via /dev/userfaultfd: %s", strerror(errno));
	monitor_uffd_get_counters(m, &c);
	ck_assert(c.devnode);
	p = map_pages(2);
	ck_assert_int_eq(watch(m, 1, p, 2 * page), 0);
	unmap_reported(m, p, 2 * page);
	m->ops->close(m);
}
END_TEST

/* Body of the unprivileged run; returns a process exit code. */
static int unprivileged_body(void)
{
	struct monitor *m = monitor_uffd_open();
	struct monitor_uffd_counters c;
	char *p = map_pages(2);

	if (!m)
		return 10;
	monitor_uffd_get_counters(m, &c);
	if (c.missing_mode)
		return 11;
	if (watch(m, 1, p, 2 * page) != 0)
		return 12;
	if (munmap(p, 2 * page) != 0)
		return 13;
	if (!m->ops->changed(m))
		return 14;
	if (!drain_covers(m, p, 2 * page))
		return 15;
	m->ops->close(m);
	return 0;
}

START_TEST(unprivileged_run)
{
	int status;
	pid_t pid;

	if (geteuid() != 0) {
		/* Already unprivileged: run it here. */
		ck_assert_int_eq(unprivileged_body(), 0);
		return;
	}
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (setgid(65534) || setuid(65534) || geteuid() == 0)
			_exit(20);
		_exit(unprivileged_body());
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "unprivileged child failed: status %#x", status);
}
END_TEST

/* ---- fork and close ------------------------------------------------------ */

START_TEST(fork_child_passes_through)
{
	struct monitor *m = open_mon();
	char *p = map_watched(m, 1, 4);
	int status;
	pid_t pid;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct got g = { 0 };
		int bad = 0;

		/* No reader here: the child's mappings are not registered. */
		alarm(10);
		bad |= !m->ops->changed(m);
		bad |= (m->ops->watch(m, 2, (uintptr_t)p, (uintptr_t)p + page) !=
			-ECHILD) << 1;
		bad |= (m->ops->drain(m, collect, &g) != -ECHILD) << 2;
		bad |= (munmap(p, 4 * page) != 0) << 3;
		m->ops->unwatch(m, 1);
		m->ops->close(m);
		_exit(bad);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "child: status %#x", status);
	/* The parent still gets its events. */
	expect_quiet(m);
	unmap_reported(m, p, 4 * page);
	m->ops->close(m);
}
END_TEST

START_TEST(close_releases_registrations)
{
	struct monitor *m = open_mon();
	char *p = map_pages(4);

	alarm(20);	/* a hang would be the bug */
	ck_assert_int_eq(watch(m, 1, p, 2 * page), 0);
	ck_assert_int_eq(watch(m, 2, p + 2 * page, 2 * page), 0);
	m->ops->close(m);
	ck_assert_int_eq(munmap(p, 4 * page), 0);
	alarm(0);
}
END_TEST

START_TEST(close_then_reopen_many)
{
	/* No thread or descriptor leaks across open/close cycles. */
	for (int i = 0; i < 50; i++) {
		struct monitor *m = open_mon();
		char *p = map_watched(m, 1, 1);

		unmap_reported(m, p, page);
		m->ops->close(m);
	}
}
END_TEST

START_TEST(fd_closed_under_us)
{
	struct monitor *m = open_mon();
	struct monitor_uffd_counters c;
	char *p = map_pages(2);
	struct got g = { 0 };
	int fd;

	monitor_uffd_get_counters(m, &c);
	ck_assert_int_eq(watch(m, 1, p, 2 * page), 0);
	/* The application closes our descriptor and reuses the number. */
	alarm(20);
	ck_assert_int_eq(close(c.fd), 0);
	fd = open("/dev/null", O_RDONLY);
	if (fd != c.fd) {
		ck_assert_int_eq(dup2(fd, c.fd), c.fd);
		close(fd);
	}
	ck_assert_int_eq(munmap(p, 2 * page), 0);	/* must not hang */
	/*
	 * The kernel released the uffd when the reader's poll() dropped the
	 * last reference, possibly just before the reader noticed: the
	 * failure shows up at once after that, not necessarily before
	 * munmap returns.
	 */
	while (!m->ops->changed(m))
		usleep(1000);
	alarm(0);
	ck_assert_int_lt(m->ops->drain(m, collect, &g), 0);
	p = map_pages(1);
	ck_assert_int_lt(watch(m, 2, p, page), 0);
	m->ops->close(m);
	/* The descriptor that now has the number is the application's. */
	ck_assert_int_ne(fcntl(c.fd, F_GETFD), -1);
	close(c.fd);
}
END_TEST

static Suite *uffd_suite(void)
{
	Suite *s = suite_create("monitor_uffd");
	TCase *events = tcase_create("events");
	TCase *quiet = tcase_create("quiet");
	TCase *books = tcase_create("bookkeeping");
	TCase *refuse = tcase_create("refused");
	TCase *modes = tcase_create("modes");
	TCase *life = tcase_create("lifecycle");
	TCase *text = tcase_create("maps_text");
	TCase *all[] = { events, quiet, books, refuse, modes, life };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		tcase_add_checked_fixture(all[i], setup, NULL);
		tcase_set_timeout(all[i], 60);
		suite_add_tcase(s, all[i]);
	}
	tcase_add_checked_fixture(text, setup_text, NULL);
	tcase_set_timeout(text, 60);
	suite_add_tcase(s, text);
	tcase_add_test(text, munmap_reported_at_once);
	tcase_add_test(text, many_watches);
	tcase_add_test(text, brk_shrink_reported);
	tcase_add_test(text, file_backed_refused);
	tcase_add_test(text, shared_anonymous_refused);
	tcase_add_test(text, remapped_as_shmem_not_watched);
	tcase_add_test(text, hole_and_unmapped_refused);
	tcase_add_test(text, read_only_refused);
	tcase_add_test(events, munmap_reported_at_once);
	tcase_add_test(events, raw_munmap_reported);
	tcase_add_test(events, wait_fd_readable_until_drained);
	tcase_add_test(events, partial_munmap_reported);
	tcase_add_test(events, mremap_move_reported_and_orphan_dropped);
	tcase_add_test(events, mremap_dontunmap_reported);
	tcase_add_test(events, mremap_shrink_reported);
	tcase_add_test(events, madvise_dontneed_reported);
	tcase_add_test(events, madvise_free_reported);
	tcase_add_test(events, mmap_fixed_over_reported);
	tcase_add_test(events, brk_shrink_reported);
	tcase_add_test(quiet, mprotect_and_writes_quiet);
	tcase_add_test(quiet, unwatched_memory_quiet);
	tcase_add_test(books, overlapping_watches_refcounted);
	tcase_add_test(books, adjacent_watches_refcounted);
	tcase_add_test(books, many_watches);
	tcase_add_test(books, nested_watch_stays_safe);
	tcase_add_test(books, watches_capped_for_max_map_count);
	tcase_add_test(books, duplicate_and_unknown_cookies);
	tcase_add_test(refuse, file_backed_refused);
	tcase_add_test(refuse, shared_anonymous_refused);
	tcase_add_test(refuse, remapped_as_shmem_not_watched);
	tcase_add_test(refuse, hole_and_unmapped_refused);
	tcase_add_test(refuse, read_only_refused);
	tcase_add_test(refuse, busy_with_other_uffd_refused);
	tcase_add_test(modes, overflow_reports_everything);
	tcase_add_test(modes, missing_mode_resolves_faults);
	tcase_add_test(modes, devnode_fallback);
	tcase_add_test(modes, unprivileged_run);
	tcase_add_test(life, fork_child_passes_through);
	tcase_add_test(life, close_releases_registrations);
	tcase_add_test(life, close_then_reopen_many);
	tcase_add_test(life, fd_closed_under_us);
	return s;
}

int main(void)
{
	return check_run_suite(uffd_suite());
}
