// SPDX-License-Identifier: BSD-2-Clause
/*
 * A stand-in for /dev/ummunot, for measuring the shim's hit path on a host
 * without the module (preloaded before the shim; benchmarks only, never a
 * test of the monitor): open("/dev/ummunot") gives an eventfd, which is
 * never readable, so read() says EAGAIN and poll() waits forever; the
 * module's ioctls succeed (every feature asked for is granted); mmap of
 * that descriptor gives a zero page, the generation counter that never
 * moves.  Nothing is ever reported invalidated: the shim's check before a
 * hit is the load of that counter, as with the module, and a benchmark
 * that only hits measures the cache's own hit path.
 */
#define _GNU_SOURCE
/* open and open64 are both defined here: neither may stand for the other. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/types.h>

#include <ummunot.h>

/* Global: the descriptor open() handed out for the device (-1: none). */
static atomic_int fake_fd = -1;

typedef int (*open_fn)(const char *, int, ...);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

static int fake_open(const char *path, int flags, mode_t mode,
		     const char *real)
{
	if (path && strcmp(path, UMMUNOT_DEVICE_PATH) == 0) {
		int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

		if (fd >= 0)
			atomic_store(&fake_fd, fd);
		return fd;
	}
	return ((open_fn)dlsym(RTLD_NEXT, real))(path, flags, mode);
}

int open(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
	va_end(ap);
	return fake_open(path, flags, mode, "open");
}

int open64(const char *path, int flags, ...)
{
	va_list ap;
	mode_t mode;

	va_start(ap, flags);
	mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0;
	va_end(ap);
	return fake_open(path, flags, mode, "open64");
}

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (fd >= 0 && fd == atomic_load(&fake_fd))
		return 0;	/* features: all granted; (un)register: done */
	return ((ioctl_fn)dlsym(RTLD_NEXT, "ioctl"))(fd, req, arg);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	static _Atomic(mmap_fn) real_mmap;
	mmap_fn real = atomic_load(&real_mmap);

	if (!real) {
		real = (mmap_fn)dlsym(RTLD_NEXT, "mmap");
		atomic_store(&real_mmap, real);
	}

	if (fd >= 0 && fd == atomic_load(&fake_fd))
		return real(addr, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
	return real(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}
