// SPDX-License-Identifier: GPL-2.0-only
/*
 * read() framing (whole events, the LAST record and when it is owed),
 * blocking and O_NONBLOCK reads, poll/select/epoll readiness and SIGIO.
 */
#include "ktest.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

static int readable_poll(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int n = poll(&pfd, 1, 0);

	ck_assert_msg(n >= 0, "poll: %s", strerror(errno));
	ck_assert_msg(!(pfd.revents & (POLLERR | POLLNVAL)),
		      "poll revents %#x", pfd.revents);
	return n == 1 && (pfd.revents & POLLIN);
}

static int readable_select(int fd)
{
	struct timeval tv = { 0, 0 };
	fd_set set;
	int n;

	FD_ZERO(&set);
	FD_SET(fd, &set);
	n = select(fd + 1, &set, NULL, NULL, &tv);
	ck_assert_msg(n >= 0, "select: %s", strerror(errno));
	return n == 1 && FD_ISSET(fd, &set);
}

static int readable_epoll(int ep)
{
	struct epoll_event ev;
	int n = epoll_wait(ep, &ev, 1, 0);

	ck_assert_msg(n >= 0, "epoll_wait: %s", strerror(errno));
	return n == 1 && (ev.events & EPOLLIN);
}

START_TEST(empty_read_eagain)
{
	int fd = kt_open_nb();

	kt_expect_nothing(fd);
	/* Registering alone queues nothing. */
	kt_register_ok(fd, 0x10000000, 0x10001000, 1);
	kt_expect_nothing(fd);
}
END_TEST

