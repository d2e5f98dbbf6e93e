// SPDX-License-Identifier: BSD-2-Clause
/*
 * userfaultfd invalidation backend (issue 5): works on a stock kernel,
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
 * address range, not counted: @segs counts the watches on each piece so
 * that unwatching one never unregisters pages another watch still needs,
 * and a registration moved by mremap() is dropped unless watched.
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
 * THE WINDOW THAT IS LEFT (a design limit of userfaultfd, not closable in
 * user space).  munmap(), mremap() and mmap(MAP_FIXED) over watched memory
 * queue their UNMAP/REMAP event only in userfaultfd_unmap_complete() /
 * mremap_userfaultfd_complete(), i.e. AFTER the kernel has dropped
 * mmap_lock: by then the old pages are unmapped and the address range is
 * free.  Until the reader has read that event (it is not even queued yet,
 * so @seq and @gen have not moved), changed() is false.  In that window
 * ANOTHER thread can mmap() the same addresses, fill them and call
 * ibv_reg_mr(): the lookup hits the cached MR, which still pins the old
 * pages, and the NIC reads or writes the old memory.  It needs an unmap in
 * one thread racing with a remap plus registration of the same addresses
 * in another, with no synchronisation between them after the munmap()
 * returned.  madvise(DONTNEED/FREE/REMOVE) does not have this window
 * (userfaultfd_remove() runs before the pages are zapped), and neither
 * does /dev/ummunot, whose counter moves in the MMU notifier, under
 * mmap_lock, before any page is freed.  The shim says so at info level
 * when it falls back to this backend; test/rdma measures it
 * (rdma-unmap-race) and preload/README.md documents it under Limits.
 *
 * FORK.  The uffd is opened without UFFD_FEATURE_EVENT_FORK, so a child's
 * mappings lose the registrations.  A fork handler closes the child's copy
 * of the uffd (so that the parent's last close really releases it) and
 * marks the monitor forked: changed() is true, watch()/drain() fail with
 * ECHILD, no reader thread exists in the child and close() joins nothing.
 * The shim itself passes through in a child and never calls the monitor.
 *
 * EXIT.  Nothing runs at exit: the reader is killed with the process.
 * close() stops the reader through an eventfd and joins it; then closing
 * the uffd drops every registration and wakes any thread still waiting.
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
#include "monitor.h"
#include "monitor_uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define DEFAULT_RING_CAPACITY 4096u	/* ranges queued between drains */
#define MSG_BATCH 64			/* uffd messages per read() */
#define REPORT_CHUNK 128		/* ranges sorted/merged per report */

enum item_kind {
	ITEM_INVAL,	/* the pages of [start, end) changed */
	ITEM_ORPHAN,	/* mremap moved a registration to [start, end) */
};

struct item {
	uintptr_t start, end;
	enum item_kind kind;
};

/*
 * State shared by the reader and the consumers, in its own mapping so
 * that it never shares a page with memory an application registers (in
 * missing mode a fault on it would wait for the reader itself): the reader
 * touches nothing else but its own stack.
 */
struct shared {
	/* Set before the reader starts, then read-only. */
	int uffd, wakefd;
	dev_t uffd_dev;		/* identity of the uffd, see fd_is_ours() */
	ino_t uffd_ino;
	uintptr_t page;
	uint64_t ring_mask;

	_Alignas(64) atomic_uint_fast64_t seq;	/* odd: read section running */
	atomic_uint_fast64_t gen;		/* bumped after each publication */
	_Alignas(64) atomic_uint_fast64_t head;	/* written by the reader */
	atomic_bool overflow;			/* ring was full: all invalid */
	atomic_int failed;			/* errno: the monitor is broken */
	atomic_bool stop;			/* close() asks the reader to end */
	atomic_uint_fast64_t events, faults, overflows;
	_Alignas(64) atomic_uint_fast64_t tail;	/* written by drain() */
	_Alignas(64) struct item ring[];
};

struct seg {
	uintptr_t start, end;
	unsigned long count;	/* watches covering [start, end) */
};

struct segs {
	struct seg *v;
	size_t n, cap;
};

struct wslot {
	uint64_t cookie;
	uintptr_t start, end;
	bool used;
};

struct wtable {
	struct wslot *v;
	size_t n, cap;	/* cap: power of two or 0 */
};

struct uffd_monitor {
	struct monitor base;
	int uffd;
	int wakefd;
	uint64_t reg_mode;	/* UFFDIO_REGISTER_MODE_WP or _MISSING */
	bool devnode;
	bool maps_query;	/* PROCMAP_QUERY (6.11) may work */
	uintptr_t page;
	pid_t owner;
	bool reader_running;
	pthread_t reader;

