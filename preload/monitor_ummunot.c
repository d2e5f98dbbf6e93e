// SPDX-License-Identifier: BSD-2-Clause
/*
 * Invalidation monitor backed by the ummunot kernel module (/dev/ummunot,
 * ABI in include/ummunot.h).
 *
 * The module bumps a generation counter, in a page we map read-only,
 * whenever an invalidation hits a registration.  changed() compares it
 * with the value that the last complete drain() accounted for, so the
 * common case costs one load.  drain() reads events until the module says
 * the pending list is empty (a LAST event, which carries the counter at
 * that moment) or until read() would block.
 *
 * Memory no MMU notifier can watch (VM_IO/VM_PFNMAP/VM_MIXEDMAP) must not
 * be cached: a module granting UMMUNOT_FEATURE_REFUSE_UNWATCHABLE refuses
 * such ranges with ENXIO; with an older module, watch() checks the
 * range's VmFlags in /proc/self/smaps itself (watch() runs on misses only).
 */
#define _GNU_SOURCE
#include "monitor_ummunot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ummunot.h>

#include "vmflags.h"

#define DRAIN_BATCH 64	/* events per read() */

struct ummunot_monitor {
	struct monitor base;
	int fd;
	const volatile uint64_t *counter;
	int unmap_counter;
	uint32_t features;	/* granted UMMUNOT_FEATURE_* bits */
	/*
	 * Counter value up to which every event has been consumed.  Written
	 * by drain() (serialised by the cache), read locklessly by changed().
	 *
	 * Ordering: drain() hands each event to the cache, which applies it
	 * at once (the entry made unusable by a compare-and-swap on its
	 * state word) before drain() stores the new value with release.
	 * changed() loads it with acquire, so a thread that finds no change
	 * and then takes a reference on an entry (a remembered hit's
	 * entry_get(), or a lookup under a stripe) is ordered after every
	 * invalidation accounted for, on any architecture: its
	 * compare-and-swap sees the entry unusable.  With a relaxed load only
	 * x86's ordering of loads gave that.  The counter itself is read
	 * before last_seen, with an acquire fence (read_counter()).
	 */
	atomic_uint_fast64_t last_seen;
};

static struct ummunot_monitor *to_um(struct monitor *m)
{
	return (struct ummunot_monitor *)m;
}

static uint64_t read_counter(const struct ummunot_monitor *um)
{
	/*
	 * The kernel writes the counter with WRITE_ONCE: one untorn 64-bit
	 * load that the compiler may neither split nor repeat (READ_ONCE).
	 */
	uint64_t v = __atomic_load_n(um->counter, __ATOMIC_RELAXED);

	atomic_thread_fence(memory_order_acquire);
	return v;
}

static int um_watch(struct monitor *m, uint64_t cookie, uintptr_t start,
		    uintptr_t end)
{
	struct ummunot_register_ioctl r = {
		.start = start,
		.end = end,
		.user_cookie = cookie,
	};

	struct ummunot_monitor *um = to_um(m);
	int saved = errno;

	if (!(um->features & UMMUNOT_FEATURE_REFUSE_UNWATCHABLE)) {
		int rc = vmflags_range_unwatchable(NULL, start, end);

		if (rc != 0)	/* unwatchable, or it cannot be told */
			return rc > 0 ? -ENXIO : rc;
	}
	if (ioctl(um->fd, UMMUNOT_REGISTER_REGION, &r) != 0) {
		int err = errno;

		errno = saved;
		return -err;
	}
	return 0;
}

static void um_unwatch(struct monitor *m, uint64_t cookie)
{
	int saved = errno;

	/* ENOENT cannot happen for our own cookies; nothing to do on error. */
	(void)ioctl(to_um(m)->fd, UMMUNOT_UNREGISTER_REGION, &cookie);
	errno = saved;
}

static bool um_changed(struct monitor *m)
{
	struct ummunot_monitor *um = to_um(m);

	return read_counter(um) !=
	       atomic_load_explicit(&um->last_seen, memory_order_acquire);
}

