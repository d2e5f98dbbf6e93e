// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of the queue of deferred deregistrations (dereg_defer.c):
 * a queued pointer is taken by any thread, also after the queuing thread
 * is gone; each exactly once under concurrent queuing and taking; a full
 * queue says EAGAIN and loses nothing; a forked child starts with an
 * empty queue.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dereg_defer.h"

static void *queue_and_exit(void *arg)
{
	return (void *)(intptr_t)dereg_defer(arg);
}

START_TEST(taken_by_another_thread_after_the_queuer_exits)
{
	pthread_t t;
	void *rc;

	ck_assert_ptr_null(dereg_defer_take());
	ck_assert(!dereg_defer_pending());
	ck_assert_int_eq(pthread_create(&t, NULL, queue_and_exit, (void *)0x1234), 0);
	ck_assert_int_eq(pthread_join(t, &rc), 0);
	ck_assert_ptr_null(rc);
	ck_assert(dereg_defer_pending());
	ck_assert_ptr_eq(dereg_defer_take(), (void *)0x1234);
	ck_assert(dereg_defer_pending());	/* taken, not done yet */
	dereg_defer_done((void *)0x1234);
	ck_assert(!dereg_defer_pending());
	ck_assert_ptr_null(dereg_defer_take());
}
END_TEST

START_TEST(full_queue_says_eagain_and_keeps_what_it_has)
{
	static bool seen[DEREG_DEFER_SLOTS + 1];
	unsigned int n_seen = 0;
	void *p;

	ck_assert_int_ge(DEREG_DEFER_SLOTS, 1024);
	for (uintptr_t i = 1; i <= DEREG_DEFER_SLOTS; i++)
		ck_assert_int_eq(dereg_defer((void *)i), 0);
	ck_assert_int_eq(dereg_defer((void *)0x99999), EAGAIN);
	while ((p = dereg_defer_take()) != NULL) {
		uintptr_t v = (uintptr_t)p;

		ck_assert(v >= 1 && v <= DEREG_DEFER_SLOTS);
		ck_assert(!seen[v]);	/* once each */
		seen[v] = true;
		n_seen++;
		dereg_defer_done(p);
	}
	ck_assert_uint_eq(n_seen, DEREG_DEFER_SLOTS);
	ck_assert_int_eq(dereg_defer((void *)0x99999), 0);	/* room again */
	ck_assert_ptr_eq(dereg_defer_take(), (void *)0x99999);
	dereg_defer_done((void *)0x99999);
}
END_TEST

/*
 * The parent's queued MRs (and a claim some thread held at the fork) are
 * not the child's: its queue is empty; the parent keeps its own.
 */
START_TEST(a_forked_child_starts_with_an_empty_queue)
{
	pid_t pid;
	int status;

	dereg_defer_install_fork_hook();
	ck_assert_int_eq(dereg_defer((void *)0x4321), 0);
	atomic_fetch_add(&dereg_defer_claimed, 1);	/* a thread mid-take */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(dereg_defer_take() == NULL && !dereg_defer_pending() ? 0 : 1);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	atomic_fetch_sub(&dereg_defer_claimed, 1);
	ck_assert_ptr_eq(dereg_defer_take(), (void *)0x4321);
	dereg_defer_done((void *)0x4321);
	ck_assert(!dereg_defer_pending());
}
END_TEST

/*
 * A child made without the fork handlers (a raw clone) finds the
 * parent's entries in its copy of the queue: its drain drops them
 * without doing them, and its own entries are queued and taken as usual.
 */
static int n_drained;

static void count_drained(void *mr)
{
	(void)mr;
	n_drained++;
}

static int raw_child(void)
{
	unsigned int depth = 0;

	dereg_defer_drain(&depth, count_drained);
	if (n_drained != 0 || dereg_defer_pending())
		return 1;
	if (dereg_defer((void *)0x6666) != 0 ||
	    dereg_defer_take() != (void *)0x6666)
		return 2;
	dereg_defer_done((void *)0x6666);
	return dereg_defer_pending() ? 3 : 0;
}

