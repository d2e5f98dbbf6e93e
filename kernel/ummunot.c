// SPDX-License-Identifier: GPL-2.0-only
/*
 * ummunot: tell user space when the pages behind its address ranges change.
 *
 * RDMA libraries cache memory registrations; a registration goes stale as
 * soon as the memory behind it is unmapped or replaced.  A process opens
 * /dev/ummunot, registers the ranges it caches, and reads an event for
 * every registration whose pages were invalidated.
 *
 * Design: the cost in the invalidating context does not depend on the
 * number of registrations.  Each open file owns ONE mmu_interval_notifier
 * covering the whole address space.  Its callback, which may run in any
 * task (kswapd, kcompactd, khugepaged, the OOM reaper, another task's
 * reclaim), only asks an interval tree of the file's registrations whether
 * the range hits any of them (O(log n)), records the range in a small
 * preallocated set (merging ranges, widening when the set is full, never
 * dropping one), bumps the generation counter and wakes the reader.  Which
 * registrations the recorded ranges hit, and their events, is worked out
 * in read(), in the owner's context and charged to it (O(log n + hits)).
 *
 * Correctness argument, for the promises of the ABI:
 *
 * (a) The counter moves before the old pages can be freed: the callback
 *     bumps it before returning, and the kernel frees the pages only after
 *     invalidate_range_start returned (they are still mapped until then).
 *
 * (b) No event is lost.  A range that hits a registration is recorded
 *     under tree_lock, the same lock under which registrations enter and
 *     leave the tree, so the hit is decided against a consistent tree.
 *     The set of ranges only merges entries (a merged entry contains both),
 *     so every registration hit by a recorded range is still hit by some
 *     entry.  Ranges leave the set only by being drained under tree_lock
 *     into drained[], which is applied to the registrations under
 *     uf->lock before anything else can change the registrations
 *     (REGISTER, UNREGISTER and read() all drain first).
 *
 * (c) A REGISTER that returns has no in-flight invalidation it could miss.
 *     An invalidation whose callback runs after the registration entered
 *     the tree records it.  One whose callback ran before called
 *     mmu_interval_set_seq() with the mm's current invalidation sequence;
 *     REGISTER then calls mmu_interval_read_begin(), which sleeps until
 *     that sequence ends, i.e. until the page tables of the range no
 *     longer map the old pages.  It does so after dropping uf->lock.
 *
 * (d) Readiness: every recorded range hits a registration still in the
 *     tree (UNREGISTER drains before removing one), so a file with recorded
 *     ranges has an INVAL to deliver -- unless read() finds that the range
 *     was a page-table split that left the registration's frames in place
 *     (see "Page-table splits"); then the file was readable and the
 *     counter moved for nothing, which user space sees as EAGAIN.  A LAST
 *     event is only produced when the set is empty, under tree_lock,
 *     together with the counter value it reports: every invalidation that
 *     counter counts has been delivered as an INVAL (or found harmless)
 *     before it.
 *
 * (e) Nothing a user registers makes a kernel thread loop: the callback
 *     does O(log n) work plus O(UMMUNOT_NR_RANGES) on the set, per file;
 *     with the set full, O(UMMUNOT_NR_RANGES * log n) to widen an entry
 *     over no registration where it can (ummunot_ranges_add()).
 *     Files per mm are capped (max_files_per_mm).
 */

#include <linux/cred.h>
#include <linux/fs.h>
#include <linux/hashtable.h>
#include <linux/interval_tree.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/poll.h>
#include <linux/rbtree.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/uidgid.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include <ummunot.h>

static unsigned int max_regions = 1U << 20;
module_param(max_regions, uint, 0644);
MODULE_PARM_DESC(max_regions, "Maximum registrations per open file");

/*
 * The device is meant to be open to all users, so bound the kernel memory
 * all of them together can pin in registrations (about 100 bytes each),
 * and what one user may take of it.
 */
static unsigned long max_total_regions = 1UL << 24;
module_param(max_total_regions, ulong, 0644);
MODULE_PARM_DESC(max_total_regions, "Maximum registrations in the system");

static unsigned long max_user_regions = 1UL << 22;
module_param(max_user_regions, ulong, 0644);
MODULE_PARM_DESC(max_user_regions, "Maximum registrations per user (uid)");

static unsigned int max_user_files = 4096;
module_param(max_user_files, uint, 0644);
MODULE_PARM_DESC(max_user_files, "Maximum open files per user (uid)");

/* Every file's callback runs on every invalidation of its mm. */
static unsigned int max_files_per_mm = 16;
module_param(max_files_per_mm, uint, 0644);
MODULE_PARM_DESC(max_files_per_mm, "Maximum open files per address space");

/* How long a page-table snapshot may hold its folio references. */
static unsigned int snapshot_lifetime_ms = 1000;
module_param(snapshot_lifetime_ms, uint, 0644);
MODULE_PARM_DESC(snapshot_lifetime_ms,
		 "Milliseconds a page-table snapshot keeps its pages before it is dropped");

static atomic_long_t ummunot_total_regions = ATOMIC_LONG_INIT(0);

/*
 * Registrations come from their own slab cache, so leaks show in
 * /proc/slabinfo.  SLAB_NO_MERGE exists from Linux 6.5; before that the
 * cache may be merged with a compatible one unless the kernel is booted
 * with slab_nomerge (the VM tests are).
 */
static struct kmem_cache *ummunot_region_cache;
#ifdef SLAB_NO_MERGE
#define UMMUNOT_SLAB_NO_MERGE SLAB_NO_MERGE
#else
#define UMMUNOT_SLAB_NO_MERGE 0
#endif

/* Distinct invalidated ranges a file remembers before it widens one. */
#define UMMUNOT_NR_RANGES 16

/* Page-table snapshots a file can hold at once (see "Page-table splits"). */
#define UMMUNOT_NR_SNAPSHOTS 2
#define UMMUNOT_NO_SNAPSHOT (-1)

/**
 * struct ummunot_range - an invalidated range not yet matched to registrations
 * @start:     first byte
 * @end:       one past the last byte
 * @unmapped:  the range (or one merged into it) was unmapped
 * @snapshot:  the range is one PMD whose mapping was recorded in
 *             ummunot_file.snapshots[@snapshot] when the invalidation
 *             started (a candidate no-op split), or UMMUNOT_NO_SNAPSHOT
 */
struct ummunot_range {
	unsigned long start;
	unsigned long end;
	bool unmapped;
	int snapshot;
};

/**
 * struct ummunot_snap_page - one page of a page-table snapshot
 * @folio: referenced folio (the reference keeps its frames from being
 *         reused before the snapshot is compared), or NULL
 * @pfn:   the frame the page was mapped to (when @folio and comparable)
 */
struct ummunot_snap_page {
	struct folio *folio;
	unsigned long pfn;
};

/* Life of a snapshot; every change is made under ummunot_file.tree_lock. */
enum ummunot_snap_state {
	UMMUNOT_SNAP_FREE,	/* the callback may take it */
	UMMUNOT_SNAP_TAKEN,	/* filled; a recorded range may refer to it */
	UMMUNOT_SNAP_DRAINED,	/* its range is being applied (uf->lock) */
	UMMUNOT_SNAP_EXPIRING,	/* the expiry work drops its references */
};

/**
 * struct ummunot_snapshot - what one PMD range mapped when an invalidation
 *                           of exactly that range started
 * @state:      see enum ummunot_snap_state
 * @expires:    when a TAKEN snapshot is dropped (jiffies)
 * @seq:        the mm's invalidation sequence of the invalidation it was
 *              taken for: it may be compared once that has ended
 * @start:      first byte of the PMD range
 * @huge:       a huge PMD mapped @huge_folio from frame @huge_pfn
 * @huge_folio: referenced folio of the huge PMD, or NULL
 * @huge_pfn:   its first frame
 * @pages:      otherwise, per page, what its PTE mapped (PTRS_PER_PTE)
 * @keep:       per page: comparable -- unchanged if the page maps
 *              @pages[i].pfn again, or nothing when @pages[i].folio is NULL
 *
 * Everything but @state belongs to whoever moved @state last: the callback
 * while it fills the snapshot, the owner's context that drained it, or the
 * expiry work.
 */
struct ummunot_snapshot {
	enum ummunot_snap_state state;
	unsigned long expires;
	unsigned long seq;
	unsigned long start;
	bool huge;
	struct folio *huge_folio;
	unsigned long huge_pfn;
	struct ummunot_snap_page *pages;
	DECLARE_BITMAP(keep, PTRS_PER_PTE);
};

