// SPDX-License-Identifier: GPL-2.0-only
/* Every documented error code of open, ioctl and read. */
#include "ktest.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

START_TEST(open_needs_rdonly)
{
	int fd = open(UMMUNOT_DEVICE_PATH, O_WRONLY | O_CLOEXEC);

	ck_assert_msg(fd < 0 && errno == EINVAL, "O_WRONLY: fd %d, %s", fd,
		      strerror(errno));
	fd = open(UMMUNOT_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	ck_assert_msg(fd < 0 && errno == EINVAL, "O_RDWR: fd %d, %s", fd,
		      strerror(errno));
	fd = open(UMMUNOT_DEVICE_PATH, O_RDONLY | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "O_RDONLY: %s", strerror(errno));
}
END_TEST

static void register_einval(int fd, uint64_t start, uint64_t end,
			    uint32_t flags, uint32_t reserved)
{
	struct ummunot_register_ioctl r = {
		.start = start, .end = end, .user_cookie = 1000,
		.flags = flags, .reserved = reserved,
	};
	int e = kt_register_raw(fd, &r);

	ck_assert_msg(e == EINVAL,
		      "REGISTER [%#llx,%#llx) flags %#x reserved %#x: %s, expected EINVAL",
		      (unsigned long long)start, (unsigned long long)end,
		      flags, reserved, e ? strerror(e) : "success");
}

START_TEST(register_einval_cases)
{
	int fd = kt_open_nb();

	register_einval(fd, 0x10000, 0x10000, 0, 0);		/* empty */
	register_einval(fd, 0x20000, 0x10000, 0, 0);		/* reversed */
	register_einval(fd, 0x10000, 0x10001, 1, 0);		/* flags */
	register_einval(fd, 0x10000, 0x10001, 0x80000000u, 0);
	register_einval(fd, 0x10000, 0x10001, 0, 1);		/* reserved */
	register_einval(fd, 0x10000, 1ULL << 63, 0, 0);		/* kernel half */
	register_einval(fd, 0x10000, ~0ULL, 0, 0);		/* rounds to 0 */
	register_einval(fd, ~0ULL - 5, ~0ULL, 0, 0);
	register_einval(fd, 0x10000, KT_TASK_SIZE + 1, 0, 0);
	register_einval(fd, KT_TASK_SIZE, KT_TASK_SIZE + 0x1000, 0, 0);
	register_einval(fd, 1ULL << 47, (1ULL << 47) + 0x1000, 0, 0);
	/* The very top of user space is fine. */
	kt_register_ok(fd, KT_TASK_SIZE - 0x1000, KT_TASK_SIZE, 1);
	/* So is page 0 (end rounds up to a page). */
	kt_register_ok(fd, 0, 1, 2);
	/* None of the failures registered anything. */
	ck_assert_int_eq(kt_unregister(fd, 1000), ENOENT);
}
END_TEST

START_TEST(register_eexist)
{
	int fd = kt_open_nb();

	kt_register_ok(fd, 0x100000, 0x101000, 5);
	ck_assert_int_eq(kt_register(fd, 0x100000, 0x101000, 5), EEXIST);
	ck_assert_int_eq(kt_register(fd, 0x200000, 0x201000, 5), EEXIST);
	/* Same range, other cookie: fine. */
	kt_register_ok(fd, 0x100000, 0x101000, 6);
	kt_unregister_ok(fd, 5);
	kt_register_ok(fd, 0x200000, 0x201000, 5);
	/* Cookies are per fd. */
	kt_register_ok(kt_open_nb(), 0x100000, 0x101000, 5);
}
END_TEST

START_TEST(register_enospc)
{
	int fd = kt_open_nb(), fd2 = kt_open_nb();
	long saved = kt_max_regions();
	int set, fill = 0, over, after_unreg, other_fd, over2;

	/* Collect results first so the parameter is restored before asserting. */
	set = kt_set_max_regions(8);
	for (uint64_t c = 0; c < 8; c++)
		fill |= kt_register(fd, 0x100000 + c * 0x1000,
				    0x101000 + c * 0x1000, c);
	over = kt_register(fd, 0x300000, 0x301000, 100);
	other_fd = kt_register(fd2, 0x300000, 0x301000, 100);
	fill |= kt_unregister(fd, 3);
	after_unreg = kt_register(fd, 0x300000, 0x301000, 100);
	over2 = kt_register(fd, 0x400000, 0x401000, 101);
	ck_assert_int_eq(kt_set_max_regions(saved), 0);
	ck_assert_int_eq(kt_max_regions(), saved);

	ck_assert_msg(set == 0, "writing max_regions: %s", strerror(set));
	ck_assert_msg(fill == 0, "filling up to the limit failed");
	ck_assert_msg(over == ENOSPC, "past the limit: %s", strerror(over));
	ck_assert_msg(other_fd == 0, "limit is per fd: %s", strerror(other_fd));
	ck_assert_msg(after_unreg == 0, "after UNREGISTER: %s",
		      strerror(after_unreg));
	ck_assert_msg(over2 == ENOSPC, "past the limit again: %s",
		      strerror(over2));
}
END_TEST

/* max_total_regions bounds all files together (the device is for everyone). */
START_TEST(register_enospc_global)
{
	int fd = kt_open_nb(), fd2 = kt_open_nb();
	long saved = kt_param("max_total_regions");
	int set, fill = 0, over, after_unreg;

	/* Collect results first so the parameter is restored before asserting. */
	set = kt_set_param("max_total_regions", 4);
	for (uint64_t c = 0; c < 3; c++)
		fill |= kt_register(fd, 0x100000 + c * 0x1000,
				    0x101000 + c * 0x1000, c);
	fill |= kt_register(fd2, 0x100000, 0x101000, 1);
	over = kt_register(fd2, 0x200000, 0x201000, 2);
	fill |= kt_unregister(fd, 0);
	after_unreg = kt_register(fd2, 0x200000, 0x201000, 2);
	ck_assert_int_eq(kt_set_param("max_total_regions", saved), 0);

	ck_assert_msg(set == 0, "writing max_total_regions: %s", strerror(set));
	ck_assert_msg(fill == 0, "filling up to the global limit failed");
	ck_assert_msg(over == ENOSPC, "past the global limit: %s",
		      strerror(over));
	ck_assert_msg(after_unreg == 0, "after UNREGISTER on the other fd: %s",
		      strerror(after_unreg));
}
END_TEST

START_TEST(max_regions_default)
{
	ck_assert_int_eq(kt_max_regions(), 1048576);
	ck_assert_int_eq(kt_param("max_total_regions"), 1L << 24);
}
END_TEST

/* A pointer to the last bytes of a mapping whose next page is unmapped. */
static void *edge_pointer(size_t size)
{
	char *p = kt_map_anon(2);

	ck_assert_int_eq(munmap((void *)kt_pg(p, 1), kt_page()), 0);
	return (void *)(kt_pg(p, 1) - size / 2);
}

START_TEST(efault_cases)
{
	int fd = kt_open_nb();
	char *gone = kt_map_anon(1);

	ck_assert_int_eq(munmap(gone, kt_page()), 0);
	ck_assert_int_eq(kt_register_raw(fd, NULL), EFAULT);
	ck_assert_int_eq(kt_register_raw(fd, gone), EFAULT);
	ck_assert_int_eq(kt_register_raw(fd, (void *)0xffff888000000000ULL),
			 EFAULT);
	ck_assert_int_eq(kt_register_raw(fd, edge_pointer(
		sizeof(struct ummunot_register_ioctl))), EFAULT);
	ck_assert_int_eq(ioctl(fd, UMMUNOT_UNREGISTER_REGION, NULL), -1);
	ck_assert_int_eq(errno, EFAULT);
	ck_assert_int_eq(ioctl(fd, UMMUNOT_UNREGISTER_REGION, gone), -1);
	ck_assert_int_eq(errno, EFAULT);
	ck_assert_int_eq(ioctl(fd, UMMUNOT_UNREGISTER_REGION,
			       edge_pointer(sizeof(uint64_t))), -1);
	ck_assert_int_eq(errno, EFAULT);
	ck_assert_int_eq(ioctl(fd, UMMUNOT_EXCHANGE_FEATURES, NULL), -1);
	ck_assert_int_eq(errno, EFAULT);
}
END_TEST

START_TEST(unregister_enoent)
{
	int fd = kt_open_nb();

	ck_assert_int_eq(kt_unregister(fd, 0), ENOENT);
	ck_assert_int_eq(kt_unregister(fd, ~0ULL), ENOENT);
	kt_register_ok(fd, 0x100000, 0x101000, 9);
	ck_assert_int_eq(kt_unregister(fd, 10), ENOENT);
	kt_unregister_ok(fd, 9);
	ck_assert_int_eq(kt_unregister(fd, 9), ENOENT);
}
END_TEST

START_TEST(unknown_ioctl_enotty)
{
	int fd = kt_open_nb();
	uint64_t buf[8] = { 0 };
	const unsigned long cmds[] = {
		_IO('U', 0),
		_IO('U', 4),
		_IOWR('U', 4, uint64_t),
		_IOW('U', 2, uint32_t),		/* REGISTER, wrong size */
		_IOR('U', 2, struct ummunot_register_ioctl), /* wrong dir */
		_IOWR('U', 2, struct ummunot_register_ioctl),
		_IOW('U', 3, uint32_t),		/* UNREGISTER, wrong size */
		_IOR('U', 1, uint32_t),		/* FEATURES, wrong dir */
		_IOWR('U', 1, uint64_t),	/* FEATURES, wrong size */
		_IOW('V', 2, struct ummunot_register_ioctl), /* wrong magic */
		0x541B,				/* FIONREAD */
		0xdeadbeef,
	};

	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		int rc = ioctl(fd, cmds[i], buf);

		ck_assert_msg(rc == -1 && errno == ENOTTY,
			      "ioctl %#lx: rc %d, %s", cmds[i], rc,
			      strerror(errno));
	}
}
END_TEST

