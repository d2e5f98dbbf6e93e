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
out=$(shim_run unpin -- "$PROG" unpin 1024)
echo "# $out"
echo "# $(grep ' stats: ' "$(log_of unpin)")"
ms=$(sed -n 's/^unpinned_after_ms=//p' <<<"$out")
check "the freed 1 GiB buffer was unpinned without a verbs call ($ms ms)" \
	sh -c "[ -n '$ms' ] && [ '$ms' != never ]"
# Generous bound (TCG guest on a shared host); the figure is reported above.
check "... within 2 s" awk -v m="$ms" 'BEGIN { exit !(m != "never" && m + 0 < 2000) }'

rm -rf "$TMP"
echo "1..$n"
[ "$failed" -eq 0 ]
