// SPDX-License-Identifier: BSD-2-Clause
/*
 * The userfaultfd monitor's reader thread and its ring (uffd_reader.h).
 *
 * DEADLOCK FREEDOM.  A thread that unmaps watched memory sleeps in the
 * kernel until the reader has READ its event.  Hence:
 *  1. The reader takes no lock at all, never allocates and never logs
 *     (malloc, stdio and the cache hold locks across free/munmap/brk).
 *     It calls only poll(), read() and, in missing mode, the
 *     fault-resolving ioctls.  Its queue is a preallocated single-producer
 *     ring; when the ring is full the reader sets an "everything is
 *     invalid" flag instead of waiting or dropping, and drain() then
 *     reports [0, UINTPTR_MAX).
 *  2. It blocks no signal handler's work: all signals are blocked in it.
 *  3. The consumer side (watch/unwatch/drain, serialised by the cache)
 *     waits for the reader only in drain(), spinning until the reader's
 *     current read section ends; that section waits for nothing that any
 *     application thread holds.
 *  4. The kernel never holds mmap_lock while a thread waits for its event
 *     to be read, so the consumer's REGISTER/UNREGISTER ioctls and the
 *     reader's ioctls cannot wait on a blocked unmapper either.
 * So there is no cycle: the reader depends on nobody, every other waiter
 * depends only on the reader.
 *
 * THE WAKE-UP RACE.  The kernel wakes the unmapping thread while the reader
 * is still inside read(), i.e. before the range is queued.  The reader
 * therefore makes @seq odd before read() and even again only after it has
 * queued the events and bumped @gen.  changed() is true while @seq is odd
 * or @gen differs from what drain() last consumed, and drain() first waits
 * until the section it sees in progress has ended.  The unmapper is woken
 * through the uffd's wait-queue lock, which the reader took after making
 * @seq odd, so whatever the unmapper (or a thread it synchronises with)
 * does next observes either the odd @seq or a later value: an even @seq
 * observed with acquire ordering implies the queued range and the bumped
 * @gen are visible too.  So the unmapping thread itself, and any thread
 * that synchronises with it after its munmap() returned, always sees the
 * invalidation.
 *
 * ERRORS.  EINTR is retried; the reader never stops while the uffd is
 * alive (an unexpected error marks the monitor failed, i.e. changed() true
 * and drain() negative, so that the cache stops caching, and the reader
 * keeps reading).  It stops only when the uffd is gone (closed by the
 * application): then the kernel has dropped all registrations and nobody
 * can wait on it, and the monitor fails the same way.  The one window
 * left is that case: the event of an unmap racing with the application's
 * close() of our descriptor can be lost before the failure shows.
 */
#define _GNU_SOURCE
#include "uffd_reader.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "monitor.h"

#define MSG_BATCH 64	/* uffd messages per read() */

/* ---- the reader thread (no locks, no allocation, no logging) ---------- */

static void push(struct uffd_shared *sh, uintptr_t start, uintptr_t end,
		 enum uffd_item_kind kind, unsigned int flags)
{
	uint64_t h = atomic_load_explicit(&sh->head, memory_order_relaxed);
	uint64_t t = atomic_load_explicit(&sh->tail, memory_order_acquire);

	if (end <= start)
		return;
	if (h - t > sh->ring_mask) {
		/* Never wait and never drop: collapse to "all invalid". */
		atomic_store_explicit(&sh->overflow, true, memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->overflows, 1,
					  memory_order_relaxed);
		return;
	}
	sh->ring[h & sh->ring_mask] = (struct uffd_item){ start, end, kind, flags };
	atomic_store_explicit(&sh->head, h + 1, memory_order_release);
}

