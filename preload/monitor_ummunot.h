/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Internals of the /dev/ummunot monitor shared with its unit test, which
 * feeds the drain logic events through a pipe.  Not part of the shim's
 * exported interface (the shim exports only the verbs interposers).
 */
#ifndef UMMUSHIM_MONITOR_UMMUNOT_H
#define UMMUSHIM_MONITOR_UMMUNOT_H

#include <stdint.h>

#include "monitor.h"

/*
 * Build a monitor around an already opened event file @fd and its counter
 * page @counter.  It takes ownership of @fd; @counter is unmapped on
 * close only if @unmap_counter.  @features: the UMMUNOT_FEATURE_* bits the
 * module granted.
 */
struct monitor *monitor_ummunot_from_fd(int fd,
					const volatile uint64_t *counter,
					int unmap_counter, uint32_t features);

#endif /* UMMUSHIM_MONITOR_UMMUNOT_H */
