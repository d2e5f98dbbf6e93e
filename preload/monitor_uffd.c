// SPDX-License-Identifier: BSD-2-Clause
/*
 * userfaultfd invalidation backend: works on a stock kernel,
 * without /dev/ummunot.
 *
 * Every watched range is registered with one userfaultfd in write-protect
 * mode, and no page is ever write-protected, so no page fault is ever
 * redirected; what the registration buys are the non-cooperative events
 * UNMAP (munmap, brk shrink, mmap MAP_FIXED over it, mremap shrink), REMOVE
 * (madvise DONTNEED/FREE/REMOVE) and REMAP (mremap move).  A reader thread
 * reads them and queues the invalidated ranges; drain() reports them with
 * MONITOR_COOKIE_ANY.  Where write-protect mode does not exist (old kernels,
 * some architectures) missing-page mode is used and the reader resolves
 * every fault at once with a zero page.
 *
 * WHAT IS WATCHED.  Only private anonymous memory (checked in
 * /proc/self/maps after registering): the pages of a shared or file
 * mapping can be replaced from outside this address space (truncate,
 * another process's madvise) without any event here.  Registration splits
 * VMAs at the watched range's page boundaries (adjacent watched ranges
 * merge again); a split VMA limits mremap() of a range crossing such a
 * boundary (EFAULT), like any mprotect() split would.  After registering,
 * MADV_POPULATE_WRITE makes every page a private page of this process
 * (contents unchanged): a read-only pin of the shared zero page or of a
 * copy-on-write page would otherwise go stale on the next write, and that
 * replacement produces no userfaultfd event.  Registrations are per
 * address range, not counted: @segs (range_set.h) counts the watches on
 * each piece so that unwatching one never unregisters pages another watch
 * still needs, and a registration moved by mremap() is dropped unless
 * watched.  Each split costs mappings: see watch_budget().
 *
 * The reader thread, its ring and why nothing can deadlock on it are in
 * uffd_reader.c; the memory-map checks in proc_maps.c; opening in
 * uffd_open.c.
 *
 * THE UNMAP/REMAP WINDOW.  munmap(), mremap() and mmap(MAP_FIXED) over
 * watched memory queue their UNMAP/REMAP event only AFTER the kernel has
 * dropped mmap_lock: by then the address range is free, and until the
 * reader has read the event (uffd_reader_pending() is false) ANOTHER thread
 * can map the same addresses and register them: changed() alone would let
 * the lookup hit the cached MR that still pins the old pages.  And
 * shmat(SHM_REMAP) over watched memory replaces it with no event at all.
 * check() closes both: before every hit it un-write-protects the first
 * page of the range (a no-op: nothing is ever write-protected), which
 * the kernel refuses with EAGAIN from before such an unmap releases
 * mmap_lock until its event was read (ctx->mmap_changing), and with ENOENT
 * where the page's mapping is no longer registered (a mapping made since,
 * by any path, starts unregistered).  A refused probe queues the range as
 * invalid for the next drain(), and the cache takes its slow path.  It
 * costs one system call per hit (check_ns in the uffd benchmark).
 * What it cannot see: a mapping made without an event that leaves the
 * first page of the range alone (shmat(SHM_REMAP) over a later part).  In
 * missing-page mode, where UFFDIO_WRITEPROTECT does not exist, there is no
 * probe, the window stays open, and opening the monitor says so at warn
 * level.  madvise(DONTNEED/FREE/REMOVE) has no window (its REMOVE event
 * is read before the pages are zapped).  /dev/ummunot has none either:
 * its counter moves in the MMU notifier before any page is freed.
 *
 * FORK.  The uffd is opened without UFFD_FEATURE_EVENT_FORK, so a child's
 * mappings lose the registrations.  A fork hook (proc.h) closes the child's
 * copy of the uffd (so that the parent's last close really releases it) and
 * marks the monitor forked: changed() is true, watch()/drain() fail with
 * ECHILD, no reader thread exists in the child and close() joins nothing.
 * The shim itself passes through in a child and never calls the monitor.
 *
 * EXIT.  Nothing runs at exit: the reader is killed with the process.
 * close() stops the reader through an eventfd and joins it; then closing
 * the uffd drops every registration and wakes any thread still waiting.
 */