START_TEST(inval_then_last)
{
	struct kt_watch w = kt_watch_anon(2, 42);
	struct ummunot_event ev[8];
	ssize_t n;

	ck_assert_int_eq(munmap(w.p, 2 * kt_page()), 0);
	n = kt_read(w.fd, ev, sizeof(ev));
	ck_assert_int_eq(n, 2 * (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(ev[0].type, UMMUNOT_EVENT_TYPE_INVAL);
	ck_assert_uint_eq(ev[0].flags, UMMUNOT_EVENT_FLAG_HINT);
	ck_assert_uint_eq(ev[0].user_cookie_counter, 42);
	ck_assert_uint_eq(ev[1].type, UMMUNOT_EVENT_TYPE_LAST);
	ck_assert_uint_eq(ev[1].flags, 0);
	ck_assert_uint_eq(ev[1].user_cookie_counter, *w.cnt);
	ck_assert_uint_ge(*w.cnt, 1);
	/* LAST is sent once. */
	kt_expect_nothing(w.fd);
}
END_TEST

/* A buffer that fills exactly leaves the LAST owed to the next read. */
START_TEST(exact_buffer_last_owed)
{
	struct kt_watch w = kt_watch_anon(2, 5);
	struct ummunot_event ev[2];

	ck_assert_int_eq(munmap(w.p, kt_page()), 0);
	ck_assert_int_eq(kt_read(w.fd, ev, KT_EVENT_SIZE),
			 (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(ev[0].type, UMMUNOT_EVENT_TYPE_INVAL);
	ck_assert_uint_eq(ev[0].user_cookie_counter, 5);
	ck_assert_msg(readable_poll(w.fd), "LAST owed but not readable");
	ck_assert_int_eq(kt_read(w.fd, ev, sizeof(ev)), (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(ev[0].type, UMMUNOT_EVENT_TYPE_LAST);
	ck_assert_uint_eq(ev[0].user_cookie_counter, *w.cnt);
	kt_expect_nothing(w.fd);
	ck_assert(!readable_poll(w.fd));
}
END_TEST

/* Only whole events, as many as fit; the rest stay queued. */
START_TEST(partial_reads)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(3);
	struct ummunot_event ev[8];
	uint64_t seen = 0;

	for (uint64_t c = 0; c < 3; c++)
		kt_register_ok(fd, kt_pg(p, c), kt_pg(p, c + 1), c);
	ck_assert_int_eq(munmap(p, 3 * kt_page()), 0);
	/* One and a half events of room: one event. */
	ck_assert_int_eq(kt_read(fd, ev, KT_EVENT_SIZE + KT_EVENT_SIZE / 2),
			 (ssize_t)KT_EVENT_SIZE);
	seen |= 1ULL << ev[0].user_cookie_counter;
	/* Room for two: the two remaining INVALs, no room for LAST. */
	ck_assert_int_eq(kt_read(fd, ev, 2 * KT_EVENT_SIZE),
			 2 * (ssize_t)KT_EVENT_SIZE);
	for (int i = 0; i < 2; i++) {
		ck_assert_uint_eq(ev[i].type, UMMUNOT_EVENT_TYPE_INVAL);
		ck_assert_uint_lt(ev[i].user_cookie_counter, 3);
		seen |= 1ULL << ev[i].user_cookie_counter;
	}
	ck_assert_uint_eq(seen, 7);
	ck_assert_int_eq(kt_read(fd, ev, sizeof(ev)), (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(ev[0].type, UMMUNOT_EVENT_TYPE_LAST);
	kt_expect_nothing(fd);
}
END_TEST

/* Events queued after a partial read join the list before the LAST. */
START_TEST(new_event_before_owed_last)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(2);
	struct kt_expect x = { 2, kt_pg(p, 1), kt_pg(p, 2) };
	struct ummunot_event ev;

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 1), 1);
	kt_register_ok(fd, kt_pg(p, 1), kt_pg(p, 2), 2);
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	ck_assert_int_eq(kt_read(fd, &ev, sizeof(ev)), (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(ev.user_cookie_counter, 1);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 1), kt_page()), 0);
	kt_expect_events(fd, NULL, 1, &x);
}
END_TEST

struct blocked_reader {
	int fd;
	volatile int done;
	ssize_t n;
	struct ummunot_event ev[4];
};

static void *blocked_read(void *arg)
{
	struct blocked_reader *r = arg;

	r->n = kt_read(r->fd, r->ev, sizeof(r->ev));
	r->done = 1;
	return NULL;
}

/*
 * Runs fn(arg) in a new thread and gives it time to go to sleep in the
 * kernel before the caller triggers the wake-up.
 */
static pthread_t start_sleeper(void *(*fn)(void *), void *arg)
{
	const struct timespec nap = { 0, 200 * 1000 * 1000 };
	pthread_t t;

	ck_assert_int_eq(pthread_create(&t, NULL, fn, arg), 0);
	nanosleep(&nap, NULL);
	return t;
}

START_TEST(blocking_read_wakes)
{
	int fd = kt_open(0); /* blocking */
	char *p = kt_map_anon(2);
	struct blocked_reader r = { .fd = fd };
	pthread_t t;

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 2), 77);
	t = start_sleeper(blocked_read, &r);
	/* Nothing is pending, so the reader must still be waiting. */
	ck_assert_msg(!r.done, "blocking read returned %zd with nothing pending",
		      r.n);
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(r.n, 2 * (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(r.ev[0].type, UMMUNOT_EVENT_TYPE_INVAL);
	ck_assert_uint_eq(r.ev[0].user_cookie_counter, 77);
	ck_assert_uint_eq(r.ev[0].hint_start, kt_pg(p, 0));
	ck_assert_uint_eq(r.ev[0].hint_end, kt_pg(p, 1));
	ck_assert_uint_eq(r.ev[1].type, UMMUNOT_EVENT_TYPE_LAST);
}
END_TEST

/* O_NONBLOCK set later with fcntl is honoured too. */
START_TEST(nonblock_via_fcntl)
{
	int fd = kt_open(0);
	struct ummunot_event ev;

	ck_assert_int_eq(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
	ck_assert_int_eq(kt_read(fd, &ev, sizeof(ev)), -EAGAIN);
}
END_TEST

START_TEST(unregister_drops_pending)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(2);
	struct kt_expect x;

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 1), 1);
	kt_register_ok(fd, kt_pg(p, 1), kt_pg(p, 2), 2);
	ck_assert_int_eq(munmap(p, 2 * kt_page()), 0);
	kt_unregister_ok(fd, 1);
	x = (struct kt_expect){ 2, kt_pg(p, 1), kt_pg(p, 2) };
	kt_expect_events(fd, NULL, 1, &x);
}
END_TEST

/* Unregistering the only pending registration owes a LAST. */
START_TEST(unregister_emptying_list_owes_last)
{
	struct kt_watch w = kt_watch_anon(2, 3);
	struct ummunot_event ev[4];

	ck_assert_int_eq(munmap(w.p, kt_page()), 0);
	ck_assert(readable_poll(w.fd));
	kt_unregister_ok(w.fd, 3);
	ck_assert_msg(readable_poll(w.fd), "LAST owed after UNREGISTER");
	ck_assert_int_eq(kt_read(w.fd, ev, sizeof(ev)), (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(ev[0].type, UMMUNOT_EVENT_TYPE_LAST);
	ck_assert_uint_eq(ev[0].flags, 0);
	ck_assert_uint_eq(ev[0].user_cookie_counter, *w.cnt);
	kt_expect_nothing(w.fd);
}
END_TEST

/* Unregistering a registration with nothing pending owes nothing. */
START_TEST(unregister_idle_owes_nothing)
{
	int fd = kt_open_nb();

	kt_register_ok(fd, 0x20000000, 0x20002000, 3);
	kt_unregister_ok(fd, 3);
	kt_expect_nothing(fd);
	ck_assert(!readable_poll(fd));
}
END_TEST

START_TEST(poll_select_epoll_readiness)
{
	int fd = kt_open_nb();
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event reg = { .events = EPOLLIN, .data.fd = fd };
	char *p = kt_map_anon(4);
	struct ummunot_event ev;

	ck_assert_int_ge(ep, 0);
	ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &reg), 0);
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 8);
	ck_assert(!readable_poll(fd));
	ck_assert(!readable_select(fd));
	ck_assert(!readable_epoll(ep));
	/* Unrelated and permission-only changes do not make it readable. */
	ck_assert_int_eq(mprotect(p, 4 * kt_page(), PROT_READ), 0);
	ck_assert(!readable_poll(fd));
	ck_assert_int_eq(madvise((void *)kt_pg(p, 2), kt_page(),
				 MADV_DONTNEED), 0);
	ck_assert(readable_poll(fd));
	ck_assert(readable_select(fd));
	ck_assert(readable_epoll(ep));
	/* INVAL read, LAST still owed: still readable. */
	ck_assert_int_eq(kt_read(fd, &ev, sizeof(ev)), (ssize_t)KT_EVENT_SIZE);
	ck_assert(readable_poll(fd));
	ck_assert(readable_select(fd));
	ck_assert(readable_epoll(ep));
	ck_assert_int_eq(kt_read(fd, &ev, sizeof(ev)), (ssize_t)KT_EVENT_SIZE);
	ck_assert_uint_eq(ev.type, UMMUNOT_EVENT_TYPE_LAST);
	ck_assert(!readable_poll(fd));
	ck_assert(!readable_select(fd));
	ck_assert(!readable_epoll(ep));
}
END_TEST

