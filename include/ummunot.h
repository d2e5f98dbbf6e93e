/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-2-Clause) */
/*
 * ummunot: user-space notification of memory-mapping invalidations.
 *
 * A process opens /dev/ummunot read-only, registers address ranges with
 * UMMUNOT_REGISTER_REGION (each tagged with a cookie of its choosing) and
 * read()s struct ummunot_event records when the pages behind a registered
 * range change (munmap, mremap, madvise, brk shrink, copy-on-write break,
 * migration, ...).  Permission-only changes (mprotect, NUMA hinting,
 * soft-dirty tracking, userfaultfd write-protect) produce nothing.
 *
 * A page mapped read-only from offset 0 of the file holds a __u64
 * generation counter that increases whenever an invalidation hits a
 * registration, so user space can check "nothing changed" without a
 * system call.
 */
#ifndef _UAPI_LINUX_UMMUNOT_H
#define _UAPI_LINUX_UMMUNOT_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define UMMUNOT_DEVICE_PATH	"/dev/ummunot"
#define UMMUNOT_IOCTL_MAGIC	'U'

/**
 * struct ummunot_register_ioctl - argument of UMMUNOT_REGISTER_REGION
 * @start:       first byte of the range (rounded down to a page)
 * @end:         one past the last byte (rounded up to a page); > @start
 * @user_cookie: caller-chosen tag, unique per file, reported in events
 * @flags:       must be 0
 * @reserved:    must be 0
 */
struct ummunot_register_ioctl {
	__u64 start;
	__u64 end;
	__u64 user_cookie;
	__u32 flags;
	__u32 reserved;
};

/*
 * Features: in, requested feature bits; out, the requested ones this
 * module supports.  A module that grants none of them behaves as version
 * 0.1 did: no ENXIO refusal and no cause flags in events.
 */
#define UMMUNOT_EXCHANGE_FEATURES	_IOWR(UMMUNOT_IOCTL_MAGIC, 1, __u32)
#define UMMUNOT_REGISTER_REGION		_IOW(UMMUNOT_IOCTL_MAGIC, 2, \
					     struct ummunot_register_ioctl)
/* Argument: pointer to the __u64 cookie of the registration to remove. */
#define UMMUNOT_UNREGISTER_REGION	_IOW(UMMUNOT_IOCTL_MAGIC, 3, __u64)

enum {
	/*
	 * UMMUNOT_REGISTER_REGION fails with ENXIO when any mapping in the
	 * range is one MMU notifiers cannot watch (VM_IO, VM_PFNMAP,
	 * VM_MIXEDMAP: device memory such as GPU memory exported through a
	 * peer-memory client).  Unmapped holes are accepted: mapping such
	 * memory there later replaces what was there, which is an event.
	 */
	UMMUNOT_FEATURE_REFUSE_UNWATCHABLE = 1 << 0,
	/* INVAL events carry UMMUNOT_EVENT_FLAG_UNMAPPED when that is known. */
	UMMUNOT_FEATURE_EVENT_CAUSE = 1 << 1,
};

enum {
	/* A registration was invalidated; user_cookie_counter is its cookie. */
	UMMUNOT_EVENT_TYPE_INVAL = 0,
	/*
	 * The pending list became empty; user_cookie_counter is the
	 * generation counter at that moment.
	 */
	UMMUNOT_EVENT_TYPE_LAST = 1,
};

enum {
	/*
	 * hint_start/hint_end bound every byte invalidated in that
	 * registration since its last event was read, clipped to it.
	 */
	UMMUNOT_EVENT_FLAG_HINT = 1 << 0,
	/*
	 * Some of the hinted range stopped being mapped at all (munmap,
	 * mremap away from it, MAP_FIXED or shmat(SHM_REMAP) over it): the
	 * application certainly replaced memory it had registered.  Without
	 * it the kernel invalidated the pages for another reason (madvise,
	 * migration, copy-on-write, a huge-page split or reclaim).  When more
	 * invalidations are pending than the module keeps apart (16 ranges
	 * per file), ranges of both kinds can merge and the flag can be set
	 * for a registration that was invalidated for another reason: read
	 * promptly to keep it exact.
	 */
	UMMUNOT_EVENT_FLAG_UNMAPPED = 1 << 1,
};

/**
 * struct ummunot_event - one record returned by read()
 * @type:                UMMUNOT_EVENT_TYPE_*
 * @flags:               UMMUNOT_EVENT_FLAG_*
 * @hint_start:          with UMMUNOT_EVENT_FLAG_HINT, first invalidated byte
 * @hint_end:            with UMMUNOT_EVENT_FLAG_HINT, one past the last one
 * @user_cookie_counter: cookie (INVAL) or generation counter (LAST)
 */
struct ummunot_event {
	__u32 type;
	__u32 flags;
	__u64 hint_start;
	__u64 hint_end;
	__u64 user_cookie_counter;
};

#endif /* _UAPI_LINUX_UMMUNOT_H */
