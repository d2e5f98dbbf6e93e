/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test hooks of the userfaultfd monitor (monitor_uffd.c).  They are
 * internal to the shim (hidden, not in its version script); the tests in
 * test/uffd use them to force the rarer code paths.
 */
#ifndef UMMUSHIM_MONITOR_UFFD_H
#define UMMUSHIM_MONITOR_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "monitor.h"

#define UFFD_OPEN_FORCE_MISSING 0x1u	/* use missing-page mode */
#define UFFD_OPEN_FORCE_DEVNODE 0x2u	/* open through /dev/userfaultfd */
#define UFFD_OPEN_FORCE_MAPS_TEXT 0x4u	/* parse /proc/self/maps as text */
#define UFFD_OPEN_FORCE_NO_PROBE 0x8u	/* check() without the probe */

struct monitor_uffd_counters {
	uint64_t events;	/* UNMAP/REMOVE/REMAP events read */
	uint64_t faults;	/* page faults resolved */
	uint64_t overflows;	/* times the ring was full */
	bool missing_mode;
	bool devnode;
	bool probe;		/* check() probes (write-protect mode) */
	size_t max_segments;	/* cap on watched segments (max_map_count) */
	int fd;			/* the uffd's descriptor number */
};

/* @ring_capacity 0: the default; otherwise rounded up to a power of two. */
struct monitor *monitor_uffd_open_flags(unsigned int flags,
					unsigned int ring_capacity);
/* Override the cap derived from vm.max_map_count. */
void monitor_uffd_set_max_segments(struct monitor *mon, size_t max);
void monitor_uffd_get_counters(struct monitor *mon,
			       struct monitor_uffd_counters *out);

#endif /* UMMUSHIM_MONITOR_UFFD_H */
