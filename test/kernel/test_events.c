// SPDX-License-Identifier: GPL-2.0-only
/*
 * Event sources: every kind of invalidation that changes the pages behind a
 * registration yields exactly one INVAL event for it, with the exact hint;
 * permission changes and plain accesses yield nothing.
 */
#include "ktest.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mempolicy.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Counter value after invalidations, relative to a start value. */
#define ASSERT_COUNTER_DELTA(counter, start, delta)                         \
	ck_assert_msg(*(counter) - (start) == (delta),                      \
		      "generation counter moved by %llu, expected %llu",    \
		      (unsigned long long)(*(counter) - (start)),           \
		      (unsigned long long)(delta))

START_TEST(munmap_middle)
{
	struct kt_watch w = kt_watch_anon(8, 11);
	uint64_t c0;

	c0 = *w.cnt;
	ck_assert_int_eq(munmap((void *)kt_pg(w.p, 3), 2 * kt_page()), 0);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 1);
	kt_expect_one(w.fd, w.cnt, 11, kt_pg(w.p, 3), kt_pg(w.p, 5));
	kt_expect_nothing(w.fd);
}
END_TEST

START_TEST(munmap_hint_clipped)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(8);

	kt_register_ok(fd, kt_pg(p, 2), kt_pg(p, 4), 5);
	ck_assert_int_eq(munmap(p, 8 * kt_page()), 0);
	kt_expect_one(fd, NULL, 5, kt_pg(p, 2), kt_pg(p, 4));
}
END_TEST

/* start rounds down and end rounds up to page boundaries. */
START_TEST(register_page_rounding)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(4);

	kt_register_ok(fd, kt_pg(p, 1) + 123, kt_pg(p, 2) + 1, 9);
	/* Neighbours just outside the rounded range [p1, p3). */
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 3), kt_page()), 0);
	kt_expect_nothing(fd);
	/* Both rounded-in pages belong to the registration. */
	ck_assert_int_eq(madvise((void *)kt_pg(p, 1), kt_page(),
				 MADV_DONTNEED), 0);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 2), kt_page()), 0);
	kt_expect_one(fd, NULL, 9, kt_pg(p, 1), kt_pg(p, 3));
}
END_TEST

START_TEST(mremap_move)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(4);
	char *dst = kt_reserve(2);
	void *moved;

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 21);
	moved = mremap((void *)kt_pg(p, 1), 2 * kt_page(), 2 * kt_page(),
		       MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	ck_assert_msg(moved == dst, "mremap: %s", strerror(errno));
	kt_expect_one(fd, NULL, 21, kt_pg(p, 1), kt_pg(p, 3));
	/* The moved pages are not registered: touching them is silent. */
	kt_touch(dst, 2);
	ck_assert_int_eq(munmap(dst, 2 * kt_page()), 0);
	kt_expect_nothing(fd);
}
END_TEST

START_TEST(mremap_shrink)
{
	struct kt_watch w = kt_watch_anon(6, 22);
	uint64_t c0;

	c0 = *w.cnt;
	ck_assert(mremap(w.p, 6 * kt_page(), 2 * kt_page(), 0) == w.p);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 1);
	kt_expect_one(w.fd, w.cnt, 22, kt_pg(w.p, 2), kt_pg(w.p, 6));
}
END_TEST

static void madvise_case(int advice, uint64_t cookie)
{
	struct kt_watch w = kt_watch_anon(8, cookie);
	uint64_t c0;

	c0 = *w.cnt;
	ck_assert_msg(madvise((void *)kt_pg(w.p, 2), 2 * kt_page(),
			      advice) == 0,
		      "madvise(%d): %s", advice, strerror(errno));
	ASSERT_COUNTER_DELTA(w.cnt, c0, 1);
	kt_expect_one(w.fd, w.cnt, cookie, kt_pg(w.p, 2), kt_pg(w.p, 4));
}

START_TEST(madv_dontneed)
{
	madvise_case(MADV_DONTNEED, 31);
}
END_TEST

START_TEST(madv_free)
{
	madvise_case(MADV_FREE, 32);
}
END_TEST