#define _GNU_SOURCE
#include "monitor.h"
#include "monitor_uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "htab.h"
#include "log.h"
#include "proc.h"
#include "proc_maps.h"
#include "range_set.h"
#include "uffd_open.h"
#include "uffd_reader.h"
#include "uffd_suspects.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define REPORT_CHUNK 128	/* ranges sorted/merged per report */

/* One watch: the cookie's range, in the monitor's table of watches. */
struct watch {
	struct hlink link;
	uint64_t cookie;
	uintptr_t start, end;
};

struct uffd_monitor {
	struct monitor base;
	int uffd;
	struct uffd_setup setup;	/* mode, device node, probe */
	bool maps_query;	/* PROCMAP_QUERY (6.11) may work */
	uintptr_t page;
	pid_t owner;
	struct uffd_reader reader;
	atomic_uint_fast64_t seen_gen;	/* reader gen consumed by the last drain */
	atomic_bool forked;
	struct proc_fork_hooks fork_hooks;
	struct suspects suspects;

	/* Consumer side: the cache serialises watch/unwatch/drain/close. */
	struct htab watches;	/* struct watch by cookie */
	struct range_set segs;	/* registered ranges with their watch counts */
	size_t max_segs;	/* cap of segs.n: see watch_budget() */
	bool cap_logged;
};

static struct uffd_monitor *to_uffd(struct monitor *m)
{
	return (struct uffd_monitor *)(void *)m;
}

/* ---- fork ---------------------------------------------------------------- */

/* The child: no reader exists here; let go of the parent's uffd. */
static void mark_forked(struct uffd_monitor *m)
{
	if (atomic_exchange(&m->forked, true))
		return;
	if (m->uffd >= 0)
		close(m->uffd);
	m->uffd = -1;
	uffd_reader_forget(&m->reader);
}

static void fork_child(void *arg)
{
	mark_forked(arg);
}

/* Also catches children made without fork handlers (raw clone). */
static bool in_child(struct uffd_monitor *m)
{
	if (atomic_load(&m->forked))
		return true;
	if (proc_is_other(m->owner)) {
		mark_forked(m);
		return true;
	}
	return false;
}

/* ---- registration ------------------------------------------------------ */

/* Our uffd, or -1 once it was closed under us (its number may be reused). */
static int live_fd(const struct uffd_monitor *m)
{
	if (uffd_reader_failed(&m->reader) == EBADF)
		return -1;
	return m->uffd;
}

static int uffd_register(struct uffd_monitor *m, uintptr_t start, uintptr_t end)
{
	struct uffdio_register r = {
		.range = { .start = start, .len = end - start },
		.mode = m->setup.reg_mode,
	};

	return ioctl(live_fd(m), UFFDIO_REGISTER, &r) ? -errno : 0;
}

static int unregister_raw(struct uffd_monitor *m, uintptr_t start,
			  uintptr_t end)
{
	struct uffdio_range r = { .start = start, .len = end - start };

	return ioctl(live_fd(m), UFFDIO_UNREGISTER, &r) ? -errno : 0;
}

static int unregister_vma(void *arg, const struct proc_vma *v)
{
	uintptr_t *range = arg;
	struct uffd_monitor *m = (struct uffd_monitor *)range[2];
	uintptr_t s = v->start > range[0] ? v->start : range[0];
	uintptr_t e = v->end < range[1] ? v->end : range[1];

	unregister_raw(m, s, e);	/* best effort, mapping by mapping */
	return 0;
}

/*
 * Drop the registration of [start, end).  UNREGISTER refuses the whole
 * range if any mapping in it cannot carry one (e.g. a file mapped there
 * after the watched memory went away); then go mapping by mapping.  What
 * still fails stays registered: it costs spurious events, never a hang.
 */
static void unregister_range(struct uffd_monitor *m, uintptr_t start,
			     uintptr_t end)
{
	uintptr_t range[3] = { start, end, (uintptr_t)m };
	int rc;

	if (live_fd(m) < 0 || end <= start)
		return;
	rc = unregister_raw(m, start, end);
	if (rc == -EINVAL)
		proc_maps_walk(start, end, unregister_vma, range);
	else if (rc < 0)
		log_debug("uffd: unregister [%#lx, %#lx) failed: %s",
			  (unsigned long)start, (unsigned long)end,
			  strerror(-rc));
}