/**
 * struct ummunot_acct - per-user or per-mm usage, in a global hash table
 * @node:        link in ummunot_users or ummunot_mms
 * @uid:         the user (per-user entries)
 * @mm:          the address space (per-mm entries; pinned by the files)
 * @nr_files:    open files counted here (under ummunot_acct_lock)
 * @nr_regions:  registrations of the user's files (per-user entries)
 */
struct ummunot_acct {
	struct hlist_node node;
	kuid_t uid;
	struct mm_struct *mm;
	unsigned int nr_files;
	atomic_long_t nr_regions;
};

/* Protects both tables and every entry's nr_files; taken in open/release. */
static DEFINE_MUTEX(ummunot_acct_lock);
static DEFINE_HASHTABLE(ummunot_users, 6);
static DEFINE_HASHTABLE(ummunot_mms, 6);

/**
 * struct ummunot_file - state of one open /dev/ummunot
 * @mm:           the opener's address space (mmgrab'ed); only it may use
 *                the file
 * @user:         the opener's per-user accounting entry
 * @mm_acct:      the per-mm accounting entry
 * @notifier:     interval notifier over the whole address space
 * @lock:         serialises registration changes and event delivery; may
 *                sleep, never taken in the notifier.  Held while the tree
 *                of registrations is walked without @tree_lock.
 * @regions:      registrations by cookie (under @lock)
 * @nr_regions:   size of @regions (under @lock)
 * @features:     granted UMMUNOT_FEATURE_* bits (written under @lock)
 * @used:         a registration has succeeded on this file (under @lock)
 * @pending:      registrations with an unread event, oldest first
 *                (under @lock)
 * @last_owed:    the pending list became empty and no LAST event has been
 *                read since (under @lock)
 * @ready:        @pending is not empty or @last_owed (written under @lock,
 *                read locklessly for poll)
 * @drained:      ranges taken from @ranges, being applied (under @lock)
 * @nr_drained:   entries in @drained (under @lock)
 * @drained_snapshots: bit i: @snapshots[i] was drained with @ranges, so
 *                it belongs to @drained (under @lock)
 * @settled:      snapshots of invalidations up to @settled_seq may be
 *                compared: they have ended (under @lock; see
 *                ummunot_settle())
 * @settled_seq:  see @settled
 * @tree_lock:    protects @itree changes, @ranges, @nr_ranges and the
 *                counter; taken in the notifier, so a spinlock under which
 *                nothing sleeps or allocates.  Changing @itree needs both
 *                @lock and @tree_lock; reading it needs either.
 * @itree:        registrations by address range
 * @ranges:       invalidated ranges not yet matched to registrations
 * @nr_ranges:    entries in @ranges
 * @snapshots:    page-table snapshots of candidate no-op splits
 * @expire:       drops the snapshots' references when nobody compared them
 *                in time
 * @counter_page: page holding the generation counter, mappable read-only
 * @counter:      the generation counter, in @counter_page
 * @read_wait:    readers and pollers waiting for events
 * @fasync:       SIGIO subscribers
 */
struct ummunot_file {
	struct mm_struct *mm;
	struct ummunot_acct *user;
	struct ummunot_acct *mm_acct;
	struct mmu_interval_notifier notifier;

	struct mutex lock;		/* registrations, delivery */
	struct rb_root regions;
	unsigned int nr_regions;
	u32 features;
	bool used;
	struct list_head pending;
	bool last_owed;
	bool ready;
	struct ummunot_range drained[UMMUNOT_NR_RANGES];
	unsigned int nr_drained;
	unsigned long drained_snapshots;
	bool settled;
	unsigned long settled_seq;

	spinlock_t tree_lock;		/* itree changes, ranges; notifier-safe */
	struct rb_root_cached itree;
	struct ummunot_range ranges[UMMUNOT_NR_RANGES];
	unsigned int nr_ranges;
	struct ummunot_snapshot snapshots[UMMUNOT_NR_SNAPSHOTS];
	struct delayed_work expire;
	struct page *counter_page;
	u64 *counter;

	wait_queue_head_t read_wait;
	struct fasync_struct *fasync;
};

/**
 * struct ummunot_region - one registration and its embedded event
 * @it:         node in ummunot_file.itree: [start, last] of the range
 * @node:       link in ummunot_file.regions
 * @cookie:     user's tag for the registration
 * @pending:    link in ummunot_file.pending while an event is unread
 * @hint_start: first invalidated byte since the event was last read
 * @hint_end:   one past the last invalidated byte since then
 * @unmapped:   some of the hinted range was unmapped
 *
 * Everything but @it's tree linkage is under ummunot_file.lock.
 */
struct ummunot_region {
	struct interval_tree_node it;
	struct rb_node node;
	u64 cookie;
	struct list_head pending;
	unsigned long hint_start;
	unsigned long hint_end;
	bool unmapped;
};

static bool ummunot_is_owner(const struct ummunot_file *uf)
{
	return current->mm == uf->mm;
}

/* Invalidations that keep the same pages in place are no news for a NIC. */
static bool ummunot_event_keeps_pages(enum mmu_notifier_event event)
{
	switch (event) {
	case MMU_NOTIFY_PROTECTION_VMA:
	case MMU_NOTIFY_PROTECTION_PAGE:
	case MMU_NOTIFY_SOFT_DIRTY:
		return true;
	default:
		return false;
	}
}

static unsigned long ummunot_gap(const struct ummunot_range *r,
				 unsigned long start, unsigned long end)
{
	if (end < r->start)
		return r->start - end;
	if (start > r->end)
		return start - r->end;
	return 0;
}

static void ummunot_range_widen(struct ummunot_range *r, unsigned long start,
				unsigned long end, bool unmapped)
{
	r->start = min(r->start, start);
	r->end = max(r->end, end);
	r->unmapped |= unmapped;
	r->snapshot = UMMUNOT_NO_SNAPSHOT;	/* no longer one PMD */
}

/*
 * Merge into entry @i every other entry of the same kind that overlaps or
 * touches it, until none is left.  At most UMMUNOT_NR_RANGES^2 steps.
 */
static void ummunot_ranges_absorb(struct ummunot_file *uf, unsigned int i)
{
	struct ummunot_range *r = &uf->ranges[i];
	unsigned int j;
	bool merged;

	lockdep_assert_held(&uf->tree_lock);
	do {
		merged = false;
		for (j = 0; j < uf->nr_ranges; j++) {
			struct ummunot_range *o = &uf->ranges[j];

			if (j == i || o->unmapped != r->unmapped ||
			    o->snapshot != UMMUNOT_NO_SNAPSHOT ||
			    ummunot_gap(r, o->start, o->end))
				continue;
			ummunot_range_widen(r, o->start, o->end, o->unmapped);
			/* Keep arrival order: events come out in it. */
			memmove(o, o + 1, (uf->nr_ranges - j - 1) * sizeof(*o));
			WRITE_ONCE(uf->nr_ranges, uf->nr_ranges - 1);
			if (j < i)
				r = &uf->ranges[--i];
			merged = true;
			break;
		}
	} while (merged);
}

/* Is widening a (gap_free, same, gap) entry better than the best so far? */
static bool ummunot_better_widening(bool gap_free, bool same, unsigned long gap,
				    bool best_free, bool best_same,
				    unsigned long best_gap)
{
	if (gap_free != best_free)
		return gap_free;
	if (same != best_same)
		return same;
	return gap < best_gap;
}

/*
 * Does widening @r to cover [@start, @end) swallow no registration, i.e.
 * is the gap between them free of registrations?  O(log n).
 */
static bool ummunot_gap_is_free(struct ummunot_file *uf,
				const struct ummunot_range *r,
				unsigned long start, unsigned long end)
{
	unsigned long gap_start, gap_end;

	if (!ummunot_gap(r, start, end))
		return true;
	gap_start = end < r->start ? end : r->end;
	gap_end = end < r->start ? r->start : start;
	return !interval_tree_iter_first(&uf->itree, gap_start, gap_end - 1);
}

/*
 * Record @new: merge it with an entry of the same kind it overlaps or
 * touches, else append it, else (set full) widen the nearest entry.  The
 * choice prefers, in this order, an entry whose gap to @new holds no
 * registration (widening over one would report it although its pages
 * never changed: a false invalidation), then one of the same kind (else
 * the widened entry's registrations may get a needless UNMAPPED flag:
 * they are invalidated anyway, only the cause is over-reported).
 * Never drops a range.  Candidate no-op splits are kept apart while
 * there is room, so that read() can check them.
 */
