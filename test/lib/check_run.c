// SPDX-License-Identifier: BSD-2-Clause
/* The one Check runner every unit-test program's main() ends with. */
#include "check_run.h"

#include <stdio.h>
#include <stdlib.h>

int check_run_suite(Suite *suite)
{
	SRunner *sr = srunner_create(suite);
	int run, failed;

	srunner_run_all(sr, CK_NORMAL);
	run = srunner_ntests_run(sr);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	/* CK_RUN_SUITE/CK_RUN_CASE select tests: other programs run none. */
	if (run == 0 && !getenv("CK_RUN_SUITE") && !getenv("CK_RUN_CASE")) {
		/* A suite that runs nothing proves nothing. */
		fprintf(stderr, "no test ran\n");
		return EXIT_FAILURE;
	}
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
