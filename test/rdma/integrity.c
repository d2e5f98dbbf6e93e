// SPDX-License-Identifier: BSD-2-Clause
/*
 * Data-integrity test of the registration cache over Soft-RoCE, run with
 * the shim preloaded (this program is an ordinary verbs program).
 *
 * A buffer is registered and used in an RDMA write, deregistered, then the
 * memory behind its virtual address is replaced (munmap + mmap MAP_FIXED,
 * munmap through a raw system call, mmap MAP_FIXED over it, mremap over
 * it, madvise DONTNEED of all or of one page, brk shrink and regrow) and
 * filled with new data.  The next registration of the same range and an
 * RDMA write must move the new data.  The buffer plays both roles: source
 * of the write (a stale MR would send the old pages) and target (a stale
 * MR would write into the old pages, invisible to the program).
 *
 * --slices: the transfers use a slice of the buffer (from 8 bytes into
 * its second page to 8 bytes before its last page) while the whole buffer
 * was registered just before: under the shim with containment on
 * (UMMUSHIM_SUBRANGE=all: these MRs allow remote writes), every slice
 * registration before the replacement is served by the whole buffer's
 * region, and the one after it must not be.
 *
 * --expect fresh (default): every transfer must carry the new data.
 * --expect stale: the control run with a cache that ignores invalidations;
 * every method must then show stale data at least once, proving that the
 * test detects the failure it is for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rdma_util.h"

enum outcome { FRESH, STALE, CORRUPT };

struct region {
	uint8_t *base;
	size_t size;
};

struct method {
	const char *name;
	bool brk;			/* region lives in the heap's brk area */
	int (*replace)(struct region *r, uint8_t fill_value);
};

static size_t page_size;
static bool slices;	/* --slices */

/* The part of @r the transfers use: all of it, or the --slices slice. */
static struct region used_part(const struct region *r)
{
	struct region u = *r;

	if (slices) {
		u.base = r->base + page_size + 8;
		u.size = r->size - 2 * page_size - 16;
	}
	return u;
}

/*
 * The registration before the replacement: with --slices the whole
 * buffer is registered (and released: cached, idle) first, so that the
 * slice's registration can be a containment hit.
 */
static struct ibv_mr *reg_before(struct rdma_dev *d, const struct region *r,
				 int it);

/* Every byte value this program ever wrote into a buffer. */
static bool written[256];

static void fill(void *p, uint8_t v, size_t len)
{
	written[v] = true;
	memset(p, v, len);
}