static void ummunot_ranges_add(struct ummunot_file *uf,
			       const struct ummunot_range *new)
{
	unsigned long gap, best_gap = ULONG_MAX;
	unsigned int i, best = 0;
	bool best_same = false, best_free = false;

	lockdep_assert_held(&uf->tree_lock);
	for (i = 0; i < uf->nr_ranges; i++) {
		struct ummunot_range *r = &uf->ranges[i];
		bool same = r->unmapped == new->unmapped, gap_free;

		gap = ummunot_gap(r, new->start, new->end);
		if (same && !gap && new->snapshot == UMMUNOT_NO_SNAPSHOT &&
		    r->snapshot == UMMUNOT_NO_SNAPSHOT) {
			best = i;
			goto merge;
		}
		if (uf->nr_ranges < UMMUNOT_NR_RANGES)
			continue;	/* there is room: nothing is widened */
		/* Not even a free gap would make this one better: no query. */
		if (best_free && !ummunot_better_widening(true, same, gap,
							  best_free, best_same,
							  best_gap))
			continue;
		gap_free = ummunot_gap_is_free(uf, r, new->start, new->end);
		if (ummunot_better_widening(gap_free, same, gap, best_free,
					    best_same, best_gap)) {
			best = i;
			best_gap = gap;
			best_same = same;
			best_free = gap_free;
		}
	}
	if (uf->nr_ranges < UMMUNOT_NR_RANGES) {
		uf->ranges[uf->nr_ranges] = *new;
		WRITE_ONCE(uf->nr_ranges, uf->nr_ranges + 1);
		return;
	}
merge:
	ummunot_range_widen(&uf->ranges[best], new->start, new->end,
			    new->unmapped);
	ummunot_ranges_absorb(uf, best);
}

/*
 * Page-table splits.  Linux announces the split of a PMD as an
 * invalidation (MMU_NOTIFY_CLEAR) of the whole 2 MiB PMD range, yet the
 * same frames stay mapped, now by PTEs: when part of a PMD-mapped huge page
 * is unmapped, mprotect()ed or madvise()d, and also -- before it even looks
 * whether a huge page is mapped there -- whenever a VMA is split or trimmed
 * at an address whose whole 2 MiB block lies inside the VMA
 * (vma_adjust_trans_huge()), which the munmap() of a neighbouring buffer
 * merged into the same VMA does.  A zap of exactly that range looks the
 * same to a notifier.
 *
 * To tell them apart, when a CLEAR invalidation of exactly one PMD range
 * hits a registration, the callback takes a snapshot of what the range
 * maps: a huge PMD's folio, or each PTE's page, taking a reference on every
 * folio it records.  read() then compares page by page: a page is
 * unchanged if it maps the same frame again (or still nothing).  A
 * registration whose part of the range is wholly unchanged gets no event
 * from that range.  This is sound because
 *  - a snapshot is compared only once its invalidation has ended (see
 *    ummunot_settle(), called before uf->lock is taken): the callback runs
 *    before the pages are zapped, and a comparison in between would see
 *    them still in place;
 *  - the references keep the recorded frames from being freed and reused,
 *    so the same frame at the same address is the same page (a zapped
 *    page comes back only if the mapping shares it anyway, as a page-cache
 *    page is shared);
 *  - any later change of the range needs another invalidation, recorded
 *    as an entry of its own (a candidate is never merged with another
 *    entry but by widening, which drops the candidacy), and that entry
 *    reports the registration.
 *
 * Bounds: UMMUNOT_NR_SNAPSHOTS snapshots per file, allocated at open; a
 * candidate that finds none free is not checked (it is reported).  Taking
 * one is O(PTRS_PER_PTE) in the callback, with interrupts off for at most
 * UMMUNOT_SNAP_BATCH entries at a time; nothing is put there.  The
 * references keep at most UMMUNOT_NR_SNAPSHOTS PMD ranges of memory the
 * owner had mapped allocated and unmovable until the owner's next read(),
 * REGISTER or UNREGISTER, and not much longer than snapshot_lifetime_ms
 * (a collapse into a huge page, khugepaged's or MADV_COLLAPSE's, fails
 * meanwhile: it invalidates the range before it isolates the pages, so
 * the references are taken first; it is retried later).  Then a work
 * item drops them and the range is reported as any other.  Device memory,
 * PFN maps, hugetlb pages and locked folios (split_huge_page(), migration,
 * reclaim and poisoning unmap with the folio locked, and would fail with
 * our reference) are not recorded.
 *
 * Page tables are read locklessly, every entry once into a local copy,
 * with interrupts off.  In the callback the owner's mm need not be the
 * current one, so what keeps the tables of the invalidated PMD range
 * alive is the invalidating task: it holds mmap_lock or the rmap lock
 * that free_pgtables() and collapses need, and its callers invalidate
 * exactly one PMD range only inside one VMA; a PTE table freed by RCU
 * (pte_free_defer(), 6.6+) outlives the interrupts-off section.  In
 * read() the tables are current's, protected as for GUP-fast.  A folio is
 * recorded
 * only if its PTE and PMD still map it once the reference is held.  An
 * entry read while it changes can only make a page look changed when it
 * was not, or unchanged when a *later* invalidation changed it -- and that
 * one reports the registration by itself.  Only built where THP splits
 * exist and PTE pages are always mapped (no HIGHPTE).
 */
#if defined(CONFIG_TRANSPARENT_HUGEPAGE) && !defined(CONFIG_HIGHPTE)
/* Page-table entries read with interrupts off at a time. */
#define UMMUNOT_SNAP_BATCH 64

/* The PMD covering @addr in @mm, or a none entry.  Interrupts are off. */
static pmd_t ummunot_pmd_lockless(struct mm_struct *mm, unsigned long addr)
{
	pgd_t *pgdp = pgd_offset(mm, addr);
	pgd_t pgd = READ_ONCE(*pgdp);
	p4d_t *p4dp, p4d;
	pud_t *pudp, pud;

	lockdep_assert_irqs_disabled();
	if (pgd_none(pgd) || pgd_bad(pgd))
		return __pmd(0);
	p4dp = p4d_offset_lockless(pgdp, pgd, addr);
	p4d = READ_ONCE(*p4dp);
	if (p4d_none(p4d) || p4d_bad(p4d))
		return __pmd(0);
	pudp = pud_offset_lockless(p4dp, p4d, addr);
	pud = READ_ONCE(*pudp);
	if (pud_none(pud) || pud_bad(pud))
		return __pmd(0);
	return READ_ONCE(*pmd_offset_lockless(pudp, pud, addr));
}

static pmd_t ummunot_pmd_now(struct mm_struct *mm, unsigned long addr)
{
	unsigned long flags;
	pmd_t pmd;

	local_irq_save(flags);
	pmd = ummunot_pmd_lockless(mm, addr);
	local_irq_restore(flags);
	return pmd;
}

static bool ummunot_pmd_is_table(pmd_t pmd)
{
	return pmd_present(pmd) && !pmd_none(pmd) && !pmd_bad(pmd) &&
	       !pmd_trans_huge(pmd);
}

/*
 * A reference on the folio of frame @pfn, unless it has no struct page, is
 * device memory, a hugetlb page (never split into PTEs), locked (the folio
 * lock is held around the unmapping that splitting, migrating, reclaiming
 * or poisoning it does: a reference would make that fail) or being freed.
 * The checks before the reference are racy: they only decide whether the
 * range is checked or reported.
 */
static struct folio *ummunot_folio_try_get(unsigned long pfn)
{
	struct folio *folio;
	struct page *page;

	if (!pfn_valid(pfn))
		return NULL;
	page = pfn_to_page(pfn);
	if (is_zone_device_page(page))
		return NULL;
	folio = page_folio(page);
	if (folio_test_hugetlb(folio) || folio_test_locked(folio))
		return NULL;
	return folio_try_get(folio) ? folio : NULL;
}

/*
 * Is @folio, referenced, still the folio of frame @pfn (not split or freed
 * meanwhile), and can its frames be compared?
 */
static bool ummunot_folio_comparable(struct folio *folio, unsigned long pfn)
{
	return folio && !folio_test_hugetlb(folio) &&
	       page_folio(pfn_to_page(pfn)) == folio;
}

/* Is @pmd a huge mapping of frames that have folios? */
static bool ummunot_pmd_is_huge_page(pmd_t pmd)
{
	if (!pmd_present(pmd) || !pmd_trans_huge(pmd))
		return false;
#ifdef CONFIG_ARCH_SUPPORTS_PMD_PFNMAP
	if (pmd_special(pmd))
		return false;
#endif
	return true;
}

