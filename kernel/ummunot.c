// SPDX-License-Identifier: GPL-2.0-only
/*
 * ummunot: tell user space when the pages behind its address ranges change.
 *
 * RDMA libraries cache memory registrations; a registration goes stale as
 * soon as the memory behind it is unmapped or replaced.  A process opens
 * /dev/ummunot, registers the ranges it caches, and reads an event for
 * every registration whose pages were invalidated.
 *
 * Each registration owns one MMU interval notifier, so the kernel's own
 * interval tree finds the registrations hit by an invalidation in
 * O(log n + hits).  Each registration also embeds its (single, coalesced)
 * pending event: the notifier path never allocates, never sleeps and can
 * never drop an event.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
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
#include <linux/wait.h>

#include <ummunot.h>

static unsigned int max_regions = 1U << 20;
module_param(max_regions, uint, 0644);
MODULE_PARM_DESC(max_regions, "Maximum registrations per open file");

/*
 * The device is meant to be open to all users, so bound the kernel memory
 * all of them together can pin in registrations (about 200 bytes each).
 */
static unsigned long max_total_regions = 1UL << 24;
module_param(max_total_regions, ulong, 0644);
MODULE_PARM_DESC(max_total_regions, "Maximum registrations in the system");

static atomic_long_t ummunot_total_regions = ATOMIC_LONG_INIT(0);

/*
 * Registrations come from their own slab cache, so leaks show in
 * /proc/slabinfo; where the kernel allows it, keep it from being merged.
 */
static struct kmem_cache *ummunot_region_cache;
#ifdef SLAB_NO_MERGE
#define UMMUNOT_SLAB_NO_MERGE SLAB_NO_MERGE
#else
#define UMMUNOT_SLAB_NO_MERGE 0
#endif

/**
 * struct ummunot_file - state of one open /dev/ummunot
 * @mm:            the opener's address space (mmgrab'ed); only it may use
 *                 the file
 * @lock:          serialises registration changes and event delivery, so a
 *                 registration cannot be freed while read() copies its
 *                 event; may sleep, never taken in the notifier
 * @regions:       registrations by cookie (under @lock)
 * @nr_regions:    size of @regions (under @lock)
 * @used:          a registration has succeeded on this file (under @lock)
 * @pending_lock:  protects @pending, @last_owed, each registration's
 *                 pending state and hint, and the generation counter; taken
 *                 in the notifier, so it is a spinlock and nothing under it
 *                 sleeps or allocates
 * @pending:       registrations with an unread event, oldest first
 * @last_owed:     the pending list became empty and no LAST event has been
 *                 read since
 * @counter_page:  page holding the generation counter, mappable read-only
 * @counter:       the generation counter, in @counter_page
 * @read_wait:     readers and pollers waiting for events
 * @fasync:        SIGIO subscribers
 */
struct ummunot_file {
	struct mm_struct *mm;

	struct mutex lock;		/* registrations, delivery */
	struct rb_root regions;
	unsigned int nr_regions;
	bool used;

	spinlock_t pending_lock;	/* events; notifier-safe */
	struct list_head pending;
	bool last_owed;
	struct page *counter_page;
	u64 *counter;

	wait_queue_head_t read_wait;
	struct fasync_struct *fasync;
};

/**
 * struct ummunot_region - one registration and its embedded event
 * @notifier:   interval notifier covering [@start, @end)
 * @file:       the file it belongs to
 * @node:       link in ummunot_file.regions
 * @cookie:     user's tag for the registration
 * @start:      first byte (page aligned)
 * @end:        one past the last byte (page aligned)
 * @pending:    link in ummunot_file.pending while an event is unread
 * @hint_start: first invalidated byte since the event was last read
 * @hint_end:   one past the last invalidated byte since then
 * @inval_seq:  counts invalidations, so read() can tell whether one raced
 *              with the copy of the event to user space
 *
 * @pending, @hint_start, @hint_end and @inval_seq are protected by
 * ummunot_file.pending_lock; the rest is fixed once the region is inserted.
 */
