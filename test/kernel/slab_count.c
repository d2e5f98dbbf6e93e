// SPDX-License-Identifier: GPL-2.0-only
#include "slab_count.h"

#include <stdio.h>
#include <string.h>

static int shrink_cache(void)
{
	FILE *f = fopen("/sys/kernel/slab/" UMMUNOT_SLAB_NAME "/shrink", "we");
	int ok;

	if (!f)
		return -1;
	ok = fputs("1", f) >= 0;
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

/*
 * KFENCE (on in the debug kernel) serves a sampled allocation from its own
 * pool, where /proc/slabinfo does not see it: count the cache's objects
 * there that are allocated and not yet freed.  No KFENCE (or no debugfs):
 * none.
 */
static long kfence_live_objects(void)
{
	FILE *f = fopen("/sys/kernel/debug/kfence/objects", "re");
	char line[512];
	long live = 0;
	int ours = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "kfence-#", 8) == 0) {
			live += ours;
			ours = strstr(line, ", cache=" UMMUNOT_SLAB_NAME "\n") != NULL;
		} else if (strncmp(line, "freed by task", 13) == 0) {
			ours = 0;
		}
	}
	live += ours;
	fclose(f);
	return live;
}

long slab_count_active(void)
{
	char line[512];
	long active = -1;
	FILE *f;

	if (shrink_cache() != 0)
		return -1;
	f = fopen("/proc/slabinfo", "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char name[64];
		long objs;

		if (sscanf(line, "%63s %ld", name, &objs) == 2 &&
		    strcmp(name, UMMUNOT_SLAB_NAME) == 0) {
			active = objs;
			break;
		}
	}
	fclose(f);
	return active < 0 ? -1 : active + kfence_live_objects();
}
