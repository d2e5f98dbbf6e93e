/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Test doubles for the cache: a monitor whose invalidations the test
 * triggers by hand, and "real" registration functions that count calls.
 */
#ifndef UMMUSHIM_TEST_FAKES_H
#define UMMUSHIM_TEST_FAKES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "cache.h"
#include "monitor.h"

#define FAKE_MAX_WATCHES 4096
#define FAKE_MAX_EVENTS 8192

struct fake_event {
	uint64_t cookie;
	uintptr_t start, end;
	unsigned int flags;	/* MONITOR_INVAL_* */
};

struct fake_monitor {
	struct monitor base;
	pthread_mutex_t lock;
	/* Report ranges only (like userfaultfd) instead of cookies. */
	bool range_mode;
	atomic_bool dirty;			/* what changed() returns */
	int watch_errno;			/* watch() fails with it if set */
	int drain_errno;			/* drain() fails with it if set */
	struct {
		uint64_t cookie;
		uintptr_t start, end;
		bool active;
	} watches[FAKE_MAX_WATCHES];
	struct fake_event events[FAKE_MAX_EVENTS];
	int n_events;
	atomic_int n_watch, n_unwatch, n_changed, n_drain, n_active;
	atomic_int n_check;	/* calls of check(), once turned on */
	/*
	 * >= 0: the write end of a pipe whose read end is wait_fd(); an
	 * invalidation writes a byte, drain() reads them.
	 */
	int wake_wfd, wake_rfd;
	/* Called inside watch(), after the watch is in place. */
	void (*on_watch)(struct fake_monitor *m, uintptr_t start, uintptr_t end);
};

void fake_monitor_init(struct fake_monitor *m);
/*
 * Give the monitor a per-range check() (like userfaultfd's probe, one
 * system call each), answering !changed() and counting its calls.
 */
void fake_monitor_use_check(struct fake_monitor *m);
/* The kernel side: the pages of [start, end) changed. */
void fake_invalidate(struct fake_monitor *m, uintptr_t start, uintptr_t end);
/* ... with what the kernel knows about the cause (MONITOR_INVAL_*). */
void fake_invalidate_flags(struct fake_monitor *m, uintptr_t start,
			   uintptr_t end, unsigned int flags);

struct fake_mr {
	uint32_t magic;
	struct cache_key key;
	int serial;
	struct fake_mr *prev, *next;	/* live list, so tests free leftovers */
};

#define FAKE_MR_MAGIC 0x4d524d52u
#define FAKE_SLICE_MAGIC 0x534c4943u	/* a containment hit's object */

struct fake_verbs {
	atomic_int n_reg, n_dereg, live;
	atomic_int next_serial;
	int reg_errno;		/* reg fails with it if set */
	int dereg_rc;		/* dereg returns it if set (and keeps the MR) */
	int max_live;		/* >0: reg fails with ENOMEM beyond this */
	unsigned reg_delay_us;	/* slow registration, for races */
	atomic_int last_how;
	struct cache_key last_key;	/* under lock: the last reg's key */
	/* Called inside reg() before it returns (e.g. to invalidate). */
	void (*on_reg)(struct fake_verbs *v, const struct cache_key *key);
	/* Called at the start of dereg() (e.g. to hold a release). */
	void (*on_dereg)(struct fake_verbs *v);
	void *hook_arg;
	pthread_mutex_t lock;
	struct fake_mr live_list;
};

void fake_verbs_init(struct fake_verbs *v);
void fake_verbs_ops(struct fake_verbs *v, struct cache_ops *ops);
/* Free the MRs still registered (e.g. dropped with a closed device). */
void fake_verbs_free_all(struct fake_verbs *v);

#endif /* UMMUSHIM_TEST_FAKES_H */
