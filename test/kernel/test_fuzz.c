// SPDX-License-Identifier: GPL-2.0-only
/*
 * Bounded random fuzz of the ioctl/read/mmap surface, checked against a
 * model of the registrations.  The seed is fixed (override with
 * UMMUNOT_FUZZ_SEED) and printed.  The VM harness fails the run if the
 * kernel logged anything bad meanwhile.
 */
#include "ktest.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_SEED 20261125u
#define FUZZ_ITERS 4000
#define COOKIES 64
#define SCRATCH_PAGES 64

struct fuzz {
	uint64_t rng;
	unsigned int iter;
	int fd;
	char *scratch;
	char *gone;            /* an unmapped page */
	char *edge;            /* last bytes before an unmapped page */
	int ever_registered;
	uint32_t features;     /* granted by the last EXCHANGE_FEATURES */
	uint64_t vvar_start, vvar_end; /* the VM_PFNMAP mapping (ENXIO) */
	int live[COOKIES];
	struct { uint64_t start, end; } range[COOKIES];
};

static uint64_t next(struct fuzz *f)
{
	/* xorshift64*: deterministic, no global state. */
	f->rng ^= f->rng >> 12;
	f->rng ^= f->rng << 25;
	f->rng ^= f->rng >> 27;
	return f->rng * 2685821657736338717ULL;
}

static uint64_t below(struct fuzz *f, uint64_t n)
{
	return next(f) % n;
}

enum ptr_kind { PTR_GOOD, PTR_NULL, PTR_GONE, PTR_EDGE, PTR_KERNEL, PTR_KINDS };

/* A pointer for an argument of size bytes: usually good, sometimes not. */
static void *pick_ptr(struct fuzz *f, void *good, size_t size, int *is_good)
{
	enum ptr_kind k = below(f, 4) ? PTR_GOOD : (enum ptr_kind)below(f, PTR_KINDS);

	*is_good = k == PTR_GOOD;
	switch (k) {
	case PTR_GOOD:
		return good;
	case PTR_NULL:
		return NULL;
	case PTR_GONE:
		return f->gone;
	case PTR_EDGE:
		return f->edge + kt_page() - size / 2;
	default:
		return (void *)0xffff888000000000ULL;
	}
}

static uint64_t pick_addr(struct fuzz *f)
{
	static const uint64_t special[] = {
		0, 1, 0xfff, 0x1000, KT_TASK_SIZE - 0x1000, KT_TASK_SIZE - 1,
		KT_TASK_SIZE, KT_TASK_SIZE + 1, 1ULL << 47, 1ULL << 63,
		~0ULL - 0xfff, ~0ULL,
	};

	switch (below(f, 8)) {
	case 0:
		return special[below(f, sizeof(special) / sizeof(special[0]))];
	case 1:
		return next(f);
	default:
		return kt_pg(f->scratch, below(f, SCRATCH_PAGES + 1)) +
		       (below(f, 4) ? 0 : below(f, kt_page()));
	}
}

static int range_valid(const struct ummunot_register_ioctl *r)
{
	if (r->flags || r->reserved || r->end <= r->start)
		return 0;
	if (r->end > ~0ULL - (kt_page() - 1))
		return 0; /* rounding up would wrap */
	return ((r->end + kt_page() - 1) & ~(uint64_t)(kt_page() - 1)) <=
	       KT_TASK_SIZE;
}

/* Set once per run (seed from the environment); only printed in messages. */
static unsigned int fuzz_seed_used;

#define FUZZ_ASSERT(f, cond, what, e)                                         \
	ck_assert_msg(cond, "seed %u iteration %u: %s -> %s", fuzz_seed_used, \
		      (f)->iter, what, (e) ? strerror(e) : "success")