/* Let a faulting thread go on at once; a zero page is what it would get. */
static void resolve_fault(struct uffd_shared *sh, const struct uffd_msg *msg)
{
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address & ~(sh->page - 1);
	struct uffdio_range range = { .start = addr, .len = sh->page };
	int rc;

	if (msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
		struct uffdio_writeprotect wp = { .range = range, .mode = 0 };

		rc = ioctl(sh->uffd, UFFDIO_WRITEPROTECT, &wp);
	} else {
		struct uffdio_zeropage zp = { .range = range, .mode = 0 };

		rc = ioctl(sh->uffd, UFFDIO_ZEROPAGE, &zp);
	}
	/*
	 * EEXIST (already populated), EAGAIN (an event is pending), ENOENT
	 * (gone): wake the thread; it retries the access and, if the page
	 * is still missing, faults again once the pending events are read.
	 */
	if (rc != 0)
		ioctl(sh->uffd, UFFDIO_WAKE, &range);
	atomic_fetch_add_explicit(&sh->faults, 1, memory_order_relaxed);
}

/* Returns true when something was queued for drain(). */
static bool handle_msg(struct uffd_shared *sh, const struct uffd_msg *msg)
{
	switch (msg->event) {
	case UFFD_EVENT_UNMAP:
	case UFFD_EVENT_REMOVE:
		/* arg.remove is also the layout of the unmap event. */
		push(sh, msg->arg.remove.start, msg->arg.remove.end,
		     UFFD_ITEM_INVAL, msg->event == UFFD_EVENT_UNMAP ?
				      MONITOR_INVAL_UNMAPPED : 0);
		break;
	case UFFD_EVENT_REMAP:
		push(sh, msg->arg.remap.from,
		     msg->arg.remap.from + msg->arg.remap.len, UFFD_ITEM_INVAL,
		     MONITOR_INVAL_UNMAPPED);
		push(sh, msg->arg.remap.to,
		     msg->arg.remap.to + msg->arg.remap.len, UFFD_ITEM_ORPHAN, 0);
		break;
	case UFFD_EVENT_PAGEFAULT:
		resolve_fault(sh, msg);
		return false;
	default:
		return false;	/* FORK is never requested */
	}
	atomic_fetch_add_explicit(&sh->events, 1, memory_order_relaxed);
	return true;
}

