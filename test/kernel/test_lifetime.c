// SPDX-License-Identifier: GPL-2.0-only
/*
 * Lifetime: one slab object per registration, and closing the fd, exiting
 * the process, or an fd outliving its mm all give every object back.
 */
#include "ktest.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define NREG 1000

static long slab_start(void)
{
	long n = kt_slab_objects();

	ck_assert_msg(n >= 0, "cannot read the ummunot_region slab count");
	return n;
}

static void assert_slab_back(long start)
{
	long now = kt_slab_settle(start);

	ck_assert_msg(now == start, "slab ummunot_region: %ld objects, started at %ld",
		      now, start);
}

/*
 * Registers NREG one-page ranges over a mapping and drops the pages of half
 * of them.  (MADV_DONTNEED, not munmap: splitting a VMA that spans a whole
 * 2 MiB-aligned range makes the kernel invalidate that whole range once
 * more -- __split_huge_pmd -- even without huge pages.)
 */
static void register_with_pending(int fd)
{
	char *p = kt_map_anon(NREG);

	for (uint64_t i = 0; i < NREG; i++)
		kt_register_ok(fd, kt_pg(p, i), kt_pg(p, i + 1), i);
	ck_assert_int_eq(madvise(p, NREG / 2 * kt_page(), MADV_DONTNEED), 0);
}

START_TEST(one_object_per_registration)
{
	long start = slab_start();
	int fd = kt_open_nb();

	for (uint64_t i = 0; i < 100; i++)
		kt_register_ok(fd, 0x10000000 + i * 0x2000,
			       0x10001000 + i * 0x2000, i);
	ck_assert_int_eq(kt_slab_objects(), start + 100);
	for (uint64_t i = 0; i < 100; i++)
		kt_unregister_ok(fd, i);
	assert_slab_back(start);
}
END_TEST

START_TEST(close_with_pending_events)
{
	long start = slab_start();
	int fd = kt_open_nb();
	const volatile uint64_t *cnt = kt_map_counter(fd);

	register_with_pending(fd);
	ck_assert_uint_eq(*cnt, 1);
	ck_assert_int_eq(kt_slab_objects(), start + NREG);
	ck_assert_int_eq(close(fd), 0);
	/* The counter mapping keeps the file alive; drop it as well. */
	ck_assert_int_eq(munmap((void *)cnt, kt_page()), 0);
	assert_slab_back(start);
}
END_TEST

static int exit_without_close(void *arg, char *err, size_t errlen)
{
	(void)arg;
	(void)err;
	(void)errlen;
	int fd = kt_open_nb();

	register_with_pending(fd);
	/* Registrations on live mappings too: exit tears those down. */
	char *live = kt_map_anon(16);

	for (uint64_t i = 0; i < 16; i++)
		kt_register_ok(fd, kt_pg(live, i), kt_pg(live, i + 1),
			       NREG + i);
	_exit(0);
}

START_TEST(exit_with_pending_events)
{
	long start = slab_start();

	kt_run_child("exiting child", exit_without_close, NULL);
	assert_slab_back(start);
}
END_TEST

static int open_send_exit(void *arg, char *err, size_t errlen)
{
	int sock = *(int *)arg;
	int fd = kt_open_nb();

	register_with_pending(fd);
	KT_CHILD_CHECK(kt_send_fd(sock, fd) == 0, "send fd: %s", strerror(errno));
	return 0;
}

/* The opener exits; the receiver's fd outlives the mm it was bound to. */
START_TEST(fd_outlives_mm)
{
	long start = slab_start();
	int sv[2], fd, rc;
	struct pollfd pfd;
	struct ummunot_event ev;
	uint64_t cookie = 1;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	kt_run_child("opener", open_send_exit, &sv[1]);
	fd = kt_recv_fd(sv[0]);
	ck_assert_int_ge(fd, 0);
	/* The opener's mm is gone (the child was reaped). */
	ck_assert_int_eq(ioctl(fd, UMMUNOT_UNREGISTER_REGION, &cookie), -1);
	ck_assert_int_eq(errno, EIO);
	ck_assert_int_eq(kt_register(fd, 0x100000, 0x101000, 5), EIO);
	ck_assert_int_eq(kt_read(fd, &ev, sizeof(ev)), -EIO);
	pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
	rc = poll(&pfd, 1, 0);
	ck_assert_msg(rc == 1 && (pfd.revents & POLLERR),
		      "poll rc %d revents %#x", rc, pfd.revents);
	ck_assert_int_eq(close(fd), 0);
	assert_slab_back(start);
}
END_TEST

/* Fork children inheriting the fd close it; the opener's state survives. */
START_TEST(inherited_fd_closed_by_child)
{
	long start = slab_start();
	int fd = kt_open_nb();
	char *p = kt_map_anon(2);
	pid_t pid;
	int status;

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 2), 1);
	pid = fork();
	ck_assert(pid >= 0);
	if (pid == 0)
		_exit(close(fd) == 0 ? 0 : 1);
	ck_assert(waitpid(pid, &status, 0) == pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(kt_slab_objects(), start + 1);
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	kt_expect_one(fd, NULL, 1, kt_pg(p, 0), kt_pg(p, 1));
	ck_assert_int_eq(close(fd), 0);
	assert_slab_back(start);
}
END_TEST

Suite *kt_lifetime_suite(void)
{
	return KT_SUITE("lifetime",
			one_object_per_registration, close_with_pending_events,
			exit_with_pending_events, fd_outlives_mm,
			inherited_fd_closed_by_child);
}
