/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * The userfaultfd monitor's reader thread and the ring it fills: the
 * reader reads the uffd's events and queues the ranges they invalidate;
 * the monitor (the consumer, serialised by the cache) takes them.  The
 * rules that keep the reader deadlock-free are in uffd_reader.c.
 */
#ifndef UMMUSHIM_UFFD_READER_H
#define UMMUSHIM_UFFD_READER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "monitor.h"

#define UFFD_RING_DEFAULT 4096u	/* ranges queued between drains */

enum uffd_item_kind {
	UFFD_ITEM_INVAL,	/* the pages of [start, end) changed */
	UFFD_ITEM_ORPHAN,	/* mremap moved a registration to [start, end) */
};

struct uffd_item {
	uintptr_t start, end;
	enum uffd_item_kind kind;
	unsigned int flags;	/* MONITOR_INVAL_* */
};

/*
 * State shared by the reader and the consumers, in its own mapping so
 * that it never shares a page with memory an application registers (in
 * missing mode a fault on it would wait for the reader itself): the reader
 * touches nothing else but its own stack.
 */
struct uffd_shared {
	/* Set before the reader starts, then read-only. */
	int uffd, wakefd, notifyfd;
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
	_Alignas(64) struct uffd_item ring[];
};

struct uffd_reader {
	struct uffd_shared *sh;
	size_t sh_size;
	int wakefd;		/* an eventfd: uffd_reader_stop() wakes it */
	int notifyfd;		/* an eventfd: readable after a publication */
	bool running;
	pthread_t thread;
};

/* The ring (@ring_capacity 0: the default) and the wake-up eventfd. */
int uffd_reader_init(struct uffd_reader *r, unsigned int ring_capacity);
/* Start reading @uffd (its registrations use pages of @page bytes). */
int uffd_reader_start(struct uffd_reader *r, int uffd, uintptr_t page);
void uffd_reader_stop(struct uffd_reader *r);
void uffd_reader_destroy(struct uffd_reader *r);
/* In a forked child: no reader runs here; pending() stays true. */
void uffd_reader_forget(struct uffd_reader *r);

/* True while a read section runs or something was published after @seen_gen. */
bool uffd_reader_pending(const struct uffd_reader *r, uint64_t seen_gen);
/*
 * @notifyfd is readable from each publication (or failure) until this is
 * called: the consumer calls it before it settles and takes the items.
 */
void uffd_reader_unnotify(struct uffd_reader *r);
/* Wait until the read section running now (if any) has published; the gen. */
uint64_t uffd_reader_settle(struct uffd_reader *r);
/* 0, or the errno that broke the reader (EBADF: the uffd was closed). */
int uffd_reader_failed(const struct uffd_reader *r);
/* True (once) when the ring overflowed: everything is invalid. */
bool uffd_reader_take_overflow(struct uffd_reader *r);
/* Take up to @max queued items, oldest first. */
size_t uffd_reader_take(struct uffd_reader *r, struct uffd_item *out,
			size_t max);
/*
 * Report @n invalidation items through @fn, sorted and merged (the cache
 * scans its entries per call); a merged range is MONITOR_INVAL_UNMAPPED
 * only where every part is.  Reorders @v.  Returns the calls made.
 */
int uffd_items_report(struct uffd_item *v, size_t n, monitor_inval_fn fn,
		      void *ctx);
void uffd_reader_counters(const struct uffd_reader *r, uint64_t *events,
			  uint64_t *faults, uint64_t *overflows);

#endif /* UMMUSHIM_UFFD_READER_H */
