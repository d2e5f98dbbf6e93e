// SPDX-License-Identifier: GPL-2.0-only
/*
 * Many registrations on one fd: an unrelated munmap reports nothing, a
 * munmap inside the set reports exactly the registrations it hits, and all
 * of them can be unregistered again.
 */
#include "ktest.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NREGS 100000

/* Registration i covers page 2i of the area; odd pages are gaps. */
static uint64_t reg_start(const char *area, uint64_t i)
{
	return kt_pg(area, 2 * i);
}

static char *map_at(char *addr, size_t npages)
{
	char *p = mmap(addr, npages * kt_page(), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

	ck_assert_msg(p == addr, "mmap at %p: %s", (void *)addr,
		      strerror(errno));
	kt_touch(p, npages);
	return p;
}

START_TEST(hundred_thousand_registrations)
{
	long slab0 = kt_slab_objects();
	int fd = kt_open_nb();
	const volatile uint64_t *cnt = kt_map_counter(fd);
	char *area = kt_reserve(2 * NREGS);
	char *other, *hit;
	uint64_t c0;
	struct kt_expect three[3];

	ck_assert_int_ge(slab0, 0);
	/* Unmapped ranges: registrations need no mapping behind them. */
	ck_assert_int_eq(munmap(area, 2 * NREGS * kt_page()), 0);
	for (uint64_t i = 0; i < NREGS; i++)
		kt_register_ok(fd, reg_start(area, i),
			       reg_start(area, i) + kt_page(), i);
	ck_assert_int_eq(kt_slab_objects(), slab0 + NREGS);
	c0 = *cnt;

	other = kt_map_anon(1);
	ck_assert_int_eq(munmap(other, kt_page()), 0);
	ck_assert_uint_eq(*cnt, c0);
	kt_expect_nothing(fd);

	/* A page of registration 54321 and its neighbouring gaps. */
	hit = map_at((char *)reg_start(area, 54321) - kt_page(), 3);
	ck_assert_int_eq(munmap(hit, 3 * kt_page()), 0);
	ck_assert_uint_eq(*cnt, c0 + 1);
	kt_expect_one(fd, cnt, 54321, reg_start(area, 54321),
		      reg_start(area, 54321) + kt_page());

	/* Five pages cover registrations 777, 778 and 779. */
	hit = map_at((char *)reg_start(area, 777), 5);
	ck_assert_int_eq(munmap(hit, 5 * kt_page()), 0);
	ck_assert_uint_eq(*cnt, c0 + 2);
	for (int k = 0; k < 3; k++)
		three[k] = (struct kt_expect){ 777 + k, reg_start(area, 777 + k),
					       reg_start(area, 777 + k) + kt_page() };
	kt_expect_events(fd, cnt, 3, three);

	for (uint64_t i = 0; i < NREGS; i++)
		kt_unregister_ok(fd, i);
	ck_assert_int_eq(kt_unregister(fd, 0), ENOENT);
	kt_expect_nothing(fd);
	ck_assert_int_eq(kt_slab_settle(slab0), slab0);
}
END_TEST

Suite *kt_scale_suite(void)
{
	return KT_SUITE("scale", hundred_thousand_registrations);
}