/* Record the huge PMD @pmd, which maps @s's range. */
static void ummunot_snap_huge(struct mm_struct *mm, struct ummunot_snapshot *s,
			      pmd_t pmd)
{
	unsigned long pfn = pmd_pfn(pmd);

	s->huge_folio = ummunot_folio_try_get(pfn);
	if (ummunot_folio_comparable(s->huge_folio, pfn) &&
	    pmd_same(ummunot_pmd_now(mm, s->start), pmd)) {
		s->huge = true;
		s->huge_pfn = pfn;
	}
}

/* Record PTE @i of @s, in the PTE table of @pmd.  Interrupts are off. */
static void ummunot_snap_pte(struct ummunot_snapshot *s, pmd_t *pmd,
			     unsigned int i)
{
	pte_t *ptep = pte_offset_kernel(pmd, s->start + ((unsigned long)i <<
							 PAGE_SHIFT));
	pte_t pte = ptep_get_lockless(ptep);
	struct ummunot_snap_page *sp = &s->pages[i];

	if (pte_none(pte)) {
		__set_bit(i, s->keep);	/* unchanged if it maps nothing still */
		return;
	}
	if (!pte_present(pte) || pte_special(pte))
		return;			/* swapped, migrating, no page: changed */
	sp->pfn = pte_pfn(pte);
	sp->folio = ummunot_folio_try_get(sp->pfn);
	if (ummunot_folio_comparable(sp->folio, sp->pfn) &&
	    pte_same(ptep_get_lockless(ptep), pte))
		__set_bit(i, s->keep);
}

/* Where the batch of PTEs read with interrupts off from @i on ends. */
static unsigned int ummunot_batch_end(unsigned int i)
{
	return min_t(unsigned int, i + UMMUNOT_SNAP_BATCH, PTRS_PER_PTE);
}

/* Record every PTE of @s's range, whose PMD @first is a PTE table. */
static void ummunot_snap_ptes(struct mm_struct *mm, struct ummunot_snapshot *s,
			      pmd_t first)
{
	unsigned int i = 0;

	while (i < PTRS_PER_PTE) {
		unsigned int end = ummunot_batch_end(i);
		unsigned long flags;
		pmd_t pmd;

		local_irq_save(flags);
		pmd = ummunot_pmd_lockless(mm, s->start);
		if (pmd_same(pmd, first)) {
			unsigned int batch = i;

			for (; i < end; i++)
				ummunot_snap_pte(s, &pmd, i);
			/* Table replaced meanwhile: the batch is not compared. */
			if (!pmd_same(ummunot_pmd_lockless(mm, s->start), first))
				bitmap_clear(s->keep, batch, end - batch);
		} else {
			end = PTRS_PER_PTE;	/* replaced: rest not compared */
		}
		local_irq_restore(flags);
		i = end;
	}
}

/*
 * If @r is exactly one PMD range and a snapshot is free, record what the
 * range maps and make @r a candidate no-op split.
 */
static void ummunot_snapshot_take(struct ummunot_file *uf,
				  struct ummunot_range *r, unsigned long seq)
{
	struct ummunot_snapshot *s = NULL;
	unsigned long life;
	unsigned int i;
	pmd_t pmd;

	lockdep_assert_held(&uf->tree_lock);
	if (r->start & ~HPAGE_PMD_MASK || r->end - r->start != HPAGE_PMD_SIZE)
		return;
	/* A full set widens an entry for the range: nothing to compare. */
	if (uf->nr_ranges >= UMMUNOT_NR_RANGES)
		return;
	for (i = 0; i < UMMUNOT_NR_SNAPSHOTS && !s; i++)
		if (uf->snapshots[i].state == UMMUNOT_SNAP_FREE)
			s = &uf->snapshots[i];
	if (!s)
		return;

	s->start = r->start;
	s->seq = seq;
	pmd = ummunot_pmd_now(uf->mm, r->start);
	if (ummunot_pmd_is_huge_page(pmd))
		ummunot_snap_huge(uf->mm, s, pmd);
	else if (ummunot_pmd_is_table(pmd))
		ummunot_snap_ptes(uf->mm, s, pmd);
	else
		return;
	/* Taken even if nothing is comparable: references may be held. */
	life = msecs_to_jiffies(READ_ONCE(snapshot_lifetime_ms));
	s->expires = jiffies + life;
	WRITE_ONCE(s->state, UMMUNOT_SNAP_TAKEN);
	schedule_delayed_work(&uf->expire, life);
	if (s->huge || !bitmap_empty(s->keep, PTRS_PER_PTE))
		r->snapshot = s - uf->snapshots;
}

/* Does page @i of @s map now, as @pte, what it mapped in the snapshot? */
static bool ummunot_page_unchanged(const struct ummunot_snapshot *s,
				   unsigned int i, pte_t pte)
{
	if (s->huge)
		return pte_present(pte) && pte_pfn(pte) == s->huge_pfn + i;
	if (!test_bit(i, s->keep))
		return false;
	if (!s->pages[i].folio)
		return pte_none(pte);
	return pte_present(pte) && pte_pfn(pte) == s->pages[i].pfn;
}

/*
 * Set a bit in @same for every page of @s's range that maps now what it
 * mapped in the snapshot.  Owner's context: the tables are current's.
 */
static void ummunot_snapshot_compare(struct mm_struct *mm,
				     const struct ummunot_snapshot *s,
				     unsigned long *same)
{
	unsigned int i = 0;

	bitmap_zero(same, PTRS_PER_PTE);
	while (i < PTRS_PER_PTE) {
		unsigned int end = ummunot_batch_end(i);
		unsigned long flags;
		pmd_t pmd;

		local_irq_save(flags);
		pmd = ummunot_pmd_lockless(mm, s->start);
		for (; ummunot_pmd_is_table(pmd) && i < end; i++) {
			unsigned long addr = s->start +
					     ((unsigned long)i << PAGE_SHIFT);
			pte_t pte = ptep_get_lockless(pte_offset_kernel(&pmd,
									addr));

			if (ummunot_page_unchanged(s, i, pte))
				__set_bit(i, same);
		}
		local_irq_restore(flags);
		i = end;
	}
}

/* Drop the references of @s and empty it (its state is kept).  Process context. */
static void ummunot_snapshot_put(struct ummunot_snapshot *s)
{
	unsigned int i;

	if (s->huge_folio)
		folio_put(s->huge_folio);
	s->huge_folio = NULL;
	s->huge = false;
	for (i = 0; i < PTRS_PER_PTE; i++) {
		if (s->pages[i].folio)
			folio_put(s->pages[i].folio);
		s->pages[i].folio = NULL;
	}
	bitmap_zero(s->keep, PTRS_PER_PTE);
}

static int ummunot_snapshots_alloc(struct ummunot_file *uf)
{
	unsigned int i;

	for (i = 0; i < UMMUNOT_NR_SNAPSHOTS; i++) {
		uf->snapshots[i].pages = kvcalloc(PTRS_PER_PTE,
						  sizeof(struct ummunot_snap_page),
						  GFP_KERNEL_ACCOUNT);
		if (!uf->snapshots[i].pages)
			return -ENOMEM;
	}
	return 0;
}
#else
static void ummunot_snapshot_take(struct ummunot_file *uf,
				  struct ummunot_range *r, unsigned long seq)
{
}

static void ummunot_snapshot_compare(struct mm_struct *mm,
				     const struct ummunot_snapshot *s,
				     unsigned long *same)
{
	bitmap_zero(same, PTRS_PER_PTE);
}

static void ummunot_snapshot_put(struct ummunot_snapshot *s)
{
}

static int ummunot_snapshots_alloc(struct ummunot_file *uf)
{
	return 0;
}
#endif

/*
 * Free the snapshots in @which, drained or expiring (whoever moved them
 * there owns them): the callback may take them again.  Process context.
 */
static void ummunot_snapshots_free(struct ummunot_file *uf,
				   unsigned long which)
{
	unsigned int i;

	if (!which)
		return;
	for_each_set_bit(i, &which, UMMUNOT_NR_SNAPSHOTS)
		ummunot_snapshot_put(&uf->snapshots[i]);
	spin_lock(&uf->tree_lock);
	for_each_set_bit(i, &which, UMMUNOT_NR_SNAPSHOTS)
		WRITE_ONCE(uf->snapshots[i].state, UMMUNOT_SNAP_FREE);
	spin_unlock(&uf->tree_lock);
}

/* Is sequence @seq at or before @settled (wrap-safe)? */
static bool ummunot_seq_settled(unsigned long seq, unsigned long settled)
{
	return (long)(settled - seq) >= 0;
}

