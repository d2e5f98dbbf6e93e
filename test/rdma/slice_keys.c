// SPDX-License-Identifier: BSD-2-Clause
/*
 * What a slice's keys reach, over Soft-RoCE (run with the shim preloaded,
 * an ordinary verbs program otherwise).
 *
 * reach MODE: a buffer of 4 pages with one more mapped page after it and
 * an inaccessible page on either side.  The whole buffer is registered
 * with remote write access and released (cached), then a slice of its
 * second page; a peer RDMA-writes through the slice's rkey:
 *  - into the slice: must arrive;
 *  - into the buffer outside the slice: MODE "region" (UMMUSHIM_SUBRANGE=
 *    all: the slice carries the whole region's keys, which is what `all`
 *    exposes) must arrive; MODE "exact" (local, off, or no shim) must fail;
 *  - into the mapped page just past the buffer: must fail in every mode.
 * Each check uses a fresh queue pair (a failed write breaks the pair).
 *
 * regions: a buffer of 4 pages is registered whole and released, then
 * slices of its first and last page are registered and released; the
 * last page is replaced (munmap + mmap MAP_FIXED) with new data; a slice
 * of the first page is registered again, and a slice of the last page
 * must RDMA-write the new data.  The shim's statistics (checked by the
 * caller) must show the region dropped for every slice: the first page's
 * slice, untouched, is a miss too.
 *
 * rights MODE: a page is registered with LOCAL_WRITE | REMOTE_WRITE and
 * released (cached), then registered with REMOTE_READ only; a peer
 * RDMA-writes through that MR's rkey.  MODE "widened" (UMMUSHIM_SUBRANGE=
 * all: the second registration is the union of both, which is what `all`
 * exposes) must arrive, and the first flag set hits that registration
 * again (same rkey); MODE "exact" (local, off, or no shim) must fail.
 *
 * learnt MODE: a page is registered with LOCAL_WRITE | REMOTE_WRITE and
 * released, then *another* page of the same PD with REMOTE_READ only; a
 * peer RDMA-writes through the second MR's rkey.  MODE "widened"
 * (UMMUSHIM_SUBRANGE=all: the PD learnt REMOTE_WRITE from the first page,
 * so the second page's miss is registered with it too) must arrive; MODE
 * "exact" (local, off, or no shim) must fail.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "rdma_util.h"

#define ACCESS (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE)

static size_t page;

/* @pages accessible pages with an inaccessible page on either side. */
static uint8_t *guarded(size_t pages)
{
	uint8_t *b = mmap(NULL, (pages + 2) * page, PROT_NONE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (b == MAP_FAILED)
		return NULL;
	b += page;
	if (mprotect(b, pages * page, PROT_READ | PROT_WRITE))
		return NULL;
	memset(b, 0, pages * page);
	return b;
}

/* One RDMA write of @len bytes from @src into @dst through @dst_mr's rkey. */
static int write_through(struct rdma_dev *d, struct ibv_mr *src_mr,
			 uint8_t *src, struct ibv_mr *dst_mr, uint8_t *dst,
			 size_t len)
{
	struct rdma_loop l;
	int rc;

	if (rdma_loop_create(&l, d))
		return -2;
	rc = rdma_write(&l, src_mr, src, dst_mr, dst, len);
	rdma_loop_destroy(&l);
	return rc;
}

static int failures;

static void expect(bool ok, const char *what)
{
	printf("%s: %s\n", ok ? "ok" : "FAILED", what);
	if (!ok)
		failures++;
}

static int reach(struct rdma_dev *d, bool region)
{
	uint8_t *buf = guarded(5), *src = guarded(1);
	struct ibv_mr *src_mr, *whole, *slice;
	int rc;

	if (!buf || !src)
		return rdma_fail("mmap");
	memset(src, 0x5a, page);
	src_mr = ibv_reg_mr(d->pd, src, page, IBV_ACCESS_LOCAL_WRITE);
	whole = ibv_reg_mr(d->pd, buf, 4 * page, ACCESS);
	if (!src_mr || !whole || ibv_dereg_mr(whole))
		return rdma_fail("ibv_reg_mr");
	slice = ibv_reg_mr(d->pd, buf + page + 64, 256, ACCESS);
	if (!slice)
		return rdma_fail("ibv_reg_mr of the slice");
	expect(slice->addr == buf + page + 64 && slice->length == 256,
	       "the slice MR has the address and length asked for");

	rc = write_through(d, src_mr, src, slice, buf + page + 64, 256);
	expect(rc == 0 && buf[page + 64] == 0x5a && buf[page + 319] == 0x5a,
	       "a write into the slice arrives");
	rc = write_through(d, src_mr, src, slice, buf + 2 * page, 64);
	if (region)
		expect(rc == 0 && buf[2 * page] == 0x5a,
		       "a write into the region outside the slice arrives (what UMMUSHIM_SUBRANGE=all exposes)");
	else
		expect(rc == -1 && buf[2 * page] == 0,
		       "a write outside the slice fails");
	rc = write_through(d, src_mr, src, slice, buf + 4 * page, 64);
	expect(rc == -1 && buf[4 * page] == 0,
	       "a write into the mapped page just past the region fails");
	if (ibv_dereg_mr(slice) || ibv_dereg_mr(src_mr))
		return rdma_fail("ibv_dereg_mr");
	return 0;
}

static int regions(struct rdma_dev *d)
{
	uint8_t *buf = guarded(4), *peer = guarded(1);
	struct ibv_mr *peer_mr, *m;
	struct rdma_loop l;
	uint8_t *last;

	if (!buf || !peer)
		return rdma_fail("mmap");
	last = buf + 3 * page;
	peer_mr = ibv_reg_mr(d->pd, peer, page, ACCESS);	/* written to */
	if (!peer_mr || rdma_loop_create(&l, d))
		return rdma_fail("set-up");
	m = ibv_reg_mr(d->pd, buf, 4 * page, IBV_ACCESS_LOCAL_WRITE);
	if (!m || ibv_dereg_mr(m))
		return rdma_fail("ibv_reg_mr of the whole buffer");
	for (int i = 0; i < 2; i++) {
		m = ibv_reg_mr(d->pd, i ? last + 8 : buf + 8, 100,
			       IBV_ACCESS_LOCAL_WRITE);
		if (!m || ibv_dereg_mr(m))
			return rdma_fail("ibv_reg_mr of a slice");
	}
	/* Replace the last page only. */
	if (munmap(last, page) ||
	    mmap(last, page, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != last)
		return rdma_fail("replacing the last page");
	memset(last, 0x77, page);
	m = ibv_reg_mr(d->pd, buf + 8, 100, IBV_ACCESS_LOCAL_WRITE);
	if (!m || ibv_dereg_mr(m))
		return rdma_fail("ibv_reg_mr of the first page's slice again");
	m = ibv_reg_mr(d->pd, last + 8, 100, IBV_ACCESS_LOCAL_WRITE);
	if (!m)
		return rdma_fail("ibv_reg_mr of the last page's slice again");
	memset(peer, 0, page);
	expect(rdma_write(&l, m, last + 8, peer_mr, peer, 100) == 0 &&
	       peer[0] == 0x77 && peer[99] == 0x77,
	       "the replaced page's slice sends the new data");
	if (ibv_dereg_mr(m) || ibv_dereg_mr(peer_mr))
		return rdma_fail("ibv_dereg_mr");
	rdma_loop_destroy(&l);
	return 0;
}

/*
 * "rights" (@same_page) and "learnt": REMOTE_WRITE asked for on @buf itself
 * or on another page, then a REMOTE_READ-only MR of @buf; a peer writes
 * through the latter's rkey.
 */
static int rights(struct rdma_dev *d, bool widened, bool same_page)
{
	const int rw = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	uint8_t *buf = guarded(1), *src = guarded(1);
	uint8_t *first = same_page ? buf : guarded(1);
	struct ibv_mr *src_mr, *w, *r;
	int rc;

	if (!buf || !src || !first)
		return rdma_fail("mmap");
	memset(src, 0x5a, page);
	src_mr = ibv_reg_mr(d->pd, src, page, IBV_ACCESS_LOCAL_WRITE);
	w = ibv_reg_mr(d->pd, first, page, rw);
	if (!src_mr || !w || ibv_dereg_mr(w))
		return rdma_fail("ibv_reg_mr");
	r = ibv_reg_mr(d->pd, buf, page, IBV_ACCESS_REMOTE_READ);
	if (!r)
		return rdma_fail("ibv_reg_mr for remote reads");
	expect(r->addr == buf && r->length == page,
	       "the MR has the address and length asked for");
	rc = write_through(d, src_mr, src, r, buf, 64);
	if (widened)
		expect(rc == 0 && buf[0] == 0x5a && buf[63] == 0x5a,
		       same_page ?
		       "a write through the rkey of a REMOTE_READ registration arrives (what UMMUSHIM_SUBRANGE=all exposes)" :
		       "a write through the rkey of another page's REMOTE_READ registration arrives (learnt rights)");
	else
		expect(rc == -1 && buf[0] == 0,
		       "a write through the rkey of a REMOTE_READ registration fails");
	if (same_page) {
		w = ibv_reg_mr(d->pd, buf, page, rw);
		if (!w)
			return rdma_fail("ibv_reg_mr again");
		expect(widened ? w->rkey == r->rkey : w->rkey != r->rkey,
		       widened ? "both flag sets share one registration" :
				 "each flag set has its own registration");
		if (ibv_dereg_mr(w))
			return rdma_fail("ibv_dereg_mr");
	}
	if (ibv_dereg_mr(r) || ibv_dereg_mr(src_mr))
		return rdma_fail("ibv_dereg_mr");
	return 0;
}

int main(int argc, char **argv)
{
	struct rdma_dev d;
	int rc;

	page = (size_t)sysconf(_SC_PAGESIZE);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2 || (strcmp(argv[1], "regions") != 0 &&
			 (argc < 3 ||
			  !((strcmp(argv[1], "reach") == 0 &&
			     (strcmp(argv[2], "region") == 0 ||
			      strcmp(argv[2], "exact") == 0)) ||
			    ((strcmp(argv[1], "rights") == 0 ||
			      strcmp(argv[1], "learnt") == 0) &&
			     (strcmp(argv[2], "widened") == 0 ||
			      strcmp(argv[2], "exact") == 0)))))) {
		fprintf(stderr, "usage: rdma-slice-keys reach region|exact | rights|learnt widened|exact | regions\n");
		return 2;
	}
	if (rdma_dev_open(&d, NULL))
		return 1;
	if (strcmp(argv[1], "regions") == 0)
		rc = regions(&d);
	else if (strcmp(argv[1], "rights") == 0 ||
		 strcmp(argv[1], "learnt") == 0)
		rc = rights(&d, strcmp(argv[2], "widened") == 0,
			    strcmp(argv[1], "rights") == 0);
	else
		rc = reach(&d, strcmp(argv[2], "region") == 0);
	rdma_dev_close(&d);
	printf("slice-keys %s: %s\n", argv[1], rc || failures ? "FAIL" : "PASS");
	return rc || failures ? 1 : 0;
}
