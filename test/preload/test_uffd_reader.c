// SPDX-License-Identifier: BSD-2-Clause
/*
 * The userfaultfd monitor's reader thread and ring (preload/uffd_reader.c)
 * fed from a pipe that carries struct uffd_msg records, so every event
 * kind, the overflow and the failure paths can be driven exactly; and the
 * queue of failed checks (preload/uffd_suspects.c).
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "monitor.h"
#include "uffd_reader.h"
#include "uffd_suspects.h"

static struct uffd_reader r;
static int pipefd[2];

static void start(unsigned int ring)
{
	ck_assert_int_eq(pipe2(pipefd, O_NONBLOCK | O_CLOEXEC), 0);
	ck_assert_int_eq(uffd_reader_init(&r, ring), 0);
	ck_assert_int_eq(uffd_reader_start(&r, pipefd[0], 4096), 0);
}

static void finish(void)
{
	uffd_reader_stop(&r);
	uffd_reader_destroy(&r);
	close(pipefd[0]);
	close(pipefd[1]);
}

static void send_msg(const struct uffd_msg *m)
{
	ck_assert_int_eq(write(pipefd[1], m, sizeof(*m)), (ssize_t)sizeof(*m));
}

static void send_range(uint8_t event, uintptr_t start, uintptr_t end)
{
	struct uffd_msg m = { .event = event };

	m.arg.remove.start = start;
	m.arg.remove.end = end;
	send_msg(&m);
}

/* Wait until the reader has counted @n_events and published them. */
static uint64_t wait_published(uint64_t seen, int n_events)
{
	uint64_t events = 0, faults, overflows;

	for (int i = 0; i < 20000; i++) {
		uffd_reader_counters(&r, &events, &faults, &overflows);
		if (events >= (uint64_t)n_events &&
		    !(atomic_load(&r.sh->seq) & 1))
			break;
		usleep(500);
	}
	ck_assert_uint_eq(events, (uint64_t)n_events);
	ck_assert(uffd_reader_pending(&r, seen));
	return uffd_reader_settle(&r);
}

