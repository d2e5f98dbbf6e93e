#!/bin/bash
# Hit-path cost of this tree's shim side by side with a build of an older
# commit (default ebb1c62, the round-1 hit path) on the same machine, in
# one run: test/preload/bench_hitpath_mt (one buffer per thread, the
# libibverbs test double, userfaultfd monitor) under each shim, exact and
# slice (containment) hits, 1 and 2 threads.  The two shims take turns
# within every round, so a change of machine load hits both alike; the
# figure is the median of RUNS rounds, in ns per reg+dereg pair per thread.
# Under userfaultfd every hit of today's shim makes a system call (the
# write-protect probe), so this measures the probe more than the cache;
# the cache's own hit path (/dev/ummunot: a counter load) is measured in
# the test VM by hitpath-vm.sh.
#
# Usage: hitpath-vs-baseline.sh BUILD_DIR [COMMIT]
# Environment: HIT_ITERS (pairs per thread and run, default 2000000),
#   HIT_RUNS (rounds, default 5), BASELINE_DIR (reuse a build of COMMIT
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

# One measurement: ns per pair per thread.  A shim without containment
# hits misses on nearly every slice (tens of µs each): it runs 1/100 of
# the pairs there, which changes the time, not the figure per pair.
measure() { # shim mode threads which
	local n=$iters
	[ "$2-$4" != slice-old ] || n=$((iters / 100 + 1))
	env LD_PRELOAD="$1" UMMUSHIM_MONITOR=uffd "$bench" "$3" "$n" "$2" |
		sed -n 's/.*(\([0-9.]*\) ns\/pair\/thread).*/\1/p'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

declare -A samples
for ((r = 1; r <= runs; r++)); do
	for mode in exact slice; do
		for threads in 1 2; do
			for which in old new; do
				shim=$new_shim
				[ "$which" = new ] || shim=$old_shim
				v=$(measure "$shim" "$mode" "$threads" "$which")
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
