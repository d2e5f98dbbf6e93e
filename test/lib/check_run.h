/* SPDX-License-Identifier: BSD-2-Clause */
#ifndef UMMUNOT_TEST_CHECK_RUN_H
#define UMMUNOT_TEST_CHECK_RUN_H

#include <check.h>

/*
 * Run every test of @suite (which this call frees) and give main()'s exit
 * status: EXIT_SUCCESS only when at least one test ran and none failed.
 */
int check_run_suite(Suite *suite);

#endif