	struct shared *sh;
	size_t sh_size;
	atomic_uint_fast64_t seen_gen;	/* @gen consumed by the last drain */
	atomic_bool forked;

	/* Consumer side: the cache serialises watch/unwatch/drain/close. */
	struct wtable watches;	/* cookie -> range */
	struct segs segs;	/* registered ranges with their watch counts */

	struct uffd_monitor *next_open;	/* in the fork handler's list */
};

static struct uffd_monitor *to_uffd(struct monitor *m)
{
	return (struct uffd_monitor *)(void *)m;
}

/* ---- fork handling --------------------------------------------------- */

/*
 * Global: fork handlers are process-wide and cannot be unregistered, so
 * they walk this list of open monitors instead of holding a pointer to
 * one that may be closed.  The lock is taken across fork() so that the
 * child sees a consistent list; the reader never takes it.
 */
static pthread_mutex_t open_list_lock = PTHREAD_MUTEX_INITIALIZER;
static struct uffd_monitor *open_list;
static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void)
{
	pthread_mutex_lock(&open_list_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&open_list_lock);
}

/* The child: no reader exists here; let go of the parent's uffd. */
static void mark_forked(struct uffd_monitor *m)
{
	if (atomic_exchange(&m->forked, true))
		return;
	if (m->uffd >= 0)
		close(m->uffd);
	if (m->wakefd >= 0)
		close(m->wakefd);
	m->uffd = m->wakefd = -1;
	m->reader_running = false;
	atomic_fetch_add(&m->sh->gen, 1);
}

static void fork_child(void)
{
	for (struct uffd_monitor *m = open_list; m; m = m->next_open)
		mark_forked(m);
	pthread_mutex_unlock(&open_list_lock);
}

static void install_fork_handlers(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

static void open_list_add(struct uffd_monitor *m)
{
	pthread_once(&fork_handlers_once, install_fork_handlers);
	pthread_mutex_lock(&open_list_lock);
	m->next_open = open_list;
	open_list = m;
	pthread_mutex_unlock(&open_list_lock);
}

static void open_list_del(struct uffd_monitor *m)
{
	pthread_mutex_lock(&open_list_lock);
	for (struct uffd_monitor **p = &open_list; *p; p = &(*p)->next_open) {
		if (*p == m) {
			*p = m->next_open;
			break;
		}
	}
	pthread_mutex_unlock(&open_list_lock);
}

/* Also catches children made without fork handlers (raw clone). */
static bool in_child(struct uffd_monitor *m)
{
	if (atomic_load(&m->forked))
		return true;
	if (getpid() != m->owner) {
		mark_forked(m);
		return true;
	}
	return false;
}

/* ---- the reader thread (no locks, no allocation, no logging) ---------- */

static void push(struct shared *sh, uintptr_t start, uintptr_t end,
		 enum item_kind kind)
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
	sh->ring[h & sh->ring_mask] = (struct item){ start, end, kind };
	atomic_store_explicit(&sh->head, h + 1, memory_order_release);
}