/*
 * Up to which invalidation sequence (*@seq) may snapshots be compared,
 * i.e. which invalidations have ended?  False if there is no snapshot.  A
 * snapshot older than the notifier's latest sequence is settled: a later
 * one started, and they follow each other.  Only for one of the latest
 * sequence does it wait, without uf->lock, until the invalidations in
 * progress in the mm have ended (they are the caller's own mm's, and
 * each ends by itself).
 */
static bool ummunot_settle(struct ummunot_file *uf, unsigned long *seq)
{
	bool any = false, latest = false;
	unsigned int i;

	spin_lock(&uf->tree_lock);
	*seq = uf->notifier.invalidate_seq;
	for (i = 0; i < UMMUNOT_NR_SNAPSHOTS; i++) {
		const struct ummunot_snapshot *s = &uf->snapshots[i];

		if (s->state != UMMUNOT_SNAP_TAKEN)
			continue;
		any = true;
		latest |= s->seq == *seq;
	}
	spin_unlock(&uf->tree_lock);
	if (!any)
		return false;
	if (latest)
		*seq = mmu_interval_read_begin(&uf->notifier);
	else
		*seq -= 1;
	return true;
}

/* Record, under uf->lock, what ummunot_settle() found. */
static void ummunot_set_settled(struct ummunot_file *uf, bool settled,
				unsigned long seq)
{
	lockdep_assert_held(&uf->lock);
	uf->settled = settled;
	uf->settled_seq = seq;
}

/*
 * Drop the snapshots nobody compared in time; their ranges are reported
 * as any other.  Needs tree_lock only: drained snapshots are not touched.
 */
static void ummunot_snapshots_expire(struct work_struct *work)
{
	struct ummunot_file *uf = container_of(to_delayed_work(work),
					       struct ummunot_file, expire);
	unsigned long which = 0, now = jiffies, next = 0;
	bool rearm = false;
	unsigned int i;

	spin_lock(&uf->tree_lock);
	for (i = 0; i < UMMUNOT_NR_SNAPSHOTS; i++) {
		struct ummunot_snapshot *s = &uf->snapshots[i];

		if (s->state != UMMUNOT_SNAP_TAKEN)
			continue;
		if (time_after_eq(now, s->expires)) {
			WRITE_ONCE(s->state, UMMUNOT_SNAP_EXPIRING);
			__set_bit(i, &which);
		} else if (!rearm || time_before(s->expires, next)) {
			next = s->expires;
			rearm = true;
		}
	}
	for (i = 0; i < uf->nr_ranges; i++)
		if (uf->ranges[i].snapshot != UMMUNOT_NO_SNAPSHOT &&
		    test_bit(uf->ranges[i].snapshot, &which))
			uf->ranges[i].snapshot = UMMUNOT_NO_SNAPSHOT;
	spin_unlock(&uf->tree_lock);
	ummunot_snapshots_free(uf, which);
	if (rearm)
		mod_delayed_work(system_wq, &uf->expire, next - now);
}

/**
 * ummunot_invalidate() - interval notifier callback of a file
 * @mni:     the file's notifier
 * @range:   the range being invalidated
 * @cur_seq: the mm's invalidation sequence, for mmu_interval_set_seq()
 *
 * Records the range if it hits a registration, moves the counter and
 * wakes the reader.  O(log n) in the number of registrations; with the
 * range set full, up to UMMUNOT_NR_RANGES more tree queries (see
 * ummunot_ranges_add()).
 *
 * Context: any task invalidating the owner's mm (the owner, kswapd,
 * kcompactd, khugepaged, the OOM reaper, another task's reclaim), with
 * mm locks possibly held and possibly non-blockable.  Takes tree_lock;
 * never sleeps, allocates or fails.
 *
 * Return: true (the invalidation may always proceed).
 */
static bool ummunot_invalidate(struct mmu_interval_notifier *mni,
			       const struct mmu_notifier_range *range,
			       unsigned long cur_seq)
{
	struct ummunot_file *uf =
		container_of(mni, struct ummunot_file, notifier);
	bool hit;

	spin_lock(&uf->tree_lock);
	mmu_interval_set_seq(mni, cur_seq);
	hit = range->start < range->end &&
	      !ummunot_event_keeps_pages(range->event) &&
	      interval_tree_iter_first(&uf->itree, range->start,
				       range->end - 1);
	if (hit) {
		struct ummunot_range r = {
			.start = range->start,
			.end = range->end,
			.unmapped = range->event == MMU_NOTIFY_UNMAP,
			.snapshot = UMMUNOT_NO_SNAPSHOT,
		};

		if (range->event == MMU_NOTIFY_CLEAR)
			ummunot_snapshot_take(uf, &r, cur_seq);
		ummunot_ranges_add(uf, &r);
		WRITE_ONCE(*uf->counter, *uf->counter + 1);
	}
	spin_unlock(&uf->tree_lock);

	if (hit) {
		wake_up_interruptible_poll(&uf->read_wait,
					   EPOLLIN | EPOLLRDNORM);
		kill_fasync(&uf->fasync, SIGIO, POLL_IN);
	}
	return true;
}

static const struct mmu_interval_notifier_ops ummunot_notifier_ops = {
	.invalidate = ummunot_invalidate,
};

static void ummunot_update_ready(struct ummunot_file *uf)
{
	lockdep_assert_held(&uf->lock);
	WRITE_ONCE(uf->ready, !list_empty(&uf->pending) || uf->last_owed);
}

/*
 * Move the recorded ranges to drained[], with the snapshots taken: each
 * belongs to a drained range or to none (its range was widened).  No other
 * drain is being applied (drain and apply share one uf->lock hold).
 */
static void ummunot_drain(struct ummunot_file *uf)
{
	unsigned int i;

	lockdep_assert_held(&uf->lock);
	lockdep_assert_held(&uf->tree_lock);
	memcpy(uf->drained, uf->ranges, uf->nr_ranges * sizeof(uf->ranges[0]));
	uf->nr_drained = uf->nr_ranges;
	WRITE_ONCE(uf->nr_ranges, 0);
	for (i = 0; i < UMMUNOT_NR_SNAPSHOTS; i++) {
		struct ummunot_snapshot *s = &uf->snapshots[i];

		if (s->state == UMMUNOT_SNAP_TAKEN) {
			WRITE_ONCE(s->state, UMMUNOT_SNAP_DRAINED);
			__set_bit(i, &uf->drained_snapshots);
		}
	}
}

/* Queue or widen the registration's event for [start, end). */
static void ummunot_region_mark(struct ummunot_file *uf,
				struct ummunot_region *reg,
				const struct ummunot_range *r)
{
	unsigned long start = max(r->start, reg->it.start);
	unsigned long end = min(r->end - 1, reg->it.last) + 1;

	lockdep_assert_held(&uf->lock);
	if (list_empty(&reg->pending)) {
		reg->hint_start = start;
		reg->hint_end = end;
		reg->unmapped = r->unmapped;
		list_add_tail(&reg->pending, &uf->pending);
		uf->last_owed = false;
	} else {
		reg->hint_start = min(reg->hint_start, start);
		reg->hint_end = max(reg->hint_end, end);
		reg->unmapped |= r->unmapped;
	}
}

/* Are all pages of @reg inside candidate @r unchanged (see @same)? */
static bool ummunot_part_unchanged(const struct ummunot_region *reg,
				   const struct ummunot_range *r,
				   const unsigned long *same)
{
	unsigned long first = (max(reg->it.start, r->start) - r->start) >>
			      PAGE_SHIFT;
	unsigned long last = (min(reg->it.last, r->end - 1) - r->start) >>
			     PAGE_SHIFT;

	return find_next_zero_bit(same, last + 1, first) > last;
}

/*
 * Turn drained[] into events of the registrations it hits, except @skip
 * (a registration inserted after the ranges were recorded) and those a
 * page-table split left unchanged.  The tree cannot change meanwhile: that
 * needs uf->lock, which we hold.  Runs in the owner's context (the page
 * tables read are current's).
 */
static void ummunot_apply_drained(struct ummunot_file *uf,
				  struct ummunot_region *skip)
{
	DECLARE_BITMAP(same, PTRS_PER_PTE);
	struct interval_tree_node *it;
	unsigned int i;