struct ummunot_region {
	struct mmu_interval_notifier notifier;
	struct ummunot_file *file;
	struct rb_node node;
	u64 cookie;
	unsigned long start;
	unsigned long end;
	struct list_head pending;
	unsigned long hint_start;
	unsigned long hint_end;
	u64 inval_seq;
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

/*
 * Queue or widen the region's event.  Returns true if it became pending
 * (the file just became readable).  Called with pending_lock held.
 */
static bool ummunot_region_mark(struct ummunot_region *reg,
				unsigned long start, unsigned long end)
{
	struct ummunot_file *uf = reg->file;
	bool queued = list_empty(&reg->pending);

	start = max(start, reg->start);
	end = min(end, reg->end);

	if (queued) {
		reg->hint_start = start;
		reg->hint_end = end;
		list_add_tail(&reg->pending, &uf->pending);
		uf->last_owed = false;
	} else {
		reg->hint_start = min(reg->hint_start, start);
		reg->hint_end = max(reg->hint_end, end);
	}
	reg->inval_seq++;
	WRITE_ONCE(*uf->counter, *uf->counter + 1);
	return queued;
}

/*
 * The notifier callback.  It may run in non-blockable context (OOM reaper)
 * and under mm locks, so it only takes a spinlock and never fails.  The
 * kernel calls it for every registration the range overlaps, with no
 * reschedule point of its own: yield where the range allows sleeping.
 */
static bool ummunot_invalidate(struct mmu_interval_notifier *mni,
			       const struct mmu_notifier_range *range,
			       unsigned long cur_seq)
{
	struct ummunot_region *reg =
		container_of(mni, struct ummunot_region, notifier);
	struct ummunot_file *uf = reg->file;
	bool queued;

	if (ummunot_event_keeps_pages(range->event))
		return true;

	spin_lock(&uf->pending_lock);
	mmu_interval_set_seq(mni, cur_seq);
	queued = ummunot_region_mark(reg, range->start, range->end);
	spin_unlock(&uf->pending_lock);

	if (queued)
		wake_up_interruptible_poll(&uf->read_wait,
					   EPOLLIN | EPOLLRDNORM);
	kill_fasync(&uf->fasync, SIGIO, POLL_IN);
	if (mmu_notifier_range_blockable(range))
		cond_resched();
	return true;
}

static const struct mmu_interval_notifier_ops ummunot_notifier_ops = {
	.invalidate = ummunot_invalidate,
};

/* Called with uf->lock held. */
static struct ummunot_region *ummunot_find(struct ummunot_file *uf, u64 cookie)
{
	struct rb_node *n = uf->regions.rb_node;

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

/* Called with uf->lock held; the cookie must not be present yet. */
static void ummunot_link(struct ummunot_file *uf, struct ummunot_region *new)
{
	struct rb_node **link = &uf->regions.rb_node, *parent = NULL;

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

/*
 * Stop the notifier (waiting for a running callback to finish), then drop
 * the region's pending event.  Called with uf->lock held.
 */
static void ummunot_unlink_and_free(struct ummunot_file *uf,
				    struct ummunot_region *reg)
{
	mmu_interval_notifier_remove(&reg->notifier);

	spin_lock(&uf->pending_lock);
	if (!list_empty(&reg->pending)) {
		list_del(&reg->pending);
		if (list_empty(&uf->pending)) {
			uf->last_owed = true;
			wake_up_interruptible(&uf->read_wait);
		}
	}
	spin_unlock(&uf->pending_lock);

	rb_erase(&reg->node, &uf->regions);
	uf->nr_regions--;
	atomic_long_dec(&ummunot_total_regions);
	kmem_cache_free(ummunot_region_cache, reg);
}

static int ummunot_exchange_features(struct ummunot_file *uf,
				     u32 __user *arg)
{
	u32 features;
	int ret = 0;

	if (get_user(features, arg))
		return -EFAULT;

	if (mutex_lock_killable(&uf->lock))
		return -EINTR;
	if (uf->used)
		ret = -EINVAL;
	mutex_unlock(&uf->lock);
	if (ret)
		return ret;

	/* No optional features yet: grant none of the requested ones. */
	return put_user(0U, arg) ? -EFAULT : 0;
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

static struct ummunot_region *
ummunot_region_alloc(struct ummunot_file *uf,
		     const struct ummunot_register_ioctl *r)
{
	struct ummunot_region *reg;

	reg = kmem_cache_zalloc(ummunot_region_cache, GFP_KERNEL);
	if (!reg)
		return NULL;
	reg->file = uf;
	reg->cookie = r->user_cookie;
	reg->start = round_down(r->start, PAGE_SIZE);
	reg->end = round_up(r->end, PAGE_SIZE);
	INIT_LIST_HEAD(&reg->pending);
	return reg;
}

/* Count a new registration against the per-file and global limits. */
static bool ummunot_charge(struct ummunot_file *uf)
{
	if (uf->nr_regions >= READ_ONCE(max_regions))
		return false;
	if (atomic_long_inc_return(&ummunot_total_regions) >
	    READ_ONCE(max_total_regions)) {
		atomic_long_dec(&ummunot_total_regions);
		return false;
	}
	return true;
}

/* Called with uf->lock held. */
static int ummunot_insert(struct ummunot_file *uf, struct ummunot_region *reg)
{
	int ret;

	if (ummunot_find(uf, reg->cookie))
		return -EEXIST;
	if (!ummunot_charge(uf))
		return -ENOSPC;

	ret = mmu_interval_notifier_insert(&reg->notifier, uf->mm, reg->start,
					   reg->end - reg->start,
					   &ummunot_notifier_ops);
	if (ret) {
		atomic_long_dec(&ummunot_total_regions);
		/* The first insert may find a signal pending: just restart. */
		return ret == -EINTR ? -ERESTARTSYS : ret;
	}

	/*
	 * A notifier inserted while an invalidation of its range is running
	 * does not see that invalidation.  Wait for it to finish, so that an
	 * invalidation is either complete when REGISTER returns or reported.
	 * User space must therefore register before it pins (ibv_reg_mr) the
	 * pages: pages pinned earlier may have been on their way out unseen.
	 */
	mmu_interval_read_begin(&reg->notifier);

	ummunot_link(uf, reg);
	uf->used = true;
	return 0;
}

static int ummunot_register_region(struct ummunot_file *uf,
				   struct ummunot_register_ioctl __user *arg)
{
	struct ummunot_register_ioctl r;
	struct ummunot_region *reg;
	int ret;

	if (copy_from_user(&r, arg, sizeof(r)))
		return -EFAULT;
	ret = ummunot_check_range(&r);
	if (ret)
		return ret;

	reg = ummunot_region_alloc(uf, &r);
	if (!reg)
		return -ENOMEM;

	ret = -EINTR;
	if (!mutex_lock_killable(&uf->lock)) {
		ret = ummunot_insert(uf, reg);
		mutex_unlock(&uf->lock);
	}

	if (ret)
		kmem_cache_free(ummunot_region_cache, reg);
	return ret;
}

static int ummunot_unregister_region(struct ummunot_file *uf,
				     u64 __user *arg)
{
	struct ummunot_region *reg;
	u64 cookie;
	int ret = 0;

	if (get_user(cookie, arg))
		return -EFAULT;

	if (mutex_lock_killable(&uf->lock))
		return -EINTR;
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

static bool ummunot_readable(struct ummunot_file *uf)
{
	bool readable;

	spin_lock(&uf->pending_lock);
	readable = !list_empty(&uf->pending) || uf->last_owed;
	spin_unlock(&uf->pending_lock);
	return readable;
}

/*
 * Take the next event to deliver: the oldest INVAL, else an owed LAST.
 * An INVAL's hint is moved into @ev, so that invalidations racing with
 * the copy to user space start a fresh hint.  *@reg is set to the region
 * (NULL for LAST) and *@seq to its invalidation count.  Returns false if
 * there is nothing to deliver.  Called with uf->lock held.
 */
static bool ummunot_take_event(struct ummunot_file *uf,
			       struct ummunot_event *ev,
			       struct ummunot_region **reg, u64 *seq)
{
	struct ummunot_region *first;
	bool found = true;

	memset(ev, 0, sizeof(*ev));
	spin_lock(&uf->pending_lock);
	first = list_first_entry_or_null(&uf->pending, struct ummunot_region,
					 pending);
	if (first) {
		ev->type = UMMUNOT_EVENT_TYPE_INVAL;
		ev->flags = UMMUNOT_EVENT_FLAG_HINT;
		ev->hint_start = first->hint_start;
		ev->hint_end = first->hint_end;
		ev->user_cookie_counter = first->cookie;
		first->hint_start = ULONG_MAX;
		first->hint_end = 0;
		*seq = first->inval_seq;
	} else if (uf->last_owed) {
		ev->type = UMMUNOT_EVENT_TYPE_LAST;
		ev->user_cookie_counter = *uf->counter;
	} else {
		found = false;
	}
	spin_unlock(&uf->pending_lock);
	*reg = first;
	return found;
}

/*
 * The event taken by ummunot_take_event() has reached user space: retire
 * it, unless the region was invalidated again meanwhile.  Then it stays
 * queued, its hint covering just the new invalidations.  Called with
 * uf->lock held.
 */
static void ummunot_retire_event(struct ummunot_file *uf,
				 struct ummunot_region *reg, u64 seq)
{
	spin_lock(&uf->pending_lock);
	if (!reg) {
		uf->last_owed = false;
	} else if (reg->inval_seq == seq) {
		list_del_init(&reg->pending);
		if (list_empty(&uf->pending))
			uf->last_owed = true;
	} else {
		list_move_tail(&reg->pending, &uf->pending);
	}
	spin_unlock(&uf->pending_lock);
}

/*
 * The copy to user space failed: give the region its hint back, so the
 * event is delivered later as if this read never happened.  Called with
 * uf->lock held.
 */
static void ummunot_return_event(struct ummunot_file *uf,
				 struct ummunot_region *reg,
				 const struct ummunot_event *ev)
{
	if (!reg)
		return;
	spin_lock(&uf->pending_lock);
	reg->hint_start = min_t(unsigned long, reg->hint_start, ev->hint_start);
	reg->hint_end = max_t(unsigned long, reg->hint_end, ev->hint_end);
	spin_unlock(&uf->pending_lock);
}

/*
 * Copy events to user space without losing any: each one is retired only
 * after copy_to_user() succeeded.  Returns bytes copied, or -EFAULT if
 * not even the first event could be copied.  Called with uf->lock held.
 */
static ssize_t ummunot_deliver(struct ummunot_file *uf, char __user *buf,
			       size_t count)
{
	struct ummunot_event ev;
	struct ummunot_region *reg;
	size_t done = 0;
	u64 seq = 0;

	while (count - done >= sizeof(ev) &&
	       ummunot_take_event(uf, &ev, &reg, &seq)) {
		if (copy_to_user(buf + done, &ev, sizeof(ev))) {
			ummunot_return_event(uf, reg, &ev);
			return done ? done : -EFAULT;
		}
		ummunot_retire_event(uf, reg, seq);
		done += sizeof(ev);
		if (!reg)
			break;	/* LAST ends a read */
		cond_resched();
	}
	return done;
}

static ssize_t ummunot_read(struct file *filp, char __user *buf,
			    size_t count, loff_t *pos)
{
	struct ummunot_file *uf = filp->private_data;
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
		if (mutex_lock_interruptible(&uf->lock))
			return -ERESTARTSYS;
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

static int ummunot_fasync(int fd, struct file *filp, int on)
{
	struct ummunot_file *uf = filp->private_data;

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

/*
 * The counter page is served from the fault handler rather than inserted
 * at mmap time, so it survives MADV_DONTNEED.  A fork child inherits the
 * mapping (harmless: a read-only counter) but not the right to use the fd.
 * The mapping holds a file reference, so the page outlives every fault.
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

/*
 * Map the counter page: one page, offset 0, shared and read-only for good.
 * The fd is read-only, so the VFS already refused writable shared maps and
 * turned VM_SHARED into plain VM_MAYSHARE; test that.
 */
static int ummunot_mmap(struct file *filp, struct vm_area_struct *vma)
{
	struct ummunot_file *uf = filp->private_data;

	if (!ummunot_is_owner(uf))
		return -EIO;
	if (vma->vm_flags & VM_WRITE)
		return -EPERM;
	if (vma->vm_pgoff || vma->vm_end - vma->vm_start != PAGE_SIZE ||
	    !(vma->vm_flags & VM_MAYSHARE))
		return -EINVAL;

	vm_flags_mod(vma, VM_DONTEXPAND | VM_DONTDUMP,
		     VM_MAYWRITE | VM_MAYEXEC);
	vma->vm_ops = &ummunot_counter_vm_ops;
	return 0;
}

static int ummunot_open(struct inode *inode, struct file *filp)
{
	struct ummunot_file *uf;

	if ((filp->f_flags & O_ACCMODE) != O_RDONLY)
		return -EINVAL;
	if (!current->mm)
		return -EINVAL;

	uf = kzalloc(sizeof(*uf), GFP_KERNEL_ACCOUNT);
	if (!uf)
		return -ENOMEM;

	uf->counter_page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!uf->counter_page) {
		kfree(uf);
		return -ENOMEM;
	}
	uf->counter = page_address(uf->counter_page);

	mutex_init(&uf->lock);
	uf->regions = RB_ROOT;
	spin_lock_init(&uf->pending_lock);
	INIT_LIST_HEAD(&uf->pending);
	init_waitqueue_head(&uf->read_wait);

	mmgrab(current->mm);
	uf->mm = current->mm;

	filp->private_data = uf;
	return stream_open(inode, filp);
}

/*
 * The last reference is gone, possibly from another process or after the
 * mm exited: the mmgrab() keeps the mm's notifier state valid until every
 * notifier is removed.
 */
static int ummunot_release(struct inode *inode, struct file *filp)
{
	struct ummunot_file *uf = filp->private_data;
	struct rb_node *n;

	mutex_lock(&uf->lock);
	while ((n = rb_first(&uf->regions))) {
		ummunot_unlink_and_free(uf,
					rb_entry(n, struct ummunot_region, node));
		cond_resched();
	}
	mutex_unlock(&uf->lock);

	mmdrop(uf->mm);
	put_page(uf->counter_page);
	kfree(uf);
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