/* Let a faulting thread go on at once; a zero page is what it would get. */
static void resolve_fault(struct shared *sh, const struct uffd_msg *msg)
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
static bool handle_msg(struct shared *sh, const struct uffd_msg *msg)
{
	switch (msg->event) {
	case UFFD_EVENT_UNMAP:
	case UFFD_EVENT_REMOVE:
		/* arg.remove is also the layout of the unmap event. */
		push(sh, msg->arg.remove.start, msg->arg.remove.end, ITEM_INVAL);
		break;
	case UFFD_EVENT_REMAP:
		push(sh, msg->arg.remap.from,
		     msg->arg.remap.from + msg->arg.remap.len, ITEM_INVAL);
		push(sh, msg->arg.remap.to,
		     msg->arg.remap.to + msg->arg.remap.len, ITEM_ORPHAN);
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

/*
 * One read section: @seq is odd from before read() (which is when the
 * kernel wakes the unmapper) until the events are queued and @gen bumped.
 * Returns the read() result, or -errno.
 */
static ssize_t read_section(struct shared *sh, struct uffd_msg *msgs)
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
	return n;
}

/*
 * The uffd is unusable.  If it was closed under us (EBADF), the kernel
 * dropped its registrations with it and nobody can wait on us any more;
 * otherwise we keep reading (slowly) so that no unmapper ever hangs.
 * Either way caching stops first: changed() turns true and every later
 * drain() fails.
 */
static void reader_fail(struct shared *sh, int err)
{
	int expected = 0;

	if (atomic_compare_exchange_strong(&sh->failed, &expected, err))
		atomic_fetch_add_explicit(&sh->gen, 1, memory_order_release);
}

/*
 * An application that closes descriptors it does not own (closefrom()
 * before exec, daemonising code) may close ours, and the number may then
 * name one of its files: never read that.  Each uffd has its own inode.
 */
static bool fd_is_ours(const struct shared *sh)
{
	struct stat st;

	return fstat(sh->uffd, &st) == 0 && st.st_ino == sh->uffd_ino &&
	       st.st_dev == sh->uffd_dev;
}

/* Read until the kernel queue is empty.  Returns false to stop. */
static bool read_all(struct shared *sh, struct uffd_msg *msgs)
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
	struct shared *sh = arg;
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

static int start_reader(struct uffd_monitor *m)
{
	sigset_t all, old;
	struct stat st;
	int rc;

	if (fstat(m->uffd, &st))
		return -errno;
	m->sh->uffd = m->uffd;
	m->sh->wakefd = m->wakefd;
	m->sh->uffd_dev = st.st_dev;
	m->sh->uffd_ino = st.st_ino;
	m->sh->page = m->page;

	/* No signal handler ever runs on the reader (and no EINTR storms). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&m->reader, NULL, reader_main, m->sh);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc)
		return -rc;
	pthread_setname_np(m->reader, "ummushim-uffd");
	m->reader_running = true;
	return 0;
}

/* ---- /proc/self/maps ------------------------------------------------- */

struct vma {
	uintptr_t start, end;
	char perms[4];
	unsigned long dev_major, dev_minor, inode;
};

/* Called for each mapping overlapping the walk; nonzero return stops. */
typedef int (*vma_fn)(void *arg, const struct vma *v);

struct maps_parser {
	int field;	/* 0 start 1 end 2 perms 3 offset 4 major 5 minor 6 inode 7 rest */
	size_t nperm;
	struct vma cur;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Feed one character of a line (without its newline). */
static void maps_feed(struct maps_parser *p, char c)
{
	int h = hexval(c);

	switch (p->field) {
	case 0:
		if (c == '-')
			p->field = 1;
		else if (h >= 0)
			p->cur.start = p->cur.start * 16 + (uintptr_t)h;
		break;
	case 1:
		if (c == ' ')
			p->field = 2;
		else if (h >= 0)
			p->cur.end = p->cur.end * 16 + (uintptr_t)h;
		break;
	case 2:
		if (c == ' ')
			p->field = 3;
		else if (p->nperm < sizeof(p->cur.perms))
			p->cur.perms[p->nperm++] = c;
		break;
	case 3:
		if (c == ' ')
			p->field = 4;
		break;
	case 4:
		if (c == ':')
			p->field = 5;
		else if (h >= 0)
			p->cur.dev_major = p->cur.dev_major * 16 + (unsigned)h;
		break;
	case 5:
		if (c == ' ')
			p->field = 6;
		else if (h >= 0)
			p->cur.dev_minor = p->cur.dev_minor * 16 + (unsigned)h;
		break;
	case 6:
		if (c == ' ')
			p->field = 7;
		else if (c >= '0' && c <= '9')
			p->cur.inode = p->cur.inode * 10 + (unsigned)(c - '0');
		break;
	default:
		break;	/* the path, if any */
	}
}

/*
 * Call @fn for every mapping overlapping [start, end), in address order.
 * Reads only as much of the file as needed; allocates nothing.
 */
static int maps_walk(uintptr_t start, uintptr_t end, vma_fn fn, void *arg)
{
	char buf[4096];
	struct maps_parser p;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return -errno;
	memset(&p, 0, sizeof(p));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] != '\n') {
				maps_feed(&p, buf[i]);
				continue;
			}
			if (p.field < 6) {
				rc = -EIO;	/* not the format we know */
				goto out;
			}
			if (p.cur.start >= end)
				goto out;
			if (p.cur.end > start && fn(arg, &p.cur))
				goto out;
			memset(&p, 0, sizeof(p));
		}
	}
out:
	close(fd);
	return rc;
}

struct cover_check {
	uintptr_t next;	/* first address not yet seen covered */
	int err;
};

/* Only private anonymous memory: nothing outside this mm can change it. */
static int check_vma(void *arg, const struct vma *v)
{
	struct cover_check *c = arg;

	if (v->start > c->next) {
		c->err = -EFAULT;	/* hole */
		return 1;
	}
	if (v->perms[3] != 'p' || v->inode != 0 || v->dev_major != 0 ||
	    v->dev_minor != 0) {
		c->err = -EINVAL;	/* shared or file-backed */
		return 1;
	}
	c->next = v->end;
	return 0;
}