static int map_fixed(struct region *r)
{
	void *p = mmap(r->base, r->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

	if (p != r->base)
		return rdma_fail("mmap MAP_FIXED");
	return 0;
}

static int replace_munmap_mmap(struct region *r, uint8_t fill_value)
{
	(void)fill_value;
	if (munmap(r->base, r->size))
		return rdma_fail("munmap");
	return map_fixed(r);
}

static int replace_raw_munmap(struct region *r, uint8_t fill_value)
{
	(void)fill_value;
	/* Straight to the kernel: no libc function a hook could catch. */
	if (syscall(SYS_munmap, r->base, r->size))
		return rdma_fail("syscall(SYS_munmap)");
	return map_fixed(r);
}

static int replace_mmap_over(struct region *r, uint8_t fill_value)
{
	(void)fill_value;
	return map_fixed(r);	/* implicitly unmaps the old pages */
}

static int replace_mremap(struct region *r, uint8_t fill_value)
{
	void *n = mmap(NULL, r->size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (n == MAP_FAILED)
		return rdma_fail("mmap");
	fill(n, fill_value, r->size);
	if (mremap(n, r->size, r->size, MREMAP_MAYMOVE | MREMAP_FIXED,
		   r->base) != r->base)
		return rdma_fail("mremap over the buffer");
	return 0;
}

static int replace_dontneed(struct region *r, uint8_t fill_value)
{
	(void)fill_value;
	if (madvise(r->base, r->size, MADV_DONTNEED))
		return rdma_fail("madvise(MADV_DONTNEED)");
	return 0;
}

static int replace_dontneed_one_page(struct region *r, uint8_t fill_value)
{
	(void)fill_value;
	if (madvise(r->base + 2 * page_size, page_size, MADV_DONTNEED))
		return rdma_fail("madvise(MADV_DONTNEED) of one page");
	return 0;
}

static int replace_brk(struct region *r, uint8_t fill_value)
{
	(void)fill_value;
	if (sbrk(0) != r->base + r->size) {
		fprintf(stderr, "brk moved: the region is no longer at the top of the heap (break %p, region end %p)\n",
			sbrk(0), (void *)(r->base + r->size));
		return -1;
	}
	if (sbrk(-(intptr_t)r->size) == (void *)-1)
		return rdma_fail("sbrk shrink");
	if (sbrk((intptr_t)r->size) != r->base)
		return rdma_fail("sbrk regrow at the same address");
	return 0;
}

static const struct method methods[] = {
	{ "munmap+mmap_fixed", false, replace_munmap_mmap },
	{ "raw_syscall_munmap", false, replace_raw_munmap },
	{ "mmap_fixed_over", false, replace_mmap_over },
	{ "mremap_over", false, replace_mremap },
	{ "madvise_dontneed", false, replace_dontneed },
	{ "madvise_dontneed_1page", false, replace_dontneed_one_page },
	{ "brk_shrink_regrow", true, replace_brk },
};

#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

/* Not a compile-time constant: this registration takes the iova2 route. */
static volatile int access_var = IBV_ACCESS_LOCAL_WRITE |
				 IBV_ACCESS_REMOTE_WRITE;

static struct ibv_mr *reg(struct rdma_dev *d, void *buf, size_t len, int it)
{
	/* Alternate the two routes verbs.h can take. */
	if (it % 2)
		return ibv_reg_mr(d->pd, buf, len, access_var);
	return ibv_reg_mr(d->pd, buf, len,
			  IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
}

static struct ibv_mr *reg_before(struct rdma_dev *d, const struct region *r,
				 int it)
{
	struct region u = used_part(r);

	if (slices) {
		struct ibv_mr *whole = reg(d, r->base, r->size, it);

		if (!whole || ibv_dereg_mr(whole))
			return NULL;
	}
	return reg(d, u.base, u.size, it);
}

/*
 * FRESH: all bytes are @want.  STALE: the others are data this program
 * wrote earlier (an older generation of the buffer).  CORRUPT: anything
 * else.
 */
static enum outcome classify(const uint8_t *p, size_t len, uint8_t want,
			     const char *what)
{
	bool stale = false;

	for (size_t i = 0; i < len; i++) {
		if (p[i] == want)
			continue;
		if (!stale)
			fprintf(stderr, "%s: byte %zu is %#x, expected %#x\n",
				what, i, p[i], want);
		if (written[p[i]]) {
			stale = true;
			continue;
		}
		fprintf(stderr, "%s: byte %zu is %#x, never written: corrupt\n",
			what, i, p[i]);
		return CORRUPT;
	}
	return stale ? STALE : FRESH;
}

struct ctx {
	struct rdma_dev dev;
	struct rdma_loop loop;
	uint8_t *peer;		/* the other end of every transfer */
	struct ibv_mr *peer_mr;
	size_t size;
};

/* The tested buffer as the source of the RDMA write. */
static int round_as_source(struct ctx *c, const struct method *m,
			   struct region *r, int it, enum outcome *out)
{
	uint8_t oldv = (uint8_t)(0x10 + 2 * it), newv = (uint8_t)(oldv + 1);
	struct region u = used_part(r);
	enum outcome baseline;
	struct ibv_mr *mr;

	fill(r->base, oldv, r->size);
	mr = reg_before(&c->dev, r, it);
	if (!mr)
		return rdma_fail("ibv_reg_mr");
	fill(c->peer, 0, c->size);
	if (rdma_write(&c->loop, mr, u.base, c->peer_mr, c->peer, u.size))
		return -1;
	/* Stale here too if an earlier replacement went unnoticed. */
	baseline = classify(c->peer, u.size, oldv, "baseline");
	if (ibv_dereg_mr(mr))
		return rdma_fail("ibv_dereg_mr");

	if (m->replace(r, newv))
		return -1;
	fill(r->base, newv, r->size);

	mr = reg(&c->dev, u.base, u.size, it);
	if (!mr)
		return rdma_fail("ibv_reg_mr after replacement");
	fill(c->peer, 0, c->size);
	if (rdma_write(&c->loop, mr, u.base, c->peer_mr, c->peer, u.size))
		return -1;
	*out = classify(c->peer, u.size, newv, m->name);
	if (baseline > *out)
		*out = baseline;
	if (ibv_dereg_mr(mr))
		return rdma_fail("ibv_dereg_mr");
	return 0;
}

/* The tested buffer as the target of the RDMA write. */
static int round_as_target(struct ctx *c, const struct method *m,
			   struct region *r, int it, enum outcome *out)
{
	uint8_t first = (uint8_t)(0x80 + 3 * it);
	uint8_t filler = (uint8_t)(first + 1), second = (uint8_t)(first + 2);
	struct region u = used_part(r);
	enum outcome baseline;
	struct ibv_mr *mr;

	fill(r->base, 0, r->size);
	mr = reg_before(&c->dev, r, it);
	if (!mr)
		return rdma_fail("ibv_reg_mr");
	fill(c->peer, first, c->size);
	if (rdma_write(&c->loop, c->peer_mr, c->peer, mr, u.base, u.size))
		return -1;
	baseline = classify(u.base, u.size, first, "baseline");
	if (ibv_dereg_mr(mr))
		return rdma_fail("ibv_dereg_mr");

	if (m->replace(r, filler))
		return -1;
	fill(r->base, filler, r->size);

	mr = reg(&c->dev, u.base, u.size, it);
	if (!mr)
		return rdma_fail("ibv_reg_mr after replacement");
	fill(c->peer, second, c->size);
	if (rdma_write(&c->loop, c->peer_mr, c->peer, mr, u.base, u.size))
		return -1;
	*out = classify(u.base, u.size, second, m->name);
	if (baseline > *out)
		*out = baseline;
	if (ibv_dereg_mr(mr))
		return rdma_fail("ibv_dereg_mr");
	return 0;
}

static int region_init(struct region *r, const struct method *m, size_t size)
{
	r->size = size;
	if (m->brk) {
		uint8_t *top = sbrk(0);
		size_t pad = (page_size - (uintptr_t)top % page_size) % page_size;

		if (sbrk((intptr_t)pad) == (void *)-1)
			return rdma_fail("sbrk");
		r->base = sbrk((intptr_t)size);
		if (r->base == (void *)-1)
			return rdma_fail("sbrk");
		return 0;
	}
	r->base = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->base == MAP_FAILED)
		return rdma_fail("mmap");
	return 0;
}

/*
 * The brk region must stay at the top of the heap: give malloc a large top
 * pad and room at the top, and never let it trim, so that it never moves
 * the break again.  Made last, when the verbs library and any preloaded
 * one have done their own first allocations.
 */
static int brk_region_init(struct region *r, const struct method *m,
			   size_t size)
{
	mallopt(M_TOP_PAD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
	mallopt(M_MMAP_MAX, 0);
	free(malloc(32 << 20));
	mallopt(M_MMAP_MAX, 65536);	/* glibc's default */
	return region_init(r, m, size);
}

static void usage(void)
{
	fprintf(stderr, "usage: rdma-integrity [--expect fresh|stale] [--iterations N] [--size BYTES] [--slices]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	bool expect_stale = false;
	int iterations = 10, errors = 0, bad_methods = 0;
	int total[3] = { 0, 0, 0 };
	struct region brk_region = { 0 };
	struct ctx c = { .size = 64 * 1024 };

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc) {
			const char *e = argv[++i];

			if (strcmp(e, "stale") == 0)
				expect_stale = true;
			else if (strcmp(e, "fresh") != 0)
				usage();
		} else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc) {
			iterations = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--slices") == 0) {
			slices = true;
		} else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc) {
			c.size = (size_t)strtoul(argv[++i], NULL, 0);
		} else {
			usage();
		}
	}
	page_size = (size_t)sysconf(_SC_PAGESIZE);
	if (iterations < 1 || c.size < 4 * page_size || c.size % page_size)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (rdma_dev_open(&c.dev, NULL) || rdma_loop_create(&c.loop, &c.dev))
		return 1;
	c.peer = aligned_alloc(page_size, c.size);
	c.peer_mr = ibv_reg_mr(c.dev.pd, c.peer, c.size,
			       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
	if (!c.peer || !c.peer_mr)
		return rdma_fail("peer buffer");

	for (size_t mi = 0; mi < N_METHODS; mi++) {
		const struct method *m = &methods[mi];

		for (int role = 0; role < 2; role++) {
			int count[3] = { 0, 0, 0 }, err = 0;
			struct region r;

			if (m->brk && !brk_region.base &&
			    brk_region_init(&brk_region, m, c.size))
				return 1;
			if (m->brk)
				r = brk_region;
			else if (region_init(&r, m, c.size))
				return 1;
			for (int it = 0; it < iterations; it++) {
				enum outcome o = CORRUPT;
				int rc = role == 0 ?
					 round_as_source(&c, m, &r, it, &o) :
					 round_as_target(&c, m, &r, it, &o);

				if (rc) {
					err++;
					break;
				}
				count[o]++;
			}
			if (!m->brk)
				munmap(r.base, r.size);
			printf("integrity: method=%s role=%s iterations=%d fresh=%d stale=%d corrupt=%d errors=%d\n",
			       m->name, role ? "target" : "source", iterations,
			       count[FRESH], count[STALE], count[CORRUPT], err);
			for (int k = 0; k < 3; k++)
				total[k] += count[k];
			errors += err;
			if (err || count[CORRUPT] ||
			    (expect_stale ? count[STALE] == 0 : count[STALE] != 0))
				bad_methods++;
		}
	}

	if (ibv_dereg_mr(c.peer_mr))
		errors++;
	rdma_loop_destroy(&c.loop);
	rdma_dev_close(&c.dev);
	free(c.peer);
	printf("integrity: slices=%d expect=%s total fresh=%d stale=%d corrupt=%d errors=%d failing_cases=%d\n",
	       slices, expect_stale ? "stale" : "fresh", total[FRESH], total[STALE],
	       total[CORRUPT], errors, bad_methods);
	printf("integrity: %s\n", bad_methods || errors ? "FAIL" : "PASS");
	return bad_methods || errors ? 1 : 0;
}
