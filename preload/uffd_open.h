/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Opening the userfaultfd monitor's uffd: the system call or
 * /dev/userfaultfd, write-protect mode where the kernel has it (and
 * whether the hit-path probe works), else missing-page mode.
 */
#ifndef UMMUSHIM_UFFD_OPEN_H
#define UMMUSHIM_UFFD_OPEN_H

#include <stdbool.h>
#include <stdint.h>

struct uffd_setup {
	uint64_t reg_mode;	/* UFFDIO_REGISTER_MODE_WP or _MISSING */
	bool devnode;		/* opened through /dev/userfaultfd */
	bool probe;		/* UFFDIO_WRITEPROTECT works on a registration */
};

/*
 * A new uffd (UFFD_OPEN_* @flags of monitor_uffd.h) with its API
 * negotiated and a registration mode that works here: the descriptor, or
 * a negative errno (-EOPNOTSUPP: the kernel lacks what the monitor needs).
 */
int uffd_open_best(unsigned int flags, uintptr_t page, struct uffd_setup *out);

#endif /* UMMUSHIM_UFFD_OPEN_H */
