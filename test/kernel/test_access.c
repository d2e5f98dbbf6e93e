// SPDX-License-Identifier: GPL-2.0-only
/*
 * Who may use an fd: only a process sharing the opener's mm.  A fork child
 * or a process that received the fd over a unix socket gets EIO (and
 * POLLERR), while close still works; an unprivileged user can use a
 * 0666 device for its own memory.
 */
#include "ktest.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

/*
 * Runs in a process whose mm is not the opener's: every operation but
 * close must fail with EIO (enabling SIGIO included), poll must report
 * POLLERR.
 */
static int check_foreign_fd(int fd, char *err, size_t errlen)
{
	struct ummunot_register_ioctl r = {
		.start = 0x100000, .end = 0x101000, .user_cookie = 99,
	};
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	struct ummunot_event ev[2];
	uint64_t cookie = 1;
	uint32_t features = 0;
	void *map;
	int rc;

	rc = ioctl(fd, UMMUNOT_REGISTER_REGION, &r);
	KT_CHILD_CHECK(rc == -1 && errno == EIO, "REGISTER: rc %d, %s", rc,
		       strerror(errno));
	rc = ioctl(fd, UMMUNOT_UNREGISTER_REGION, &cookie);
	KT_CHILD_CHECK(rc == -1 && errno == EIO, "UNREGISTER: rc %d, %s", rc,
		       strerror(errno));
	rc = ioctl(fd, UMMUNOT_EXCHANGE_FEATURES, &features);
	KT_CHILD_CHECK(rc == -1 && errno == EIO, "EXCHANGE_FEATURES: rc %d, %s",
		       rc, strerror(errno));
	rc = (int)read(fd, ev, sizeof(ev));
	KT_CHILD_CHECK(rc == -1 && errno == EIO, "read: rc %d, %s", rc,
		       strerror(errno));
	map = mmap(NULL, kt_page(), PROT_READ, MAP_SHARED, fd, 0);
	KT_CHILD_CHECK(map == MAP_FAILED && errno == EIO, "mmap: %s",
		       map == MAP_FAILED ? strerror(errno) : "succeeded");
	/* SIGIO belongs to the owner: O_ASYNC is refused, flags unchanged. */
	rc = fcntl(fd, F_SETFL, O_ASYNC);
	KT_CHILD_CHECK(rc == -1 && errno == EIO, "F_SETFL O_ASYNC: rc %d, %s",
		       rc, strerror(errno));
	rc = fcntl(fd, F_GETFL);
	KT_CHILD_CHECK(rc != -1 && !(rc & O_ASYNC), "F_GETFL: %#x", rc);
	rc = poll(&pfd, 1, 0);
	KT_CHILD_CHECK(rc == 1 && (pfd.revents & POLLERR),
		       "poll: rc %d revents %#x", rc, pfd.revents);
	KT_CHILD_CHECK(close(fd) == 0, "close: %s", strerror(errno));
	return 0;
}

static int fork_child_gets_eio(void *arg, char *err, size_t errlen)
{
	return check_foreign_fd(*(int *)arg, err, errlen);
}

START_TEST(fork_child_eio)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(2);

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 2), 1);
	/* A pending event must not make the child's view readable. */
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	kt_run_child("fork child", fork_child_gets_eio, &fd);
	/* The opener is unaffected. */
	kt_expect_one(fd, NULL, 1, kt_pg(p, 0), kt_pg(p, 1));
	kt_register_ok(fd, 0x100000, 0x101000, 2);
}
END_TEST

static int receiver_gets_eio(void *arg, char *err, size_t errlen)
{
	int sock = *(int *)arg;
	int fd = kt_recv_fd(sock);

	KT_CHILD_CHECK(fd >= 0, "no fd received");
	return check_foreign_fd(fd, err, errlen);
}

/* The child is forked before the fd exists: it only has it via SCM_RIGHTS. */
START_TEST(scm_rights_receiver_eio)
{
	int sv[2], fd, status;
	char *err = mmap(NULL, kt_page(), PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pid;

	ck_assert(err != MAP_FAILED);
	strcpy(err, "child died without a report");
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
			 0);
	pid = fork();
	ck_assert(pid >= 0);
	if (pid == 0) {
		int rc = receiver_gets_eio(&sv[1], err, kt_page());

		if (rc == 0)
			err[0] = '\0';
		_exit(rc);
	}
	fd = kt_open_nb();
	kt_register_ok(fd, 0x100000, 0x101000, 1);
	ck_assert_int_eq(kt_send_fd(sv[0], fd), 0);
	ck_assert(waitpid(pid, &status, 0) == pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "receiver: %s", err);
	kt_unregister_ok(fd, 1);
}
END_TEST

static int unprivileged_user(void *arg, char *err, size_t errlen)
{
	struct ummunot_event ev[4];
	char *p;
	int fd;
	ssize_t n;

	(void)arg;
	KT_CHILD_CHECK(setgroups(0, NULL) == 0, "setgroups: %s",
		       strerror(errno));
	KT_CHILD_CHECK(setgid(NOBODY) == 0 && setuid(NOBODY) == 0,
		       "setuid: %s", strerror(errno));
	KT_CHILD_CHECK(geteuid() == NOBODY, "still euid %d", (int)geteuid());
	fd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	KT_CHILD_CHECK(fd >= 0, "open as uid %d: %s", NOBODY, strerror(errno));
	p = mmap(NULL, 2 * kt_page(), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	KT_CHILD_CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
	kt_touch(p, 2);
	KT_CHILD_CHECK(kt_register(fd, kt_pg(p, 0), kt_pg(p, 2), 5) == 0,
		       "REGISTER: %s", strerror(errno));
	KT_CHILD_CHECK(munmap((void *)kt_pg(p, 1), kt_page()) == 0, "munmap");
	n = read(fd, ev, sizeof(ev));
	KT_CHILD_CHECK(n == 2 * (ssize_t)KT_EVENT_SIZE, "read: %zd (%s)", n,
		       n < 0 ? strerror(errno) : "");
	KT_CHILD_CHECK(ev[0].type == UMMUNOT_EVENT_TYPE_INVAL &&
		       ev[0].user_cookie_counter == 5 &&
		       ev[0].hint_start == kt_pg(p, 1) &&
		       ev[0].hint_end == kt_pg(p, 2), "wrong event");
	KT_CHILD_CHECK(ev[1].type == UMMUNOT_EVENT_TYPE_LAST, "no LAST");
	/* Module parameters stay root-only. */
	KT_CHILD_CHECK(open("/sys/module/ummunot/parameters/max_regions",
			    O_WRONLY) < 0, "max_regions writable by nobody");
	return 0;
}

START_TEST(unprivileged_user_can_use_device)
{
	struct stat st;

	ck_assert_int_eq(stat(UMMUNOT_DEVICE_PATH, &st), 0);
	ck_assert_msg((st.st_mode & 0444) == 0444,
		      "device mode %o: the runner must chmod 0666",
		      st.st_mode & 0777);
	kt_run_child("uid 65534", unprivileged_user, NULL);
}
END_TEST

Suite *kt_access_suite(void)
{
	return KT_SUITE("access",
			fork_child_eio, scm_rights_receiver_eio,
			unprivileged_user_can_use_device);
}
