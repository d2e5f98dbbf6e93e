// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of vmflags.c: unwatchable mappings (VM_IO/VM_PFNMAP/
 * VM_MIXEDMAP) found in an smaps file, by range.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vmflags.h"

static const char smaps[] =
	"00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/prog\n"
	"Size:                328 kB\n"
	"VmFlags: rd ex mr mw me dw sd\n"
	"7f0000000000-7f0000100000 rw-s 00000000 00:05 1234 /sys/devices/pci0000:00/0000:00:03.0/resource0\n"
	"Size:               1024 kB\n"
	"VmFlags: rd wr sh mr mw me ms io pf dd sd\n"
	"7f0000200000-7f0000300000 rw-p 00000000 00:00 0 \n"
	"Size:               1024 kB\n"
	"VmFlags: rd wr mr mw me ac sd\n"
	"7f0000400000-7f0000500000 rw-s 00000000 00:05 99 /dev/gpu0\n"
	"VmFlags: rd wr sh mr mw me ms mm sd\n";

static char path[] = "/tmp/ummushim-smaps-XXXXXX";

static void setup(void)
{
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, smaps, sizeof(smaps) - 1),
			 (ssize_t)(sizeof(smaps) - 1));
	close(fd);
}

static void teardown(void)
{
	unlink(path);
}

START_TEST(pfnmap_io_range_is_unwatchable)
{
	ck_assert_int_eq(vmflags_range_unwatchable(path, 0x7f0000000000,
						   0x7f0000001000), 1);
	/* Any overlap counts: a range reaching into the device mapping. */
	ck_assert_int_eq(vmflags_range_unwatchable(path, 0x7effffff0000,
						   0x7f0000000001), 1);
}
END_TEST

START_TEST(mixedmap_range_is_unwatchable)
{
	ck_assert_int_eq(vmflags_range_unwatchable(path, 0x7f0000400000,
						   0x7f0000401000), 1);
}
END_TEST

START_TEST(ordinary_memory_is_watchable)
{
	ck_assert_int_eq(vmflags_range_unwatchable(path, 0x7f0000200000,
						   0x7f0000300000), 0);
	ck_assert_int_eq(vmflags_range_unwatchable(path, 0x400000, 0x401000), 0);
	/* Ends exactly where the device mapping starts: no overlap. */
	ck_assert_int_eq(vmflags_range_unwatchable(path, 0x7effffff0000,
						   0x7f0000000000), 0);
}
END_TEST

START_TEST(missing_file_is_an_error)
{
	ck_assert_int_eq(vmflags_range_unwatchable("/nonexistent/smaps", 0,
						   4096), -ENOENT);
}
END_TEST

/* The real /proc/self/smaps: this process's own heap is watchable. */
START_TEST(own_anonymous_memory_is_watchable)
{
	size_t len = 1 << 16;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(p, MAP_FAILED);
	ck_assert_int_eq(vmflags_range_unwatchable(NULL, (uintptr_t)p,
						   (uintptr_t)p + len), 0);
	munmap(p, len);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("vmflags");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, pfnmap_io_range_is_unwatchable);
	tcase_add_test(tc, mixedmap_range_is_unwatchable);
	tcase_add_test(tc, ordinary_memory_is_watchable);
	tcase_add_test(tc, missing_file_is_an_error);
	tcase_add_test(tc, own_anonymous_memory_is_watchable);
	suite_add_tcase(s, tc);
	return check_run_suite(s);
}
