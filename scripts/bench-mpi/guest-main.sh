#!/bin/bash
# The main job's VM part (run by scripts/main-job.sh through
# scripts/vm/run-vm.sh --module ummunot.ko --rdma): shows which device and
# transport UCX uses, runs mpibench with Open MPI + UCX over Soft-RoCE in
# three configurations, and the per-operation verbs program with and without
# the shim.  Raw outputs land in OUT; scripts/bench-mpi/summarize.py turns
# them into tables, JSON and plots on the host.
#
#   (a) UCX_IB_REG_METHODS=direct (UCX's registration cache off), no shim
#   (b) the same under LD_PRELOAD=libummushim.so
#   (c) UCX's own registration cache on (the default methods), no shim
#
# Every run has libregcount-real.so (counts the ibv_reg_mr calls that reach
# libibverbs) preloaded last; (b) also has libregcount-app.so first (counts
# what UCX asks for, above the shim).
#
# With ROUNDS=N the configurations run N times in turn (a b c a b c ...), so
# a disturbance of the (shared, emulated) machine hits them alike; files are
# named KIND-CONFIG-rN.*.
#
# Usage: guest-main.sh BUILD_DIR OUT_DIR [PARTS]
#   PARTS: comma list of info,mpi,perop,regsweep,hitpath
#   (default info,mpi,perop); hitpath = scripts/bench-reg/hitpath.sh with
#   the real module as the shim's invalidation source.
# Environment: MPIBENCH_ARGS (extra mpibench options), PEROP_ARGS,
#   REGSWEEP_ARGS, MPI_CONFIGS (default "a b c"), ROUNDS (default 1),
#   MPI_EXTRA_ENV (space-
#   separated K=V passed with mpirun -x to every configuration alike, e.g.
#   "UCX_RNDV_THRESH=8K").
set -eu -o pipefail

BUILD=$(cd "$1" && pwd)
OUT=$2
PARTS=${3:-info,mpi,perop}
mkdir -p "$OUT"

SHIM=$BUILD/preload/libummushim.so
COUNT_REAL=$BUILD/scripts/bench-mpi/libregcount-real.so
COUNT_APP=$BUILD/scripts/bench-mpi/libregcount-app.so
MPIBENCH=$BUILD/scripts/bench-mpi/mpibench
PEROP=$BUILD/scripts/bench-reg/perop
REGBENCH=$BUILD/scripts/bench-reg/regbench

status=0

say() {
	echo "guest-main: $*" >&2
}

want() {
	case ",$PARTS," in *",$1,"*) return 0 ;; esac
	return 1
}

need_file() {
	[ -e "$1" ] || { say "missing $1 (not built?)"; exit 1; }
}

# Registered memory must not be limited, for MPI and verbs alike.
ulimit -l unlimited

show_device_info() {
	{
		echo "== ibv_devices"
		ibv_devices
		echo "== ibv_devinfo -d rxe0"
		ibv_devinfo -d rxe0
		echo "== rdma link"
		rdma link show
		echo "== ucx_info -d (rxe0 transports)"
		UCX_NET_DEVICES=rxe0:1 ucx_info -d | grep -E 'Transport:|Device:' || true
		echo "== /dev/ummunot"
		ls -l /dev/ummunot
	} >"$OUT/device-info.txt" 2>&1
	say "device info in $OUT/device-info.txt"
}

# The Open MPI + UCX settings that work over rxe (shared/README.md).
# shellcheck disable=SC2054 # "rc,self" is one value
MPIRUN=(mpirun --allow-run-as-root --oversubscribe -np 2
	--mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any
	--mca btl self --mca osc ^ucx
	-x UCX_NET_DEVICES=rxe0:1 -x UCX_TLS=rc,self -x UCX_UD_ETH_DGID_CHECK=n
	-x UCX_LOG_LEVEL=info)
for kv in ${MPI_EXTRA_ENV:-}; do
	MPIRUN+=(-x "$kv")
done
echo "${MPI_EXTRA_ENV:-}" >"$OUT/mpi-extra-env.txt"

