// SPDX-License-Identifier: GPL-2.0-only
/*
 * bench-kernel: cost of the ummunot notifier path as registrations grow.
 *
 * For n = 0, 10^3, 10^5, 10^6 registrations on one fd (distinct one-page,
 * non-overlapping, unmapped ranges far from everything else, so the
 * interval tree holds n nodes that no measured operation touches):
 *   (a) munmap latency of an unrelated, touched one-page mapping (only the
 *       munmap is timed), and
 *   (b) the cost of one REGISTER + UNREGISTER pair, and
 *   (c) with n registrations on a second fd all overlapping one touched
 *       page, the latency of MADV_DONTNEED of that page (only the madvise
 *       is timed; the page is written again between repetitions).
 * Each is the median of many repetitions.  Run as root inside the VM
 * (scripts/bench-kernel/run.sh); writes JSON with --json PATH.
 *
 * Usage: bench-kernel [--json PATH] [--reps N] [--max N]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <ummunot.h>

/* Registration i covers page 2i from here: 8 GiB of otherwise unused space. */
#define REG_BASE 0x200000000000ULL
/* Cookies of the measured REGISTER/UNREGISTER pairs: never collide with i. */
#define PAIR_COOKIE (1ULL << 62)

static const uint64_t sizes[] = { 0, 1000, 100000, 1000000 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

struct result {
	uint64_t regs;
	double fill_s;            /* time to add registrations up to regs */
	uint64_t munmap_median_ns, munmap_p10_ns, munmap_p90_ns;
	uint64_t pair_median_ns, pair_p10_ns, pair_p90_ns;
	uint64_t dontneed_median_ns, dontneed_p10_ns, dontneed_p90_ns;
};

struct options {
	const char *json;
	unsigned int reps;
	uint64_t max;
};

static void die(const char *what)
{
	fprintf(stderr, "bench-kernel: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Sorts v and returns its q-quantile (0..1). */
static uint64_t quantile(uint64_t *v, unsigned int n, double q)
{
	qsort(v, n, sizeof(*v), cmp_u64);
	return v[(unsigned int)(q * (n - 1) + 0.5)];
}

static size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static void reg(int fd, uint64_t start, uint64_t cookie)
{
	struct ummunot_register_ioctl r = {
		.start = start, .end = start + page_size(), .user_cookie = cookie,
	};

	if (ioctl(fd, UMMUNOT_REGISTER_REGION, &r) != 0)
		die("REGISTER");
}

static void unreg(int fd, uint64_t cookie)
{
	if (ioctl(fd, UMMUNOT_UNREGISTER_REGION, &cookie) != 0)
		die("UNREGISTER");
}

static void fill_to(int fd, uint64_t *have, uint64_t want)
{
	for (; *have < want; (*have)++)
		reg(fd, REG_BASE + 2 * *have * page_size(), *have);
}

static void measure_munmap(unsigned int reps, uint64_t *t, struct result *r)
{
	size_t pg = page_size();

	for (unsigned int i = 0; i < reps; i++) {
		volatile char *p = mmap(NULL, pg, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uint64_t t0;

		if (p == MAP_FAILED)
			die("mmap");
		p[0] = 1; /* a real page to drop */
		t0 = now_ns();
		if (munmap((void *)p, pg) != 0)
			die("munmap");
		t[i] = now_ns() - t0;
	}
	r->munmap_p10_ns = quantile(t, reps, 0.1);
	r->munmap_median_ns = quantile(t, reps, 0.5);
	r->munmap_p90_ns = quantile(t, reps, 0.9);
}

/* The overlapping registrations: all of them cover the hot page. */
static void fill_overlap_to(int fd, uint64_t *have, uint64_t want,
			    uint64_t page)
{
	for (; *have < want; (*have)++)
		reg(fd, page, *have);
}

static void measure_dontneed(unsigned int reps, volatile char *page,
			     uint64_t *t, struct result *r)
{
	for (unsigned int i = 0; i < reps; i++) {
		uint64_t t0;

		page[0] = 1; /* a real page to drop */
		t0 = now_ns();
		if (madvise((void *)page, page_size(), MADV_DONTNEED) != 0)
			die("madvise");
		t[i] = now_ns() - t0;
	}
	r->dontneed_p10_ns = quantile(t, reps, 0.1);
	r->dontneed_median_ns = quantile(t, reps, 0.5);
	r->dontneed_p90_ns = quantile(t, reps, 0.9);
}

/* Pairs use the gap page after registration k: inside the populated span. */
static void measure_pairs(int fd, unsigned int reps, uint64_t have,
			  uint64_t *t, struct result *r)
{
	uint64_t span = have ? have : 1;

	for (unsigned int i = 0; i < reps; i++) {
		uint64_t k = (uint64_t)i * 7919 % span;
		uint64_t t0 = now_ns();

		reg(fd, REG_BASE + (2 * k + 1) * page_size(), PAIR_COOKIE + i);
		unreg(fd, PAIR_COOKIE + i);
		t[i] = now_ns() - t0;
	}
	r->pair_p10_ns = quantile(t, reps, 0.1);
	r->pair_median_ns = quantile(t, reps, 0.5);
	r->pair_p90_ns = quantile(t, reps, 0.9);
}

static void write_json(const struct options *o, const struct result *res,
		       size_t n)
{
	struct utsname u;
	FILE *f = fopen(o->json, "w");

	if (!f)
		die(o->json);
	uname(&u);
	fprintf(f, "{\n  \"benchmark\": \"bench-kernel\",\n  \"kernel\": \"%s\",\n"
		   "  \"reps\": %u,\n  \"results\": [\n", u.release, o->reps);
	for (size_t i = 0; i < n; i++)
		fprintf(f, "    {\"registrations\": %llu, \"fill_seconds\": %.3f, "
			   "\"munmap_median_ns\": %llu, \"munmap_p10_ns\": %llu, "
			   "\"munmap_p90_ns\": %llu, \"reg_unreg_median_ns\": %llu, "
			   "\"reg_unreg_p10_ns\": %llu, \"reg_unreg_p90_ns\": %llu, "
			   "\"dontneed_overlap_median_ns\": %llu, "
			   "\"dontneed_overlap_p10_ns\": %llu, "
			   "\"dontneed_overlap_p90_ns\": %llu}%s\n",
			(unsigned long long)res[i].regs, res[i].fill_s,
			(unsigned long long)res[i].munmap_median_ns,
			(unsigned long long)res[i].munmap_p10_ns,
			(unsigned long long)res[i].munmap_p90_ns,
			(unsigned long long)res[i].pair_median_ns,
			(unsigned long long)res[i].pair_p10_ns,
			(unsigned long long)res[i].pair_p90_ns,
			(unsigned long long)res[i].dontneed_median_ns,
			(unsigned long long)res[i].dontneed_p10_ns,
			(unsigned long long)res[i].dontneed_p90_ns,
			i + 1 < n ? "," : "");
	fprintf(f, "  ]\n}\n");
	if (fclose(f) != 0)
		die(o->json);
}

static void parse_args(int argc, char **argv, struct options *o)
{
	o->json = NULL;
	o->reps = 2000;
	o->max = sizes[NSIZES - 1];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json") && i + 1 < argc) {
			o->json = argv[++i];
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			o->reps = (unsigned int)strtoul(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--max") && i + 1 < argc) {
			o->max = strtoull(argv[++i], NULL, 0);
		} else {
			fprintf(stderr, "usage: %s [--json PATH] [--reps N] [--max N]\n",
				argv[0]);
			exit(2);
		}
	}
	if (o->reps == 0) {
		fprintf(stderr, "bench-kernel: --reps must be positive\n");
		exit(2);
	}
}

int main(int argc, char **argv)
{
	struct options o;
	struct result res[NSIZES];
	uint64_t have = 0, have_overlap = 0, *t;
	volatile char *hot;
	size_t n = 0;
	int fd, ofd;

	parse_args(argc, argv, &o);
	t = calloc(o.reps, sizeof(*t));
	if (!t)
		die("calloc");
	fd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	ofd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0 || ofd < 0)
		die(UMMUNOT_DEVICE_PATH);
	hot = mmap(NULL, page_size(), PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (hot == MAP_FAILED)
		die("mmap");
	printf("%12s %10s %14s %14s %18s %20s\n", "registrations", "fill_s",
	       "munmap_med_ns", "munmap_p90_ns", "reg+unreg_med_ns",
	       "dontneed_overlap_ns");
	for (size_t i = 0; i < NSIZES && sizes[i] <= o.max; i++) {
		struct result *r = &res[n++];
		uint64_t t0 = now_ns();

		fill_to(fd, &have, sizes[i]);
		fill_overlap_to(ofd, &have_overlap, sizes[i], (uint64_t)hot);
		r->regs = have;
		r->fill_s = (double)(now_ns() - t0) / 1e9;
		measure_munmap(o.reps, t, r);
		measure_pairs(fd, o.reps, have, t, r);
		measure_dontneed(o.reps, hot, t, r);
		printf("%12llu %10.2f %14llu %14llu %18llu %20llu\n",
		       (unsigned long long)r->regs, r->fill_s,
		       (unsigned long long)r->munmap_median_ns,
		       (unsigned long long)r->munmap_p90_ns,
		       (unsigned long long)r->pair_median_ns,
		       (unsigned long long)r->dontneed_median_ns);
		fflush(stdout);
	}
	if (o.json)
		write_json(&o, res, n);
	close(ofd);
	close(fd);
	free(t);
	return 0;
}
