/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * Whether an address range holds memory that no MMU notifier sees change:
 * mappings with VM_IO, VM_PFNMAP or VM_MIXEDMAP (device memory such as a
 * PCI BAR or GPU memory exported through a peer-memory client).  Freeing
 * and remapping such memory fires no invalidation, so a registration of
 * it must never be cached.  Read from the VmFlags lines of
 * /proc/self/smaps ("io", "pf", "mm"); used where the kernel module does
 * not refuse such ranges itself (a module without
 * UMMUNOT_FEATURE_REFUSE_UNWATCHABLE).  smaps is slow (the kernel walks
 * every mapping's page tables), so callers ask on a miss only.
 */
#ifndef UMMUSHIM_VMFLAGS_H
#define UMMUSHIM_VMFLAGS_H

#include <stdint.h>

/*
 * 1 when a mapping overlapping [start, end) in the smaps file @path
 * (NULL: /proc/self/smaps) is unwatchable, 0 when none is, a negative
 * errno when the file cannot be read.
 */
int vmflags_range_unwatchable(const char *path, uintptr_t start,
			      uintptr_t end);

#endif /* UMMUSHIM_VMFLAGS_H */
