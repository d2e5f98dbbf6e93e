// SPDX-License-Identifier: BSD-2-Clause
/*
 * Ordinary verbs programs exercising what the shim must get right around
 * the cache, run with the shim preloaded (never linked against it):
 *
 *   pd-close    ibv_dealloc_pd and ibv_close_device succeed with idle cached
 *               MRs; a busy MR still makes ibv_dealloc_pd fail with EBUSY;
 *               the device reopens and works.
 *   fork        a forked child deregisters the parent's MR and registers
 *               memory of its own; the parent's MRs keep working.
 *   threads     several threads register, RDMA-write and deregister shared
 *               buffers while another thread replaces the memory behind
 *               them (munmap+mmap, mremap, madvise) and unmaps unrelated
 *               memory; every transfer must carry the current data.
 *   busy-stale  the application replaces memory behind an MR it still
 *               holds: the next registration must not return that MR.
 *
 * Each prints "lifecycle: <case> PASS" and exits 0, or explains and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rdma_util.h"

#define ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE)
#define BUF 65536

#define REQUIRE(cond, ...)                                                \
	do {                                                              \
		if (!(cond)) {                                            \
			fprintf(stderr, "lifecycle: %s:%d: ", __func__,   \
				__LINE__);                                \
			fprintf(stderr, __VA_ARGS__);                     \
			fprintf(stderr, " (errno %d: %s)\n", errno,       \
				strerror(errno));                         \
			return 1;                                         \
		}                                                         \
	} while (0)

static void *map_buf(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* Register, write @buf to a peer buffer, check, deregister. */
static int write_check(struct rdma_loop *l, void *buf, size_t len)
{
	struct ibv_pd *pd = l->dev->pd;
	void *peer = map_buf(len);
	struct ibv_mr *mr, *pmr;

	REQUIRE(peer, "mmap");
	pmr = ibv_reg_mr(pd, peer, len, ACCESS);
	mr = ibv_reg_mr(pd, buf, len, ACCESS);
	REQUIRE(mr && pmr, "ibv_reg_mr");
	REQUIRE(rdma_write(l, mr, buf, pmr, peer, len) == 0, "RDMA write");
	REQUIRE(memcmp(buf, peer, len) == 0, "data mismatch");
	REQUIRE(ibv_dereg_mr(mr) == 0 && ibv_dereg_mr(pmr) == 0, "dereg");
	munmap(peer, len);
	return 0;
}

static int case_pd_close(void)
{
	struct rdma_dev d;
	struct rdma_loop l;
	struct ibv_pd *pd2;
	struct ibv_mr *mr, *busy;
	char *bufs[4];
	int rc;

	REQUIRE(rdma_dev_open(&d, NULL) == 0, "open");
	for (int i = 0; i < 4; i++) {
		bufs[i] = map_buf(BUF);
		REQUIRE(bufs[i], "mmap");
		memset(bufs[i], 'p' + i, BUF);
	}

	/* A second PD whose MRs are all idle (cached) when it is freed. */
	pd2 = ibv_alloc_pd(d.ctx);
	REQUIRE(pd2, "ibv_alloc_pd");
	for (int i = 0; i < 3; i++) {
		mr = ibv_reg_mr(pd2, bufs[i], BUF, ACCESS);
		REQUIRE(mr, "ibv_reg_mr");
		REQUIRE(ibv_dereg_mr(mr) == 0, "ibv_dereg_mr");
	}
	/* A busy MR keeps the PD busy, exactly as without a cache. */
	busy = ibv_reg_mr(pd2, bufs[3], BUF, ACCESS);
	REQUIRE(busy, "ibv_reg_mr");
	rc = ibv_dealloc_pd(pd2);
	REQUIRE(rc == EBUSY, "ibv_dealloc_pd with a busy MR returned %d", rc);
	REQUIRE(ibv_dereg_mr(busy) == 0, "ibv_dereg_mr");
	rc = ibv_dealloc_pd(pd2);
	REQUIRE(rc == 0, "ibv_dealloc_pd with idle cached MRs returned %d", rc);

	/* Device close with idle cached MRs (and a PD the app never freed). */
	REQUIRE(rdma_loop_create(&l, &d) == 0, "loop");
	REQUIRE(write_check(&l, bufs[0], BUF) == 0, "write");
	rdma_loop_destroy(&l);
	mr = ibv_reg_mr(d.pd, bufs[1], BUF, ACCESS);
	REQUIRE(mr && ibv_dereg_mr(mr) == 0, "reg/dereg");
	rc = ibv_close_device(d.ctx);
	REQUIRE(rc == 0, "ibv_close_device with idle cached MRs returned %d", rc);

	/* The device opens again and the same buffers register and work. */
	REQUIRE(rdma_dev_open(&d, NULL) == 0, "reopen");
	REQUIRE(rdma_loop_create(&l, &d) == 0, "loop");
	for (int i = 0; i < 4; i++)
		REQUIRE(write_check(&l, bufs[i], BUF) == 0, "write after reopen");
	rdma_loop_destroy(&l);
	rdma_dev_close(&d);
	printf("lifecycle: pd-close PASS\n");
	return 0;
}