START_TEST(madv_remove_memfd)
{
	int fd = kt_open_nb();
	int mfd = memfd_create("ummunot-test", MFD_CLOEXEC);
	char *p;

	ck_assert_msg(mfd >= 0, "memfd_create: %s", strerror(errno));
	ck_assert_int_eq(ftruncate(mfd, 8 * (off_t)kt_page()), 0);
	p = mmap(NULL, 8 * kt_page(), PROT_READ | PROT_WRITE, MAP_SHARED,
		 mfd, 0);
	ck_assert(p != MAP_FAILED);
	kt_touch(p, 8);
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 8), 33);
	ck_assert_msg(madvise((void *)kt_pg(p, 1), 2 * kt_page(),
			      MADV_REMOVE) == 0, "MADV_REMOVE: %s",
		      strerror(errno));
	kt_expect_one(fd, NULL, 33, kt_pg(p, 1), kt_pg(p, 3));
	/* The hole reads back as zeroes: the pages really were dropped. */
	ck_assert_int_eq(p[kt_page()], 0);
}
END_TEST

START_TEST(brk_shrink)
{
	int fd = kt_open_nb();
	size_t pg = kt_page();
	uintptr_t cur = (uintptr_t)sbrk(0);
	uintptr_t pad = (pg - cur % pg) % pg;
	char *heap;

	/* Page-align the break, then grow it by 8 pages we own. */
	ck_assert(sbrk((intptr_t)pad) != (void *)-1);
	heap = sbrk((intptr_t)(8 * pg));
	ck_assert_msg(heap != (void *)-1, "sbrk: %s", strerror(errno));
	ck_assert_uint_eq((uintptr_t)heap % pg, 0);
	kt_touch(heap, 8);
	kt_register_ok(fd, kt_pg(heap, 0), kt_pg(heap, 8), 41);
	ck_assert(sbrk(-(intptr_t)(3 * pg)) != (void *)-1);
	kt_expect_one(fd, NULL, 41, kt_pg(heap, 5), kt_pg(heap, 8));
}
END_TEST

START_TEST(shmdt_sysv)
{
	int fd = kt_open_nb();
	int id = shmget(IPC_PRIVATE, 4 * kt_page(), IPC_CREAT | 0600);
	char *p;

	ck_assert_msg(id >= 0, "shmget: %s", strerror(errno));
	p = shmat(id, NULL, 0);
	/* Mark for removal now so a failing test leaks nothing. */
	shmctl(id, IPC_RMID, NULL);
	ck_assert_msg(p != (void *)-1, "shmat: %s", strerror(errno));
	kt_touch(p, 4);
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 51);
	ck_assert_int_eq(shmdt(p), 0);
	kt_expect_one(fd, NULL, 51, kt_pg(p, 0), kt_pg(p, 4));
}
END_TEST

/*
 * After fork the parent's anonymous pages are shared copy-on-write; the
 * parent's first write to one replaces that page, which must be reported.
 * Fork itself only write-protects (no event).
 */
START_TEST(cow_break_after_fork)
{
	struct kt_watch w = kt_watch_anon(4, 61);
	int hold[2], ready[2];
	char byte = 0;
	uint64_t c0;
	pid_t pid;
	int status;

	ck_assert_int_eq(pipe(hold), 0);
	ck_assert_int_eq(pipe(ready), 0);
	c0 = *w.cnt;
	pid = fork();
	ck_assert(pid >= 0);
	if (pid == 0) {
		/* Keep the pages shared until the parent has written. */
		close(hold[1]);
		if (write(ready[1], "r", 1) != 1)
			_exit(2);
		if (read(hold[0], &byte, 1) < 0)
			_exit(3);
		_exit(w.p[2 * kt_page()] == 3 ? 0 : 4); /* child saw old data */
	}
	close(hold[0]);
	ck_assert_int_eq(read(ready[0], &byte, 1), 1);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 0);
	kt_expect_nothing(w.fd);
	w.p[2 * kt_page()] = 'x';
	close(hold[1]);
	ck_assert(waitpid(pid, &status, 0) == pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "child status %#x", status);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 1);
	kt_expect_one(w.fd, w.cnt, 61, kt_pg(w.p, 2), kt_pg(w.p, 3));
	/* The page is now exclusive again: further writes are silent. */
	w.p[2 * kt_page()] = 'y';
	w.p[2 * kt_page() + 1] = 'z';
	kt_expect_nothing(w.fd);
}
END_TEST

