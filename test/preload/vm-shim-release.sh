#!/bin/bash
# VM tests of the shim's handling of device memory and of invalidated idle
# MRs, with the ummunot module and Soft-RoCE (meson test vm-shim-release).
# Usage: vm-shim-release.sh SHIM.so VM_RELEASE
set -u

SHIM=$1
PROG=$2
TMP=$(mktemp -d /tmp/shim-release.XXXXXX)
# shellcheck source=SCRIPTDIR/../lib/shim-tap.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/shim-tap.sh"

shim_run() { # NAME -- CMD...
	local name=$1
	shift 2
	env UMMUSHIM_STATS=1 UMMUSHIM_LOG_FILE="$TMP/$name.%p.log" \
		LD_PRELOAD="$SHIM" "$@"
}

echo "# kernel $(uname -r); $(ls -l /dev/ummunot 2>&1)"
check "/dev/ummunot exists" test -c /dev/ummunot

# ---- device memory (VM_IO|VM_PFNMAP: a PCI BAR) is never cached -------------
# shellcheck disable=SC2046
out=$(shim_run device -- "$PROG" device $(ls /sys/bus/pci/devices/*/resource[0-5] 2>/dev/null))
echo "# $out"
log=$(log_of device)
echo "# $(grep ' stats: ' "$log")"
check "a PCI BAR was mapped and registered through the shim" grep -q '^device ' <<<"$out"
check "the BAR registration was not cached" sh -c "! grep -q cached <<'X'
$out
X"
expect_stat "$log" monitor ummunot "device: ummunot monitor in use"
expect_stat "$log" unwatchable 2 "device: both registrations recognised as device memory"
expect_stat "$log" misses 0 "device: no registration made for the cache"
expect_stat "$log" hits 0 "device: no hit"

# ---- a freed 1 GiB buffer is unpinned without another verbs call -------------
# The time until VmPin drops is the releaser's delay plus the real
# ibv_dereg_mr of 1 GiB itself (seconds in a TCG guest: dereg_ns); the
# delay is what the shim adds.
out=$(shim_run unpin -- "$PROG" unpin 1024)
echo "# $out"
log=$(log_of unpin)
echo "# $(grep ' stats: ' "$log")"
ms=$(sed -n 's/^unpinned_after_ms=//p' <<<"$out")
pinned=$(sed -n 's/^pinned_kb_after_dereg=//p' <<<"$out")
# The shim kept the MR registered: without that, VmPin would be low
# already and the wait below would prove nothing.
check "unpin: the idle MR stayed pinned after ibv_dereg_mr (${pinned:-?} kB)" \
	awk -v p="${pinned:--1}" 'BEGIN { exit !(p + 0 >= 1048576) }'
expect_stat "$log" monitor ummunot "unpin: ummunot monitor in use"
expect_stat "$log" misses 1 "unpin: one registration made for the cache"
dereg_ns=$(stat "$log" dereg_ns)
delay=$(awk -v m="$ms" -v d="${dereg_ns:-0}" 'BEGIN { if (m == "never" || m == "") print "never"; else printf "%.1f", m - d / 1e6 }')
echo "# unpinned after ${ms} ms, of which the real deregistration took $(awk -v d="${dereg_ns:-0}" 'BEGIN { printf "%.1f", d / 1e6 }') ms: release delay ${delay} ms"
check "the freed 1 GiB buffer was unpinned without a verbs call" \
	sh -c "[ '$delay' != never ]"
# VmPin drops inside the real ibv_dereg_mr, before the releaser counts
# it; ibv_dealloc_pd waits for that release, so the count is final.
check "unpin: ibv_dealloc_pd succeeded after the release" grep -qx 'dealloc_pd=0' <<<"$out"
expect_stat "$log" real_deregs 1 "unpin: released once"
# Generous bound (TCG guest on a shared host); the figure is reported above.
check "... the release started within 1 s of the munmap (${delay} ms)" \
	awk -v m="$delay" 'BEGIN { exit !(m != "never" && m + 0 < 1000) }'

rm -rf "$TMP"
echo "1..$n"
[ "$failed" -eq 0 ]
