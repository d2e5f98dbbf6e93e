/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * What the benchmark programs under scripts/ (mpibench, regbench, perop,
 * libregcount) share: the clock, command-line options, statistics over
 * timed samples, the data pattern that catches stale registrations,
 * anonymous mappings and JSON output.  No verbs and no MPI here (see
 * bench_verbs.h).
 *
 * Header-only, on purpose: test/mpi builds scripts/bench-mpi/mpibench.c on
 * its own, and libregcount is a preload that should link nothing extra, so
 * including this file (by its path relative to the program) is all a user
 * needs.  The includer defines _GNU_SOURCE first.
 */
#ifndef UMMUNOT_BENCH_COMMON_H
#define UMMUNOT_BENCH_COMMON_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* "4096", "64K", "16M", "1G" (> 0); @end gets the first unparsed char. */
static inline bool bench_parse_size_prefix(const char *s, char **end, size_t *out)
{
	unsigned long long v;

	errno = 0;
	v = strtoull(s, end, 10);
	if (errno || *end == s)
		return false;
	switch (**end) {
	case 'k': case 'K': v <<= 10; (*end)++; break;
	case 'm': case 'M': v <<= 20; (*end)++; break;
	case 'g': case 'G': v <<= 30; (*end)++; break;
	default: break;
	}
	/* The bound leaves room for the callers' size arithmetic. */
	if (v == 0 || v > SIZE_MAX / 4)
		return false;
	*out = (size_t)v;
	return true;
}

/* The same, the whole string. */
static inline bool bench_parse_size(const char *s, size_t *out)
{
	char *end;

	return bench_parse_size_prefix(s, &end, out) && *end == '\0';
}

/* A decimal unsigned int, the whole string. */
static inline bool bench_parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end != '\0' || v > UINT_MAX)
		return false;
	*out = (unsigned)v;
	return true;
}

enum bench_opt_kind { BENCH_OPT_SIZE, BENCH_OPT_UINT, BENCH_OPT_STR, BENCH_OPT_FN };

/* One "--name VALUE" option; build them with the macros below. */
struct bench_opt {
	const char *name;
	enum bench_opt_kind kind;
	void *dst;		/* size_t *, unsigned *, const char ** or FN's */
	unsigned min, max;	/* UINT: accepted range */
	bool (*fn)(const char *value, void *dst);
};

#define BENCH_SIZE(n, p) { .name = (n), .kind = BENCH_OPT_SIZE, .dst = (p) }
#define BENCH_UINT(n, p, lo, hi) \
	{ .name = (n), .kind = BENCH_OPT_UINT, .dst = (p), .min = (lo), .max = (hi) }
#define BENCH_STR(n, p) { .name = (n), .kind = BENCH_OPT_STR, .dst = (p) }
#define BENCH_FN(n, f, p) { .name = (n), .kind = BENCH_OPT_FN, .dst = (p), .fn = (f) }

static inline bool bench_parse_value(const struct bench_opt *opt, const char *v)
{
	unsigned *u = opt->dst;

	switch (opt->kind) {
	case BENCH_OPT_SIZE:
		return bench_parse_size(v, opt->dst);
	case BENCH_OPT_UINT:
		return bench_parse_uint(v, u) && *u >= opt->min && *u <= opt->max;
	case BENCH_OPT_STR:
		*(const char **)opt->dst = v;
		return true;
	case BENCH_OPT_FN:
		return opt->fn(v, opt->dst);
	}
	return false;
}

/*
 * Parses argv[first..] as "--name VALUE" pairs against @opts.  On a bad
 * option or value it says so on stderr, prefixed with @prog, and returns
 * false.
 */
static inline bool bench_parse_opts(const char *prog, int argc, char **argv,
				    int first, const struct bench_opt *opts,
				    size_t nopts)
{
	for (int i = first; i < argc; i += 2) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		const struct bench_opt *opt = NULL;

		for (size_t k = 0; k < nopts && !opt; k++)
			if (!strcmp(opts[k].name, a))
				opt = &opts[k];
		if (opt && !v) {
			fprintf(stderr, "%s: %s needs a value\n", prog, a);
			return false;
		}
		if (!opt || !bench_parse_value(opt, v)) {
			fprintf(stderr, "%s: bad option or value: %s %s\n", prog, a,
				v ? v : "");
			return false;
		}
	}
	return true;
}

struct bench_stats {
	double median;	/* v[n / 2] of the sorted samples */
	double mean;
	double min;
	double max;
};

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Statistics of @n >= 1 samples; sorts @v in place. */
static inline struct bench_stats bench_stats(double *v, size_t n)
{
	double sum = 0.0;

	qsort(v, n, sizeof(*v), bench_cmp_double);
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	return (struct bench_stats){ .median = v[n / 2], .mean = sum / (double)n,
				     .min = v[0], .max = v[n - 1] };
}

/*
 * The data pattern: bench_pattern_fill() writes the pattern of @seed into
 * @buf, bench_pattern_bad_words() counts the 64-bit words that differ from
 * it.  A registration that went stale delivers old data, which then shows
 * up as bad words.  @size is a multiple of 8.
 */
static inline uint64_t bench_pattern_word(uint64_t seed, size_t i)
{
	uint64_t x = seed ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull);

	return x ^ (x >> 29);
}

static inline void bench_pattern_fill(void *buf, size_t size, uint64_t seed)
{
	uint64_t *w = buf;

	for (size_t i = 0; i < size / 8; i++)
		w[i] = bench_pattern_word(seed, i);
}

static inline uint64_t bench_pattern_bad_words(const void *buf, size_t size,
					       uint64_t seed)
{
	const uint64_t *w = buf;
	uint64_t bad = 0;

	for (size_t i = 0; i < size / 8; i++)
		bad += w[i] != bench_pattern_word(seed, i);
	return bad;
}

/*
 * A private anonymous read-write mapping of @len bytes; at @addr with
 * MAP_FIXED when @addr is not NULL (new pages replace the old ones there,
 * which makes any registration of the old ones stale).  NULL on failure.
 */
static inline void *bench_map_anon(void *addr, size_t len)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | (addr ? MAP_FIXED : 0);
	void *p = mmap(addr, len, PROT_READ | PROT_WRITE, flags, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

/* fopen(@path, "w"), with a message on stderr when it fails. */
static inline FILE *bench_json_create(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		perror(path);
	return f;
}

/* @s as a JSON string, quoted and escaped (labels come from the user). */
static inline void bench_json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

/*
 * bench_json_create(), then the opening of a one-line result object:
 * {"benchmark": "@benchmark", "label": "@label"   (the caller goes on
 * with ", ..." and closes it).
 */
static inline FILE *bench_json_begin(const char *path, const char *benchmark,
				     const char *label)
{
	FILE *f = bench_json_create(path);

	if (f) {
		fprintf(f, "{\"benchmark\": ");
		bench_json_string(f, benchmark);
		fprintf(f, ", \"label\": ");
		bench_json_string(f, label);
	}
	return f;
}

#endif
