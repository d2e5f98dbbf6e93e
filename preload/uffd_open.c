// SPDX-License-Identifier: BSD-2-Clause
/* Opening the userfaultfd monitor's uffd (uffd_open.h). */
#define _GNU_SOURCE
#include "uffd_open.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "monitor_uffd.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

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
static int probe_mode(int fd, uint64_t mode, uintptr_t page, bool *wp_probe)
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
	if (rc == 0) {
		struct uffdio_writeprotect wp = {
			.range = r.range,
			.mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
		};

		/* What check() needs: see probe_page(). */
		*wp_probe = (r.ioctls & (1ULL << _UFFDIO_WRITEPROTECT)) &&
			    ioctl(fd, UFFDIO_WRITEPROTECT, &wp) == 0;
		ioctl(fd, UFFDIO_UNREGISTER, &r.range);
	}
	munmap(p, page);
	return rc;
}

/*
 * Write-protect mode needs no fault handling and is preferred; missing
 * mode needs a uffd that also sees faults taken by the kernel (a
 * user-mode-only one would turn them into EFAULT), i.e. privileges or
 * /dev/userfaultfd.
 */
int uffd_open_best(unsigned int flags, uintptr_t page, struct uffd_setup *out)
{
	bool devnode = flags & UFFD_OPEN_FORCE_DEVNODE;
	bool ignored;
	uint64_t features = 0;
	int fd, rc;

	out->probe = false;
	if (!(flags & UFFD_OPEN_FORCE_MISSING)) {
		fd = open_uffd(true, devnode, &out->devnode);
		if (fd < 0)
			return fd;
		rc = uffd_api(fd, &features);
		if (rc == 0 && (features & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
			rc = probe_mode(fd, UFFDIO_REGISTER_MODE_WP, page,
					&out->probe);
		else if (rc == 0)
			rc = -EOPNOTSUPP;
		if (rc == 0) {
			out->reg_mode = UFFDIO_REGISTER_MODE_WP;
			return fd;
		}
		close(fd);
		if (rc == -ENOEXEC)
			return -EOPNOTSUPP;	/* no MADV_POPULATE_WRITE */
		log_debug("uffd: write-protect mode unusable (%s), trying missing-page mode",
			  strerror(-rc));
	}
	out->probe = false;	/* UFFDIO_WRITEPROTECT needs write-protect mode */
	fd = open_uffd(false, devnode, &out->devnode);
	if (fd < 0)
		return fd;
	rc = uffd_api(fd, &features);
	if (rc == 0)
		rc = probe_mode(fd, UFFDIO_REGISTER_MODE_MISSING, page,
				&ignored);
	if (rc < 0) {
		close(fd);
		return rc == -ENOEXEC ? -EOPNOTSUPP : rc;
	}
	out->reg_mode = UFFDIO_REGISTER_MODE_MISSING;
	return fd;
}