static void fuzz_register(struct fuzz *f)
{
	struct ummunot_register_ioctl r = {
		.start = pick_addr(f),
		.user_cookie = below(f, 8) ? below(f, COOKIES) : next(f),
		.flags = below(f, 10) ? 0 : (uint32_t)next(f),
		.reserved = below(f, 10) ? 0 : (uint32_t)next(f),
	};
	int good, e, valid;
	void *arg;

	r.end = below(f, 4) ? r.start + below(f, 8 * kt_page()) : pick_addr(f);
	arg = pick_ptr(f, &r, sizeof(r), &good);
	e = kt_register_raw(f->fd, arg);
	valid = range_valid(&r);
	if (!good) {
		FUZZ_ASSERT(f, e == EFAULT, "REGISTER bad pointer", e);
		return;
	}
	if (valid && (f->features & UMMUNOT_FEATURE_REFUSE_UNWATCHABLE) &&
	    r.start < f->vvar_end && f->vvar_start < r.end) {
		FUZZ_ASSERT(f, e == ENXIO, "REGISTER over [vvar]", e);
		return;
	}
	if (r.user_cookie >= COOKIES) {
		FUZZ_ASSERT(f, e == (valid ? 0 : EINVAL), "REGISTER big cookie", e);
		if (e == 0)
			kt_unregister_ok(f->fd, r.user_cookie);
		if (e == 0)
			f->ever_registered = 1;
		return;
	}
	if (!valid) {
		/* Which check comes first is not specified. */
		FUZZ_ASSERT(f, e == EINVAL ||
			    (e == EEXIST && f->live[r.user_cookie]),
			    "REGISTER invalid", e);
		return;
	}
	FUZZ_ASSERT(f, e == (f->live[r.user_cookie] ? EEXIST : 0),
		    "REGISTER valid", e);
	if (e == 0) {
		f->live[r.user_cookie] = 1;
		f->range[r.user_cookie].start = r.start & ~(uint64_t)(kt_page() - 1);
		f->range[r.user_cookie].end =
			(r.end + kt_page() - 1) & ~(uint64_t)(kt_page() - 1);
		f->ever_registered = 1;
	}
}

static void fuzz_unregister(struct fuzz *f)
{
	uint64_t cookie = below(f, COOKIES);
	int good, e;
	void *arg = pick_ptr(f, &cookie, sizeof(cookie), &good);

	e = ioctl(f->fd, UMMUNOT_UNREGISTER_REGION, arg) ? errno : 0;
	if (!good) {
		FUZZ_ASSERT(f, e == EFAULT, "UNREGISTER bad pointer", e);
		return;
	}
	FUZZ_ASSERT(f, e == (f->live[cookie] ? 0 : ENOENT), "UNREGISTER", e);
	f->live[cookie] = 0;
}

static void fuzz_features(struct fuzz *f)
{
	const uint32_t supported = UMMUNOT_FEATURE_REFUSE_UNWATCHABLE |
				   UMMUNOT_FEATURE_EVENT_CAUSE;
	uint32_t want = (uint32_t)next(f), v = want;
	int good, e;
	void *arg = pick_ptr(f, &v, sizeof(v), &good);

	e = ioctl(f->fd, UMMUNOT_EXCHANGE_FEATURES, arg) ? errno : 0;
	if (!good)
		FUZZ_ASSERT(f, e == EFAULT || (e == EINVAL && f->ever_registered),
			    "EXCHANGE_FEATURES bad pointer", e);
	else if (f->ever_registered)
		FUZZ_ASSERT(f, e == EINVAL, "EXCHANGE_FEATURES late", e);
	else
		FUZZ_ASSERT(f, e == 0 && v == (want & supported),
			    "EXCHANGE_FEATURES", e);
	if (good && !e)
		f->features = v;
}

/* Command numbers the VFS handles itself for any file: not ours to test. */
static int vfs_generic(unsigned long cmd)
{
	unsigned int type = _IOC_TYPE(cmd);

	return type == 0 || type == 'T' || type == 'f' || type == 'X' ||
	       type == 0x94;
}

static unsigned long pick_cmd(struct fuzz *f)
{
	static const unsigned long base[] = {
		UMMUNOT_EXCHANGE_FEATURES, UMMUNOT_REGISTER_REGION,
		UMMUNOT_UNREGISTER_REGION,
	};
	unsigned long cmd;

	if (below(f, 2)) {
		/* Near-valid: flip a direction, size or number bit. */
		cmd = base[below(f, 3)];
		cmd ^= 1UL << below(f, 32);
	} else if (below(f, 2)) {
		cmd = _IOC(below(f, 4), 'U', below(f, 256), below(f, 64));
	} else {
		cmd = (uint32_t)next(f);
	}
	return cmd;
}

