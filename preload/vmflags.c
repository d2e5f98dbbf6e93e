// SPDX-License-Identifier: BSD-2-Clause
#define _GNU_SOURCE
#include "vmflags.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Long enough for any header's address part and for a VmFlags line. */
#define LINE_MAX_KEPT 512

struct smaps_scan {
	uintptr_t start, end;	/* the range asked about */
	bool overlaps;		/* the current mapping overlaps it */
	int found;
};

/* "start-end perms ...": a mapping's header line. */
static bool parse_header(const char *line, uintptr_t *lo, uintptr_t *hi)
{
	char *p;

	*lo = (uintptr_t)strtoull(line, &p, 16);
	if (p == line || *p != '-')
		return false;
	line = p + 1;
	*hi = (uintptr_t)strtoull(line, &p, 16);
	return p != line && *p == ' ';
}

/* "VmFlags: rd wr ... io pf": any of the unwatchable flags? */
static bool flags_unwatchable(const char *flags)
{
	static const char *const bad[] = { "io", "pf", "mm" };

	for (const char *t = flags; *t;) {
		size_t n;

		while (*t == ' ')
			t++;
		n = strcspn(t, " \n");
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			if (n == 2 && memcmp(t, bad[i], 2) == 0)
				return true;
		t += n;
	}
	return false;
}

static void scan_line(struct smaps_scan *s, const char *line)
{
	uintptr_t lo, hi;

	if (strncmp(line, "VmFlags:", 8) == 0) {
		if (s->overlaps && flags_unwatchable(line + 8))
			s->found = 1;
	} else if (parse_header(line, &lo, &hi)) {
		s->overlaps = lo < s->end && s->start < hi;
	}
}

int vmflags_range_unwatchable(const char *path, uintptr_t start,
			      uintptr_t end)
{
	struct smaps_scan s = { .start = start, .end = end };
	char buf[4096], line[LINE_MAX_KEPT];
	size_t used = 0;
	int saved = errno, fd;

	fd = open(path ? path : "/proc/self/smaps", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = errno;

		errno = saved;
		return -err;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;

			close(fd);
			errno = saved;
			return -err;
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n && !s.found; i++) {
			if (buf[i] != '\n') {
				if (used < sizeof(line) - 1)	/* keep the head */
					line[used++] = buf[i];
				continue;
			}
			line[used] = '\0';
			scan_line(&s, line);
			used = 0;
		}
		if (s.found)
			break;
	}
	if (used && !s.found) {
		line[used] = '\0';
		scan_line(&s, line);
	}
	close(fd);
	errno = saved;
	return s.found;
}