static int check_private_anon_text(uintptr_t start, uintptr_t end)
{
	struct cover_check c = { .next = start, .err = 0 };
	int rc = maps_walk(start, end, check_vma, &c);

	if (rc < 0)
		return rc;
	if (c.err)
		return c.err;
	return c.next >= end ? 0 : -EFAULT;
}

/* struct procmap_query of <linux/fs.h> (Linux 6.11), absent from older headers. */
struct maps_query {
	uint64_t size;
	uint64_t query_flags;
	uint64_t query_addr;
	uint64_t vma_start;
	uint64_t vma_end;
	uint64_t vma_flags;
	uint64_t vma_page_size;
	uint64_t vma_offset;
	uint64_t inode;
	uint32_t dev_major;
	uint32_t dev_minor;
	uint32_t vma_name_size;
	uint32_t build_id_size;
	uint64_t vma_name_addr;
	uint64_t build_id_addr;
};

#define MAPS_QUERY _IOWR('f', 17, struct maps_query)
#define MAPS_QUERY_VMA_SHARED 0x08
#define MAPS_QUERY_COVERING_OR_NEXT_VMA 0x10

/*
 * The same check with one PROCMAP_QUERY per mapping: the text file costs
 * about 150 ns per mapping listed before the range (0.3 ms with 2000).
 * Returns -ENOTTY where the kernel does not have it.
 */
static int check_private_anon_query(uintptr_t start, uintptr_t end)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	uintptr_t next = start;
	int rc = 0;

	if (fd < 0)
		return -errno;
	while (next < end) {
		struct maps_query q = {
			.size = sizeof(q),
			.query_flags = MAPS_QUERY_COVERING_OR_NEXT_VMA,
			.query_addr = next,
		};

		if (ioctl(fd, MAPS_QUERY, &q)) {
			rc = errno == ENOENT ? -EFAULT : -errno;
			break;
		}
		if (q.vma_start > next) {
			rc = -EFAULT;	/* hole */
			break;
		}
		if ((q.vma_flags & MAPS_QUERY_VMA_SHARED) || q.inode ||
		    q.dev_major || q.dev_minor) {
			rc = -EINVAL;	/* shared or file-backed */
			break;
		}
		next = q.vma_end;
	}
	close(fd);
	return rc;	/* -ENOTTY: no PROCMAP_QUERY (before 6.11) */
}

static int check_private_anon(struct uffd_monitor *m, uintptr_t start,
			      uintptr_t end)
{
	if (m->maps_query) {
		int rc = check_private_anon_query(start, end);

		if (rc != -ENOTTY)
			return rc;
		m->maps_query = false;	/* before 6.11 */
	}
	return check_private_anon_text(start, end);
}

/* ---- registration ------------------------------------------------------ */

/* Our uffd, or -1 once it was closed under us (its number may be reused). */
static int live_fd(const struct uffd_monitor *m)
{
	if (atomic_load(&m->sh->failed) == EBADF)
		return -1;
	return m->uffd;
}

static int uffd_register(struct uffd_monitor *m, uintptr_t start, uintptr_t end)
{
	struct uffdio_register r = {
		.range = { .start = start, .len = end - start },
		.mode = m->reg_mode,
	};

	return ioctl(live_fd(m), UFFDIO_REGISTER, &r) ? -errno : 0;
}

static int unregister_raw(struct uffd_monitor *m, uintptr_t start,
			  uintptr_t end)
{
	struct uffdio_range r = { .start = start, .len = end - start };

	return ioctl(live_fd(m), UFFDIO_UNREGISTER, &r) ? -errno : 0;
}

static int unregister_vma(void *arg, const struct vma *v)
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
		maps_walk(start, end, unregister_vma, range);
	else if (rc < 0)
		log_debug("uffd: unregister [%#lx, %#lx) failed: %s",
			  (unsigned long)start, (unsigned long)end,
			  strerror(-rc));
}

/* ---- segments: registered ranges with their watch counts ---------------- */

