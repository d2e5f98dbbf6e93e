#!/bin/bash
# Hit-path cost of this tree's shim side by side with a build of an older
# commit (default ebb1c62, the round-1 hit path) on the same machine, in
# one run: test/preload/bench_hitpath_mt (one buffer per thread, the
# libibverbs test double) under each shim, exact and slice (containment)
# hits, 1 and 2 threads.  The two shims take turns within every round, so
# a change of machine load hits both alike; the figure is the median of
# RUNS rounds, in ns per reg+dereg pair per thread.  The monitor is by
# default the ummunot one on fakeummunot/'s stand-in device (the check
# before a hit is the load of a counter that never moves, as with the
# module: the cache's own hit path, on a host without the module; the
# module itself in the test VM: hitpath-vm.sh).  With HIT_MONITOR=uffd
# every hit of today's shim makes a system call (the write-protect
# probe), so that measures the probe more than the cache.  Every run must
# report the monitor in its statistics line, else the script fails.
#
# Usage: hitpath-vs-baseline.sh BUILD_DIR [COMMIT]
# Environment: HIT_ITERS (pairs per thread and run, default 2000000),
#   HIT_RUNS (rounds, default 5), HIT_MONITOR (fake-ummunot, the default,
#   or a UMMUSHIM_MONITOR value), BASELINE_DIR (reuse a build of COMMIT
#   there instead of building one in a temporary directory).
set -eu -o pipefail

build=$(cd "$1" && pwd)
commit=${2:-ebb1c62}
iters=${HIT_ITERS:-2000000}
runs=${HIT_RUNS:-5}
src=$(cd "$(dirname "$0")/../.." && pwd)
bench=$build/test/preload/bench_hitpath_mt
new_shim=$build/preload/libummushim.so
for f in "$bench" "$new_shim"; do
	[ -e "$f" ] || { echo "hitpath-vs-baseline.sh: missing $f (build with -Dtests=true first)" >&2; exit 1; }
done

tmp=
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT
base=${BASELINE_DIR:-}
if [ -z "$base" ]; then
	tmp=$(mktemp -d /tmp/ummushim-baseline.XXXXXX)
	base=$tmp
fi
# shellcheck source=SCRIPTDIR/baseline-shim.sh
. "$(dirname "$0")/baseline-shim.sh"
old_shim=$(baseline_shim "$src" "$commit" "$base")

monitor=${HIT_MONITOR:-fake-ummunot}
preload=
if [ "$monitor" = fake-ummunot ]; then
	monitor=ummunot
	preload=$build/scripts/bench-reg/fakeummunot/libfakeummunot.so:
	[ -e "${preload%:}" ] || { echo "hitpath-vs-baseline.sh: missing ${preload%:}" >&2; exit 1; }
fi
log=$(mktemp /tmp/hitpath-vs-baseline.XXXXXX)
trap 'cleanup; rm -f "$log"' EXIT

# One measurement: ns per pair per thread.  A shim without containment
# hits misses on nearly every slice (tens of µs each): it runs 1/100 of
# the pairs there, which changes the time, not the figure per pair.
measure() { # shim mode threads which
	local n=$iters out
	[ "$2-$4" != slice-old ] || n=$((iters / 100 + 1))
	rm -f "$log"
	out=$(env LD_PRELOAD="$preload$1" UMMUSHIM_MONITOR="$monitor" \
		UMMUSHIM_STATS=1 UMMUSHIM_LOG_FILE="$log" "$bench" "$3" "$n" "$2") || return 1
	grep -q " stats: monitor=$monitor " "$log" || {
		echo "hitpath-vs-baseline.sh: $1 did not use monitor $monitor:" >&2
		cat "$log" >&2
		return 1
	}
	sed -n 's/.*(\([0-9.]*\) ns\/pair\/thread).*/\1/p' <<<"$out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A samples
echo "# host load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= runs; r++)); do
	for mode in exact slice; do
		for threads in 1 2; do
			for which in old new; do
				shim=$new_shim
				[ "$which" = new ] || shim=$old_shim
				v=$(measure "$shim" "$mode" "$threads" "$which") || exit 1
				[ -n "$v" ] || { echo "hitpath-vs-baseline.sh: $which $mode ${threads}T failed" >&2; exit 1; }
				samples[$which-$mode-$threads]+="$v "
			done
		done
	done
done

printf '# ns per reg+dereg pair per thread, median of %d runs of %d pairs\n' "$runs" "$iters"
printf '%-8s %-8s %12s %12s %8s\n' mode threads "$commit" this new/old
for mode in exact slice; do
	for threads in 1 2; do
		old=$(tr ' ' '\n' <<<"${samples[old-$mode-$threads]}" | grep . | median)
		new=$(tr ' ' '\n' <<<"${samples[new-$mode-$threads]}" | grep . | median)
		printf '%-8s %-8s %12.1f %12.1f %8.2f\n' "$mode" "$threads" "$old" "$new" \
			"$(awk -v a="$new" -v b="$old" 'BEGIN { print a / b }')"
	done
done
echo "# host load average after: $(cut -d' ' -f1-3 /proc/loadavg); monitor $monitor${preload:+ (stand-in device)}"
