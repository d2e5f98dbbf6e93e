// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of preload/gotpatch.c against the libibverbs test double
 * (built like Debian's: -z now -z relro, its ibv_reg_mr calling
 * ibv_reg_mr_iova2 through its GOT).  usage: test_gotpatch PATH/libibverbs.so.1
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <infiniband/verbs.h>

#include "gotpatch.h"

#undef ibv_reg_mr

static const char *lib_path;
static int detour_calls;

static struct ibv_mr *detour(struct ibv_pd *pd, void *addr, size_t length,
			     uint64_t iova, unsigned int access)
{
	(void)pd;
	(void)addr;
	(void)length;
	(void)iova;
	(void)access;
	detour_calls++;
	return NULL;
}

START_TEST(patched_slot_redirects_internal_call)
{
	void *h = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
	struct ibv_mr *(*reg)(struct ibv_pd *, void *, size_t, int);
	struct got_patch_req reqs[] = {
		{ "ibv_reg_mr_iova2", (void *)detour, GOT_PATCH_FAILED },
		{ "ibv_reg_mr", (void *)detour, GOT_PATCH_FAILED },
	};
	char buf[64];

	ck_assert_ptr_nonnull(h);
	*(void **)&reg = dlvsym(h, "ibv_reg_mr", "IBVERBS_1.1");
	ck_assert_ptr_nonnull(reg);
	ck_assert_int_eq(got_patch("libibverbs.so.1", reqs, 2), 0);
	ck_assert_int_eq(reqs[0].result, GOT_PATCH_DONE);
	/* The library never calls its own ibv_reg_mr through its GOT. */
	ck_assert_int_eq(reqs[1].result, GOT_PATCH_ABSENT);
	ck_assert_ptr_null(reg(NULL, buf, sizeof(buf), 0));
	ck_assert_int_eq(detour_calls, 1);
	/* Patching again to the same target is a no-op that succeeds. */
	ck_assert_int_eq(got_patch("libibverbs.so.1", reqs, 1), 0);
	ck_assert_int_eq(reqs[0].result, GOT_PATCH_DONE);
}
END_TEST

/*
 * The permissions of the mapping of the test double that holds a word
 * equal to @value ("" if none does).  It reads whole mappings, redzones
 * included: not instrumented.
 */
__attribute__((no_sanitize_address))
static void perms_of_slot_holding(const void *value, char perms[5])
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];

	perms[0] = '\0';
	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof(line), f)) {
		uintptr_t s, e;
		char p[5];

		if (!strstr(line, "libibverbs.so.1") ||
		    sscanf(line, "%lx-%lx %4s", &s, &e, p) != 3 || p[0] != 'r')
			continue;
		for (uintptr_t a = s; a < e; a += sizeof(void *)) {
			if (*(void *const *)a == value) {
				strcpy(perms, p);
				fclose(f);
				return;
			}
		}
	}
	fclose(f);
}

START_TEST(relro_page_is_read_only_again)
{
	void *h = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
	struct got_patch_req req = { "ibv_reg_mr_iova2", (void *)detour,
				     GOT_PATCH_FAILED };
	char perms[5];

	ck_assert_ptr_nonnull(h);
	ck_assert_int_eq(got_patch("libibverbs.so.1", &req, 1), 0);
	ck_assert_int_eq(req.result, GOT_PATCH_DONE);
	perms_of_slot_holding((void *)detour, perms);
	ck_assert_msg(perms[0] == 'r', "patched slot not found");
	ck_assert_msg(perms[1] == '-', "GOT page left writable: %s", perms);
}
END_TEST

START_TEST(missing_object_is_reported)
{
	struct got_patch_req req = { "x", (void *)detour, GOT_PATCH_FAILED };
	char path[256];

	ck_assert_int_eq(got_patch("libnot-loaded.so.9", &req, 1), -ENOENT);
	ck_assert_ptr_null(got_object_path("libnot-loaded.so.9", path,
					   sizeof(path)));
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("gotpatch");
	TCase *tc = tcase_create("core");

	if (argc != 2) {
		fprintf(stderr, "usage: test_gotpatch PATH/libibverbs.so.1\n");
		return 2;
	}
	lib_path = argv[1];
	tcase_add_test(tc, patched_slot_redirects_internal_call);
	tcase_add_test(tc, relro_page_is_read_only_again);
	tcase_add_test(tc, missing_object_is_reported);
	suite_add_tcase(s, tc);
	return check_run_suite(s);
}