struct poll_waiter {
	int fd;
	int n;
	short revents;
};

static void *poll_forever(void *arg)
{
	struct poll_waiter *w = arg;
	struct pollfd pfd = { .fd = w->fd, .events = POLLIN };

	w->n = poll(&pfd, 1, 60 * 1000);
	w->revents = pfd.revents;
	return NULL;
}

/* A thread sleeping in poll() is woken by the invalidation. */
START_TEST(poll_wakes_sleeper)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(1);
	struct poll_waiter w = { .fd = fd };
	pthread_t t;

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 1), 9);
	t = start_sleeper(poll_forever, &w);
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_int_eq(w.n, 1);
	ck_assert(w.revents & POLLIN);
}
END_TEST

START_TEST(sigio_on_invalidation)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(4);
	const struct timespec wait = { 20, 0 }, none = { 0, 0 };
	sigset_t set;
	siginfo_t info;

	sigemptyset(&set);
	sigaddset(&set, SIGIO);
	/* Blocked, so it stays pending for sigtimedwait. */
	ck_assert_int_eq(sigprocmask(SIG_BLOCK, &set, NULL), 0);
	ck_assert_int_eq(fcntl(fd, F_SETOWN, getpid()), 0);
	ck_assert_int_eq(fcntl(fd, F_SETFL, O_NONBLOCK | O_ASYNC), 0);
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 4), 12);
	ck_assert_int_eq(mprotect(p, 4 * kt_page(), PROT_READ), 0);
	ck_assert_int_eq(sigtimedwait(&set, &info, &none), -1);
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_eq(munmap((void *)kt_pg(p, 1), kt_page()), 0);
	ck_assert_msg(sigtimedwait(&set, &info, &wait) == SIGIO,
		      "no SIGIO after invalidation: %s", strerror(errno));
	kt_expect_one(fd, NULL, 12, kt_pg(p, 1), kt_pg(p, 2));
}
END_TEST

Suite *kt_read_poll_suite(void)
{
	Suite *s = suite_create("read_poll");

	KT_ADD_TESTS(s, "read",
		     empty_read_eagain, inval_then_last, exact_buffer_last_owed,
		     partial_reads, new_event_before_owed_last,
		     blocking_read_wakes, nonblock_via_fcntl,
		     unregister_drops_pending,
		     unregister_emptying_list_owes_last,
		     unregister_idle_owes_nothing);
	KT_ADD_TESTS(s, "readiness",
		     poll_select_epoll_readiness, poll_wakes_sleeper,
		     sigio_on_invalidation);
	return s;
}