static void unregister_gap(void *arg, uintptr_t start, uintptr_t end)
{
	unregister_range(arg, start, end);
}

/* Unregister the parts of [start, end) that no watch covers. */
static void unregister_uncovered(struct uffd_monitor *m, uintptr_t start,
				 uintptr_t end)
{
	range_set_gaps(&m->segs, start, end, unregister_gap, m);
}

/* ---- the table of watches ------------------------------------------------ */

static struct watch *watch_find(const struct uffd_monitor *m, uint64_t cookie)
{
	uint64_t h = hash_mix64(cookie);

	for (struct hlink *l = *htab_bucket(&m->watches, h); l; l = l->next) {
		struct watch *w = container_of(l, struct watch, link);

		if (l->hash == h && w->cookie == cookie)
			return w;
	}
	return NULL;
}

static void watch_insert(struct uffd_monitor *m, struct watch *w)
{
	void *garbage = NULL;

	htab_insert(&m->watches, &w->link, hash_mix64(w->cookie));
	htab_grow(&m->watches, &garbage);
	free(garbage);
}

/* ---- the cap on watched ranges ------------------------------------------ */

/*
 * How many segments the watches may have.  Registering a range inside a
 * mapping splits it: each segment costs at most two more mappings, and
 * vm.max_map_count caps the mappings of the process, whose own mmap()
 * would fail with ENOMEM at the cap.  The watches get a quarter of what
 * is free when the monitor opens; beyond that, watch() refuses (the cache
 * passes such registrations through).
 */
static size_t watch_budget(void)
{
	long room = proc_maps_room();

	return room > 0 ? (size_t)room / 4 / 2 : 0;
}

/* ---- monitor operations ---------------------------------------------- */

static int uffd_watch(struct monitor *mon, uint64_t cookie, uintptr_t start,
		      uintptr_t end)
{
	struct uffd_monitor *m = to_uffd(mon);
	int failed = uffd_reader_failed(&m->reader);
	struct watch *w;
	bool registered;
	int rc;

	start &= ~(m->page - 1);
	end = (end + m->page - 1) & ~(m->page - 1);
	if (in_child(m))
		return -ECHILD;
	if (failed)
		return -failed;
	if (end <= start)
		return -EINVAL;
	if (watch_find(m, cookie))
		return -EEXIST;
	if (m->segs.n + 2 > m->max_segs) {
		if (!m->cap_logged)
			log_info("uffd: %zu watched ranges, the cap for vm.max_map_count: further registrations pass through",
				 m->segs.n);
		m->cap_logged = true;
		return -ENOSPC;
	}
	/* Allocate first: once registered, nothing may fail half-way. */
	w = malloc(sizeof(*w));
	if (!w || range_set_reserve(&m->segs, m->watches.count + 1)) {
		free(w);
		return -ENOMEM;
	}

	rc = uffd_register(m, start, end);
	/*
	 * EINVAL/EBUSY/EPERM come from the checks before the kernel changes
	 * anything (and EBUSY means another uffd owns the pages: never touch
	 * that registration); other failures may leave a part registered.
	 */
	registered = rc == 0 || (rc != -EINVAL && rc != -EBUSY && rc != -EPERM);
	/*
	 * Always check the mappings now, even where older watches cover the
	 * range: the memory behind an older watch may have been replaced
	 * (e.g. by shared memory) and its event not yet drained, so the old
	 * check says nothing about what is mapped there today.
	 */
	if (rc == 0)
		rc = proc_maps_check_private_anon(&m->maps_query, start, end);
	/*
	 * Pages that are the shared zero page or shared copy-on-write would
	 * be replaced by a write without any event: make each one a private
	 * page of this process now (same contents), after the registration,
	 * so that anything that empties them later is reported.
	 */
	if (rc == 0 && madvise((void *)start, end - start, MADV_POPULATE_WRITE))
		rc = -errno;
	if (rc < 0) {
		if (registered)
			unregister_uncovered(m, start, end);
		log_debug("uffd: cannot watch [%#lx, %#lx): %s",
			  (unsigned long)start, (unsigned long)end,
			  strerror(-rc));
		free(w);
		return rc;
	}
	*w = (struct watch){ .cookie = cookie, .start = start, .end = end };
	watch_insert(m, w);
	range_set_add(&m->segs, start, end);
	return 0;
}

