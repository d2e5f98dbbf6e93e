// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of the /dev/ummunot monitor's drain logic.  On the host there
 * is no module: a non-blocking pipe stands in for the event file (the
 * test writes the events the module would return) and a plain variable
 * for the counter page.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ummunot.h>

#include "monitor_ummunot.h"

static int wfd;
static volatile uint64_t counter;
static struct monitor *mon;

struct seen {
	int n;
	uint64_t cookie[256];
	uintptr_t start[256], end[256];
};

static void record(void *ctx, uint64_t cookie, uintptr_t start, uintptr_t end,
		   unsigned int flags)
{
	struct seen *s = ctx;

	(void)flags;

	if (s->n < 256) {
		s->cookie[s->n] = cookie;
		s->start[s->n] = start;
		s->end[s->n] = end;
	}
	s->n++;
}

static void setup(void)
{
	int p[2];

	ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	wfd = p[1];
	counter = 5;
	mon = monitor_ummunot_from_fd(p[0], &counter, 0,
				      UMMUNOT_FEATURE_REFUSE_UNWATCHABLE);
	ck_assert_ptr_nonnull(mon);
}

static void teardown(void)
{
	mon->ops->close(mon);
	close(wfd);
}

static void put_inval(uint64_t cookie, uint64_t start, uint64_t end)
{
	struct ummunot_event ev = {
		.type = UMMUNOT_EVENT_TYPE_INVAL,
		.flags = UMMUNOT_EVENT_FLAG_HINT,
		.hint_start = start,
		.hint_end = end,
		.user_cookie_counter = cookie,
	};

	ck_assert_int_eq(write(wfd, &ev, sizeof(ev)), sizeof(ev));
}

static void put_last(uint64_t value)
{
	struct ummunot_event ev = {
		.type = UMMUNOT_EVENT_TYPE_LAST,
		.user_cookie_counter = value,
	};

	ck_assert_int_eq(write(wfd, &ev, sizeof(ev)), sizeof(ev));
}

START_TEST(unchanged_until_counter_moves)
{
	ck_assert_str_eq(mon->ops->name, "ummunot");
	ck_assert(!mon->ops->changed(mon));
	counter = 6;
	ck_assert(mon->ops->changed(mon));
}
END_TEST

/*
 * The hit path's check (monitor_check(), which compares the counter with
 * the last drained value inline) says what changed() says, through the
 * same sequence of counter moves and drains, LAST older than the counter
 * included.
 */
START_TEST(inline_check_follows_counter_and_drains)
{
	struct seen s = { 0 };

	ck_assert(mon->gen == &counter);
	ck_assert(monitor_check(mon, 0x1000, 0x2000));
	counter = 6;
	ck_assert(!monitor_check(mon, 0x1000, 0x2000));
	put_inval(11, 0x1000, 0x2000);
	put_last(6);
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert(monitor_check(mon, 0x1000, 0x2000));
	put_inval(12, 0x1000, 0x2000);
	put_last(7);
	counter = 8;	/* one more after LAST */
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert(!monitor_check(mon, 0x1000, 0x2000));
	ck_assert(mon->ops->changed(mon));
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert(monitor_check(mon, 0x1000, 0x2000));
	ck_assert_int_eq(s.n, 2);
}
END_TEST

START_TEST(drain_reports_cookies_and_hints_up_to_last)
{
	struct seen s = { 0 };

	put_inval(11, 0x1000, 0x2000);
	put_inval(12, 0x5000, 0x5800);
	put_last(7);
	counter = 7;
	ck_assert(mon->ops->changed(mon));
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert_int_eq(s.n, 2);
	ck_assert_uint_eq(s.cookie[0], 11);
	ck_assert_uint_eq(s.start[0], 0x1000);
	ck_assert_uint_eq(s.end[0], 0x2000);
	ck_assert_uint_eq(s.cookie[1], 12);
	ck_assert(!mon->ops->changed(mon));
}
END_TEST

START_TEST(last_older_than_counter_keeps_changed)
{
	struct seen s = { 0 };

	/* An invalidation arrived after the module produced LAST. */
	put_inval(11, 0x1000, 0x2000);
	put_last(6);
	counter = 7;
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert(mon->ops->changed(mon));
	/* The next drain (nothing left) accounts for the snapshot. */
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert_int_eq(s.n, 1);
	ck_assert(!mon->ops->changed(mon));
}
END_TEST