run_mpi_config() { # a|b|c ROUND
	local cfg=$1 args=() preload tag=mpi-$1-r$2
	case $cfg in
	a) args=(-x UCX_IB_REG_METHODS=direct); preload=$COUNT_REAL ;;
	b) args=(-x UCX_IB_REG_METHODS=direct
		-x UMMUSHIM_STATS=1 -x "UMMUSHIM_LOG_FILE=$OUT/shim-$tag.%p.log")
	   preload=$COUNT_APP:$SHIM:$COUNT_REAL ;;
	c) preload=$COUNT_REAL ;;
	*) say "unknown MPI configuration $cfg"; return 1 ;;
	esac
	say "MPI configuration ($cfg), round $2: ${args[*]} LD_PRELOAD=$preload"
	local t0=$SECONDS rc=0
	# shellcheck disable=SC2086 # MPIBENCH_ARGS is a list of options
	"${MPIRUN[@]}" "${args[@]}" -x "LD_PRELOAD=$preload" \
		-x "REGCOUNT_FILE=$OUT/regcount-$tag.%p" \
		"$MPIBENCH" --label "$cfg" --json "$OUT/$tag.json" \
		${MPIBENCH_ARGS:-} >"$OUT/$tag.txt" 2>"$OUT/$tag.err" || rc=$?
	echo "$((SECONDS - t0))" >"$OUT/$tag.seconds"
	grep -v ' UCX  INFO ' "$OUT/$tag.txt" || true
	# Which device and transport UCX picked (it logs to stdout).
	grep -ho 'ep_cfg.*' "$OUT/$tag.txt" "$OUT/$tag.err" | sort -u >&2 || true
	if [ "$rc" -ne 0 ]; then
		say "mpirun ($cfg) failed with status $rc; its stderr:"
		tail -30 "$OUT/$tag.err" >&2
		status=1
	fi
}

# One run of a verbs benchmark (perop, regbench): KIND-MODE-rROUND.{txt,
# err,json} plus the counters' and the shim's logs.
run_verbs() { # KIND MODE ROUND PRELOAD EXTRA_ARGS PROGRAM [ARG...]
	local kind=$1 mode=$2 round=$3 preload=$4 extra=$5 rc=0
	local tag=$1-$2-r$3
	shift 5
	say "$kind ($mode), round $round: LD_PRELOAD=$preload"
	# shellcheck disable=SC2086 # EXTRA_ARGS is a list of options
	env LD_PRELOAD="$preload" REGCOUNT_FILE="$OUT/regcount-$tag.%p" \
		UMMUSHIM_STATS=1 UMMUSHIM_LOG_FILE="$OUT/shim-$tag.%p.log" \
		"$@" --label "$mode" --json "$OUT/$tag.json" $extra \
		>"$OUT/$tag.txt" 2>"$OUT/$tag.err" || rc=$?
	cat "$OUT/$tag.txt"
	if [ "$rc" -ne 0 ]; then
		say "$kind ($mode) failed with status $rc"
		tail -20 "$OUT/$tag.err" >&2
		status=1
	fi
}

# ROUNDS times: the benchmark with libregcount-real.so alone (PLAIN_MODE),
# then with the shim above it (SHIM_MODE).
run_verbs_rounds() { # KIND PLAIN_MODE SHIM_MODE EXTRA_ARGS PROGRAM [ARG...]
	local kind=$1 plain=$2 shimmed=$3 extra=$4 round
	shift 4
	need_file "$1"
	need_file "$SHIM"
	for round in $(seq "${ROUNDS:-1}"); do
		run_verbs "$kind" "$plain" "$round" "$COUNT_REAL" "$extra" "$@"
		run_verbs "$kind" "$shimmed" "$round" "$SHIM:$COUNT_REAL" "$extra" "$@"
	done
}

need_file "$COUNT_REAL"
if want info; then
	show_device_info
fi
if want mpi; then
	need_file "$MPIBENCH"
	need_file "$COUNT_APP"
	for round in $(seq "${ROUNDS:-1}"); do
		for cfg in ${MPI_CONFIGS:-a b c}; do
			[ "$cfg" != b ] || need_file "$SHIM"
			run_mpi_config "$cfg" "$round"
		done
	done
fi
if want perop; then
	run_verbs_rounds perop plain shim "${PEROP_ARGS:-}" "$PEROP"
fi
if want regsweep; then
	run_verbs_rounds regsweep uncached hit "${REGSWEEP_ARGS:-}" \
		"$REGBENCH" sweep --device rxe0
fi
if want hitpath; then
	say "hit path against the libibverbs test double, /dev/ummunot monitor"
	HIT_ITERS=${HIT_ITERS:-20000} "$(dirname "${BASH_SOURCE[0]}")/../bench-reg/hitpath.sh" \
		"$BUILD" "$OUT" vm || status=1
fi
exit "$status"
