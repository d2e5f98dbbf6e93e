#!/bin/bash
# Hit-path cost of the cache with /dev/ummunot (the check before a hit is
# one load of the module's counter), side by side with a build of an older
# commit (default ebb1c62, the round-1 hit path), in one run in the test
# VM (scripts/vm/run-vm.sh: Debian's kernel, default 6.1.0-57-amd64,
# under TCG, the module of BUILD_DIR loaded): test/preload/bench_hitpath_mt
# (one buffer per thread, the libibverbs test double) under each shim
# with UMMUSHIM_MONITOR=ummunot, exact and slice (containment) hits, 1 and
# 2 threads.  The shims take turns within every round, so a change of
# load hits both alike; the figure is the median of RUNS rounds, in ns per
# reg+dereg pair per thread.  Every run must say monitor=ummunot in its
# statistics line (the older shim against today's module included: its
# ABI only grew), else the script fails.
#
# Usage: hitpath-vm.sh BUILD_DIR [COMMIT...]
#   Each COMMIT's shim is built once in BUILD_DIR/hitpath-baseline-COMMIT/HASH
#   (inside the tree, so the guest sees it); the columns are the commits
#   in order, then this build.
# Environment: HIT_ITERS (pairs per thread and run, default 300000),
#   HIT_RUNS (rounds, default 5), UMMUNOT_KVER (kernel to boot, default
#   6.1.0-57-amd64), HIT_INSTRUCTIONS (1, the default: also count each
#   shim's instructions per pair with /dev/ummunot, hitpath-instructions.sh,
#   in the guest; 0: not).
# Internal: hitpath-vm.sh --guest ITERS RUNS BENCH SHIM... runs the rounds
# (in the guest).
set -eu -o pipefail

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- in the guest ------------------------------------------------------------

# One measurement: ns per pair per thread.  A shim without containment hits
# misses on every slice: it runs 1/100 of the pairs there (the figure per
# pair stays; such a shim is told by its statistics line, hits=0).
measure() { # bench shim mode threads iters log
	local out
	out=$(env LD_PRELOAD="$2" UMMUSHIM_MONITOR=ummunot UMMUSHIM_STATS=1 \
		UMMUSHIM_LOG_FILE="$6" "$1" "$4" "$5" "$3") || return 1
	grep -q ' stats: monitor=ummunot ' "$6" || {
		echo "hitpath-vm.sh: $2 did not use /dev/ummunot:" >&2
		cat "$6" >&2
		return 1
	}
	sed -n 's/.*(\([0-9.]*\) ns\/pair\/thread).*/\1/p' <<<"$out"
}

guest() {
	local iters=$1 runs=$2 bench=$3
	shift 3
	local shims=("$@") tmp mode threads i n v
	declare -A samples misses
	tmp=$(mktemp -d)
	echo "# guest: $(uname -r), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
	for ((r = 1; r <= runs; r++)); do
		for mode in exact slice; do
			for threads in 1 2; do
				for i in "${!shims[@]}"; do
					n=$iters
					log=$tmp/$r-$mode-$threads-$i.log
					if [ "$mode" = slice ] && [ -z "${misses[$i]:-}" ]; then
						# A short run first: hits=0 means every slice
						# is a miss (tens of µs each).
						measure "$bench" "${shims[$i]}" slice 1 $((iters / 100 + 1)) "$log.probe" >/dev/null || exit 1
						misses[$i]=no
						! grep -q ' hits=0 ' "$log.probe" || misses[$i]=yes
					fi
					[ "$mode-${misses[$i]:-}" != slice-yes ] || n=$((iters / 100 + 1))
					v=$(measure "$bench" "${shims[$i]}" "$mode" "$threads" "$n" "$log") || exit 1
					samples[$i-$mode-$threads]+="$v "
				done
			done
		done
	done
	printf '# ns per reg+dereg pair per thread, median of %d runs of %d pairs\n' "$runs" "$iters"
	printf '%-6s %-7s' mode threads
	for i in "${!shims[@]}"; do printf ' %14s' "shim$i"; done
	printf '\n'
	for mode in exact slice; do
		for threads in 1 2; do
			printf '%-6s %-7s' "$mode" "$threads"
			for i in "${!shims[@]}"; do
				v=$(tr ' ' '\n' <<<"${samples[$i-$mode-$threads]}" | grep . | median)
				[ "$mode-${misses[$i]:-}" != slice-yes ] || v="$v(miss)"
				printf ' %14s' "$v"
			done
			printf '\n'
		done
	done
	for i in "${!shims[@]}"; do echo "# shim$i: ${shims[$i]}"; done
	echo "# every round's figure (the medians' samples, in round order):"
	for mode in exact slice; do
		for threads in 1 2; do
			for i in "${!shims[@]}"; do
				echo "#   $mode $threads shim$i: ${samples[$i-$mode-$threads]}"
			done
		done
	done
	echo "# guest load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
	if [ "${HIT_INSTRUCTIONS:-1}" = 1 ]; then
		echo "# instructions per pair (cachegrind, 1 thread, monitor ummunot):"
		HIT_MONITOR=ummunot "$(dirname "$0")/hitpath-instructions.sh" \
			"$(dirname "$(dirname "$(dirname "$bench")")")" "${shims[@]}" | sed 's/^/# /'
	fi
	rm -rf "$tmp"
}

if [ "${1:-}" = --guest ]; then
	shift
	guest "$@"
	exit 0
fi

# ---- on the host -------------------------------------------------------------

build=$(cd "$1" && pwd)
shift
[ $# -gt 0 ] || set -- ebb1c62
src=$(cd "$(dirname "$0")/../.." && pwd)
bench=$build/test/preload/bench_hitpath_mt
ko=$build/kernel/ummunot.ko
for f in "$bench" "$build/preload/libummushim.so" "$ko"; do
	[ -e "$f" ] || { echo "hitpath-vm.sh: missing $f (configure with -Dtests=true and -Dkernel_dir, build first)" >&2; exit 1; }
done
# shellcheck source=SCRIPTDIR/baseline-shim.sh
. "$(dirname "$0")/baseline-shim.sh"
shims=()
for commit in "$@"; do
	shims+=("$(baseline_shim "$src" "$commit" "$build/hitpath-baseline-$commit")")
done
shims+=("$build/preload/libummushim.so")
export UMMUNOT_KVER=${UMMUNOT_KVER:-6.1.0-57-amd64}
echo "# host load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$src/scripts/vm/run-vm.sh" --module "$ko" --timeout 1800 \
	--env "HIT_INSTRUCTIONS=${HIT_INSTRUCTIONS:-1}" -- \
	"$src/scripts/bench-reg/hitpath-vm.sh" --guest "${HIT_ITERS:-300000}" \
	"${HIT_RUNS:-5}" "$bench" "${shims[@]}"
echo "# host load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