START_TEST(events_after_last_in_one_read_are_reported)
{
	struct seen s = { 0 };

	/* A pipe returns all three in one read; the module would stop at LAST. */
	put_inval(1, 0, 0x1000);
	put_last(6);
	put_inval(2, 0, 0x1000);
	counter = 8;
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert_int_eq(s.n, 2);
	ck_assert_uint_eq(s.cookie[1], 2);
	ck_assert(mon->ops->changed(mon));	/* 6 accounted for, not 8 */
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert_int_eq(s.n, 2);
	ck_assert(!mon->ops->changed(mon));
}
END_TEST

START_TEST(drain_without_last_uses_snapshot)
{
	struct seen s = { 0 };

	put_inval(3, 0x3000, 0x4000);
	counter = 9;
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert_int_eq(s.n, 1);
	ck_assert(!mon->ops->changed(mon));
}
END_TEST

START_TEST(drain_reads_more_than_one_batch)
{
	struct seen s = { 0 };

	for (int i = 0; i < 150; i++)
		put_inval(100 + (uint64_t)i, 0, 0x1000);
	put_last(200);
	counter = 200;
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert_int_eq(s.n, 150);
	for (int i = 0; i < 150; i++)
		ck_assert_uint_eq(s.cookie[i], 100 + (uint64_t)i);
	ck_assert(!mon->ops->changed(mon));
}
END_TEST

START_TEST(event_without_hint_reports_empty_range)
{
	struct seen s = { 0 };
	struct ummunot_event ev = {
		.type = UMMUNOT_EVENT_TYPE_INVAL,
		.hint_start = 0x1000,
		.hint_end = 0x2000,
		.user_cookie_counter = 4,
	};

	ck_assert_int_eq(write(wfd, &ev, sizeof(ev)), sizeof(ev));
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), 0);
	ck_assert_int_eq(s.n, 1);
	ck_assert_uint_eq(s.cookie[0], 4);
	ck_assert_uint_eq(s.start[0], 0);
	ck_assert_uint_eq(s.end[0], 0);
}
END_TEST

START_TEST(torn_event_breaks_the_monitor)
{
	struct seen s = { 0 };
	char junk[5] = { 0 };

	ck_assert_int_eq(write(wfd, junk, sizeof(junk)), sizeof(junk));
	ck_assert_int_eq(mon->ops->drain(mon, record, &s), -EIO);
}
END_TEST

START_TEST(read_error_is_reported)
{
	struct seen s = { 0 };
	struct monitor *bad;
	uint64_t c = 0;
	int p[2];

	/* The write end of a pipe cannot be read: EBADF. */
	ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
	close(p[0]);
	bad = monitor_ummunot_from_fd(p[1], &c, 0, 0);
	ck_assert_int_eq(bad->ops->drain(bad, record, &s), -EBADF);
	bad->ops->close(bad);
}
END_TEST

START_TEST(watch_errors_are_returned)
{
	/* A pipe does not know the ioctl: the cache would pass through. */
	ck_assert_int_eq(mon->ops->watch(mon, 1, 0x1000, 0x2000), -ENOTTY);
	mon->ops->unwatch(mon, 1);	/* errors ignored */
}
END_TEST

START_TEST(open_fails_cleanly_without_module)
{
	struct monitor *m;

	if (access(UMMUNOT_DEVICE_PATH, F_OK) == 0) {
		/* The module is loaded here: open must work. */
		m = monitor_ummunot_open();
		ck_assert_ptr_nonnull(m);
		ck_assert(!m->ops->changed(m));
		m->ops->close(m);
		return;
	}
	errno = 0;
	m = monitor_ummunot_open();
	ck_assert_ptr_null(m);
	ck_assert_int_eq(errno, ENOENT);
}
END_TEST

static Suite *monitor_suite(void)
{
	Suite *s = suite_create("monitor_ummunot");
	TCase *tc = tcase_create("drain");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, unchanged_until_counter_moves);
	tcase_add_test(tc, inline_check_follows_counter_and_drains);
	tcase_add_test(tc, drain_reports_cookies_and_hints_up_to_last);
	tcase_add_test(tc, last_older_than_counter_keeps_changed);
	tcase_add_test(tc, events_after_last_in_one_read_are_reported);
	tcase_add_test(tc, drain_without_last_uses_snapshot);
	tcase_add_test(tc, drain_reads_more_than_one_batch);
	tcase_add_test(tc, event_without_hint_reports_empty_range);
	tcase_add_test(tc, torn_event_breaks_the_monitor);
	tcase_add_test(tc, read_error_is_reported);
	tcase_add_test(tc, watch_errors_are_returned);
	tcase_add_test(tc, open_fails_cleanly_without_module);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run_suite(monitor_suite());
}