	lockdep_assert_held(&uf->lock);
	for (i = 0; i < uf->nr_drained; i++) {
		const struct ummunot_range *r = &uf->drained[i];
		bool check = r->snapshot != UMMUNOT_NO_SNAPSHOT && uf->settled &&
			     ummunot_seq_settled(uf->snapshots[r->snapshot].seq,
						 uf->settled_seq);

		if (check)
			ummunot_snapshot_compare(uf->mm,
						 &uf->snapshots[r->snapshot],
						 same);
		for (it = interval_tree_iter_first(&uf->itree, r->start,
						   r->end - 1);
		     it; it = interval_tree_iter_next(it, r->start, r->end - 1)) {
			struct ummunot_region *reg =
				container_of(it, struct ummunot_region, it);

			if (reg != skip && !(check &&
					     ummunot_part_unchanged(reg, r, same)))
				ummunot_region_mark(uf, reg, r);
			cond_resched();
		}
	}
	uf->nr_drained = 0;
	uf->settled = false;
	ummunot_snapshots_free(uf, uf->drained_snapshots);
	uf->drained_snapshots = 0;
	ummunot_update_ready(uf);
}

/*
 * Match every recorded range to the registrations it hits.  Always under
 * tree_lock, never a lockless peek: a reader that saw the counter move
 * must see the range recorded with it (both are written under the lock).
 */
static void ummunot_collect(struct ummunot_file *uf)
{
	lockdep_assert_held(&uf->lock);
	spin_lock(&uf->tree_lock);
	ummunot_drain(uf);
	spin_unlock(&uf->tree_lock);
	ummunot_apply_drained(uf, NULL);
}

static struct ummunot_region *ummunot_find(struct ummunot_file *uf, u64 cookie)
{
	struct rb_node *n = uf->regions.rb_node;

	lockdep_assert_held(&uf->lock);
	while (n) {
		struct ummunot_region *reg =
			rb_entry(n, struct ummunot_region, node);

		if (cookie < reg->cookie)
			n = n->rb_left;
		else if (cookie > reg->cookie)
			n = n->rb_right;
		else
			return reg;
	}
	return NULL;
}

/* The cookie must not be present yet. */
static void ummunot_link(struct ummunot_file *uf, struct ummunot_region *new)
{
	struct rb_node **link = &uf->regions.rb_node, *parent = NULL;

	lockdep_assert_held(&uf->lock);
	while (*link) {
		struct ummunot_region *reg =
			rb_entry(*link, struct ummunot_region, node);

		parent = *link;
		if (new->cookie < reg->cookie)
			link = &parent->rb_left;
		else
			link = &parent->rb_right;
	}
	rb_link_node(&new->node, parent, link);
	rb_insert_color(&new->node, &uf->regions);
	uf->nr_regions++;
}

/* Count a new registration against the per-user and global limits. */
static bool ummunot_charge(struct ummunot_file *uf)
{
	if (atomic_long_inc_return(&uf->user->nr_regions) >
	    READ_ONCE(max_user_regions))
		goto user;
	if (atomic_long_inc_return(&ummunot_total_regions) >
	    READ_ONCE(max_total_regions))
		goto total;
	return true;
total:
	atomic_long_dec(&ummunot_total_regions);
user:
	atomic_long_dec(&uf->user->nr_regions);
	return false;
}

static void ummunot_uncharge(struct ummunot_file *uf)
{
	atomic_long_dec(&ummunot_total_regions);
	atomic_long_dec(&uf->user->nr_regions);
}

/*
 * Remove a registration, dropping its pending event.  Ranges recorded
 * before it left the tree are applied first, so that everything left in
 * the set hits a registration that is still there.
 */
static void ummunot_unlink_and_free(struct ummunot_file *uf,
				    struct ummunot_region *reg)
{
	unsigned int i;

	lockdep_assert_held(&uf->lock);
	spin_lock(&uf->tree_lock);
	ummunot_drain(uf);
	interval_tree_remove(&reg->it, &uf->itree);
	spin_unlock(&uf->tree_lock);
	for (i = 0; i < uf->nr_drained; i++)
		if (uf->drained[i].start <= reg->it.last &&
		    uf->drained[i].end - 1 >= reg->it.start)
			ummunot_region_mark(uf, reg, &uf->drained[i]);
	ummunot_apply_drained(uf, NULL);

	if (!list_empty(&reg->pending)) {
		list_del(&reg->pending);
		if (list_empty(&uf->pending)) {
			uf->last_owed = true;
			ummunot_update_ready(uf);
			wake_up_interruptible(&uf->read_wait);
		}
	}

	rb_erase(&reg->node, &uf->regions);
	uf->nr_regions--;
	ummunot_uncharge(uf);
	kmem_cache_free(ummunot_region_cache, reg);
}

static int ummunot_exchange_features(struct ummunot_file *uf,
				     u32 __user *arg)
{
	const u32 supported = UMMUNOT_FEATURE_REFUSE_UNWATCHABLE |
			      UMMUNOT_FEATURE_EVENT_CAUSE;
	u32 features;
	int ret = 0;

	if (get_user(features, arg))
		return -EFAULT;

	if (mutex_lock_killable(&uf->lock))
		return -EINTR;
	if (uf->used)
		ret = -EINVAL;
	else
		WRITE_ONCE(uf->features, features & supported);
	mutex_unlock(&uf->lock);
	if (ret)
		return ret;

	return put_user(features & supported, arg) ? -EFAULT : 0;
}

/* Strip address tags (arm64 TBI, x86 LAM); then check the range. */
static int ummunot_check_range(struct ummunot_register_ioctl *r)
{
	if (r->flags || r->reserved)
		return -EINVAL;
	r->start = untagged_addr(r->start);
	r->end = untagged_addr(r->end);
	if (r->end <= r->start || r->end > TASK_SIZE)
		return -EINVAL;
	return 0;
}

/*
 * ENXIO if a mapping in [start, end) is one MMU notifiers cannot watch
 * (its pages are not in the kernel's struct page world).  Holes are fine.
 */
static int ummunot_check_watchable(struct mm_struct *mm, unsigned long start,
				   unsigned long end)
{
	const vm_flags_t unwatchable = VM_IO | VM_PFNMAP | VM_MIXEDMAP;
	struct vm_area_struct *vma;
	int ret = 0;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	for (vma = find_vma(mm, start); vma && vma->vm_start < end;
	     vma = find_vma(mm, vma->vm_end)) {
		if (vma->vm_flags & unwatchable) {
			ret = -ENXIO;
			break;
		}
	}
	mmap_read_unlock(mm);
	return ret;
}

static struct ummunot_region *
ummunot_region_alloc(const struct ummunot_register_ioctl *r)
{
	struct ummunot_region *reg;

	reg = kmem_cache_zalloc(ummunot_region_cache, GFP_KERNEL);
	if (!reg)
		return NULL;
	reg->cookie = r->user_cookie;
	reg->it.start = round_down(r->start, PAGE_SIZE);
	reg->it.last = round_up(r->end, PAGE_SIZE) - 1;
	INIT_LIST_HEAD(&reg->pending);
	return reg;
}

/*
 * Insert the registration.  Ranges recorded before it entered the tree
 * cannot concern it: they are drained together with the insertion and
 * applied to the other registrations only.
 */
static int ummunot_insert(struct ummunot_file *uf, struct ummunot_region *reg)
{
	lockdep_assert_held(&uf->lock);
	if (ummunot_find(uf, reg->cookie))
		return -EEXIST;
	if (uf->nr_regions >= READ_ONCE(max_regions) || !ummunot_charge(uf))
		return -ENOSPC;

	spin_lock(&uf->tree_lock);
	ummunot_drain(uf);
	interval_tree_insert(&reg->it, &uf->itree);
	spin_unlock(&uf->tree_lock);
	ummunot_apply_drained(uf, reg);

	ummunot_link(uf, reg);
	uf->used = true;
	return 0;
}

static int ummunot_register_region(struct ummunot_file *uf,
				   struct ummunot_register_ioctl __user *arg)
{
	struct ummunot_register_ioctl r;
	struct ummunot_region *reg;
	unsigned long seq;
	bool settled;
	int ret;

	if (copy_from_user(&r, arg, sizeof(r)))
		return -EFAULT;
	ret = ummunot_check_range(&r);
	if (ret)
		return ret;
	/* Before uf->lock: read() faults (mmap_lock) under uf->lock. */
	if (READ_ONCE(uf->features) & UMMUNOT_FEATURE_REFUSE_UNWATCHABLE) {
		ret = ummunot_check_watchable(uf->mm, r.start, r.end);
		if (ret)
			return ret;
	}

	reg = ummunot_region_alloc(&r);
	if (!reg)
		return -ENOMEM;

	settled = ummunot_settle(uf, &seq);
	if (mutex_lock_killable(&uf->lock)) {
		kmem_cache_free(ummunot_region_cache, reg);
		return -EINTR;
	}
	ummunot_set_settled(uf, settled, seq);
	ret = ummunot_insert(uf, reg);
	mutex_unlock(&uf->lock);
	if (ret) {
		kmem_cache_free(ummunot_region_cache, reg);
		return ret;
	}