START_TEST(a_raw_clone_child_drops_only_the_parents_entries)
{
	long pid;
	int status;

	dereg_defer_install_fork_hook();
	ck_assert_int_eq(dereg_defer((void *)0x5555), 0);
	pid = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(raw_child());
	ck_assert_int_eq(waitpid((pid_t)pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	ck_assert_ptr_eq(dereg_defer_take(), (void *)0x5555);
	dereg_defer_done((void *)0x5555);
	ck_assert(!dereg_defer_pending());
}
END_TEST

/* Queuers and takers at once: every pointer comes out exactly once. */
#define N_QUEUERS 2
#define PER_QUEUER 200000
static _Atomic unsigned char taken[N_QUEUERS * PER_QUEUER + 1];
static atomic_int queuers_done;
static atomic_long n_taken, n_again;

static void *queuer(void *arg)
{
	uintptr_t base = (uintptr_t)arg;

	for (uintptr_t i = 0; i < PER_QUEUER; i++)
		while (dereg_defer((void *)(base + i)) == EAGAIN)
			atomic_fetch_add(&n_again, 1);
	atomic_fetch_add(&queuers_done, 1);
	return NULL;
}

static void take_all(void)
{
	void *p;

	while ((p = dereg_defer_take()) != NULL) {
		atomic_fetch_add(&taken[(uintptr_t)p], 1);
		atomic_fetch_add(&n_taken, 1);
		dereg_defer_done(p);
	}
}

static void *taker(void *arg)
{
	(void)arg;
	while (atomic_load(&queuers_done) < N_QUEUERS)
		take_all();
	take_all();
	return NULL;
}

START_TEST(each_pointer_taken_once_under_concurrency)
{
	pthread_t q[N_QUEUERS], t[2];

	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, taker, NULL), 0);
	for (int i = 0; i < N_QUEUERS; i++)
		ck_assert_int_eq(pthread_create(&q[i], NULL, queuer,
						(void *)(uintptr_t)(1 + i * PER_QUEUER)), 0);
	for (int i = 0; i < N_QUEUERS; i++)
		pthread_join(q[i], NULL);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	take_all();
	ck_assert_int_eq(atomic_load(&n_taken), N_QUEUERS * PER_QUEUER);
	for (long i = 1; i <= N_QUEUERS * PER_QUEUER; i++)
		ck_assert_int_eq(atomic_load(&taken[i]), 1);
	ck_assert(!dereg_defer_pending());
}
END_TEST

/*
 * A signal handler (ITIMER_PROF: it fires while this thread runs) queues
 * in the middle of this thread's own queuing and taking, at any point of
 * dereg_defer() or dereg_defer_take(): every pointer, the thread's and
 * the handler's, comes out exactly once.
 */
#define MAIN_MAX 20000000UL
#define HANDLER_MAX 4000
#define HANDLER_BASE (MAIN_MAX + 1)
#define HANDLER_WANTED 200
static unsigned char taken_once[HANDLER_BASE + HANDLER_MAX];
static volatile sig_atomic_t n_fired;
static volatile unsigned char handler_queued[HANDLER_MAX];

static void queue_in_handler(int sig)
{
	int saved = errno;
	sig_atomic_t k = n_fired;

	(void)sig;
	if (k < HANDLER_MAX) {
		handler_queued[k] = dereg_defer((void *)(HANDLER_BASE + k)) == 0;
		n_fired = k + 1;
	}
	errno = saved;
}

static void take_and_mark(void)
{
	void *p;

	while ((p = dereg_defer_take()) != NULL) {
		uintptr_t v = (uintptr_t)p;

		ck_assert(v >= 1 && v < HANDLER_BASE + HANDLER_MAX);
		ck_assert_uint_eq(taken_once[v], 0);
		taken_once[v] = 1;
		dereg_defer_done(p);
	}
}

START_TEST(each_pointer_taken_once_with_a_signal_handler_queuing)
{
	struct sigaction sa;
	struct itimerval it = { { 0, 1000 }, { 0, 1000 } };
	struct itimerval off;
	uintptr_t n_main = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = queue_in_handler;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	ck_assert_int_eq(sigaction(SIGPROF, &sa, NULL), 0);
	ck_assert_int_eq(setitimer(ITIMER_PROF, &it, NULL), 0);
	while (n_fired < HANDLER_WANTED && n_main < MAIN_MAX) {
		n_main++;
		ck_assert_int_eq(dereg_defer((void *)n_main), 0);
		if (n_main % 3 == 0)	/* let a few wait in the queue */
			take_and_mark();
	}
	memset(&off, 0, sizeof(off));
	ck_assert_int_eq(setitimer(ITIMER_PROF, &off, NULL), 0);
	take_and_mark();
	ck_assert(!dereg_defer_pending());
	/* The handler must have run, or nothing was tested. */
	ck_assert_int_ge(n_fired, 10);
	for (uintptr_t v = 1; v <= n_main; v++)
		ck_assert_msg(taken_once[v], "%lu not taken", (unsigned long)v);
	for (sig_atomic_t k = 0; k < n_fired; k++) {
		ck_assert(handler_queued[k]);	/* never full here */
		ck_assert_msg(taken_once[HANDLER_BASE + k], "handler's %d not taken", (int)k);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dereg_defer");
	TCase *tc = tcase_create("queue");

	tcase_add_test(tc, taken_by_another_thread_after_the_queuer_exits);
	tcase_add_test(tc, full_queue_says_eagain_and_keeps_what_it_has);
	tcase_add_test(tc, a_forked_child_starts_with_an_empty_queue);
	tcase_add_test(tc, a_raw_clone_child_drops_only_the_parents_entries);
	tcase_add_test(tc, each_pointer_taken_once_under_concurrency);
	tcase_add_test(tc, each_pointer_taken_once_with_a_signal_handler_queuing);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return check_run_suite(s);
}