START_TEST(exchange_features)
{
	int fd = kt_open_nb();
	const uint32_t all = UMMUNOT_FEATURE_REFUSE_UNWATCHABLE |
			     UMMUNOT_FEATURE_EVENT_CAUSE;
	uint32_t f = 0xffffffffu;

	/* The requested bits this module supports, nothing else. */
	ck_assert_int_eq(kt_features(fd, &f), 0);
	ck_assert_uint_eq(f, all);
	f = 0;
	ck_assert_int_eq(kt_features(fd, &f), 0);
	ck_assert_uint_eq(f, 0);
	/* A failed REGISTER does not count. */
	ck_assert_int_eq(kt_register(fd, 5, 5, 1), EINVAL);
	f = UMMUNOT_FEATURE_EVENT_CAUSE | (1u << 31);
	ck_assert_int_eq(kt_features(fd, &f), 0);
	ck_assert_uint_eq(f, UMMUNOT_FEATURE_EVENT_CAUSE);
	/* Once anything was registered, even if removed since: EINVAL. */
	kt_register_ok(fd, 0x100000, 0x101000, 1);
	f = 0;
	ck_assert_int_eq(kt_features(fd, &f), EINVAL);
	kt_unregister_ok(fd, 1);
	ck_assert_int_eq(kt_features(fd, &f), EINVAL);
}
END_TEST