static int child_work(struct rdma_dev *d, struct ibv_mr *parent_mr)
{
	char *mine = map_buf(BUF);
	struct ibv_mr *mr;

	REQUIRE(mine, "mmap");
	/* A child cleaning up what it inherited: must not hurt the parent. */
	REQUIRE(ibv_dereg_mr(parent_mr) == 0, "child: ibv_dereg_mr");
	memset(mine, 'c', BUF);
	mr = ibv_reg_mr(d->pd, mine, BUF, ACCESS);
	REQUIRE(mr, "child: ibv_reg_mr");
	REQUIRE(ibv_dereg_mr(mr) == 0, "child: ibv_dereg_mr of its own MR");
	return 0;
}

static int case_fork(void)
{
	struct rdma_dev d;
	struct rdma_loop l;
	struct ibv_mr *busy, *idle, *again, *pmr;
	char *a = map_buf(BUF), *b = map_buf(BUF), *peer = map_buf(BUF);
	int status;
	pid_t pid;

	REQUIRE(a && b && peer, "mmap");
	REQUIRE(rdma_dev_open(&d, NULL) == 0 && rdma_loop_create(&l, &d) == 0,
		"open");
	memset(a, 'A', BUF);
	memset(b, 'B', BUF);
	pmr = ibv_reg_mr(d.pd, peer, BUF, ACCESS);
	busy = ibv_reg_mr(d.pd, a, BUF, ACCESS);
	idle = ibv_reg_mr(d.pd, b, BUF, ACCESS);
	REQUIRE(pmr && busy && idle, "ibv_reg_mr");
	REQUIRE(ibv_dereg_mr(idle) == 0, "ibv_dereg_mr");

	fflush(NULL);
	pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0)
		_exit(child_work(&d, busy));
	REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
	REQUIRE(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"child failed (status %#x)", status);

	/* The parent's MRs are intact: its busy MR still moves data... */
	REQUIRE(rdma_write(&l, busy, a, pmr, peer, BUF) == 0, "write with busy MR");
	REQUIRE(memcmp(a, peer, BUF) == 0, "data via busy MR");
	/* ...and its idle cached MR is still handed out and works. */
	again = ibv_reg_mr(d.pd, b, BUF, ACCESS);
	REQUIRE(again, "ibv_reg_mr");
	REQUIRE(rdma_write(&l, again, b, pmr, peer, BUF) == 0, "write with cached MR");
	REQUIRE(memcmp(b, peer, BUF) == 0, "data via cached MR");
	REQUIRE(ibv_dereg_mr(again) == 0 && ibv_dereg_mr(busy) == 0 &&
		ibv_dereg_mr(pmr) == 0, "ibv_dereg_mr");
	rdma_loop_destroy(&l);
	rdma_dev_close(&d);
	printf("lifecycle: fork PASS (idle MR %s after fork)\n",
	       again == idle ? "reused" : "re-registered");
	return 0;
}

