// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of draining the deferred deregistrations on the way back to
 * the application (dereg_defer_drain.c).  Linked with
 * -Wl,--wrap=dereg_defer_take, so that a "signal handler" can be run at
 * the exact moment the drain's last take has found the queue empty.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <stdint.h>
#include <stdlib.h>

#include "dereg_defer.h"

/* The thread's depth inside the shim, as interpose.c keeps it. */
static unsigned int depth;

#define MAX_DONE 16
static void *done[MAX_DONE];
static int n_done;

static void record_dereg(void *mr)
{
	ck_assert(dereg_defer_pending());	/* under way: still pending */
	ck_assert_int_lt(n_done, MAX_DONE);
	done[n_done++] = mr;
}

/* What ibv_dereg_mr does in a signal handler (interpose.c). */
static void handler_dereg(void *mr)
{
	if (depth > 0) {
		ck_assert_int_eq(dereg_defer(mr), 0);
	} else {
		ck_assert_int_lt(n_done, MAX_DONE);
		done[n_done++] = mr;
	}
}

/* Handlers to run when a take finds nothing (a signal just then). */
static int handlers_at_empty_take;

void *__real_dereg_defer_take(void);
void *__wrap_dereg_defer_take(void);

void *__wrap_dereg_defer_take(void)
{
	void *mr = __real_dereg_defer_take();

	if (!mr && handlers_at_empty_take > 0) {
		handlers_at_empty_take--;
		handler_dereg((void *)(uintptr_t)(0x100 + handlers_at_empty_take));
	}
	return mr;
}

/* Each test runs in a child of its own (Check's fork mode): a fresh queue. */
static void setup(void)
{
	depth = 0;
	n_done = 0;
	handlers_at_empty_take = 0;
}

START_TEST(handler_after_the_last_take_is_done_before_return)
{
	ck_assert_int_eq(dereg_defer((void *)0x1), 0);
	handlers_at_empty_take = 2;
	dereg_defer_drain(&depth, record_dereg);
	ck_assert_uint_eq(depth, 0);
	ck_assert_int_eq(n_done, 3);
	ck_assert_ptr_eq(done[0], (void *)0x1);
	ck_assert_ptr_eq(done[1], (void *)0x101);
	ck_assert_ptr_eq(done[2], (void *)0x100);
	ck_assert(!dereg_defer_pending());
	ck_assert_int_eq(handlers_at_empty_take, 0);
}
END_TEST

/*
 * Another thread's half-queued entry (claimed, not stored yet) keeps the
 * queue "pending" but is not this thread's to wait for: the drain
 * returns.
 */
START_TEST(another_threads_half_queued_entry_does_not_hold_the_drain)
{
	atomic_fetch_add(&dereg_defer_claimed, 1);
	ck_assert_int_eq(dereg_defer((void *)0x2), 0);
	dereg_defer_drain(&depth, record_dereg);
	ck_assert_int_eq(n_done, 1);
	ck_assert_ptr_eq(done[0], (void *)0x2);
	ck_assert(dereg_defer_pending());
	atomic_fetch_sub(&dereg_defer_claimed, 1);
	ck_assert(!dereg_defer_pending());
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dereg_defer_drain");
	TCase *tc = tcase_create("drain");

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, handler_after_the_last_take_is_done_before_return);
	tcase_add_test(tc, another_threads_half_queued_entry_does_not_hold_the_drain);
	suite_add_tcase(s, tc);
	return check_run_suite(s);
}
