/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Shared helpers for the ummunot kernel-module tests.  These tests run as
 * root inside the VM against the real module (see run-in-guest.sh).
 *
 * Check runs every test in its own forked process, so each test has its own
 * mm: every test opens /dev/ummunot itself and never shares an fd with
 * another test.
 */
#ifndef UMMUNOT_KTEST_H
#define UMMUNOT_KTEST_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h> /* snprintf in KT_CHILD_CHECK */
#include <sys/types.h>

#include <ummunot.h>

/* Per-test timeout in seconds: the VM emulates the CPU (TCG), so be generous. */
#define KT_TIMEOUT 300

/* Highest user address + 1 with 4-level paging on x86_64 (TASK_SIZE). */
#define KT_TASK_SIZE 0x00007ffffffff000ULL

#define KT_EVENT_SIZE sizeof(struct ummunot_event)

/* One expected INVAL event (see kt_expect_events). */
struct kt_expect {
	uint64_t cookie;
	uint64_t hint_start;
	uint64_t hint_end;
};

/*
 * CK_TIMEOUT_MULTIPLIER (the harness sets it on slow kernels, e.g. KASAN
 * under TCG), at least 1: tests that run "until enough was done" stretch
 * their own time limits by it, as Check stretches KT_TIMEOUT.
 */
unsigned int kt_time_factor(void);

size_t kt_page(void);
uintptr_t kt_pg(const void *base, size_t n); /* base + n pages */

/* open(/dev/ummunot, O_RDONLY | O_CLOEXEC | extra); asserts success. */
int kt_open(int extra_flags);
/* Same with O_NONBLOCK: what most tests want so reads never hang. */
int kt_open_nb(void);

/* Return 0 on success or the errno of the failed ioctl. */
int kt_register(int fd, uint64_t start, uint64_t end, uint64_t cookie);
int kt_register_raw(int fd, const void *arg);
int kt_unregister(int fd, uint64_t cookie);
int kt_features(int fd, uint32_t *inout);
/* Asserting variants. */
void kt_register_ok(int fd, uint64_t start, uint64_t end, uint64_t cookie);
void kt_unregister_ok(int fd, uint64_t cookie);

/* Maps the generation-counter page; asserts success. */
const volatile uint64_t *kt_map_counter(int fd);

/*
 * Private anonymous read/write mapping of npages, THP disabled, every page
 * written once: a later write must not replace the zero page (which would be
 * a real invalidation) and a later invalidation must have pages to drop.
 */
char *kt_map_anon(size_t npages);
void kt_touch(void *p, size_t npages);
/* PROT_NONE reservation of address space nobody else will map into. */
char *kt_reserve(size_t npages);

/* read() returning bytes or -errno. */
ssize_t kt_read(int fd, void *buf, size_t len);
/* Drains a non-blocking fd (reads until EAGAIN); returns the event count. */
size_t kt_drain(int fd, struct ummunot_event *ev, size_t max);

/*
 * Drains the fd and asserts it held exactly the n given INVAL events (in any
 * order, each with UMMUNOT_EVENT_FLAG_HINT and the exact hint), followed by
 * one LAST event.  When counter is not NULL the LAST must carry its value.
 */
void kt_expect_events(int fd, const volatile uint64_t *counter,
		      size_t n, const struct kt_expect *exp);
void kt_expect_one(int fd, const volatile uint64_t *counter, uint64_t cookie,
		   uint64_t hint_start, uint64_t hint_end);
/* Asserts that a non-blocking read fails with EAGAIN. */
void kt_expect_nothing(int fd);

/*
 * The common test set-up: a non-blocking fd with its counter mapped, and
 * npages of fresh anonymous memory (kt_map_anon) registered whole under
 * cookie.
 */
struct kt_watch {
	int fd;
	const volatile uint64_t *cnt;
	char *p;
};
struct kt_watch kt_watch_anon(size_t npages, uint64_t cookie);

/*
 * Active objects in the "ummunot_region" slab cache after shrinking it, or
 * -1 if it cannot be read.
 */
long kt_slab_objects(void);
/*
 * Waits (bounded) until the count equals expected, since objects may be
 * freed after an RCU grace period; returns the last count read.
 */
long kt_slab_settle(long expected);

/* A module parameter: read (asserts) and write (returns errno). */
long kt_param(const char *name);
int kt_set_param(const char *name, long value);
/* Module parameter max_regions: read (asserts) and write (returns errno). */
long kt_max_regions(void);
int kt_set_max_regions(long value);

/*
 * Runs fn in a forked child and asserts that it succeeded.  fn returns 0 on
 * success, or fills err and returns nonzero; the parent prints err.  A
 * ck_assert failing inside fn also exits the child with status 1, so it
 * fails the test too (Check keeps the child's message).
 */
typedef int (*kt_child_fn)(void *arg, char *err, size_t errlen);
void kt_run_child(const char *what, kt_child_fn fn, void *arg);

/* Child-side check: on failure format err and return 1 from fn. */
#define KT_CHILD_CHECK(cond, ...)                                       \
	do {                                                            \
		if (!(cond)) {                                          \
			snprintf(err, errlen, __VA_ARGS__);             \
			return 1;                                       \
		}                                                       \
	} while (0)

/* SCM_RIGHTS over a unix socket. */
int kt_send_fd(int sock, int fd);
int kt_recv_fd(int sock); /* -1 on failure */

/* Number of online NUMA nodes (from /sys). */
int kt_numa_nodes(void);

/* Suites, one per test file. */
Suite *kt_events_suite(void);
Suite *kt_read_poll_suite(void);
Suite *kt_counter_suite(void);
Suite *kt_errors_suite(void);
Suite *kt_access_suite(void);
Suite *kt_lifetime_suite(void);
Suite *kt_scale_suite(void);
Suite *kt_concurrency_suite(void);
Suite *kt_fuzz_suite(void);
Suite *kt_features_suite(void);

/* Adds a TCase with the generous timeout to s and returns it. */
TCase *kt_tcase(Suite *s, const char *name);

/*
 * Adds a TCase named tcase (see kt_tcase) to s holding the NULL-terminated
 * tests, in order.  KT_ADD_TESTS takes the tests as arguments instead.
 */
void kt_add_tests(Suite *s, const char *tcase, const TTest *const *tests);
#define KT_ADD_TESTS(s, tcase, ...)                                     \
	kt_add_tests((s), (tcase),                                      \
		     (const TTest *const[]){ __VA_ARGS__, NULL })

/* A suite holding one TCase of the same name with the given tests. */
Suite *kt_suite_of(const char *name, const TTest *const *tests);
#define KT_SUITE(name, ...)                                             \
	kt_suite_of((name), (const TTest *const[]){ __VA_ARGS__, NULL })

#endif /* UMMUNOT_KTEST_H */