static int page_node(void *page)
{
	int status = -1;

	ck_assert(syscall(SYS_move_pages, 0, 1UL, &page, NULL, &status, 0) == 0);
	return status;
}

START_TEST(numa_migration)
{
	int fd = kt_open_nb();
	char *p;
	void *page;
	int from, to, status = -1;

	ck_assert_msg(kt_numa_nodes() >= 2,
		      "the VM must have 2 NUMA nodes (has %d)", kt_numa_nodes());
	p = kt_map_anon(3);
	page = (void *)kt_pg(p, 1);
	from = page_node(page);
	ck_assert_msg(from >= 0, "page not present (status %d)", from);
	to = from == 0 ? 1 : 0;
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 3), 71);
	ck_assert_msg(syscall(SYS_move_pages, 0, 1UL, &page, &to, &status,
			      MPOL_MF_MOVE) == 0,
		      "move_pages: %s", strerror(errno));
	ck_assert_msg(status == to, "page landed on node %d, wanted %d",
		      status, to);
	ck_assert_int_eq(page_node(page), to);
	kt_expect_one(fd, NULL, 71, kt_pg(p, 1), kt_pg(p, 2));
}
END_TEST

START_TEST(mprotect_no_event)
{
	struct kt_watch w = kt_watch_anon(4, 81);
	uint64_t c0;

	c0 = *w.cnt;
	ck_assert_int_eq(mprotect(w.p, 4 * kt_page(), PROT_READ), 0);
	ck_assert_int_eq(w.p[kt_page()], 2);
	ck_assert_int_eq(mprotect((void *)kt_pg(w.p, 1), kt_page(), PROT_NONE),
			 0);
	ck_assert_int_eq(mprotect(w.p, 4 * kt_page(), PROT_READ | PROT_WRITE),
			 0);
	kt_touch(w.p, 4);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 0);
	kt_expect_nothing(w.fd);
}
END_TEST

START_TEST(plain_access_no_event)
{
	struct kt_watch w = kt_watch_anon(4, 82);
	volatile char *v = w.p;
	uint64_t c0;
	int sum = 0;

	c0 = *w.cnt;
	for (size_t i = 0; i < 4 * kt_page(); i += 64) {
		sum += v[i];
		v[i] = (char)i;
	}
	memset(w.p, 0x5a, 4 * kt_page());
	ck_assert_int_ge(sum, -1000000);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 0);
	kt_expect_nothing(w.fd);
}
END_TEST

START_TEST(unrelated_munmap_no_event)
{
	int fd = kt_open_nb();
	const volatile uint64_t *cnt = kt_map_counter(fd);
	char *p = kt_map_anon(5);
	char *other = kt_map_anon(2);
	uint64_t c0;

	kt_register_ok(fd, kt_pg(p, 1), kt_pg(p, 4), 83);
	c0 = *cnt;
	ck_assert_int_eq(munmap(other, 2 * kt_page()), 0);
	/* Pages touching the registration on either side. */
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 4), kt_page()), 0);
	ASSERT_COUNTER_DELTA(cnt, c0, 0);
	kt_expect_nothing(fd);
}
END_TEST

START_TEST(overlapping_registrations)
{
	int fd = kt_open_nb();
	const volatile uint64_t *cnt = kt_map_counter(fd);
	char *p = kt_map_anon(10);
	uint64_t c0;
	struct kt_expect exp[3] = {
		{ 1, kt_pg(p, 3), kt_pg(p, 4) },
		{ 2, kt_pg(p, 3), kt_pg(p, 4) },
		{ 4, kt_pg(p, 3), kt_pg(p, 4) },
	};

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 1);
	kt_register_ok(fd, kt_pg(p, 2), kt_pg(p, 6), 2);
	kt_register_ok(fd, kt_pg(p, 5), kt_pg(p, 8), 3);  /* not hit */
	kt_register_ok(fd, kt_pg(p, 2), kt_pg(p, 6), 4);  /* same range as 2 */
	c0 = *cnt;
	ck_assert_int_eq(munmap((void *)kt_pg(p, 3), kt_page()), 0);
	/* One invalidation: the counter moves once, whatever it hits. */
	ASSERT_COUNTER_DELTA(cnt, c0, 1);
	kt_expect_events(fd, cnt, 3, exp);
}
END_TEST