static bool notified(void)
{
	struct pollfd p = { .fd = r.notifyfd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

/* The wait descriptor: readable from a publication until unnotify. */
START_TEST(publication_notifies)
{
	uint64_t gen;

	start(0);
	ck_assert(!notified());
	gen = uffd_reader_settle(&r);
	send_range(UFFD_EVENT_UNMAP, 0x1000, 0x2000);
	wait_published(gen, 1);
	ck_assert(notified());
	uffd_reader_unnotify(&r);
	ck_assert(!notified());
	send_range(UFFD_EVENT_REMOVE, 0x1000, 0x2000);
	wait_published(gen, 2);
	ck_assert(notified());
	finish();
}
END_TEST

START_TEST(each_event_kind_queued)
{
	struct uffd_msg remap = { .event = UFFD_EVENT_REMAP };
	struct uffd_item got[8];
	uint64_t gen;

	start(0);
	ck_assert(!uffd_reader_pending(&r, 0));
	send_range(UFFD_EVENT_UNMAP, 0x1000, 0x3000);
	send_range(UFFD_EVENT_REMOVE, 0x5000, 0x6000);
	remap.arg.remap.from = 0x8000;
	remap.arg.remap.to = 0x20000;
	remap.arg.remap.len = 0x2000;
	send_msg(&remap);
	gen = wait_published(0, 3);
	ck_assert(!uffd_reader_pending(&r, gen));
	ck_assert_uint_eq(uffd_reader_take(&r, got, 8), 4);
	ck_assert_uint_eq(got[0].start, 0x1000);
	ck_assert_uint_eq(got[0].end, 0x3000);
	ck_assert_int_eq(got[0].kind, UFFD_ITEM_INVAL);
	ck_assert_uint_eq(got[0].flags, MONITOR_INVAL_UNMAPPED);
	ck_assert_uint_eq(got[1].flags, 0);	/* madvise: not unmapped */
	ck_assert_uint_eq(got[2].start, 0x8000);
	ck_assert_uint_eq(got[2].flags, MONITOR_INVAL_UNMAPPED);
	ck_assert_int_eq(got[3].kind, UFFD_ITEM_ORPHAN);
	ck_assert_uint_eq(got[3].start, 0x20000);
	ck_assert_uint_eq(got[3].end, 0x22000);
	ck_assert_uint_eq(uffd_reader_take(&r, got, 8), 0);
	ck_assert(!uffd_reader_take_overflow(&r));
	ck_assert_int_eq(uffd_reader_failed(&r), 0);
	finish();
}
END_TEST

START_TEST(full_ring_overflows_never_blocks)
{
	struct uffd_item got[8];
	uint64_t gen;

	start(4);
	for (int i = 0; i < 10; i++)
		send_range(UFFD_EVENT_UNMAP, 0x1000 * (i + 1), 0x1000 * (i + 2));
	wait_published(0, 10);
	ck_assert(uffd_reader_take_overflow(&r));
	ck_assert(!uffd_reader_take_overflow(&r));	/* reported once */
	ck_assert_uint_eq(uffd_reader_take(&r, got, 8), 0);	/* discarded */
	gen = uffd_reader_settle(&r);
	send_range(UFFD_EVENT_UNMAP, 0x1000, 0x2000);	/* room again */
	wait_published(gen, 11);
	ck_assert_uint_eq(uffd_reader_take(&r, got, 8), 1);
	finish();
}
END_TEST

START_TEST(empty_ranges_and_forks_ignored)
{
	struct uffd_msg fork_msg = { .event = UFFD_EVENT_FORK };
	struct uffd_item got[4];

	start(0);
	send_range(UFFD_EVENT_UNMAP, 0x3000, 0x3000);
	send_msg(&fork_msg);
	send_range(UFFD_EVENT_REMOVE, 0x1000, 0x2000);
	wait_published(0, 2);	/* the empty unmap counts, queues nothing */
	ck_assert_uint_eq(uffd_reader_take(&r, got, 4), 1);
	ck_assert_uint_eq(got[0].start, 0x1000);
	finish();
}
END_TEST

/* A descriptor closed under the reader fails the monitor, never hangs. */
START_TEST(closed_descriptor_fails)
{
	int keep;

	start(0);
	keep = dup(pipefd[0]);	/* the pipe stays open, its number is freed */
	close(pipefd[0]);
	pipefd[0] = open("/dev/null", O_RDONLY);	/* takes the number */
	send_range(UFFD_EVENT_UNMAP, 0x1000, 0x2000);	/* wakes the reader */
	for (int i = 0; i < 20000 && !uffd_reader_failed(&r); i++)
		usleep(500);
	ck_assert_int_eq(uffd_reader_failed(&r), EBADF);
	ck_assert(uffd_reader_pending(&r, 0));
	ck_assert(notified());	/* the releaser learns of it too */
	finish();
	close(keep);
}
END_TEST

/* ---- the queue of failed checks ------------------------------------------ */

struct got {
	int n;
	uintptr_t start[SUSPECTS_MAX + 1], end[SUSPECTS_MAX + 1];
};

static void collect(void *ctx, uint64_t cookie, uintptr_t start, uintptr_t end,
		    unsigned int flags)
{
	struct got *g = ctx;

	ck_assert_uint_eq(cookie, MONITOR_COOKIE_ANY);
	ck_assert_uint_eq(flags, 0);
	if (g->n <= SUSPECTS_MAX) {
		g->start[g->n] = start;
		g->end[g->n] = end;
	}
	g->n++;
}

START_TEST(suspects_reported_once_deduplicated)
{
	struct suspects q;
	struct got g = { 0 };

	suspects_init(&q);
	ck_assert(!atomic_load(&q.pending));
	ck_assert_int_eq(suspects_report(&q, collect, &g), 0);
	suspect_add(&q, 0x1000, 0x3000);
	suspect_add(&q, 0x1000, 0x3000);	/* the slow path's second check */
	suspect_add(&q, 0x8000, 0x9000);
	ck_assert(atomic_load(&q.pending));
	ck_assert_int_eq(suspects_report(&q, collect, &g), 2);
	ck_assert_uint_eq(g.start[0], 0x1000);
	ck_assert_uint_eq(g.end[1], 0x9000);
	ck_assert(!atomic_load(&q.pending));
	ck_assert_int_eq(suspects_report(&q, collect, &g), 0);
	suspects_destroy(&q);
}
END_TEST

START_TEST(suspects_overflow_means_everything)
{
	struct suspects q;
	struct got g = { 0 };

	suspects_init(&q);
	for (uintptr_t i = 0; i <= SUSPECTS_MAX; i++)
		suspect_add(&q, 0x1000 * (i + 1), 0x1000 * (i + 2));
	ck_assert_int_eq(suspects_report(&q, collect, &g), 1);
	ck_assert_uint_eq(g.start[0], 0);
	ck_assert_uint_eq(g.end[0], UINTPTR_MAX);
	suspects_destroy(&q);
}
END_TEST

/* Reports sorted and merged; merged flags only where every part has them. */
static int n_rep;
static uintptr_t rep[4][2];
static unsigned int rep_flags[4];

static void collect_report(void *ctx, uint64_t cookie, uintptr_t start,
			   uintptr_t end, unsigned int flags)
{
	(void)ctx;
	ck_assert_uint_eq(cookie, MONITOR_COOKIE_ANY);
	ck_assert_int_lt(n_rep, 4);
	rep[n_rep][0] = start;
	rep[n_rep][1] = end;
	rep_flags[n_rep++] = flags;
}

START_TEST(items_sorted_merged_flags_and)
{
	struct uffd_item v[] = {
		{ 0x9000, 0xa000, UFFD_ITEM_INVAL, MONITOR_INVAL_UNMAPPED },
		{ 0x1000, 0x3000, UFFD_ITEM_INVAL, MONITOR_INVAL_UNMAPPED },
		{ 0x2000, 0x5000, UFFD_ITEM_INVAL, 0 },
		{ 0x5000, 0x6000, UFFD_ITEM_INVAL, 0 },
		{ 0xa000, 0xb000, UFFD_ITEM_INVAL, MONITOR_INVAL_UNMAPPED },
	};

	n_rep = 0;
	ck_assert_int_eq(uffd_items_report(v, 5, collect_report, NULL), 2);
	ck_assert_uint_eq(rep[0][0], 0x1000);
	ck_assert_uint_eq(rep[0][1], 0x6000);
	ck_assert_uint_eq(rep_flags[0], 0);
	ck_assert_uint_eq(rep[1][0], 0x9000);
	ck_assert_uint_eq(rep[1][1], 0xb000);
	ck_assert_uint_eq(rep_flags[1], MONITOR_INVAL_UNMAPPED);
	ck_assert_int_eq(uffd_items_report(v, 0, collect_report, NULL), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("uffd_reader");
	TCase *reader = tcase_create("reader");
	TCase *sus = tcase_create("suspects");

	tcase_set_timeout(reader, 60);
	tcase_add_test(reader, each_event_kind_queued);
	tcase_add_test(reader, publication_notifies);
	tcase_add_test(reader, items_sorted_merged_flags_and);
	tcase_add_test(reader, full_ring_overflows_never_blocks);
	tcase_add_test(reader, empty_ranges_and_forks_ignored);
	tcase_add_test(reader, closed_descriptor_fails);
	tcase_add_test(sus, suspects_reported_once_deduplicated);
	tcase_add_test(sus, suspects_overflow_means_everything);
	suite_add_tcase(s, reader);
	suite_add_tcase(s, sus);
	return check_run_suite(s);
}