/* Make @notifyfd readable: something waits for a drain (no lock taken). */
static void notify(const struct uffd_shared *sh)
{
	uint64_t one = 1;

	while (write(sh->notifyfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/*
 * One read section: @seq is odd from before read() (which is when the
 * kernel wakes the unmapper) until the events are queued and @gen bumped.
 * Returns the read() result, or -errno.
 */
static ssize_t read_section(struct uffd_shared *sh, struct uffd_msg *msgs)
{
	bool published = false;
	ssize_t n;

	atomic_fetch_add_explicit(&sh->seq, 1, memory_order_seq_cst);
	n = read(sh->uffd, msgs, MSG_BATCH * sizeof(*msgs));
	if (n < 0)
		n = -errno;
	for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(*msgs); i++)
		published |= handle_msg(sh, &msgs[i]);
	if (published)
		atomic_fetch_add_explicit(&sh->gen, 1, memory_order_release);
	atomic_fetch_add_explicit(&sh->seq, 1, memory_order_release);
	if (published)
		notify(sh);
	return n;
}

/*
 * The uffd is unusable.  If it was closed under us (EBADF), the kernel
 * dropped its registrations with it and nobody can wait on us any more;
 * otherwise we keep reading (slowly) so that no unmapper ever hangs.
 * Either way caching stops first: changed() turns true and every later
 * drain() fails.
 */
static void reader_fail(struct uffd_shared *sh, int err)
{
	int expected = 0;

	if (atomic_compare_exchange_strong(&sh->failed, &expected, err)) {
		atomic_fetch_add_explicit(&sh->gen, 1, memory_order_release);
		notify(sh);
	}
}

/*
 * An application that closes descriptors it does not own (closefrom()
 * before exec, daemonising code) may close ours, and the number may then
 * name one of its files: never read that.  Each uffd has its own inode.
 */
static bool fd_is_ours(const struct uffd_shared *sh)
{
	struct stat st;

	return fstat(sh->uffd, &st) == 0 && st.st_ino == sh->uffd_ino &&
	       st.st_dev == sh->uffd_dev;
}

/* Read until the kernel queue is empty.  Returns false to stop. */
static bool read_all(struct uffd_shared *sh, struct uffd_msg *msgs)
{
	if (!fd_is_ours(sh)) {
		reader_fail(sh, EBADF);
		return false;
	}
	for (;;) {
		ssize_t n = read_section(sh, msgs);

		if (n == -EAGAIN)
			return true;
		if (n == -EINTR)
			continue;
		if (n == -EBADF) {
			reader_fail(sh, EBADF);
			return false;
		}
		if (n < 0) {
			reader_fail(sh, (int)-n);
			return true;
		}
		if (n < (ssize_t)(MSG_BATCH * sizeof(*msgs)))
			return true;
	}
}

/* After an unexpected error: retry, but do not spin on a broken fd. */
static void pause_briefly(void)
{
	poll(NULL, 0, 10);
}

static void *reader_main(void *arg)
{
	struct uffd_shared *sh = arg;
	struct uffd_msg msgs[MSG_BATCH];

	for (;;) {
		struct pollfd p[2] = {
			{ .fd = sh->uffd, .events = POLLIN },
			{ .fd = sh->wakefd, .events = POLLIN },
		};
		int rc = poll(p, 2, -1);

		if (atomic_load(&sh->stop))
			break;
		if (rc < 0) {
			if (errno != EINTR)
				pause_briefly();
			continue;
		}
		if (p[0].revents & POLLNVAL) {
			reader_fail(sh, EBADF);
			break;
		}
		if (p[0].revents && !read_all(sh, msgs))
			break;
		if (atomic_load(&sh->failed))
			pause_briefly();
	}
	return NULL;
}

int uffd_reader_start(struct uffd_reader *r, int uffd, uintptr_t page)
{
	sigset_t all, old;
	struct stat st;
	int rc;

	if (fstat(uffd, &st))
		return -errno;
	r->sh->uffd = uffd;
	r->sh->wakefd = r->wakefd;
	r->sh->notifyfd = r->notifyfd;
	r->sh->uffd_dev = st.st_dev;
	r->sh->uffd_ino = st.st_ino;
	r->sh->page = page;

	/* No signal handler ever runs on the reader (and no EINTR storms). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&r->thread, NULL, reader_main, r->sh);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return -rc;
	pthread_setname_np(r->thread, "ummushim-uffd");
	r->running = true;
	return 0;
}

void uffd_reader_stop(struct uffd_reader *r)
{
	uint64_t one = 1;

	if (!r->running)
		return;
	atomic_store(&r->sh->stop, true);
	while (write(r->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(r->thread, NULL);
	r->running = false;
}

/* ---- the consumer side ------------------------------------------------- */

int uffd_reader_init(struct uffd_reader *r, unsigned int ring_capacity)
{
	unsigned int cap = UFFD_RING_DEFAULT;

	memset(r, 0, sizeof(*r));
	r->wakefd = r->notifyfd = -1;
	if (ring_capacity) {
		cap = 1;
		while (cap < ring_capacity)
			cap *= 2;
	}
	r->sh_size = sizeof(struct uffd_shared) + cap * sizeof(struct uffd_item);
	r->sh = mmap(NULL, r->sh_size, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->sh == MAP_FAILED) {
		r->sh = NULL;
		return -errno;
	}
	r->sh->ring_mask = cap - 1;	/* the mapping starts zeroed */
	r->sh->uffd = -1;
	r->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->wakefd < 0)
		return -errno;
	r->notifyfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return r->notifyfd < 0 ? -errno : 0;
}

void uffd_reader_destroy(struct uffd_reader *r)
{
	if (r->wakefd >= 0)
		close(r->wakefd);
	if (r->notifyfd >= 0)
		close(r->notifyfd);
	r->notifyfd = -1;
	if (r->sh)
		munmap(r->sh, r->sh_size);
	r->sh = NULL;
	r->wakefd = -1;
}

void uffd_reader_forget(struct uffd_reader *r)
{
	if (r->wakefd >= 0)
		close(r->wakefd);
	if (r->notifyfd >= 0)
		close(r->notifyfd);
	r->wakefd = r->notifyfd = -1;
	r->running = false;
	atomic_fetch_add(&r->sh->gen, 1);
}

bool uffd_reader_pending(const struct uffd_reader *r, uint64_t seen_gen)
{
	const struct uffd_shared *sh = r->sh;

	if (atomic_load_explicit(&sh->seq, memory_order_acquire) & 1)
		return true;
	return atomic_load_explicit(&sh->gen, memory_order_acquire) != seen_gen;
}

void uffd_reader_unnotify(struct uffd_reader *r)
{
	uint64_t v;

	if (r->notifyfd >= 0)
		while (read(r->notifyfd, &v, sizeof(v)) < 0 && errno == EINTR)
			;
}

uint64_t uffd_reader_settle(struct uffd_reader *r)
{
	uint64_t s = atomic_load_explicit(&r->sh->seq, memory_order_acquire);
	unsigned int spins = 0;

	while ((s & 1) &&
	       atomic_load_explicit(&r->sh->seq, memory_order_acquire) == s) {
		if (++spins > 100)
			sched_yield();
	}
	return atomic_load_explicit(&r->sh->gen, memory_order_acquire);
}

int uffd_reader_failed(const struct uffd_reader *r)
{
	return atomic_load(&r->sh->failed);
}

bool uffd_reader_take_overflow(struct uffd_reader *r)
{
	struct uffd_shared *sh = r->sh;

	if (!atomic_exchange(&sh->overflow, false))
		return false;
	/* Ranges were lost: what is queued says nothing more. */
	atomic_store_explicit(&sh->tail,
			      atomic_load_explicit(&sh->head,
						   memory_order_acquire),
			      memory_order_release);
	return true;
}

size_t uffd_reader_take(struct uffd_reader *r, struct uffd_item *out,
			size_t max)
{
	struct uffd_shared *sh = r->sh;
	uint64_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
	uint64_t t = atomic_load_explicit(&sh->tail, memory_order_relaxed);
	size_t n = 0;

	for (; t != head && n < max; t++)
		out[n++] = sh->ring[t & sh->ring_mask];
	atomic_store_explicit(&sh->tail, t, memory_order_release);
	return n;
}

void uffd_reader_counters(const struct uffd_reader *r, uint64_t *events,
			  uint64_t *faults, uint64_t *overflows)
{
	*events = atomic_load(&r->sh->events);
	*faults = atomic_load(&r->sh->faults);
	*overflows = atomic_load(&r->sh->overflows);
}

/* Insertion sort: a chunk is small, and qsort() may allocate. */
static void sort_items(struct uffd_item *v, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		struct uffd_item x = v[i];
		size_t j = i;

		for (; j > 0 && v[j - 1].start > x.start; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
}

/* Report a batch of ranges, sorted and merged (the cache scans per call). */
int uffd_items_report(struct uffd_item *v, size_t n, monitor_inval_fn fn,
		      void *ctx)
{
	int reported = 0;
	size_t i = 0;

	sort_items(v, n);
	while (i < n) {
		uintptr_t s = v[i].start, e = v[i].end;
		unsigned int flags = v[i].flags;

		/* Merged: certain only where every part is. */
		for (i++; i < n && v[i].start <= e; i++) {
			if (v[i].end > e)
				e = v[i].end;
			flags &= v[i].flags;
		}
		fn(ctx, MONITOR_COOKIE_ANY, s, e, flags);
		reported++;
	}
	return reported;
}
