#!/bin/bash
# Instructions per reg+dereg pair that hits, counted by cachegrind (they do
# not depend on the machine's load, unlike the times of hitpath-vm.sh):
# test/preload/bench_hitpath_mt, 1 thread, against the libibverbs test
# double, under each shim given; the count of a run of N+1 pairs minus
# that of a 1-pair run, divided by N (the benchmark loop and the
# interposers included, the start-up left out).
#
# Usage: hitpath-instructions.sh BUILD_DIR [SHIM.so...]
#   (default shim: BUILD_DIR/preload/libummushim.so)
# Environment: HIT_MONITOR (UMMUSHIM_MONITOR, default uffd: the host has
#   no /dev/ummunot; the probe's system call counts a few instructions in
#   user space, its time in the kernel is not counted; fake-ummunot: the
#   ummunot monitor on the stand-in device of fakeummunot/, whose counter
#   never moves, the hit path of the module's monitor on a host without
#   it), HIT_PAIRS (N, default 100000).
# Prints one line per shim and mode: "SHIM MODE INSTRUCTIONS/PAIR".
set -eu -o pipefail

build=$(cd "$1" && pwd)
shift
bench=$build/test/preload/bench_hitpath_mt
pairs=${HIT_PAIRS:-100000}
monitor=${HIT_MONITOR:-uffd}
preload=
if [ "$monitor" = fake-ummunot ]; then
	monitor=ummunot
	preload=$build/scripts/bench-reg/fakeummunot/libfakeummunot.so:
	[ -e "${preload%:}" ] || { echo "hitpath-instructions.sh: missing ${preload%:}" >&2; exit 1; }
fi
[ $# -gt 0 ] || set -- "$build/preload/libummushim.so"
command -v valgrind >/dev/null || { echo "hitpath-instructions.sh: valgrind is not installed" >&2; exit 1; }
for f in "$bench" "$@"; do
	[ -e "$f" ] || { echo "hitpath-instructions.sh: missing $f" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/hitpath-instr.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Total instructions (Ir) of one run of @pairs pairs.
count() { # shim mode pairs
	env LD_PRELOAD="$preload$1" UMMUSHIM_MONITOR="$monitor" UMMUSHIM_STATS=1 \
		valgrind --tool=cachegrind --cache-sim=no \
		--cachegrind-out-file="$tmp/out" "$bench" 1 "$3" "$2" \
		>/dev/null 2>"$tmp/err" ||
		{ cat "$tmp/err" >&2; echo "hitpath-instructions.sh: run failed" >&2; exit 1; }
	grep -q " stats: monitor=$monitor " "$tmp/err" ||
		{ cat "$tmp/err" >&2; echo "hitpath-instructions.sh: $1 did not use monitor $monitor" >&2; exit 1; }
	sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$tmp/out"
}

for shim in "$@"; do
	for mode in exact slice; do
		one=$(count "$shim" "$mode" 1)
		many=$(count "$shim" "$mode" $((pairs + 1)))
		printf '%s %s %s\n' "$shim" "$mode" \
			"$(awk -v a="$many" -v b="$one" -v n="$pairs" 'BEGIN { printf "%.1f", (a - b) / n }')"
	done
done
