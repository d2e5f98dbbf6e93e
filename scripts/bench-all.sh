#!/bin/bash
# All benchmarks of issue 4 in one run, side by side, with JSON and a PNG:
#   - MPI ping-pong bandwidth (a) UCX cache off, (b) + shim, (c) UCX rcache,
#     and the per-operation verbs program with/without the shim      [VM]
#   - ibv_reg_mr+ibv_dereg_mr pairs/s vs size 4 KiB..64 MiB, uncached vs
#     cache hit on rxe0                                                [VM]
#   - the shim's hit path (ns per pair, 1 and 2 threads) against the
#     libibverbs test double                                 [host and VM]
#   - the module's munmap cost vs registrations (scripts/bench-kernel) [VM]
# The VM configurations run in turn, ROUNDS times (a b c a b c ...), and
# each size reports its best round, so a busy host disturbs all alike.
#
# Usage: scripts/bench-all.sh [--build-dir DIR] [--results DIR] [--rounds N]
#                             [--ucx-env "K=V ..."] [--skip host|vm|kernel]...
#   defaults: build, BUILD/results-all, 2 rounds,
#   "UCX_RNDV_THRESH=8K UCX_IB_FORK_INIT=n" (scripts/main-job.sh says why)
# Needs a configured or configurable build (scripts/main-job.sh installs the
# packages); absolute times depend on the machine, which the JSON records.
set -eu -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-common/jobs.sh
. "$ROOT/scripts/bench-common/jobs.sh"
SKIP=" "

while [ $# -gt 0 ]; do
	case $1 in
	--skip) SKIP="$SKIP$2 "; shift 2 ;;
	*) common_option "$@" || die "unknown argument: $1"; shift 2 ;;
	esac
done
common_options_done results-all

skipped() {
	case $SKIP in *" $1 "*) return 0 ;; esac
	return 1
}

status=0
# shellcheck disable=SC2119 # no product list: the parts say what is missing
build
mkdir -p "$RESULTS"

if ! skipped host; then
	say "host: hit path against the libibverbs test double"
	rm -rf "$RESULTS/raw-host"
	"$ROOT/scripts/bench-reg/hitpath.sh" "$BUILD" "$RESULTS/raw-host" host || status=1
fi

if ! skipped vm; then
	say "VM: MPI a/b/c, per-operation verbs, reg+dereg sweep, hit path ($ROUNDS round(s))"
	run_guest_main "$RESULTS/raw" 3600 info,mpi,perop,regsweep,hitpath || status=1
	python3 "$ROOT/scripts/bench-mpi/summarize.py" main "$RESULTS/raw" "$RESULTS" \
		>"$RESULTS/main.txt" || status=1
fi

if ! skipped kernel; then
	if [ -x "$ROOT/scripts/bench-kernel/run.sh" ]; then
		say "VM: module munmap cost vs registrations (scripts/bench-kernel/run.sh)"
		"$ROOT/scripts/bench-kernel/run.sh" "$BUILD" "$RESULTS/kernel.json" || status=1
	else
		say "scripts/bench-kernel/run.sh not present: no module benchmark"
	fi
fi

python3 "$ROOT/scripts/bench-mpi/summarize.py" all "$RESULTS" >"$RESULTS/bench-all.txt" || status=1
cat "$RESULTS/main.txt" "$RESULTS/bench-all.txt" 2>/dev/null | tee "$RESULTS/summary.txt"
for dat in mpi-bandwidth regsweep hitpath kernel; do
	[ -s "$RESULTS/$dat.dat" ] || printf '# no data\n1 NaN NaN NaN\n' >"$RESULTS/$dat.dat"
done
plot_mpi || status=1
gnuplot -e "dir='$RESULTS'" "$ROOT/scripts/plot-bench-all.gp" || status=1
say "results in $RESULTS: summary.txt, main.json, bench-all.json, bench-all.png, mpi-bandwidth.png"
exit "$status"