static void fuzz_bad_cmd(struct fuzz *f)
{
	unsigned long cmd = pick_cmd(f);
	char buf[256];
	int e;

	if (cmd == UMMUNOT_EXCHANGE_FEATURES || cmd == UMMUNOT_REGISTER_REGION ||
	    cmd == UMMUNOT_UNREGISTER_REGION || vfs_generic(cmd))
		return;
	memset(buf, (int)below(f, 256), sizeof(buf));
	e = ioctl(f->fd, cmd, below(f, 2) ? (void *)buf : (void *)next(f)) ?
		errno : 0;
	ck_assert_msg(e == ENOTTY, "seed %u iteration %u: ioctl %#lx -> %s",
		      fuzz_seed_used, f->iter, cmd, e ? strerror(e) : "success");
}

static void check_event(struct fuzz *f, const struct ummunot_event *e)
{
	uint64_t c = e->user_cookie_counter;

	if (e->type == UMMUNOT_EVENT_TYPE_LAST) {
		ck_assert_uint_eq(e->flags, 0);
		return;
	}
	ck_assert_msg(e->type == UMMUNOT_EVENT_TYPE_INVAL && c < COOKIES &&
		      f->live[c], "seed %u iteration %u: event type %u cookie %llu",
		      fuzz_seed_used, f->iter, e->type, (unsigned long long)c);
	ck_assert_msg((e->flags == UMMUNOT_EVENT_FLAG_HINT ||
		       ((f->features & UMMUNOT_FEATURE_EVENT_CAUSE) &&
			e->flags == (UMMUNOT_EVENT_FLAG_HINT |
				     UMMUNOT_EVENT_FLAG_UNMAPPED))) &&
		      e->hint_start < e->hint_end &&
		      e->hint_start >= f->range[c].start &&
		      e->hint_end <= f->range[c].end,
		      "seed %u iteration %u: cookie %llu hint [%#llx,%#llx) outside [%#llx,%#llx)",
		      fuzz_seed_used, f->iter, (unsigned long long)c,
		      (unsigned long long)e->hint_start,
		      (unsigned long long)e->hint_end,
		      (unsigned long long)f->range[c].start,
		      (unsigned long long)f->range[c].end);
}

static void fuzz_read(struct fuzz *f)
{
	struct ummunot_event ev[40];
	size_t len = below(f, sizeof(ev) + 1);
	int good;
	void *buf = pick_ptr(f, ev, len, &good);
	ssize_t n = kt_read(f->fd, buf, len);
	int e = n < 0 ? (int)-n : 0;

	if (len < KT_EVENT_SIZE) {
		FUZZ_ASSERT(f, n == -EINVAL, "short read", e);
		return;
	}
	if (!good) {
		/* Events copied before the fault may be returned. */
		FUZZ_ASSERT(f, n == -EFAULT || n == -EAGAIN ||
			    (n > 0 && n % KT_EVENT_SIZE == 0), "read bad buffer", e);
		return;
	}
	FUZZ_ASSERT(f, n == -EAGAIN ||
		    (n > 0 && n % KT_EVENT_SIZE == 0 && (size_t)n <= len),
		    "read", e);
	for (ssize_t k = 0; k < n / (ssize_t)KT_EVENT_SIZE; k++)
		check_event(f, &ev[k]);
}

