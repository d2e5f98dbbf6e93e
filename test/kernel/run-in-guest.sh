#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
# Runs inside the VM (as root, module loaded): prepares the guest and runs
# the kernel test program given as $1 (extra arguments are passed on).
set -eu
prog=$1
shift

# udev-style mode: any user may open it; an fd only sees its opener's memory.
chmod 0666 /dev/ummunot

# Background kernel activity that moves pages would add real (but unplanned)
# invalidations to tests with an exact oracle: automatic NUMA balancing
# migrates pages, khugepaged collapses them into huge pages, proactive
# compaction migrates them.
quiet_write() {
	if [ -w "$2" ]; then
		echo "$1" >"$2" || true
	fi
}
quiet_write 0 /proc/sys/kernel/numa_balancing
# UMMUNOT_THP=always keeps huge pages on (the suite must pass that way too:
# most distributions default to it); khugepaged is still kept from
# collapsing ranges behind the tests' backs.
quiet_write "${UMMUNOT_THP:-never}" /sys/kernel/mm/transparent_hugepage/enabled
quiet_write 0 /sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none
quiet_write never /sys/kernel/mm/transparent_hugepage/defrag
quiet_write 0 /proc/sys/vm/compaction_proactiveness

exec "$prog" "$@"