/*
 * Every event counted up to @snapshot was queued before we started
 * reading, so once read() runs dry they have all been seen.
 */
static int um_drain(struct monitor *m, monitor_inval_fn fn, void *ctx)
{
	struct ummunot_monitor *um = to_um(m);
	uint64_t snapshot = read_counter(um);
	struct ummunot_event ev[DRAIN_BATCH];
	int saved = errno;

	for (;;) {
		ssize_t n = read(um->fd, ev, sizeof(ev));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			atomic_store_explicit(&um->last_seen, snapshot,
					      memory_order_release);
			break;
		}
		if (n < 0) {
			int err = errno;

			errno = saved;
			return -err;
		}
		if (n == 0 || (size_t)n % sizeof(ev[0]) != 0) {
			errno = saved;
			return -EIO;	/* not the ummunot protocol */
		}
		/*
		 * The module ends a read at LAST; should anything follow it
		 * anyway, it was consumed and must be reported too.
		 */
		bool last = false;

		for (size_t i = 0; i < (size_t)n / sizeof(ev[0]); i++) {
			if (ev[i].type == UMMUNOT_EVENT_TYPE_LAST) {
				atomic_store_explicit(&um->last_seen,
						      ev[i].user_cookie_counter,
						      memory_order_release);
				last = true;
				continue;
			}
			if (ev[i].type != UMMUNOT_EVENT_TYPE_INVAL)
				continue;	/* future event types */
			unsigned int cause =
				(ev[i].flags & UMMUNOT_EVENT_FLAG_UNMAPPED) ?
				MONITOR_INVAL_UNMAPPED : 0;

			if (ev[i].flags & UMMUNOT_EVENT_FLAG_HINT)
				fn(ctx, ev[i].user_cookie_counter,
				   (uintptr_t)ev[i].hint_start,
				   (uintptr_t)ev[i].hint_end, cause);
			else
				fn(ctx, ev[i].user_cookie_counter, 0, 0, cause);
		}
		if (last)
			break;
	}
	errno = saved;
	return 0;
}

static int um_wait_fd(struct monitor *m)
{
	return to_um(m)->fd;	/* readable while events are pending */
}

static void um_close(struct monitor *m)
{
	struct ummunot_monitor *um = to_um(m);

	if (um->unmap_counter)
		munmap((void *)um->counter, (size_t)sysconf(_SC_PAGESIZE));
	close(um->fd);
	free(um);
}

static const struct monitor_ops ummunot_ops = {
	.name = "ummunot",
	.watch = um_watch,
	.unwatch = um_unwatch,
	.changed = um_changed,
	.drain = um_drain,
	.wait_fd = um_wait_fd,
	.close = um_close,
};

struct monitor *monitor_ummunot_from_fd(int fd,
					const volatile uint64_t *counter,
					int unmap_counter, uint32_t features)
{
	struct ummunot_monitor *um = calloc(1, sizeof(*um));

	if (!um)
		return NULL;
	um->base.ops = &ummunot_ops;
	um->fd = fd;
	um->counter = counter;
	um->unmap_counter = unmap_counter;
	um->features = features;
	atomic_init(&um->last_seen, read_counter(um));
	/* changed() is exactly counter != last_seen: checked inline. */
	um->base.gen = counter;
	um->base.seen = &um->last_seen;
	return &um->base;
}

struct monitor *monitor_ummunot_open(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct monitor *m;
	uint32_t features = UMMUNOT_FEATURE_REFUSE_UNWATCHABLE |
			    UMMUNOT_FEATURE_EVENT_CAUSE;
	void *counter;
	int fd, err;

	fd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return NULL;
	if (ioctl(fd, UMMUNOT_EXCHANGE_FEATURES, &features) != 0)
		goto fail;
	counter = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0);
	if (counter == MAP_FAILED)
		goto fail;
	m = monitor_ummunot_from_fd(fd, counter, 1, features);
	if (!m) {
		err = errno;
		munmap(counter, page);
		close(fd);
		errno = err;
	}
	return m;

fail:
	err = errno;
	close(fd);
	errno = err;
	return NULL;
}
