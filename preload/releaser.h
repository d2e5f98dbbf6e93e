/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * A thread that releases invalidated idle registrations soon after the
 * invalidation, even if the application never calls verbs again (a freed
 * 1 GiB buffer is unpinned at once, not at the next registration).  It
 * sleeps in poll() on the monitor's wait_fd() and, when it becomes
 * readable, applies the pending invalidations through the cache's normal,
 * locked path (cache_release_invalidated()), so it is safe against
 * concurrent verbs calls.  It blocks every signal, exists only in the
 * process that started it (not in a forked child), and starts no release
 * once exit() has begun (nor does exit() wait for one in progress).
 * Once releaser_start() has returned it places no new mapping (no
 * mmap(NULL), no moving mremap, no brk growth): its allocator is set up
 * before (an application may be between a munmap and a MAP_FIXED mmap of
 * the same range at any later moment).  Nothing reachable from
 * cache_release_invalidated() may therefore allocate a large block
 * (mmap threshold, 128 KiB) or grow an array with realloc().
 */
#ifndef UMMUSHIM_RELEASER_H
#define UMMUSHIM_RELEASER_H

struct cache;

/*
 * 0 once the thread runs and its allocator is set up, or a negative errno
 * when the thread cannot be started or its set-up takes over 5 s
 * (-ETIMEDOUT: it then stops without releasing anything).
 */
int releaser_start(struct cache *c, int wait_fd);

#endif /* UMMUSHIM_RELEASER_H */
