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
BUILD=$ROOT/build
RESULTS=
ROUNDS=2
UCX_ENV="UCX_RNDV_THRESH=8K UCX_IB_FORK_INIT=n"
SKIP=" "

say() {
	echo "bench-all: $*" >&2
}

while [ $# -gt 0 ]; do
	case $1 in
	--build-dir) BUILD=$(realpath -m "$2"); shift 2 ;;
	--results) RESULTS=$(realpath -m "$2"); shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--ucx-env) UCX_ENV=$2; shift 2 ;;
	--skip) SKIP="$SKIP$2 "; shift 2 ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) say "unknown argument: $1"; exit 1 ;;
	esac
done
RESULTS=${RESULTS:-$BUILD/results-all}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { say "--rounds wants a positive number"; exit 1; }

skipped() {
	case $SKIP in *" $1 "*) return 0 ;; esac
	return 1
}

build() {
	local kver
	kver=$("$ROOT/scripts/vm/kernel-version.sh")
	if [ ! -f "$BUILD/build.ninja" ]; then
		meson setup "$BUILD" "$ROOT" -Dkernel_dir="/usr/src/linux-headers-$kver"
	fi
	ninja -C "$BUILD" -j2
}

status=0
build
mkdir -p "$RESULTS"

if ! skipped host; then
	say "host: hit path against the libibverbs test double"
	rm -rf "$RESULTS/raw-host"
	"$ROOT/scripts/bench-reg/hitpath.sh" "$BUILD" "$RESULTS/raw-host" host || status=1
fi

if ! skipped vm; then
	say "VM: MPI a/b/c, per-operation verbs, reg+dereg sweep, hit path ($ROUNDS round(s))"
	rm -rf "$RESULTS/raw"
	mkdir -p "$RESULTS/raw"
	cut -d' ' -f1-3 /proc/loadavg >"$RESULTS/raw/host-load.txt"
	(cd "$ROOT" && scripts/vm/run-vm.sh --module "$BUILD/kernel/ummunot.ko" --rdma \
		--timeout 3600 --out "$RESULTS/raw" \
		--env "ROUNDS=$ROUNDS" --env "MPI_EXTRA_ENV=$UCX_ENV" \
		-- scripts/bench-mpi/guest-main.sh "$BUILD" "$RESULTS/raw" \
		info,mpi,perop,regsweep,hitpath) || status=1
	cut -d' ' -f1-3 /proc/loadavg >>"$RESULTS/raw/host-load.txt"
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
gnuplot -e "datafile='$RESULTS/mpi-bandwidth.dat'; outfile='$RESULTS/mpi-bandwidth.png'" \
	"$ROOT/scripts/plot-mpi.gp" || status=1
gnuplot -e "dir='$RESULTS'" "$ROOT/scripts/plot-bench-all.gp" || status=1
say "results in $RESULTS: summary.txt, main.json, bench-all.json, bench-all.png, mpi-bandwidth.png"
exit "$status"
