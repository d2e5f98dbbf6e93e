// SPDX-License-Identifier: BSD-2-Clause
/*
 * The memory-map reader of the userfaultfd monitor (preload/proc_maps.c):
 * the text parser on known lines fed in every possible chunking, and the
 * checks against this process's real mappings.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "proc_maps.h"

#define MAX_SEEN 8

static long page;

struct seen {
	int n;
	struct proc_vma v[MAX_SEEN];
	int stop_after;	/* 0: never stop */
};

static int record(void *arg, const struct proc_vma *v)
{
	struct seen *s = arg;

	if (s->n < MAX_SEEN)
		s->v[s->n] = *v;
	s->n++;
	return s->stop_after && s->n >= s->stop_after;
}

static const char text[] =
	"00400000-00452000 r-xp 00000000 08:02 173521     /usr/bin/dbus-daemon\n"
	"7f2a1000-7f2a3000 rw-p 00000000 00:00 0 \n"
	"7f2a3000-7f2a4000 rw-s 00000000 00:01 4097       /dev/zero (deleted)\n"
	"7f2a4000-7f2a5000 rw-p 00000000 fd:1a 99         /a path/with spaces\n"
	"7ffd0000-7ffd2000 rw-p 00000000 00:00 0          [stack]\n";

/* Feed @text in chunks of @chunk bytes; the walk's result. */
static int feed_in_chunks(size_t chunk, uintptr_t start, uintptr_t end,
			  struct seen *s)
{
	struct maps_parser p;
	size_t len = strlen(text);
	int rc = 0;

	maps_parser_init(&p, start, end, record, s);
	for (size_t off = 0; off < len && rc == 0; off += chunk)
		rc = maps_parser_feed(&p, text + off,
				      off + chunk > len ? len - off : chunk);
	return rc;
}

START_TEST(parses_every_field_in_any_chunking)
{
	for (size_t chunk = 1; chunk <= sizeof(text); chunk++) {
		struct seen s = { 0 };

		ck_assert_int_eq(feed_in_chunks(chunk, 0, UINTPTR_MAX, &s), 0);
		ck_assert_int_eq(s.n, 5);
		ck_assert_uint_eq(s.v[0].start, 0x400000);
		ck_assert_uint_eq(s.v[0].end, 0x452000);
		ck_assert(memcmp(s.v[0].perms, "r-xp", 4) == 0);
		ck_assert_uint_eq(s.v[0].dev_major, 8);
		ck_assert_uint_eq(s.v[0].dev_minor, 2);
		ck_assert_uint_eq(s.v[0].inode, 173521);
		ck_assert_uint_eq(s.v[1].inode, 0);
		ck_assert_uint_eq(s.v[1].dev_major, 0);
		ck_assert_int_eq(s.v[2].perms[3], 's');
		ck_assert_uint_eq(s.v[3].dev_major, 0xfd);
		ck_assert_uint_eq(s.v[3].dev_minor, 0x1a);
		ck_assert_uint_eq(s.v[3].inode, 99);
		ck_assert_uint_eq(s.v[4].end, 0x7ffd2000);
	}
}
END_TEST

START_TEST(only_overlapping_mappings_reported)
{
	struct seen s = { 0 };

	/* [0x7f2a2000, 0x7f2a4000): the 2nd (partly) and 3rd mappings. */
	ck_assert_int_eq(feed_in_chunks(7, 0x7f2a2000, 0x7f2a4000, &s), 1);
	ck_assert_int_eq(s.n, 2);
	ck_assert_uint_eq(s.v[0].start, 0x7f2a1000);
	ck_assert_uint_eq(s.v[1].start, 0x7f2a3000);
}
END_TEST

START_TEST(callback_stops_the_walk)
{
	struct seen s = { .stop_after = 2 };

	ck_assert_int_eq(feed_in_chunks(64, 0, UINTPTR_MAX, &s), 1);
	ck_assert_int_eq(s.n, 2);
}
END_TEST

START_TEST(malformed_line_refused)
{
	static const char bad[] = "00400000-00452000 r-xp\n";
	struct maps_parser p;
	struct seen s = { 0 };

	maps_parser_init(&p, 0, UINTPTR_MAX, record, &s);
	ck_assert_int_eq(maps_parser_feed(&p, bad, strlen(bad)), -EIO);
	ck_assert_int_eq(s.n, 0);
}
END_TEST