/* Index of the first segment ending after @x. */
static size_t segs_find(const struct segs *s, uintptr_t x)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->v[mid].end <= x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int segs_reserve(struct segs *s, size_t want)
{
	struct seg *v;
	size_t cap = s->cap ? s->cap : 16;

	if (want <= s->cap)
		return 0;
	while (cap < want)
		cap *= 2;
	v = realloc(s->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	s->v = v;
	s->cap = cap;
	return 0;
}

static void segs_insert(struct segs *s, size_t i, struct seg g)
{
	memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
	s->v[i] = g;
	s->n++;
}

static void segs_erase(struct segs *s, size_t i)
{
	memmove(&s->v[i], &s->v[i + 1], (s->n - i - 1) * sizeof(*s->v));
	s->n--;
}

/* Make @x a segment boundary (capacity must allow one more segment). */
static void segs_split(struct segs *s, uintptr_t x)
{
	size_t i = segs_find(s, x);
	struct seg g;

	if (i >= s->n || s->v[i].start >= x)
		return;
	g = s->v[i];
	s->v[i].end = x;
	g.start = x;
	segs_insert(s, i + 1, g);
}

/* Merge neighbours that touch and have the same count. */
static void segs_compact(struct segs *s)
{
	size_t out = 0;

	for (size_t i = 0; i < s->n; i++) {
		if (out > 0 && s->v[out - 1].end == s->v[i].start &&
		    s->v[out - 1].count == s->v[i].count)
			s->v[out - 1].end = s->v[i].end;
		else
			s->v[out++] = s->v[i];
	}
	s->n = out;
}

/*
 * Segment boundaries are always boundaries of watches, so @watches
 * watches never need more than this many segments, even transiently
 * while one is added or removed: reserving it in watch() lets unwatch()
 * work without allocating (it cannot fail).
 */
static size_t segs_bound(size_t watches)
{
	return 2 * watches + 2;
}

static void segs_add(struct segs *s, uintptr_t start, uintptr_t end)
{
	uintptr_t cur = start;
	size_t i;

	segs_split(s, start);
	segs_split(s, end);
	i = segs_find(s, start);
	while (cur < end) {
		if (i < s->n && s->v[i].start == cur) {
			s->v[i].count++;
			cur = s->v[i++].end;
		} else {
			uintptr_t gap_end = end;

			if (i < s->n && s->v[i].start < end)
				gap_end = s->v[i].start;
			segs_insert(s, i++, (struct seg){ cur, gap_end, 1 });
			cur = gap_end;
		}
	}
	segs_compact(s);
}

/* Drop one watch of [start, end); unregister what nobody watches now. */
static void segs_sub(struct uffd_monitor *m, uintptr_t start, uintptr_t end)
{
	struct segs *s = &m->segs;
	uintptr_t run_start = 0, run_end = 0;
	size_t i;

	segs_split(s, start);
	segs_split(s, end);
	i = segs_find(s, start);
	while (i < s->n && s->v[i].start < end) {
		if (--s->v[i].count > 0) {
			i++;
			continue;
		}
		if (run_end != s->v[i].start) {
			unregister_range(m, run_start, run_end);
			run_start = s->v[i].start;
		}
		run_end = s->v[i].end;
		segs_erase(s, i);
	}
	unregister_range(m, run_start, run_end);
	segs_compact(s);
}

/* Unregister the parts of [start, end) that no watch covers. */
static void unregister_uncovered(struct uffd_monitor *m, uintptr_t start,
				 uintptr_t end)
{
	const struct segs *s = &m->segs;
	uintptr_t cur = start;

	for (size_t i = segs_find(s, start); i < s->n && cur < end; i++) {
		if (s->v[i].start >= end)
			break;
		if (s->v[i].start > cur)
			unregister_range(m, cur, s->v[i].start);
		cur = s->v[i].end;
	}
	if (cur < end)
		unregister_range(m, cur, end);
}

/* ---- watch table: cookie -> range ------------------------------------- */

static uint64_t cookie_hash(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static struct wslot *wtable_find(const struct wtable *t, uint64_t cookie)
{
	if (!t->cap)
		return NULL;
	for (size_t i = cookie_hash(cookie) & (t->cap - 1);;
	     i = (i + 1) & (t->cap - 1)) {
		if (!t->v[i].used)
			return NULL;
		if (t->v[i].cookie == cookie)
			return &t->v[i];
	}
}

static void wtable_put(struct wtable *t, struct wslot w)
{
	size_t i = cookie_hash(w.cookie) & (t->cap - 1);

	while (t->v[i].used)
		i = (i + 1) & (t->cap - 1);
	w.used = true;
	t->v[i] = w;
	t->n++;
}

/* Room for one more entry at a load of at most one half. */
static int wtable_reserve(struct wtable *t)
{
	struct wtable nt;

	if ((t->n + 1) * 2 <= t->cap)
		return 0;
	nt.cap = t->cap ? t->cap * 2 : 64;
	nt.n = 0;
	nt.v = calloc(nt.cap, sizeof(*nt.v));
	if (!nt.v)
		return -ENOMEM;
	for (size_t i = 0; i < t->cap; i++)
		if (t->v[i].used)
			wtable_put(&nt, t->v[i]);
	free(t->v);
	*t = nt;
	return 0;
}

/* Linear-probing removal with backward shift (no tombstones). */
static void wtable_remove(struct wtable *t, struct wslot *w)
{
	size_t mask = t->cap - 1;
	size_t i = (size_t)(w - t->v);

	t->v[i].used = false;
	t->n--;
	for (size_t j = (i + 1) & mask; t->v[j].used; j = (j + 1) & mask) {
		size_t home = cookie_hash(t->v[j].cookie) & mask;

		/* Move j back to i if i lies cyclically in [home, j). */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			t->v[i] = t->v[j];
			t->v[j].used = false;
			i = j;
		}
	}
}

/* ---- monitor operations ---------------------------------------------- */

static int uffd_watch(struct monitor *mon, uint64_t cookie, uintptr_t start,
		      uintptr_t end)
{
	struct uffd_monitor *m = to_uffd(mon);
	int failed = atomic_load(&m->sh->failed);
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
	if (wtable_find(&m->watches, cookie))
		return -EEXIST;
	/* Allocate first: once registered, nothing may fail half-way. */
	if (wtable_reserve(&m->watches) ||
	    segs_reserve(&m->segs, segs_bound(m->watches.n + 1)))
		return -ENOMEM;

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
		rc = check_private_anon(m, start, end);
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
		return rc;
	}
	wtable_put(&m->watches,
		   (struct wslot){ .cookie = cookie, .start = start, .end = end });
	segs_add(&m->segs, start, end);
	return 0;
}

