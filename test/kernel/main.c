// SPDX-License-Identifier: GPL-2.0-only
/*
 * Check runner for the ummunot kernel-module tests.  Runs every suite (or
 * the one named by CK_RUN_SUITE), prints Check's summary, and writes an
 * XML report into $UMMUNOT_VM_OUT when the VM harness provides it.
 */
#include "ktest.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void)
{
	Suite *(*const suites[])(void) = {
		kt_errors_suite, kt_events_suite, kt_read_poll_suite,
		kt_counter_suite, kt_access_suite, kt_lifetime_suite,
		kt_scale_suite, kt_concurrency_suite, kt_fuzz_suite,
		kt_features_suite,
	};
	const char *out = getenv("UMMUNOT_VM_OUT");
	char xml[4096];
	struct stat st;
	SRunner *sr;
	int failed, run;

	if (stat(UMMUNOT_DEVICE_PATH, &st) != 0) {
		fprintf(stderr, "%s missing: is the module loaded?\n",
			UMMUNOT_DEVICE_PATH);
		return 1;
	}
	/* Tests print a few statistics; keep them in order with Check's. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	sr = srunner_create(NULL);
	for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		srunner_add_suite(sr, suites[i]());
	if (out && *out) {
		snprintf(xml, sizeof(xml), "%s/kernel-tests.xml", out);
		srunner_set_xml(sr, xml);
	}
	srunner_run_all(sr, getenv("CK_VERBOSITY") ? CK_ENV : CK_VERBOSE);
	run = srunner_ntests_run(sr);
	failed = srunner_ntests_failed(sr);
	printf("kernel tests: %d run, %d passed, %d failed\n", run, run - failed,
	       failed);
	srunner_free(sr);
	return failed == 0 && run > 0 ? 0 : 1;
}
