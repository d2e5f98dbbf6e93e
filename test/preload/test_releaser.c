// SPDX-License-Identifier: BSD-2-Clause
/*
 * Unit tests of the releaser thread (releaser.c) against the test doubles:
 * it releases an invalidated idle MR with no application call; exit()
 * does not wait for a release in progress, in the process that runs the
 * releaser nor in a child forked while it was releasing; once started, it
 * changes none of the process's mappings.
 */
#define _GNU_SOURCE
#include <check.h>

#include "check_run.h"
#include <fcntl.h>
#include <stdio.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "cache_fixture.h"
#include "fakes.h"
#include "releaser.h"
#include "stats.h"

static void *reg_at(uintptr_t addr)
{
	struct cache_key k = { PD1, addr, PAGE, addr, 7 };

	return cache_reg(cache, &k, CTX1, 0);
}

/* The fake monitor's wake-up pipe, as the releaser's descriptor. */
static int start_releaser(void)
{
	int p[2];

	ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
	fmon->wake_rfd = p[0];
	fmon->wake_wfd = p[1];
	ck_assert_int_eq(releaser_start(cache, p[0]), 0);
	return p[0];
}

/*
 * An invalidated idle MR is deregistered by the releaser thread although
 * the application makes no further call (without it: at the next one).
 */
START_TEST(releaser_releases_without_application_calls)
{
	void *a = reg_at(0x10000);
	struct timespec t0, now;

	cache_dereg(cache, a);				/* idle */
	start_releaser();
	fake_invalidate(fmon, 0x10000, 0x11000);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		clock_gettime(CLOCK_MONOTONIC, &now);
		ck_assert_msg(now.tv_sec - t0.tv_sec < 20, "never released");
		usleep(1000);
	} while (n_dereg() == 0);
	ck_assert_int_eq(n_dereg(), 1);
	ck_assert_uint_eq(cache_registered_count(cache), 0);
	usleep(50000);	/* let the thread return to poll() before teardown */
}
END_TEST

/*
 * A release that does not end while the test runs: the releaser thread
 * blocks inside the real deregistration (shared memory, so a forked
 * child's copy of the fixture sees the same semaphores).
 */
struct hold {
	sem_t entered;
	sem_t go_on;
};

static struct hold *hold;

static void hold_dereg(struct fake_verbs *v)
{
	(void)v;
	sem_post(&hold->entered);
	sem_wait(&hold->go_on);
}

static void releaser_busy(void)
{
	void *a = reg_at(0x10000);

	hold = mmap(NULL, sizeof(*hold), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(hold, MAP_FAILED);
	sem_init(&hold->entered, 1, 0);
	sem_init(&hold->go_on, 1, 0);
	fv->on_dereg = hold_dereg;
	cache_dereg(cache, a);				/* idle */
	start_releaser();
	fake_invalidate(fmon, 0x10000, 0x11000);
	sem_wait(&hold->entered);	/* the releaser is releasing it */
}

/*
 * How often the exiting process @pid gave up the CPU (it was made to call
 * exit(0) at once): a wait for the releaser, which sleeps in steps, shows
 * as one voluntary context switch per step (the old wait: about 100); the
 * count does not depend on the machine's load, unlike a time.
 */
static long exit_sleeps(pid_t pid)
{
	struct rusage ru;
	int status;

	ck_assert_int_eq(wait4(pid, &status, 0, &ru), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return ru.ru_nvcsw;
}

/* exit() with a release in progress in the same process. */
START_TEST(exit_does_not_wait_for_a_release)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* The fixture's cache is the parent's here: a new one. */
		fixture_teardown();
		fixture_setup_default();
		releaser_busy();
		exit(0);	/* runs the releaser's atexit handler */
	}
	ck_assert_int_lt(exit_sleeps(pid), 20);
}
END_TEST

/* A child forked while the parent's releaser was releasing. */
START_TEST(child_forked_during_a_release_exits_at_once)
{
	pid_t pid;

	releaser_busy();
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		exit(0);
	ck_assert_int_lt(exit_sleeps(pid), 20);
	sem_post(&hold->go_on);		/* the parent's release ends */
	while (n_dereg() == 0)
		usleep(1000);
	usleep(50000);	/* let the thread return to poll() before teardown */
}
END_TEST

/* /proc/self/maps into @buf with read(2) alone: no allocation, no mapping. */
static size_t read_maps(char *buf, size_t size)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	size_t n = 0;
	ssize_t r;

	if (fd < 0)
		return 0;
	while (n < size - 1 && (r = read(fd, buf + n, size - 1 - n)) > 0)
		n += (size_t)r;
	close(fd);
	buf[n] = '\0';
	return n;
}

/* The first line of @a that is not in @b (for the failure message). */
static void first_new_line(const char *a, const char *b, char *out,
			   size_t size)
{
	for (const char *l = a; *l;) {
		const char *e = strchr(l, '\n');
		size_t len = e ? (size_t)(e - l) : strlen(l);
		char line[256];

		snprintf(line, sizeof(line), "%.*s\n", (int)len, l);
		if (!strstr(b, line)) {
			snprintf(out, size, "%s", line);
			return;
		}
		l += len + (e != NULL);
	}
	snprintf(out, size, "(none)");
}

static char maps_before[1 << 16], maps_after[1 << 16];

/*
 * The releaser thread changes no mapping of the process once
 * releaser_start() has returned, also when it frees memory for the first
 * time (the real deregistration frees the MR object, as rxe's does).
 * Otherwise its allocator's first mmap -- glibc reserves a 128 MiB arena
 * wherever the kernel finds room, then unmaps the ends that are not
 * 64 MiB-aligned -- can land in a hole the application has just unmapped
 * and is about to map again with MAP_FIXED (safe in a single-threaded
 * program): the trimming munmap then removes the application's new
 * mapping (its next access: SIGSEGV; ibv_reg_mr: EFAULT).  The main
 * thread neither allocates nor asserts (Check allocates) between the two
 * snapshots.
 */
START_TEST(releaser_maps_nothing_once_started)
{
	void *a = reg_at(0x10000);
	char before[256], after[256];
	bool released = false;

	cache_dereg(cache, a);				/* idle */
	start_releaser();
	read_maps(maps_before, sizeof(maps_before));
	fake_invalidate(fmon, 0x10000, 0x11000);
	/* The MR is freed before unwatch(): wait for the unwatch. */
	for (int i = 0; i < 20000 && !released; i++) {
		released = atomic_load(&fmon->n_unwatch) > 0;
		usleep(1000);
	}
	usleep(50000);	/* and for the thread's way back to poll() */
	read_maps(maps_after, sizeof(maps_after));
	ck_assert_msg(released, "never released");
	ck_assert_int_eq(n_dereg(), 1);
	first_new_line(maps_after, maps_before, after, sizeof(after));
	first_new_line(maps_before, maps_after, before, sizeof(before));
	ck_assert_msg(strcmp(maps_before, maps_after) == 0,
		      "the releaser thread changed the mappings while releasing: new %s, gone %s",
		      after, before);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("releaser");
	TCase *tc = tcase_create("releaser");

	tcase_add_checked_fixture(tc, fixture_setup_default, fixture_teardown);
	tcase_add_test(tc, releaser_releases_without_application_calls);
	tcase_add_test(tc, exit_does_not_wait_for_a_release);
	tcase_add_test(tc, child_forked_during_a_release_exits_at_once);
	tcase_add_test(tc, releaser_maps_nothing_once_started);
	suite_add_tcase(s, tc);
	return check_run_suite(s);
}
