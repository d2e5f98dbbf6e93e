// SPDX-License-Identifier: BSD-2-Clause
/*
 * This process's memory map (proc_maps.h).  Nothing here allocates or
 * takes a lock: the userfaultfd monitor calls it while watching ranges.
 */
#define _GNU_SOURCE
#include "proc_maps.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Feed one character of a line (without its newline). */
static void feed_char(struct maps_parser *p, char c)
{
	int h = hexval(c);

	switch (p->field) {
	case 0:
		if (c == '-')
			p->field = 1;
		else if (h >= 0)
			p->cur.start = p->cur.start * 16 + (uintptr_t)h;
		break;
	case 1:
		if (c == ' ')
			p->field = 2;
		else if (h >= 0)
			p->cur.end = p->cur.end * 16 + (uintptr_t)h;
		break;
	case 2:
		if (c == ' ')
			p->field = 3;
		else if (p->nperm < sizeof(p->cur.perms))
			p->cur.perms[p->nperm++] = c;
		break;
	case 3:
		if (c == ' ')
			p->field = 4;
		break;
	case 4:
		if (c == ':')
			p->field = 5;
		else if (h >= 0)
			p->cur.dev_major = p->cur.dev_major * 16 + (unsigned)h;
		break;
	case 5:
		if (c == ' ')
			p->field = 6;
		else if (h >= 0)
			p->cur.dev_minor = p->cur.dev_minor * 16 + (unsigned)h;
		break;
	case 6:
		if (c == ' ')
			p->field = 7;
		else if (c >= '0' && c <= '9')
			p->cur.inode = p->cur.inode * 10 + (unsigned)(c - '0');
		break;
	default:
		break;	/* the path, if any */
	}
}

void maps_parser_init(struct maps_parser *p, uintptr_t start, uintptr_t end,
		      proc_vma_fn fn, void *arg)
{
	memset(p, 0, sizeof(*p));
	p->start = start;
	p->end = end;
	p->fn = fn;
	p->arg = arg;
}

/* A whole line was fed: hand its mapping over if it overlaps. */
static int end_line(struct maps_parser *p)
{
	struct proc_vma v = p->cur;

	if (p->field < 6)
		return -EIO;	/* not the format we know */
	if (v.start >= p->end)
		return 1;
	memset(&p->cur, 0, sizeof(p->cur));
	p->field = 0;
	p->nperm = 0;
	if (v.end > p->start && p->fn(p->arg, &v))
		return 1;
	return 0;
}

int maps_parser_feed(struct maps_parser *p, const char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc;

		if (buf[i] != '\n') {
			feed_char(p, buf[i]);
			continue;
		}
		rc = end_line(p);
		if (rc)
			return rc;
	}
	return 0;
}

int proc_maps_walk(uintptr_t start, uintptr_t end, proc_vma_fn fn, void *arg)
{
	char buf[4096];
	struct maps_parser p;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return -errno;
	maps_parser_init(&p, start, end, fn, arg);
	while (rc == 0) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		rc = maps_parser_feed(&p, buf, (size_t)n);
	}
	close(fd);
	return rc < 0 ? rc : 0;
}

struct cover_check {
	uintptr_t next;	/* first address not yet seen covered */
	int err;
};

/* Only private anonymous memory: nothing outside this mm can change it. */
static int check_vma(void *arg, const struct proc_vma *v)
{
	struct cover_check *c = arg;

	if (v->start > c->next) {
		c->err = -EFAULT;	/* hole */
		return 1;
	}
	if (v->perms[3] != 'p' || v->inode != 0 || v->dev_major != 0 ||
	    v->dev_minor != 0) {
		c->err = -EINVAL;	/* shared or file-backed */
		return 1;
	}
	c->next = v->end;
	return 0;
}

static int check_private_anon_text(uintptr_t start, uintptr_t end)
{
	struct cover_check c = { .next = start, .err = 0 };
	int rc = proc_maps_walk(start, end, check_vma, &c);

	if (rc < 0)
		return rc;
	if (c.err)
		return c.err;
	return c.next >= end ? 0 : -EFAULT;
}

/* struct procmap_query of <linux/fs.h> (Linux 6.11), absent from older headers. */
struct maps_query {
	uint64_t size;
	uint64_t query_flags;
	uint64_t query_addr;
	uint64_t vma_start;
	uint64_t vma_end;
	uint64_t vma_flags;
	uint64_t vma_page_size;
	uint64_t vma_offset;
	uint64_t inode;
	uint32_t dev_major;
	uint32_t dev_minor;
	uint32_t vma_name_size;
	uint32_t build_id_size;
	uint64_t vma_name_addr;
	uint64_t build_id_addr;
};

#define MAPS_QUERY _IOWR('f', 17, struct maps_query)
#define MAPS_QUERY_VMA_SHARED 0x08
#define MAPS_QUERY_COVERING_OR_NEXT_VMA 0x10

/*
 * The same check with one PROCMAP_QUERY per mapping: the text file costs
 * about 150 ns per mapping listed before the range (0.3 ms with 2000).
 * Returns -ENOTTY where the kernel does not have it.
 */
static int check_private_anon_query(uintptr_t start, uintptr_t end)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	uintptr_t next = start;
	int rc = 0;

	if (fd < 0)
		return -errno;
	while (next < end) {
		struct maps_query q = {
			.size = sizeof(q),
			.query_flags = MAPS_QUERY_COVERING_OR_NEXT_VMA,
			.query_addr = next,
		};

		if (ioctl(fd, MAPS_QUERY, &q)) {
			rc = errno == ENOENT ? -EFAULT : -errno;
			break;
		}
		if (q.vma_start > next) {
			rc = -EFAULT;	/* hole */
			break;
		}
		if ((q.vma_flags & MAPS_QUERY_VMA_SHARED) || q.inode ||
		    q.dev_major || q.dev_minor) {
			rc = -EINVAL;	/* shared or file-backed */
			break;
		}
		next = q.vma_end;
	}
	close(fd);
	return rc;	/* -ENOTTY: no PROCMAP_QUERY (before 6.11) */
}

int proc_maps_check_private_anon(bool *use_query, uintptr_t start,
				 uintptr_t end)
{
	if (*use_query) {
		int rc = check_private_anon_query(start, end);

		if (rc != -ENOTTY)
			return rc;
		*use_query = false;	/* before 6.11 */
	}
	return check_private_anon_text(start, end);
}

static int count_vma(void *arg, const struct proc_vma *v)
{
	(void)v;
	++*(long *)arg;
	return 0;
}

long proc_maps_count(void)
{
	long n = 0;
	int rc = proc_maps_walk(0, UINTPTR_MAX, count_vma, &n);

	return rc < 0 ? rc : n;
}

static long read_max_map_count(void)
{
	char buf[32];
	int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);

	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return 65530;	/* the kernel's default */
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

long proc_maps_room(void)
{
	long now = proc_maps_count();

	return now < 0 ? now : read_max_map_count() - now;
}
