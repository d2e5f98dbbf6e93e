// SPDX-License-Identifier: GPL-2.0-only
/*
 * The generation-counter page: it moves by exactly one per invalidation
 * that hits at least one registration of the file and never otherwise, and only a read-only shared
 * one-page mapping at offset 0 is allowed.
 */
#include "ktest.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ASSERT_COUNTER(cnt, expected)                                       \
	ck_assert_msg(*(cnt) == (expected), "counter %llu, expected %llu",  \
		      (unsigned long long)*(cnt),                           \
		      (unsigned long long)(expected))

START_TEST(counter_moves_exactly)
{
	int fd = kt_open_nb();
	const volatile uint64_t *cnt = kt_map_counter(fd);
	const volatile uint64_t *cnt2 = kt_map_counter(fd);
	char *p = kt_map_anon(8);
	char *other = kt_map_anon(1);
	struct ummunot_event ev[8];
	uint64_t c;

	c = *cnt;
	ASSERT_COUNTER(cnt2, c);
	/* Registering, unrelated munmap, mprotect, reads: no movement. */
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 1);
	kt_register_ok(fd, kt_pg(p, 2), kt_pg(p, 8), 2);
	ck_assert_int_eq(munmap(other, kt_page()), 0);
	ck_assert_int_eq(mprotect(p, 8 * kt_page(), PROT_READ), 0);
	ck_assert_int_eq(mprotect(p, 8 * kt_page(), PROT_READ | PROT_WRITE), 0);
	kt_touch(p, 8);
	ck_assert_int_eq(kt_read(fd, ev, sizeof(ev)), -EAGAIN);
	ASSERT_COUNTER(cnt, c);
	/* One hit: +1. */
	ck_assert_int_eq(madvise(p, kt_page(), MADV_DONTNEED), 0);
	ASSERT_COUNTER(cnt, c + 1);
	ASSERT_COUNTER(cnt2, c + 1);
	/* Widening a pending event: +1. */
	ck_assert_int_eq(madvise((void *)kt_pg(p, 1), kt_page(),
				 MADV_DONTNEED), 0);
	ASSERT_COUNTER(cnt, c + 2);
	/* One invalidation, two registrations: +1. */
	ck_assert_int_eq(munmap((void *)kt_pg(p, 3), kt_page()), 0);
	ASSERT_COUNTER(cnt, c + 3);
	/* Reading and unregistering do not move it. */
	ck_assert_int_gt(kt_read(fd, ev, sizeof(ev)), 0);
	kt_unregister_ok(fd, 1);
	ASSERT_COUNTER(cnt, c + 3);
	/* Only registration 2 is left. */
	ck_assert_int_eq(munmap(p, 3 * kt_page()), 0);
	ASSERT_COUNTER(cnt, c + 4);
}
END_TEST

/* The LAST event carries the counter at the moment the list emptied. */
START_TEST(last_carries_counter)
{
	int fd = kt_open_nb();
	const volatile uint64_t *cnt = kt_map_counter(fd);
	char *p = kt_map_anon(6);
	struct kt_expect x[2] = {
		{ 1, kt_pg(p, 0), kt_pg(p, 2) },
		{ 2, kt_pg(p, 4), kt_pg(p, 5) },
	};

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 3), 1);
	kt_register_ok(fd, kt_pg(p, 3), kt_pg(p, 6), 2);
	ck_assert_int_eq(munmap(p, 2 * kt_page()), 0);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 4), kt_page()), 0);
	ASSERT_COUNTER(cnt, 2);
	kt_expect_events(fd, cnt, 2, x);
}
END_TEST

/* A fresh fd starts at 0, and fds do not share counters. */
START_TEST(counter_per_fd)
{
	int a = kt_open_nb(), b = kt_open_nb();
	const volatile uint64_t *ca = kt_map_counter(a);
	const volatile uint64_t *cb = kt_map_counter(b);
	char *p = kt_map_anon(1);

	ASSERT_COUNTER(ca, 0);
	ASSERT_COUNTER(cb, 0);
	kt_register_ok(a, kt_pg(p, 0), kt_pg(p, 1), 1);
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	ASSERT_COUNTER(ca, 1);
	ASSERT_COUNTER(cb, 0);
}
END_TEST