static void uffd_unwatch(struct monitor *mon, uint64_t cookie)
{
	struct uffd_monitor *m = to_uffd(mon);
	struct watch *w = watch_find(m, cookie);

	if (!w)
		return;
	htab_remove(&m->watches, &w->link);
	/* In a child the registrations are the parent's. */
	if (!atomic_load(&m->forked))
		range_set_sub(&m->segs, w->start, w->end, unregister_gap, m);
	free(w);
}

static bool uffd_changed(struct monitor *mon)
{
	struct uffd_monitor *m = to_uffd(mon);

	if (atomic_load_explicit(&m->suspects.pending, memory_order_acquire))
		return true;
	return uffd_reader_pending(&m->reader,
				   atomic_load_explicit(&m->seen_gen,
							memory_order_acquire));
}

/*
 * Un-write-protect one page that is never write-protected: a no-op that
 * the kernel refuses with EAGAIN while an unmap or remap of any watched
 * memory has not had its event read yet (ctx->mmap_changing), and with
 * ENOENT where the page is no longer in a mapping registered with a uffd
 * (replaced by a mapping made without an event, e.g. shmat(SHM_REMAP)).
 */
static bool probe_page(const struct uffd_monitor *m, uintptr_t addr)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = addr & ~(m->page - 1), .len = m->page },
		.mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
	};

	return ioctl(live_fd(m), UFFDIO_WRITEPROTECT, &wp) == 0;
}

/*
 * The hit-path check (see THE UNMAP/REMAP WINDOW above): the first page of
 * the range probed, then changed(), in that order: a probe that finds no
 * unmap in flight means every earlier unmap's event has been read, so the
 * read section that read it is visible to changed() now.
 */
static bool uffd_check(struct monitor *mon, uintptr_t start, uintptr_t end)
{
	struct uffd_monitor *m = to_uffd(mon);

	if (m->setup.probe && !atomic_load_explicit(&m->forked, memory_order_relaxed) &&
	    !probe_page(m, start)) {
		uintptr_t s = start & ~(m->page - 1);

		suspect_add(&m->suspects, s, end > s ? end : s + m->page);
		return false;
	}
	return !uffd_changed(mon);
}

static int consume_ring(struct uffd_monitor *m, monitor_inval_fn fn, void *ctx)
{
	struct uffd_item got[REPORT_CHUNK], batch[REPORT_CHUNK];
	size_t n;
	int reported = 0;

	while ((n = uffd_reader_take(&m->reader, got, REPORT_CHUNK)) > 0) {
		size_t nb = 0;

		for (size_t i = 0; i < n; i++) {
			if (got[i].kind == UFFD_ITEM_ORPHAN)
				/* Moved registration: keep it only where watched. */
				unregister_uncovered(m, got[i].start, got[i].end);
			else
				batch[nb++] = got[i];
		}
		reported += uffd_items_report(batch, nb, fn, ctx);
	}
	return reported;
}

static int uffd_drain(struct monitor *mon, monitor_inval_fn fn, void *ctx)
{
	struct uffd_monitor *m = to_uffd(mon);
	uint64_t gen;
	int failed, reported;

	if (in_child(m))
		return -ECHILD;
	uffd_reader_unnotify(&m->reader);	/* first: a later event renotifies */
	gen = uffd_reader_settle(&m->reader);
	failed = uffd_reader_failed(&m->reader);
	if (failed) {
		atomic_store_explicit(&m->seen_gen, gen, memory_order_release);
		return -failed;
	}
	if (uffd_reader_take_overflow(&m->reader)) {
		/* Ranges were lost: everything may have changed. */
		fn(ctx, MONITOR_COOKIE_ANY, 0, UINTPTR_MAX, 0);
		reported = 1;
	} else {
		reported = consume_ring(m, fn, ctx);
	}
	reported += suspects_report(&m->suspects, fn, ctx);
	atomic_store_explicit(&m->seen_gen, gen, memory_order_release);
	return reported;
}

/* Readable while the reader has published what no drain has taken yet. */
static int uffd_wait_fd(struct monitor *mon)
{
	return to_uffd(mon)->reader.notifyfd;
}