/* Changes the scratch mapping: these produce real events. */
static void fuzz_memory(struct fuzz *f)
{
	size_t first = below(f, SCRATCH_PAGES), n = 1 + below(f, 4);
	void *p;

	if (first + n > SCRATCH_PAGES)
		n = SCRATCH_PAGES - first;
	p = (void *)kt_pg(f->scratch, first);
	switch (below(f, 3)) {
	case 0: /* replace the pages (unmaps the old ones) */
		ck_assert(mmap(p, n * kt_page(), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == p);
		break;
	case 1:
		ck_assert_int_eq(madvise(p, n * kt_page(), MADV_DONTNEED), 0);
		break;
	default:
		ck_assert_int_eq(mprotect(p, n * kt_page(), PROT_READ), 0);
		ck_assert_int_eq(mprotect(p, n * kt_page(),
					  PROT_READ | PROT_WRITE), 0);
		break;
	}
	kt_touch(p, n);
}

static void fuzz_mmap(struct fuzz *f)
{
	size_t len = below(f, 2) ? kt_page() : (1 + below(f, 3)) * kt_page();
	off_t off = below(f, 2) ? 0 : (off_t)(below(f, 3) * kt_page());
	int prot = below(f, 2) ? PROT_READ : (int)below(f, 8);
	int flags = below(f, 2) ? MAP_SHARED : MAP_PRIVATE;
	int may = len == kt_page() && off == 0 && flags == MAP_SHARED &&
		  !(prot & PROT_WRITE);
	int must = may && prot == PROT_READ;
	void *p = mmap(NULL, len, prot, flags, f->fd, off);

	/* PROT_NONE / PROT_EXEC read-only variants are not specified. */
	ck_assert_msg(p != MAP_FAILED ? may : !must,
		      "seed %u iteration %u: mmap len %zu off %lld prot %d flags %d -> %s",
		      fuzz_seed_used, f->iter, len, (long long)off, prot, flags,
		      p == MAP_FAILED ? strerror(errno) : "success");
	if (p != MAP_FAILED)
		munmap(p, len);
}

static void fuzz_poll(struct fuzz *f)
{
	struct pollfd pfd = { .fd = f->fd, .events = POLLIN | POLLOUT };

	ck_assert_int_ge(poll(&pfd, 1, 0), 0);
	ck_assert_msg(!(pfd.revents & (POLLERR | POLLNVAL | POLLOUT)),
		      "seed %u iteration %u: revents %#x", fuzz_seed_used,
		      f->iter, pfd.revents);
}

/* Each operation with its cumulative share, in percent, of the steps. */
static const struct fuzz_op {
	uint64_t upto;
	void (*run)(struct fuzz *f);
} fuzz_ops[] = {
	{ 30, fuzz_register }, { 45, fuzz_unregister },
	{ 50, fuzz_features }, { 65, fuzz_bad_cmd },
	{ 80, fuzz_read },     { 93, fuzz_memory },
	{ 97, fuzz_mmap },     { 100, fuzz_poll },
};

static void fuzz_step(struct fuzz *f)
{
	uint64_t dice = below(f, 100);
	size_t i = 0;

	while (dice >= fuzz_ops[i].upto)
		i++;
	fuzz_ops[i].run(f);
}

/* The vDSO data page: VM_IO | VM_PFNMAP, so REGISTER over it gets ENXIO. */
static void find_vvar(struct fuzz *f)
{
	FILE *m = fopen("/proc/self/maps", "re");
	char line[512];

	ck_assert(m != NULL);
	while (fgets(line, sizeof(line), m)) {
		unsigned long long s, e;

		if (strstr(line, "[vvar]") &&
		    sscanf(line, "%llx-%llx", &s, &e) == 2) {
			f->vvar_start = s;
			f->vvar_end = e;
		}
	}
	fclose(m);
	ck_assert_msg(f->vvar_end, "no [vvar] mapping");
}

START_TEST(random_ioctl_fuzz)
{
	static struct fuzz f; /* static: kept off the stack, one run per process */
	const char *env = getenv("UMMUNOT_FUZZ_SEED");
	long slab0 = kt_slab_objects();
	struct ummunot_event ev[COOKIES + 1];

	fuzz_seed_used = env ? (unsigned int)strtoul(env, NULL, 0) : FUZZ_SEED;
	printf("fuzz: seed %u, %d iterations\n", fuzz_seed_used, FUZZ_ITERS);
	fflush(stdout);
	memset(&f, 0, sizeof(f));
	f.rng = 0x9e3779b97f4a7c15ULL ^ fuzz_seed_used;
	f.fd = kt_open_nb();
	find_vvar(&f);
	f.scratch = kt_map_anon(SCRATCH_PAGES);
	f.gone = kt_map_anon(1);
	ck_assert_int_eq(munmap(f.gone, kt_page()), 0);
	f.edge = kt_map_anon(2);
	ck_assert_int_eq(munmap((void *)kt_pg(f.edge, 1), kt_page()), 0);
	for (f.iter = 0; f.iter < FUZZ_ITERS; f.iter++)
		fuzz_step(&f);
	for (uint64_t c = 0; c < COOKIES; c++)
		ck_assert_int_eq(kt_unregister(f.fd, c), f.live[c] ? 0 : ENOENT);
	kt_drain(f.fd, ev, COOKIES + 1);
	ck_assert_int_eq(close(f.fd), 0);
	ck_assert_int_eq(kt_slab_settle(slab0), slab0);
}
END_TEST

Suite *kt_fuzz_suite(void)
{
	return KT_SUITE("fuzz", random_ioctl_fuzz);
}
