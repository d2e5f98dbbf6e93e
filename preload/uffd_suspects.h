/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The ranges whose hit-path check failed (monitor_uffd.c's check()), kept
 * for the next drain() to report as invalid.
 */
#ifndef UMMUSHIM_UFFD_SUSPECTS_H
#define UMMUSHIM_UFFD_SUSPECTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "monitor.h"

#define SUSPECTS_MAX 64		/* failed checks queued between drains */

/*
 * Ranges whose check() failed, for the next drain() to report.  check()
 * runs on application threads, concurrently with each other and with
 * drain(): @lock guards @v, @n and @overflow; @pending (set under @lock,
 * read without it by changed()) says that some are queued.
 */
struct suspects {
	pthread_mutex_t lock;
	struct suspect { uintptr_t start, end; } v[SUSPECTS_MAX];
	size_t n;
	bool overflow;		/* more than SUSPECTS_MAX: all invalid */
	atomic_bool pending;
};

void suspects_init(struct suspects *q);
void suspects_destroy(struct suspects *q);
/* Queue [start, end); @pending is true from now on. */
void suspect_add(struct suspects *q, uintptr_t start, uintptr_t end);
/* Report every queued range through @fn (all of memory after an overflow). */
int suspects_report(struct suspects *q, monitor_inval_fn fn, void *ctx);

#endif /* UMMUSHIM_UFFD_SUSPECTS_H */