/* Two invalidations before a read: one event, hint covers both. */
START_TEST(coalesced_until_read)
{
	struct kt_watch w = kt_watch_anon(8, 91);
	uint64_t c0;

	c0 = *w.cnt;
	ck_assert_int_eq(madvise((void *)kt_pg(w.p, 1), kt_page(),
				 MADV_DONTNEED), 0);
	ck_assert_int_eq(madvise((void *)kt_pg(w.p, 4), kt_page(),
				 MADV_DONTNEED), 0);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 2);
	kt_expect_one(w.fd, w.cnt, 91, kt_pg(w.p, 1), kt_pg(w.p, 5));
	/* After the read, the hint starts afresh. */
	kt_touch(w.p, 8);
	ck_assert_int_eq(madvise((void *)kt_pg(w.p, 6), kt_page(),
				 MADV_DONTNEED), 0);
	ASSERT_COUNTER_DELTA(w.cnt, c0, 3);
	kt_expect_one(w.fd, w.cnt, 91, kt_pg(w.p, 6), kt_pg(w.p, 7));
}
END_TEST

/* A registration need not be mapped when it is made. */
START_TEST(unmapped_then_mapped)
{
	int fd = kt_open_nb();
	char *hole = kt_reserve(4);
	char *p;

	ck_assert_int_eq(munmap(hole, 4 * kt_page()), 0);
	kt_register_ok(fd, kt_pg(hole, 0), kt_pg(hole, 4), 101);
	p = mmap(hole, 4 * kt_page(), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	ck_assert_msg(p == hole, "mmap into the hole: %s", strerror(errno));
	kt_touch(p, 4);
	kt_expect_nothing(fd);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 2), 2 * kt_page()), 0);
	kt_expect_one(fd, NULL, 101, kt_pg(p, 2), kt_pg(p, 4));
}
END_TEST

/* Unregistering and registering the cookie again starts clean. */
START_TEST(reregister_after_unregister)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(4);

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 111);
	ck_assert_int_eq(madvise(p, kt_page(), MADV_DONTNEED), 0);
	kt_unregister_ok(fd, 111);
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 111);
	ck_assert_int_eq(madvise((void *)kt_pg(p, 3), kt_page(),
				 MADV_DONTNEED), 0);
	kt_expect_one(fd, NULL, 111, kt_pg(p, 3), kt_pg(p, 4));
}
END_TEST

/* Two fds of one process are independent. */
START_TEST(two_fds_independent)
{
	int a = kt_open_nb(), b = kt_open_nb();
	char *p = kt_map_anon(4);

	kt_register_ok(a, kt_pg(p, 0), kt_pg(p, 2), 7);
	kt_register_ok(b, kt_pg(p, 2), kt_pg(p, 4), 7);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 3), kt_page()), 0);
	kt_expect_nothing(a);
	kt_expect_one(b, NULL, 7, kt_pg(p, 3), kt_pg(p, 4));
}
END_TEST

Suite *kt_events_suite(void)
{
	Suite *s = suite_create("events");

	KT_ADD_TESTS(s, "sources",
		     munmap_middle, munmap_hint_clipped, register_page_rounding,
		     mremap_move, mremap_shrink, madv_dontneed, madv_free,
		     madv_remove_memfd, brk_shrink, shmdt_sysv,
		     cow_break_after_fork, numa_migration);
	KT_ADD_TESTS(s, "silence",
		     mprotect_no_event, plain_access_no_event,
		     unrelated_munmap_no_event);
	KT_ADD_TESTS(s, "semantics",
		     overlapping_registrations, coalesced_until_read,
		     unmapped_then_mapped, reregister_after_unregister,
		     two_fds_independent);
	return s;
}