static int mmap_errno(int fd, size_t len, int prot, int flags, off_t off)
{
	void *p = mmap(NULL, len, prot, flags, fd, off);

	if (p != MAP_FAILED) {
		munmap(p, len);
		return 0;
	}
	return errno;
}

START_TEST(mmap_refusals)
{
	int fd = kt_open_nb();
	size_t pg = kt_page();
	int e;

	ck_assert_int_eq(mmap_errno(fd, pg, PROT_READ, MAP_SHARED, 0), 0);
	ck_assert_int_eq(mmap_errno(fd, 2 * pg, PROT_READ, MAP_SHARED, 0),
			 EINVAL);
	ck_assert_int_eq(mmap_errno(fd, pg, PROT_READ, MAP_SHARED,
				    (off_t)pg), EINVAL);
	ck_assert_int_eq(mmap_errno(fd, pg, PROT_READ, MAP_PRIVATE, 0),
			 EINVAL);
	ck_assert_int_eq(mmap_errno(fd, pg, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE, 0), EPERM);
	/* Never user-controlled executable bytes. */
	ck_assert_int_eq(mmap_errno(fd, pg, PROT_READ | PROT_EXEC, MAP_SHARED,
				    0), EPERM);
	ck_assert_int_eq(mmap_errno(fd, pg, PROT_EXEC, MAP_SHARED, 0), EPERM);
	e = mmap_errno(fd, pg, PROT_READ | PROT_WRITE, MAP_SHARED, 0);
	ck_assert_msg(e == EACCES || e == EPERM,
		      "writable shared mmap: %s", strerror(e));
}
END_TEST

/* The counter page may never gain prot: mprotect must fail with EACCES. */
static void assert_counter_mprotect_refused(int prot)
{
	int fd = kt_open_nb();
	void *p = (void *)kt_map_counter(fd);

	ck_assert_int_eq(mprotect(p, kt_page(), prot), -1);
	ck_assert_int_eq(errno, EACCES);
}

START_TEST(mprotect_write_refused)
{
	assert_counter_mprotect_refused(PROT_READ | PROT_WRITE);
}
END_TEST

START_TEST(mprotect_exec_refused)
{
	assert_counter_mprotect_refused(PROT_READ | PROT_EXEC);
}
END_TEST

/* MADV_DONTNEED drops the PTE; the next read faults the page back in. */
START_TEST(counter_survives_dontneed)
{
	struct kt_watch w = kt_watch_anon(1, 1);

	ck_assert_int_eq(munmap(w.p, kt_page()), 0);
	ASSERT_COUNTER(w.cnt, 1);
	ck_assert_int_eq(madvise((void *)w.cnt, kt_page(), MADV_DONTNEED), 0);
	ASSERT_COUNTER(w.cnt, 1);
}
END_TEST

/* The mapping keeps working (and stays safe) after the fd is closed. */
START_TEST(mapping_outlives_fd)
{
	struct kt_watch w = kt_watch_anon(1, 1);

	ck_assert_int_eq(munmap(w.p, kt_page()), 0);
	ck_assert_int_eq(close(w.fd), 0);
	ASSERT_COUNTER(w.cnt, 1);
	ck_assert_int_eq(munmap((void *)w.cnt, kt_page()), 0);
}
END_TEST

Suite *kt_counter_suite(void)
{
	Suite *s = suite_create("counter");

	KT_ADD_TESTS(s, "counter",
		     counter_moves_exactly, last_carries_counter,
		     counter_per_fd);
	KT_ADD_TESTS(s, "mmap",
		     mmap_refusals, mprotect_write_refused,
		     mprotect_exec_refused, counter_survives_dontneed,
		     mapping_outlives_fd);
	return s;
}