static void uffd_unwatch(struct monitor *mon, uint64_t cookie)
{
	struct uffd_monitor *m = to_uffd(mon);
	struct wslot *w = wtable_find(&m->watches, cookie);
	uintptr_t start, end;

	if (!w)
		return;
	start = w->start;
	end = w->end;
	wtable_remove(&m->watches, w);
	if (atomic_load(&m->forked))
		return;	/* the registrations are the parent's */
	segs_sub(m, start, end);
}

static bool uffd_changed(struct monitor *mon)
{
	struct uffd_monitor *m = to_uffd(mon);
	struct shared *sh = m->sh;

	if (atomic_load_explicit(&sh->seq, memory_order_acquire) & 1)
		return true;
	return atomic_load_explicit(&sh->gen, memory_order_acquire) !=
	       atomic_load_explicit(&m->seen_gen, memory_order_acquire);
}

/* Wait until the read section running now (if any) has published. */
static void wait_reader_section(struct uffd_monitor *m)
{
	uint64_t s = atomic_load_explicit(&m->sh->seq, memory_order_acquire);
	unsigned int spins = 0;

	if (!(s & 1))
		return;
	while (atomic_load_explicit(&m->sh->seq, memory_order_acquire) == s) {
		if (++spins > 100)
			sched_yield();
	}
}

/* Insertion sort: a chunk is small, and qsort() may allocate. */
static void sort_items(struct item *v, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		struct item x = v[i];
		size_t j = i;

		for (; j > 0 && v[j - 1].start > x.start; j--)
			v[j] = v[j - 1];
		v[j] = x;
	}
}

/* Report a batch of ranges, sorted and merged (the cache scans per call). */
static int report_batch(struct item *v, size_t n, monitor_inval_fn fn,
			void *ctx)
{
	int reported = 0;
	size_t i = 0;

	sort_items(v, n);
	while (i < n) {
		uintptr_t s = v[i].start, e = v[i].end;

		for (i++; i < n && v[i].start <= e; i++)
			if (v[i].end > e)
				e = v[i].end;
		fn(ctx, MONITOR_COOKIE_ANY, s, e, 0);
		reported++;
	}
	return reported;
}

static int consume_ring(struct uffd_monitor *m, monitor_inval_fn fn, void *ctx)
{
	struct shared *sh = m->sh;
	uint64_t head = atomic_load_explicit(&sh->head, memory_order_acquire);
	uint64_t t = atomic_load_explicit(&sh->tail, memory_order_relaxed);
	struct item batch[REPORT_CHUNK];
	size_t n = 0;
	int reported = 0;

	for (; t != head; t++) {
		struct item it = sh->ring[t & sh->ring_mask];

		if (it.kind == ITEM_ORPHAN) {
			/* Moved registration: keep it only where watched. */
			unregister_uncovered(m, it.start, it.end);
			continue;
		}
		batch[n++] = it;
		if (n == REPORT_CHUNK) {
			reported += report_batch(batch, n, fn, ctx);
			n = 0;
		}
	}
	reported += report_batch(batch, n, fn, ctx);
	atomic_store_explicit(&sh->tail, t, memory_order_release);
	return reported;
}