/* ---- against this process ------------------------------------------------ */

static char *map(int flags, size_t pages)
{
	char *p = mmap(NULL, pages * page, PROT_READ | PROT_WRITE,
		       flags | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	return p;
}

START_TEST(walk_finds_a_fresh_mapping)
{
	char *p = map(MAP_PRIVATE, 3);
	struct seen s = { 0 };

	ck_assert_int_eq(proc_maps_walk((uintptr_t)p + page,
					(uintptr_t)p + 2 * page, record, &s), 0);
	ck_assert_int_eq(s.n, 1);
	ck_assert_uint_le(s.v[0].start, (uintptr_t)p);
	ck_assert_uint_ge(s.v[0].end, (uintptr_t)p + 3 * page);
	munmap(p, 3 * page);
}
END_TEST

static void check_private_anon_cases(bool query)
{
	char *priv = map(MAP_PRIVATE, 4), *shared = map(MAP_SHARED, 2);
	uintptr_t s = (uintptr_t)priv;
	char path[] = "/tmp/proc_maps_test.XXXXXX";
	int fd = mkstemp(path);
	char *file;
	bool q = query;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, page), 0);
	file = mmap(NULL, page, PROT_READ, MAP_PRIVATE, fd, 0);
	ck_assert_ptr_ne(file, MAP_FAILED);
	ck_assert_int_eq(proc_maps_check_private_anon(&q, s, s + 4 * page), 0);
	ck_assert_int_eq(proc_maps_check_private_anon(&q, (uintptr_t)shared,
						      (uintptr_t)shared + page),
			 -EINVAL);
	ck_assert_int_eq(proc_maps_check_private_anon(&q, (uintptr_t)file,
						      (uintptr_t)file + page),
			 -EINVAL);
	munmap(priv + page, page);	/* a hole */
	ck_assert_int_eq(proc_maps_check_private_anon(&q, s, s + 4 * page),
			 -EFAULT);
	ck_assert_int_eq(proc_maps_check_private_anon(&q, s + 2 * page,
						      s + 4 * page), 0);
	ck_assert(!q || query);	/* the text is never upgraded */
	munmap(priv, 4 * page);
	munmap(shared, 2 * page);
	munmap(file, page);
	close(fd);
	unlink(path);
}

START_TEST(private_anon_check_text)
{
	check_private_anon_cases(false);
}
END_TEST

/* PROCMAP_QUERY where the kernel has it (6.11), else the text again. */
START_TEST(private_anon_check_query)
{
	check_private_anon_cases(true);
}
END_TEST

START_TEST(count_and_room)
{
	char *p = map(MAP_PRIVATE, 3);
	long before = proc_maps_count(), room;

	/* A different protection in the middle splits it in three. */
	ck_assert_int_gt(before, 0);
	ck_assert_int_eq(mprotect(p + page, page, PROT_READ), 0);
	ck_assert_int_eq(proc_maps_count(), before + 2);
	room = proc_maps_room();
	ck_assert_int_gt(room, 0);
	ck_assert_int_lt(room, 1L << 31);
	munmap(p, 3 * page);
}
END_TEST

static void setup(void)
{
	page = sysconf(_SC_PAGESIZE);
}

int main(void)
{
	Suite *s = suite_create("proc_maps");
	TCase *parse = tcase_create("parser");
	TCase *live = tcase_create("this_process");

	tcase_add_checked_fixture(live, setup, NULL);
	tcase_add_test(parse, parses_every_field_in_any_chunking);
	tcase_add_test(parse, only_overlapping_mappings_reported);
	tcase_add_test(parse, callback_stops_the_walk);
	tcase_add_test(parse, malformed_line_refused);
	tcase_add_test(live, walk_finds_a_fresh_mapping);
	tcase_add_test(live, private_anon_check_text);
	tcase_add_test(live, private_anon_check_query);
	tcase_add_test(live, count_and_room);
	suite_add_tcase(s, parse);
	suite_add_tcase(s, live);
	return check_run_suite(s);
}