	/*
	 * An invalidation whose callback ran before the insertion did not
	 * see the new registration: wait until it has finished, so that it
	 * is either complete when REGISTER returns or reported.  User space
	 * must therefore register before it pins (ibv_reg_mr) the pages.
	 */
	mmu_interval_read_begin(&uf->notifier);
	return 0;
}

static int ummunot_unregister_region(struct ummunot_file *uf,
				     u64 __user *arg)
{
	struct ummunot_region *reg;
	unsigned long seq;
	bool settled;
	u64 cookie;
	int ret = 0;

	if (get_user(cookie, arg))
		return -EFAULT;

	settled = ummunot_settle(uf, &seq);
	if (mutex_lock_killable(&uf->lock))
		return -EINTR;
	ummunot_set_settled(uf, settled, seq);
	reg = ummunot_find(uf, cookie);
	if (reg)
		ummunot_unlink_and_free(uf, reg);
	else
		ret = -ENOENT;
	mutex_unlock(&uf->lock);
	return ret;
}

static long ummunot_ioctl(struct file *filp, unsigned int cmd,
			  unsigned long arg)
{
	struct ummunot_file *uf = filp->private_data;
	void __user *uarg = (void __user *)arg;

	if (!ummunot_is_owner(uf))
		return -EIO;

	switch (cmd) {
	case UMMUNOT_EXCHANGE_FEATURES:
		return ummunot_exchange_features(uf, uarg);
	case UMMUNOT_REGISTER_REGION:
		return ummunot_register_region(uf, uarg);
	case UMMUNOT_UNREGISTER_REGION:
		return ummunot_unregister_region(uf, uarg);
	default:
		return -ENOTTY;
	}
}

/*
 * For poll and for not queueing behind uf->lock needlessly.  Under
 * tree_lock, so that a caller that saw the counter move also sees the
 * range recorded with it.
 */
static bool ummunot_readable(struct ummunot_file *uf)
{
	bool readable;

	spin_lock(&uf->tree_lock);
	readable = READ_ONCE(uf->ready) || uf->nr_ranges;
	spin_unlock(&uf->tree_lock);
	return readable;
}

/*
 * Fill @ev with a LAST event, unless ranges were recorded meanwhile (they
 * must become INVAL events first).  The counter is read under the same
 * lock as the set, so every invalidation it counts has been delivered.
 */
static bool ummunot_take_last(struct ummunot_file *uf,
			      struct ummunot_event *ev)
{
	bool ok;

	spin_lock(&uf->tree_lock);
	ok = !uf->nr_ranges;
	if (ok)
		ev->user_cookie_counter = *uf->counter;
	spin_unlock(&uf->tree_lock);
	return ok;
}

static void ummunot_fill_inval(const struct ummunot_file *uf,
			       const struct ummunot_region *reg,
			       struct ummunot_event *ev)
{
	ev->type = UMMUNOT_EVENT_TYPE_INVAL;
	ev->flags = UMMUNOT_EVENT_FLAG_HINT;
	if (reg->unmapped && (uf->features & UMMUNOT_FEATURE_EVENT_CAUSE))
		ev->flags |= UMMUNOT_EVENT_FLAG_UNMAPPED;
	ev->hint_start = reg->hint_start;
	ev->hint_end = reg->hint_end;
	ev->user_cookie_counter = reg->cookie;
}

/*
 * Fill @ev with the next event: the oldest INVAL (*@reg set to its
 * registration), else an owed LAST (*@reg NULL).  Returns false if there
 * is nothing to deliver.
 */
static bool ummunot_next_event(struct ummunot_file *uf,
			       struct ummunot_event *ev,
			       struct ummunot_region **reg)
{
	lockdep_assert_held(&uf->lock);
	memset(ev, 0, sizeof(*ev));
	for (;;) {
		ummunot_collect(uf);
		*reg = list_first_entry_or_null(&uf->pending,
						struct ummunot_region, pending);
		if (*reg) {
			ummunot_fill_inval(uf, *reg, ev);
			return true;
		}
		if (!uf->last_owed)
			return false;
		if (ummunot_take_last(uf, ev)) {
			ev->type = UMMUNOT_EVENT_TYPE_LAST;
			return true;
		}
		/* Ranges were recorded meanwhile: they come first. */
	}
}

/*
 * Copy events to user space without losing any: each one is retired only
 * after copy_to_user() succeeded (nothing else changes an event while we
 * hold uf->lock).  Returns bytes copied, or -EFAULT if not even the first
 * event could be copied.
 */
static ssize_t ummunot_deliver(struct ummunot_file *uf, char __user *buf,
			       size_t count)
{
	struct ummunot_event ev;
	struct ummunot_region *reg;
	size_t done = 0;

	lockdep_assert_held(&uf->lock);
	while (count - done >= sizeof(ev) &&
	       ummunot_next_event(uf, &ev, &reg)) {
		if (copy_to_user(buf + done, &ev, sizeof(ev)))
			return done ? done : -EFAULT;
		done += sizeof(ev);
		if (!reg) {
			uf->last_owed = false;
			ummunot_update_ready(uf);
			break;	/* LAST ends a read */
		}
		list_del_init(&reg->pending);
		if (list_empty(&uf->pending))
			uf->last_owed = true;
		ummunot_update_ready(uf);
		cond_resched();
	}
	return done;
}

static ssize_t ummunot_read(struct file *filp, char __user *buf,
			    size_t count, loff_t *pos)
{
	struct ummunot_file *uf = filp->private_data;
	unsigned long seq;
	bool settled;
	ssize_t ret;

	if (!ummunot_is_owner(uf))
		return -EIO;
	if (count < sizeof(struct ummunot_event))
		return -EINVAL;

	for (;;) {
		/*
		 * Do not wait for the lock (another thread may hold it while
		 * it registers) when there is nothing to read anyway.
		 */
		if ((filp->f_flags & O_NONBLOCK) && !ummunot_readable(uf))
			return -EAGAIN;
		settled = ummunot_settle(uf, &seq);
		if (mutex_lock_interruptible(&uf->lock))
			return -ERESTARTSYS;
		ummunot_set_settled(uf, settled, seq);
		ret = ummunot_deliver(uf, buf, count);
		mutex_unlock(&uf->lock);
		if (ret)
			return ret;

		if (filp->f_flags & O_NONBLOCK)
			return -EAGAIN;
		if (wait_event_interruptible(uf->read_wait,
					     ummunot_readable(uf)))
			return -ERESTARTSYS;
	}
}

static __poll_t ummunot_poll(struct file *filp, poll_table *wait)
{
	struct ummunot_file *uf = filp->private_data;

	if (!ummunot_is_owner(uf))
		return EPOLLERR;

	poll_wait(filp, &uf->read_wait, wait);
	return ummunot_readable(uf) ? EPOLLIN | EPOLLRDNORM : 0;
}

/**
 * ummunot_fasync() - O_ASYNC on or off
 * @fd:   the descriptor, or -1 when the VFS drops the subscription as the
 *        file is finally released (which must always work)
 * @filp: the file
 * @on:   subscribe or unsubscribe
 *
 * Only the owner may subscribe to (or unsubscribe from) SIGIO.
 *
 * Context: process context (fcntl, ioctl(FIOASYNC) or the final fput).
 *
 * Return: as fasync_helper(), or -EIO for another process.
 */
static int ummunot_fasync(int fd, struct file *filp, int on)
{
	struct ummunot_file *uf = filp->private_data;

	if (fd >= 0 && !ummunot_is_owner(uf))
		return -EIO;
	return fasync_helper(fd, filp, on, &uf->fasync);
}

/* Before Linux 6.3, VMA flags were changed in place. */
#ifndef UMMUNOT_HAVE_VM_FLAGS_MOD
static void vm_flags_mod(struct vm_area_struct *vma, vm_flags_t set,
			 vm_flags_t clear)
{
	vma->vm_flags = (vma->vm_flags | set) & ~clear;
}
#endif

/**
 * ummunot_counter_fault() - serve the counter page
 * @vmf: the fault
 *
 * The counter page is served from the fault handler rather than inserted
 * at mmap time, so it survives MADV_DONTNEED.  A fork child inherits the
 * mapping (harmless: a read-only counter) but not the right to use the fd.
 * The mapping holds a file reference, so the page outlives every fault.
 *
 * Context: page fault, mmap_lock (or the VMA lock) held for reading.
 *
 * Return: 0 with vmf->page set, or VM_FAULT_SIGBUS past the first page.
 */