/* ---- threads ------------------------------------------------------------ */

#define SLOTS 12
#define WORKERS 3

struct slot {
	pthread_mutex_t lock;	/* the app never replaces memory in use */
	uint8_t *base;
	uint8_t pattern;
};

static struct slot slots[SLOTS];
static struct rdma_dev tdev;
static atomic_bool workers_done;
static atomic_int replacements, unrelated_unmaps;

struct worker {
	int id, iterations, transfers, failures;
	struct rdma_loop loop;
	uint8_t *peer;
	struct ibv_mr *peer_mr;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	unsigned seed = (unsigned)w->id * 7919u + 1;

	for (int i = 0; i < w->iterations && !w->failures; i++) {
		struct slot *s = &slots[rand_r(&seed) % SLOTS];
		struct ibv_mr *mr;

		pthread_mutex_lock(&s->lock);
		mr = ibv_reg_mr(tdev.pd, s->base, BUF, ACCESS);
		if (!mr) {
			fprintf(stderr, "worker %d: ibv_reg_mr: %s\n", w->id,
				strerror(errno));
			w->failures++;
		} else {
			memset(w->peer, 0, BUF);
			if (rdma_write(&w->loop, mr, s->base, w->peer_mr,
				       w->peer, BUF) ||
			    memcmp(w->peer, s->base, BUF)) {
				fprintf(stderr, "worker %d: slot %ld: wrong data (pattern %#x, got %#x)\n",
					w->id, (long)(s - slots), s->pattern,
					w->peer[0]);
				w->failures++;
			}
			w->transfers++;
			if (ibv_dereg_mr(mr))
				w->failures++;
		}
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

static int replace_slot(struct slot *s, int how)
{
	void *n;

	switch (how) {
	case 0:
		if (munmap(s->base, BUF) ||
		    mmap(s->base, BUF, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != s->base)
			return -1;
		break;
	case 1:
		n = map_buf(BUF);
		if (!n || mremap(n, BUF, BUF, MREMAP_MAYMOVE | MREMAP_FIXED,
				 s->base) != s->base)
			return -1;
		break;
	default:
		if (madvise(s->base, BUF, MADV_DONTNEED))
			return -1;
		break;
	}
	s->pattern++;
	memset(s->base, s->pattern, BUF);
	return 0;
}

static void *unmapper_main(void *arg)
{
	unsigned seed = 4242;
	long *failures = arg;

	while (!atomic_load(&workers_done)) {
		struct slot *s = &slots[rand_r(&seed) % SLOTS];
		void *junk;

		pthread_mutex_lock(&s->lock);
		if (replace_slot(s, (int)(rand_r(&seed) % 3)))
			(*failures)++;
		pthread_mutex_unlock(&s->lock);
		atomic_fetch_add(&replacements, 1);
		/* Unrelated churn, no lock: must not disturb anything. */
		junk = map_buf(BUF);
		if (junk) {
			memset(junk, 1, BUF);
			munmap(junk, BUF);
			atomic_fetch_add(&unrelated_unmaps, 1);
		}
		usleep(rand_r(&seed) % 2000);
	}
	return NULL;
}

static int case_threads(int iterations)
{
	struct worker w[WORKERS];
	pthread_t tw[WORKERS], tu;
	long unmap_failures = 0;
	int transfers = 0, failures = 0;

	REQUIRE(rdma_dev_open(&tdev, NULL) == 0, "open");
	for (int i = 0; i < SLOTS; i++) {
		pthread_mutex_init(&slots[i].lock, NULL);
		slots[i].base = map_buf(BUF);
		REQUIRE(slots[i].base, "mmap");
		slots[i].pattern = (uint8_t)(i * 16);
		memset(slots[i].base, slots[i].pattern, BUF);
	}
	for (int i = 0; i < WORKERS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].id = i;
		w[i].iterations = iterations;
		w[i].peer = map_buf(BUF);
		REQUIRE(w[i].peer, "mmap");
		REQUIRE(rdma_loop_create(&w[i].loop, &tdev) == 0, "loop");
		w[i].peer_mr = ibv_reg_mr(tdev.pd, w[i].peer, BUF, ACCESS);
		REQUIRE(w[i].peer_mr, "ibv_reg_mr");
	}
	pthread_create(&tu, NULL, unmapper_main, &unmap_failures);
	for (int i = 0; i < WORKERS; i++)
		pthread_create(&tw[i], NULL, worker_main, &w[i]);
	for (int i = 0; i < WORKERS; i++) {
		pthread_join(tw[i], NULL);
		transfers += w[i].transfers;
		failures += w[i].failures;
	}
	atomic_store(&workers_done, true);
	pthread_join(tu, NULL);
	for (int i = 0; i < WORKERS; i++) {
		REQUIRE(ibv_dereg_mr(w[i].peer_mr) == 0, "ibv_dereg_mr");
		rdma_loop_destroy(&w[i].loop);
	}
	rdma_dev_close(&tdev);
	printf("lifecycle: threads transfers=%d replacements=%d unrelated_unmaps=%d failures=%d\n",
	       transfers, atomic_load(&replacements),
	       atomic_load(&unrelated_unmaps), failures);
	REQUIRE(failures == 0 && unmap_failures == 0, "threads case failed");
	REQUIRE(transfers == WORKERS * iterations, "missing transfers");
	printf("lifecycle: threads PASS\n");
	return 0;
}

static int case_busy_stale(void)
{
	struct rdma_dev d;
	struct rdma_loop l;
	struct ibv_mr *held, *fresh, *pmr;
	uint8_t *buf = map_buf(BUF), *peer = map_buf(BUF);

	REQUIRE(buf && peer, "mmap");
	REQUIRE(rdma_dev_open(&d, NULL) == 0 && rdma_loop_create(&l, &d) == 0,
		"open");
	pmr = ibv_reg_mr(d.pd, peer, BUF, ACCESS);
	memset(buf, 1, BUF);
	held = ibv_reg_mr(d.pd, buf, BUF, ACCESS);
	REQUIRE(pmr && held, "ibv_reg_mr");
	/* The application bug: new memory behind an MR it still holds. */
	REQUIRE(mmap(buf, BUF, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == buf,
		"mmap MAP_FIXED");
	memset(buf, 2, BUF);
	fresh = ibv_reg_mr(d.pd, buf, BUF, ACCESS);
	REQUIRE(fresh, "ibv_reg_mr");
	REQUIRE(fresh != held, "the stale MR was handed out again");
	REQUIRE(rdma_write(&l, fresh, buf, pmr, peer, BUF) == 0, "write");
	REQUIRE(peer[0] == 2 && memcmp(buf, peer, BUF) == 0, "stale data");
	REQUIRE(ibv_dereg_mr(held) == 0, "ibv_dereg_mr of the stale MR");
	REQUIRE(ibv_dereg_mr(fresh) == 0 && ibv_dereg_mr(pmr) == 0, "dereg");
	rdma_loop_destroy(&l);
	rdma_dev_close(&d);
	printf("lifecycle: busy-stale PASS\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && strcmp(argv[1], "pd-close") == 0)
		return case_pd_close();
	if (argc >= 2 && strcmp(argv[1], "fork") == 0)
		return case_fork();
	if (argc >= 2 && strcmp(argv[1], "threads") == 0)
		return case_threads(argc > 2 ? atoi(argv[2]) : 200);
	if (argc >= 2 && strcmp(argv[1], "busy-stale") == 0)
		return case_busy_stale();
	fprintf(stderr, "usage: rdma-lifecycle pd-close|fork|threads [N]|busy-stale\n");
	return 2;
}
