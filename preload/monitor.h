/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Invalidation sources for the registration cache.
 *
 * A monitor watches address ranges on behalf of cache entries and reports
 * when the pages behind them change.  Two backends implement it:
 * /dev/ummunot (monitor_ummunot.c) and userfaultfd (monitor_uffd.c).
 *
 * Contract, relied on by cache.c:
 *  - watch() returns only once every invalidation of [start, end) that
 *    starts later is guaranteed to be reported; it fails (negative errno)
 *    when the backend cannot watch that range, and the caller must then
 *    not cache it.  -ENXIO means the range holds memory no MMU notifier
 *    sees change (VM_IO/VM_PFNMAP/VM_MIXEDMAP: device memory); other
 *    errors are resource limits or bad ranges.
 *  - changed() is the hit-path check: no system call, no lock; true when
 *    an invalidation may have happened since the last drain().  A false
 *    answer acquires what the drain that made it false released (it
 *    stores its "seen" mark with release after the cache applied the
 *    invalidations), so the caller's next look at an entry sees them.
 *  - drain() reports every pending invalidation through @fn.  @cookie is
 *    the watch's cookie when the backend knows which watch was hit
 *    (ummunot), or MONITOR_COOKIE_ANY when it only knows the address range
 *    (userfaultfd): then every watch overlapping [start, end) is stale.
 *    A negative return means the monitor is broken: the cache must stop
 *    caching (and drop everything it holds).
 *  - check() is the hit-path check of the one range a hit is about to
 *    be served from, made after the application's last change to its
 *    address space: true when nothing may have changed (changed() is
 *    false and, where the backend can tell, the range's watch is still
 *    intact).  When false, the backend keeps changed() true until a
 *    drain() that reports every watch over [start, end) that may be stale.
 *    A backend whose changed() alone is exact leaves check NULL; callers
 *    use monitor_check().
 *  - The cache serialises watch/unwatch/drain; changed() and check() may
 *    run concurrently with all of them.
 */
#ifndef UMMUSHIM_MONITOR_H
#define UMMUSHIM_MONITOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MONITOR_COOKIE_ANY UINT64_MAX

/*
 * What a backend knows about an invalidation's cause (monitor_inval_fn's
 * @flags).  MONITOR_INVAL_UNMAPPED: some of the range stopped being
 * mapped (munmap, mremap, MAP_FIXED or shmat(SHM_REMAP) over it), so the
 * application certainly replaced memory it had registered.  Without it
 * the pages may have changed for another reason (madvise, migration,
 * copy-on-write, a huge-page split next to the range, reclaim), or the
 * backend cannot tell.
 */
#define MONITOR_INVAL_UNMAPPED 0x1u

typedef void (*monitor_inval_fn)(void *ctx, uint64_t cookie,
				 uintptr_t start, uintptr_t end,
				 unsigned int flags);

struct monitor;

struct monitor_ops {
	const char *name;
	int (*watch)(struct monitor *m, uint64_t cookie,
		     uintptr_t start, uintptr_t end);
	void (*unwatch)(struct monitor *m, uint64_t cookie);
	bool (*changed)(struct monitor *m);
	bool (*check)(struct monitor *m, uintptr_t start, uintptr_t end);
	int (*drain)(struct monitor *m, monitor_inval_fn fn, void *ctx);
	/*
	 * Optional (NULL: none): a descriptor that poll() reports readable
	 * while an invalidation is waiting to be drained, so a thread can
	 * release invalidated idle registrations without waiting for the
	 * application's next call.
	 */
	int (*wait_fd)(struct monitor *m);
	void (*close)(struct monitor *m);
};

struct monitor {
	const struct monitor_ops *ops;
	/*
	 * Optional (NULL: none; then also no check()): a backend whose
	 * changed() is exactly "the counter at @gen differs from the value
	 * at @seen" (ummunot) sets both, so that monitor_check() compares
	 * them inline, with changed()'s ordering (see there), instead of
	 * calling it through ops.
	 */
	const volatile uint64_t *gen;
	const atomic_uint_fast64_t *seen;
};

static inline bool monitor_check(struct monitor *m, uintptr_t start,
				 uintptr_t end)
{
	if (__builtin_expect(m->gen != NULL, 1)) {
		/* One untorn load (READ_ONCE), then acquire: as changed(). */
		uint64_t v = __atomic_load_n(m->gen, __ATOMIC_RELAXED);

		atomic_thread_fence(memory_order_acquire);
		return v == atomic_load_explicit(m->seen, memory_order_acquire);
	}
	if (m->ops->check)
		return m->ops->check(m, start, end);
	return !m->ops->changed(m);
}

/* Each returns NULL (and sets errno) when its source is unavailable. */
struct monitor *monitor_ummunot_open(void);
struct monitor *monitor_uffd_open(void);

#endif /* UMMUSHIM_MONITOR_H */