static int uffd_drain(struct monitor *mon, monitor_inval_fn fn, void *ctx)
{
	struct uffd_monitor *m = to_uffd(mon);
	struct shared *sh = m->sh;
	uint64_t gen;
	int failed, reported;

	if (in_child(m))
		return -ECHILD;
	wait_reader_section(m);
	gen = atomic_load_explicit(&sh->gen, memory_order_acquire);
	failed = atomic_load(&sh->failed);
	if (failed) {
		atomic_store_explicit(&m->seen_gen, gen, memory_order_release);
		return -failed;
	}
	if (atomic_exchange(&sh->overflow, false)) {
		/* Ranges were lost: everything may have changed. */
		atomic_store_explicit(&sh->tail,
				      atomic_load_explicit(&sh->head,
							   memory_order_acquire),
				      memory_order_release);
		fn(ctx, MONITOR_COOKIE_ANY, 0, UINTPTR_MAX, 0);
		reported = 1;
	} else {
		reported = consume_ring(m, fn, ctx);
	}
	atomic_store_explicit(&m->seen_gen, gen, memory_order_release);
	return reported;
}

static void stop_reader(struct uffd_monitor *m)
{
	uint64_t one = 1;

	if (!m->reader_running)
		return;
	atomic_store(&m->sh->stop, true);
	while (write(m->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
	pthread_join(m->reader, NULL);
	m->reader_running = false;
}

static void free_monitor(struct uffd_monitor *m)
{
	if (m->sh && atomic_load(&m->sh->failed) == EBADF)
		m->uffd = -1;	/* already closed, maybe reused: not ours */
	if (m->uffd >= 0)
		close(m->uffd);	/* drops every registration, wakes waiters */
	if (m->wakefd >= 0)
		close(m->wakefd);
	if (m->sh)
		munmap(m->sh, m->sh_size);
	free(m->watches.v);
	free(m->segs.v);
	free(m);
}

static void uffd_close(struct monitor *mon)
{
	struct uffd_monitor *m = to_uffd(mon);

	open_list_del(m);
	if (!in_child(m))
		stop_reader(m);
	free_monitor(m);
}

static const struct monitor_ops uffd_ops = {
	.name = "uffd",
	.watch = uffd_watch,
	.unwatch = uffd_unwatch,
	.changed = uffd_changed,
	.drain = uffd_drain,
	.close = uffd_close,
};

/* ---- opening ----------------------------------------------------------- */

static int open_devnode(int flags)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	int fd, err;

	if (dev < 0)
		return -errno;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	err = errno;
	close(dev);
	return fd < 0 ? -err : fd;
}

/*
 * A new uffd: the system call first, /dev/userfaultfd where the system
 * call is refused (vm.unprivileged_userfaultfd=0 without
 * UFFD_USER_MODE_ONLY, seccomp) but the device node is accessible.
 */
static int open_uffd(bool user_mode_only, bool force_devnode, bool *devnode)
{
	int flags = O_CLOEXEC | O_NONBLOCK |
		    (user_mode_only ? UFFD_USER_MODE_ONLY : 0);
	int fd = -ENOSYS;

	*devnode = false;
	if (!force_devnode) {
		fd = (int)syscall(SYS_userfaultfd, flags);
		if (fd < 0)
			fd = -errno;
		/* Before 5.11 the flag is unknown: then no flag at all. */
		if (fd == -EINVAL && user_mode_only)
			return open_uffd(false, false, devnode);
	}
	if (fd < 0) {
		int dfd = open_devnode(flags);

		if (dfd >= 0) {
			*devnode = true;
			return dfd;
		}
		log_debug("uffd: userfaultfd(): %s; /dev/userfaultfd: %s",
			  strerror(-fd), strerror(-dfd));
		if (force_devnode)
			fd = dfd;
	}
	return fd;
}

static int uffd_api(int fd, uint64_t *features)
{
	struct uffdio_api api = {
		.api = UFFD_API,
		/* No EVENT_FORK: children must not inherit registrations. */
		.features = UFFD_FEATURE_EVENT_UNMAP |
			    UFFD_FEATURE_EVENT_REMOVE |
			    UFFD_FEATURE_EVENT_REMAP,
	};

	if (ioctl(fd, UFFDIO_API, &api))
		return -errno;
	*features = api.features;
	return 0;
}

/*
 * Try the registration mode on a private page of our own, and the
 * MADV_POPULATE_WRITE (5.14) that watch() relies on.
 */
static int probe_mode(int fd, uint64_t mode, uintptr_t page)
{
	void *p = mmap(NULL, page, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register r = {
		.range = { .start = (uintptr_t)p, .len = page },
		.mode = mode,
	};
	int rc = 0;

	if (p == MAP_FAILED)
		return -errno;
	/* ENOEXEC stands for "this kernel lacks MADV_POPULATE_WRITE". */
	if (madvise(p, page, MADV_POPULATE_WRITE))
		rc = errno == EINVAL ? -ENOEXEC : -errno;
	if (rc == 0 && ioctl(fd, UFFDIO_REGISTER, &r))
		rc = -errno;
	if (rc == 0)
		ioctl(fd, UFFDIO_UNREGISTER, &r.range);
	munmap(p, page);
	return rc;
}

/*
 * Write-protect mode needs no fault handling and is preferred; missing
 * mode needs a uffd that also sees faults taken by the kernel (a
 * user-mode-only one would turn them into EFAULT), i.e. privileges or
 * /dev/userfaultfd.
 */
static int setup_uffd(struct uffd_monitor *m, unsigned int flags)
{
	bool devnode = flags & UFFD_OPEN_FORCE_DEVNODE;
	uint64_t features = 0;
	int fd, rc;

	if (!(flags & UFFD_OPEN_FORCE_MISSING)) {
		fd = open_uffd(true, devnode, &m->devnode);
		if (fd < 0)
			return fd;
		rc = uffd_api(fd, &features);
		if (rc == 0 && (features & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
			rc = probe_mode(fd, UFFDIO_REGISTER_MODE_WP, m->page);
		else if (rc == 0)
			rc = -EOPNOTSUPP;
		if (rc == 0) {
			m->uffd = fd;
			m->reg_mode = UFFDIO_REGISTER_MODE_WP;
			return 0;
		}
		close(fd);
		if (rc == -ENOEXEC)
			return -EOPNOTSUPP;	/* no MADV_POPULATE_WRITE */
		log_debug("uffd: write-protect mode unusable (%s), trying missing-page mode",
			  strerror(-rc));
	}
	fd = open_uffd(false, devnode, &m->devnode);
	if (fd < 0)
		return fd;
	rc = uffd_api(fd, &features);
	if (rc == 0)
		rc = probe_mode(fd, UFFDIO_REGISTER_MODE_MISSING, m->page);
	if (rc < 0) {
		close(fd);
		return rc == -ENOEXEC ? -EOPNOTSUPP : rc;
	}
	m->uffd = fd;
	m->reg_mode = UFFDIO_REGISTER_MODE_MISSING;
	return 0;
}

static int setup_shared(struct uffd_monitor *m, unsigned int ring_capacity)
{
	unsigned int cap = DEFAULT_RING_CAPACITY;

	if (ring_capacity) {
		cap = 1;
		while (cap < ring_capacity)
			cap *= 2;
	}
	m->sh_size = sizeof(struct shared) + cap * sizeof(struct item);
	m->sh = mmap(NULL, m->sh_size, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m->sh == MAP_FAILED) {
		m->sh = NULL;
		return -errno;
	}
	m->sh->ring_mask = cap - 1;	/* the mapping starts zeroed */
	return 0;
}

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
	m->uffd = m->wakefd = -1;
	m->page = (uintptr_t)(page > 0 ? page : 4096);
	m->owner = getpid();
	m->maps_query = !(flags & UFFD_OPEN_FORCE_MAPS_TEXT);
	rc = setup_uffd(m, flags);
	if (rc == 0)
		rc = setup_shared(m, ring_capacity);
	if (rc == 0) {
		m->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (m->wakefd < 0)
			rc = -errno;
	}
	if (rc == 0)
		rc = start_reader(m);
	if (rc < 0) {
		free_monitor(m);
		errno = -rc;
		return NULL;
	}
	open_list_add(m);
	log_debug("uffd: monitor open (%s mode%s)",
		  m->reg_mode == UFFDIO_REGISTER_MODE_WP ? "write-protect" :
							   "missing-page",
		  m->devnode ? ", via /dev/userfaultfd" : "");
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

	out->events = atomic_load(&m->sh->events);
	out->faults = atomic_load(&m->sh->faults);
	out->overflows = atomic_load(&m->sh->overflows);
	out->missing_mode = m->reg_mode == UFFDIO_REGISTER_MODE_MISSING;
	out->devnode = m->devnode;
	out->fd = m->uffd;
}