START_TEST(read_einval_small_buffer)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(1);
	struct ummunot_event ev[2];

	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 1), 1);
	ck_assert_int_eq(kt_read(fd, ev, 0), -EINVAL);
	ck_assert_int_eq(kt_read(fd, ev, 1), -EINVAL);
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	/* Also while an event is pending, and without consuming it. */
	ck_assert_int_eq(kt_read(fd, ev, KT_EVENT_SIZE - 1), -EINVAL);
	kt_expect_one(fd, NULL, 1, kt_pg(p, 0), kt_pg(p, 1));
}
END_TEST

/* A read into a bad buffer must not lose the event ("never dropped"). */
START_TEST(read_efault_keeps_event)
{
	int fd = kt_open_nb();
	char *p = kt_map_anon(1);
	char *gone = kt_map_anon(1);

	ck_assert_int_eq(munmap(gone, kt_page()), 0);
	kt_register_ok(fd, kt_pg(p, 0), kt_pg(p, 1), 1);
	ck_assert_int_eq(munmap(p, kt_page()), 0);
	ck_assert_int_eq(kt_read(fd, gone, 4 * KT_EVENT_SIZE), -EFAULT);
	kt_expect_one(fd, NULL, 1, kt_pg(p, 0), kt_pg(p, 1));
}
END_TEST

Suite *kt_errors_suite(void)
{
	return KT_SUITE("errors",
			open_needs_rdonly, register_einval_cases,
			register_eexist, register_enospc,
			register_enospc_global, max_regions_default,
			efault_cases, unregister_enoent, unknown_ioctl_enotty,
			exchange_features, read_einval_small_buffer,
			read_efault_keeps_event);
}
