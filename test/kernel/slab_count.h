/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * How many registrations the module holds, as the slab allocator counts
 * them: shared by the Check suite and kernel-stress (which has no Check).
 */
#ifndef UMMUNOT_SLAB_COUNT_H
#define UMMUNOT_SLAB_COUNT_H

/* The module's registration cache (kernel/ummunot.c). */
#define UMMUNOT_SLAB_NAME "ummunot_region"

/*
 * Flushes the cache's per-CPU slabs (so active_objs is exact) and returns
 * its active objects from /proc/slabinfo plus those KFENCE holds; -1 if
 * the cache cannot be flushed or is not listed.
 */
long slab_count_active(void);

#endif