static void free_watches(struct uffd_monitor *m)
{
	for (size_t b = 0; m->watches.buckets && b < m->watches.nbuckets; b++) {
		struct hlink *l = m->watches.buckets[b];

		while (l) {
			struct hlink *next = l->next;

			free(container_of(l, struct watch, link));
			l = next;
		}
	}
	htab_free(&m->watches);
}

static void free_monitor(struct uffd_monitor *m)
{
	if (m->reader.sh && uffd_reader_failed(&m->reader) == EBADF)
		m->uffd = -1;	/* already closed, maybe reused: not ours */
	if (m->uffd >= 0)
		close(m->uffd);	/* drops every registration, wakes waiters */
	uffd_reader_destroy(&m->reader);
	free_watches(m);
	range_set_free(&m->segs);
	suspects_destroy(&m->suspects);
	free(m);
}

static void uffd_close(struct monitor *mon)
{
	struct uffd_monitor *m = to_uffd(mon);

	proc_fork_hooks_remove(&m->fork_hooks);
	if (!in_child(m))
		uffd_reader_stop(&m->reader);
	free_monitor(m);
}

static const struct monitor_ops uffd_ops = {
	.name = "uffd",
	.watch = uffd_watch,
	.unwatch = uffd_unwatch,
	.changed = uffd_changed,
	.check = uffd_check,
	.drain = uffd_drain,
	.wait_fd = uffd_wait_fd,
	.close = uffd_close,
};

/* ---- opening ----------------------------------------------------------- */

struct monitor *monitor_uffd_open_flags(unsigned int flags,
					unsigned int ring_capacity)
{
	struct uffd_monitor *m = calloc(1, sizeof(*m));
	long page = sysconf(_SC_PAGESIZE);
	int rc;

	if (!m) {
		errno = ENOMEM;
		return NULL;
	}
	m->base.ops = &uffd_ops;
	m->uffd = -1;
	m->reader.wakefd = m->reader.notifyfd = -1;
	suspects_init(&m->suspects);
	m->page = (uintptr_t)(page > 0 ? page : 4096);
	m->owner = proc_pid();
	m->maps_query = !(flags & UFFD_OPEN_FORCE_MAPS_TEXT);
	rc = htab_init(&m->watches) ? -ENOMEM : 0;
	if (rc == 0) {
		m->uffd = uffd_open_best(flags, m->page, &m->setup);
		rc = m->uffd < 0 ? m->uffd : 0;
	}
	if (rc == 0)
		rc = uffd_reader_init(&m->reader, ring_capacity);
	if (rc == 0)
		rc = uffd_reader_start(&m->reader, m->uffd, m->page);
	if (rc < 0) {
		if (m->uffd < 0)
			m->uffd = -1;
		free_monitor(m);
		errno = -rc;
		return NULL;
	}
	if (flags & UFFD_OPEN_FORCE_NO_PROBE)
		m->setup.probe = false;
	m->max_segs = watch_budget();
	m->fork_hooks = (struct proc_fork_hooks){ .child = fork_child, .arg = m };
	proc_fork_hooks_add(&m->fork_hooks);
	if (!m->setup.probe)
		log_warn("uffd: this kernel cannot probe watched memory (no userfaultfd write-protect on anonymous memory): an unmap racing with another thread's remap and registration of the same addresses can return a stale cached MR; load ummunot.ko to close that window");
	log_debug("uffd: monitor open (%s mode%s)",
		  m->setup.reg_mode == UFFDIO_REGISTER_MODE_WP ?
			"write-protect" : "missing-page",
		  m->setup.devnode ? ", via /dev/userfaultfd" : "");
	return &m->base;
}

struct monitor *monitor_uffd_open(void)
{
	return monitor_uffd_open_flags(0, 0);
}

void monitor_uffd_get_counters(struct monitor *mon,
			       struct monitor_uffd_counters *out)
{
	struct uffd_monitor *m = to_uffd(mon);

	uffd_reader_counters(&m->reader, &out->events, &out->faults,
			     &out->overflows);
	out->missing_mode = m->setup.reg_mode == UFFDIO_REGISTER_MODE_MISSING;
	out->devnode = m->setup.devnode;
	out->probe = m->setup.probe;
	out->max_segments = m->max_segs;
	out->fd = m->uffd;
}

void monitor_uffd_set_max_segments(struct monitor *mon, size_t max)
{
	to_uffd(mon)->max_segs = max;
}