static vm_fault_t ummunot_counter_fault(struct vm_fault *vmf)
{
	struct ummunot_file *uf = vmf->vma->vm_file->private_data;

	if (vmf->pgoff)
		return VM_FAULT_SIGBUS;
	get_page(uf->counter_page);
	vmf->page = uf->counter_page;
	return 0;
}

static const struct vm_operations_struct ummunot_counter_vm_ops = {
	.fault = ummunot_counter_fault,
};

/**
 * ummunot_mmap() - map the counter page
 * @filp: the file
 * @vma:  the new mapping
 *
 * One page, offset 0, shared, read-only and never executable, for good.
 * The fd is read-only, so the VFS already refused writable shared maps
 * and turned VM_SHARED into plain VM_MAYSHARE; test that.  Clearing
 * VM_MAYWRITE and VM_MAYEXEC makes mprotect() refuse to add either later.
 *
 * Context: process context, mmap_lock held for writing.
 *
 * Return: 0, -EIO for another process, -EPERM for a writable or
 * executable mapping, -EINVAL for any other shape.
 */
static int ummunot_mmap(struct file *filp, struct vm_area_struct *vma)
{
	struct ummunot_file *uf = filp->private_data;

	if (!ummunot_is_owner(uf))
		return -EIO;
	if (vma->vm_flags & (VM_WRITE | VM_EXEC))
		return -EPERM;
	if (vma->vm_pgoff || vma->vm_end - vma->vm_start != PAGE_SIZE ||
	    !(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;

	vm_flags_mod(vma, VM_DONTEXPAND | VM_DONTDUMP,
		     VM_MAYWRITE | VM_MAYEXEC);
	vma->vm_ops = &ummunot_counter_vm_ops;
	return 0;
}

static struct ummunot_acct *ummunot_acct_find(struct hlist_head *table,
					      size_t bits, kuid_t uid,
					      struct mm_struct *mm)
{
	struct ummunot_acct *a;
	unsigned long key = mm ? (unsigned long)mm : __kuid_val(uid);

	lockdep_assert_held(&ummunot_acct_lock);
	hlist_for_each_entry(a, &table[hash_long(key, bits)], node)
		if (a->mm == mm && uid_eq(a->uid, uid))
			return a;
	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return NULL;
	a->uid = uid;
	a->mm = mm;
	hlist_add_head(&a->node, &table[hash_long(key, bits)]);
	return a;
}

static void ummunot_acct_put(struct ummunot_acct *a)
{
	lockdep_assert_held(&ummunot_acct_lock);
	if (--a->nr_files)
		return;
	hash_del(&a->node);
	kfree(a);
}

/* Count a new file against its user's and its mm's limits. */
static int ummunot_acct_open(struct ummunot_file *uf)
{
	struct ummunot_acct *user, *mm;
	int ret = -ENOMEM;

	mutex_lock(&ummunot_acct_lock);
	user = ummunot_acct_find(ummunot_users, HASH_BITS(ummunot_users),
				 current_uid(), NULL);
	if (!user)
		goto out;
	mm = ummunot_acct_find(ummunot_mms, HASH_BITS(ummunot_mms),
			       GLOBAL_ROOT_UID, current->mm);
	if (!mm)
		goto out_user;
	user->nr_files++;
	mm->nr_files++;
	ret = -EMFILE;
	if (user->nr_files > READ_ONCE(max_user_files) ||
	    mm->nr_files > READ_ONCE(max_files_per_mm)) {
		ummunot_acct_put(mm);
		ummunot_acct_put(user);
		goto out;
	}
	uf->user = user;
	uf->mm_acct = mm;
	ret = 0;
	goto out;
out_user:
	if (!user->nr_files) {
		hash_del(&user->node);
		kfree(user);
	}
out:
	mutex_unlock(&ummunot_acct_lock);
	return ret;
}

static void ummunot_acct_release(struct ummunot_file *uf)
{
	mutex_lock(&ummunot_acct_lock);
	ummunot_acct_put(uf->mm_acct);
	ummunot_acct_put(uf->user);
	mutex_unlock(&ummunot_acct_lock);
}

/* Frees @uf, with the references of snapshots not free.  No callback can run. */
static void ummunot_file_free(struct ummunot_file *uf)
{
	unsigned int i;

	for (i = 0; i < UMMUNOT_NR_SNAPSHOTS; i++) {
		if (uf->snapshots[i].state != UMMUNOT_SNAP_FREE)
			ummunot_snapshot_put(&uf->snapshots[i]);
		kvfree(uf->snapshots[i].pages);
	}
	put_page(uf->counter_page);
	kfree(uf);
}

static struct ummunot_file *ummunot_file_alloc(void)
{
	struct ummunot_file *uf;

	uf = kzalloc(sizeof(*uf), GFP_KERNEL_ACCOUNT);
	if (!uf)
		return NULL;
	uf->counter_page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!uf->counter_page) {
		kfree(uf);
		return NULL;
	}
	uf->counter = page_address(uf->counter_page);

	mutex_init(&uf->lock);
	uf->regions = RB_ROOT;
	INIT_LIST_HEAD(&uf->pending);
	spin_lock_init(&uf->tree_lock);
	uf->itree = RB_ROOT_CACHED;
	init_waitqueue_head(&uf->read_wait);
	INIT_DELAYED_WORK(&uf->expire, ummunot_snapshots_expire);
	if (ummunot_snapshots_alloc(uf)) {
		ummunot_file_free(uf);
		return NULL;
	}
	return uf;
}

static int ummunot_open(struct inode *inode, struct file *filp)
{
	struct ummunot_file *uf;
	int ret;

	if ((filp->f_flags & O_ACCMODE) != O_RDONLY)
		return -EINVAL;
	if (!current->mm)
		return -EINVAL;

	uf = ummunot_file_alloc();
	if (!uf)
		return -ENOMEM;
	ret = ummunot_acct_open(uf);
	if (ret)
		goto free;

	mmgrab(current->mm);
	uf->mm = current->mm;
	ret = mmu_interval_notifier_insert(&uf->notifier, uf->mm, 0, ULONG_MAX,
					   &ummunot_notifier_ops);
	if (ret)
		goto drop;

	filp->private_data = uf;
	return stream_open(inode, filp);

drop:
	mmdrop(uf->mm);
	ummunot_acct_release(uf);
free:
	ummunot_file_free(uf);
	return ret;
}

/**
 * ummunot_release() - the last reference to the file is gone
 * @inode: the device inode
 * @filp:  the file
 *
 * Possibly from another process or after the mm exited: the mmgrab()
 * keeps the mm's notifier state valid until the notifier is removed.
 * Once it is, no callback can look at the tree, so it is freed unlocked.
 *
 * Context: process context of the final fput (any task); sleeps.
 *
 * Return: 0.
 */
static int ummunot_release(struct inode *inode, struct file *filp)
{
	struct ummunot_file *uf = filp->private_data;
	struct ummunot_region *reg, *next;

	mmu_interval_notifier_remove(&uf->notifier);
	cancel_delayed_work_sync(&uf->expire);

	rbtree_postorder_for_each_entry_safe(reg, next, &uf->regions, node) {
		ummunot_uncharge(uf);
		kmem_cache_free(ummunot_region_cache, reg);
		cond_resched();
	}

	mmdrop(uf->mm);
	ummunot_acct_release(uf);
	ummunot_file_free(uf);
	return 0;
}

static const struct file_operations ummunot_fops = {
	.owner = THIS_MODULE,
	.open = ummunot_open,
	.release = ummunot_release,
	.read = ummunot_read,
	.poll = ummunot_poll,
	.unlocked_ioctl = ummunot_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.fasync = ummunot_fasync,
	.mmap = ummunot_mmap,
};

static struct miscdevice ummunot_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "ummunot",
	.fops = &ummunot_fops,
};

static int __init ummunot_init(void)
{
	int ret;

	ummunot_region_cache = KMEM_CACHE(ummunot_region,
					  SLAB_ACCOUNT | UMMUNOT_SLAB_NO_MERGE);
	if (!ummunot_region_cache)
		return -ENOMEM;

	ret = misc_register(&ummunot_misc);
	if (ret)
		kmem_cache_destroy(ummunot_region_cache);
	return ret;
}

static void __exit ummunot_exit(void)
{
	misc_deregister(&ummunot_misc);
	kmem_cache_destroy(ummunot_region_cache);
}

module_init(ummunot_init);
module_exit(ummunot_exit);

MODULE_DESCRIPTION("User-space notification of memory mapping invalidations");
MODULE_AUTHOR("The ummunot developers");
MODULE_LICENSE("GPL");
