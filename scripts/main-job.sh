#!/bin/bash
# The main job: one command on a fresh Debian 12 machine (as root) that
# installs what it needs, builds the module, the shim and the MPI workloads,
# boots a virtual cluster (scripts/cluster/cluster.sh: NODES QEMU VMs joined
# by a private Ethernet that exists only between them, Soft-RoCE on each
# NIC, the module loaded, sshd) and runs unmodified MPI programs across the
# nodes (`mpirun -H node1:2,node2:2`), for each MPI stack:
#   (a) the MPI library's registration cache off, no shim
#   (b) the same under -x LD_PRELOAD=libummushim.so
#   (c) the MPI library's own registration cache
# Stacks: ompi-ucx (Open MPI + UCX), mpich-ucx (MPICH ch4:ucx), ompi-ofi
# (Open MPI, mtl ofi over libfabric verbs;ofi_rxm).  Workloads (mpiwork,
# every received byte checked): pingpong between the nodes, collectives
# (Alltoall, Allreduce over all ranks), halo (slices of one big array at
# moving addresses), recycle (malloc/free of varying sizes every iteration).
# Prints a/b/c tables per workload and stack (time, MB/s, real registrations
# per rank, hits) and per run (the shim's statistics summed per node and in
# total by `ummushim stats`, invalidations, stale; the NIC's counters),
# writes JSON and a PNG plot per stack, and keeps the per-rank logs of the
# (b) runs, one of them at debug level (the full job: an extra short Open MPI
# run, shim-ompi-ucx-debug.HOST.PID.log; --quick: shim-ompi-ucx-b1...), from
# every host.
#
# Usage: scripts/main-job.sh [OPTIONS]
#   --quick           the test command's version: Open MPI + UCX, (a) and
#                     (b), small sizes, few iterations; fails unless every
#                     check passes (data, ≈1 registration per ping-pong
#                     buffer under the shim, no stale MR, both nodes)
#   --soak MINUTES    halo + recycle under the shim for MINUTES with random
#                     sizes, frees and remaps; prints the totals
#   --nodes N         cluster nodes, 2 (default) to 4; 2 ranks per node
#   --stacks "S ..."  default "ompi-ucx mpich-ucx ompi-ofi"
#   --shim-env "K=V ...[;K=V ...]"
#                     shim settings for (b); each ';'-separated group is a
#                     (b) column of its own (default: "UMMUSHIM_SUBRANGE=local;
#                     UMMUSHIM_SUBRANGE=all", for --quick and --soak only
#                     "UMMUSHIM_SUBRANGE=all"; settings the shim does not
#                     know are ignored by it)
#   --mpi-env "K=V ..."
#                     settings for every run of every configuration (a, b
#                     and c alike), after the stack's own and before the
#                     configuration's (values without blanks; LD_PRELOAD
#                     and UMMUSHIM_* are the configurations' own, use
#                     --shim-env): e.g. "REGCOUNT_TRACE=1" (one line per
#                     registration call) or "UCX_RC_VERBS_TIMEOUT=100ms";
#                     each run's environment is kept in its .env file
#   --workloads LIST  comma list of pingpong, collectives, halo, recycle
#                     (default: all four; full job only)
#   --configs "C ..." which configurations run, in this order: a, c, b
#                     (every --shim-env column) or bN (the Nth alone);
#                     default "a b c" (full job only)
#   --repeat N        run the configurations N times in turn, per stack
#                     in the same boot, every second time in reverse order
#                     (b c c b ...), and print each one's times, the
#                     medians and the median of the per-repetition (b)/(c)
#                     ratios (repeat.txt); no debug-level extra run.  E.g.
#                     --workloads halo --configs "b2 c" --repeat 5
#   --run-timeout SEC one mpirun's limit (default 1200; --soak: its
#                     MINUTES plus 1200 s, as the time limit is checked
#                     between iterations and the launch takes minutes)
#   --mpiwork-args "..."  mpiwork options (sizes, iterations; see
#                     scripts/bench-mpi/mpiwork.h)
#   --build-dir DIR   meson build directory (default: build)
#   --results DIR     tables, JSON, PNG, logs (default: BUILD/results)
#   --no-install      do not apt-get install missing packages
#   --no-build        use BUILD as it is (the test command built it)
#
# UCX runs with UCX_RNDV_THRESH=8K (on Soft-RoCE UCX's modelled link puts
# the rendezvous switch, where messages are registered rather than copied,
# at 256 KiB; real NICs switch far earlier) and UCX_IB_FORK_INIT=n (with
# ibv_fork_init() every registration is wrapped in madvise(MADV_DONTFORK),
# which splits mappings, and Linux 6.1 reports each split as an
# invalidation of the 2 MiB around it: neighbouring cached buffers would be
# dropped for nothing; kernels since 5.9 keep pinned pages across fork).
#
# Exit status: 0 when every run completed and every check passed.
set -eu -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-common/jobs.sh
. "$ROOT/scripts/bench-common/jobs.sh"
INSTALL=1
BUILD_IT=1
QUICK=0
SOAK_MIN=0
NODES=2
STACKS="ompi-ucx mpich-ucx ompi-ofi"
SHIM_ENV=
# The full job's (b) columns without --shim-env, and how many (b) columns
# the job has (parse_args: --configs is checked against it, main() sizes
# the time limit with it).
FULL_VARIANTS="UMMUSHIM_SUBRANGE=local;UMMUSHIM_SUBRANGE=all"
NVARIANTS=
MPI_ENV=
RUN_TIMEOUT=
MPIWORK_ARGS=
WORKLOADS=pingpong,collectives,halo,recycle
CONFIGS="a b c"
REPEAT=1
# The quick mode's sizes: rendezvous messages (> 8K), a few iterations.
QUICK_ITERS=6
QUICK_ARGS="--size 32K --min-size 12K --iters $QUICK_ITERS --rows 48 --depth 2 --remap 3"
# The full job's: every message above 128 KiB, where libfabric's ofi_rxm
# stops copying through its own bounce buffers and registers the
# application's memory (at or below it no stack-neutral comparison exists).
FULL_ARGS="--size 256K --min-size 144K --iters 10 --rows 64 --depth 2 --remap 4"
# The full job's extra Open MPI (b) run at debug level, for its per-rank logs.
DEBUG_ARGS="--size 256K --min-size 144K --iters 3 --rows 32 --depth 2"
SOAK_ARGS="--size 512K --min-size 8K --rows 96 --depth 3 --remap 5"

# The project's package list lives in .ci/run; these are the ones this job
# needs should that list be missing.
FALLBACK_PACKAGES=(build-essential meson ninja-build pkg-config python3
	linux-image-amd64 linux-headers-amd64 qemu-system-x86 busybox-static
	kmod iproute2 cpio xz-utils rdma-core ibverbs-providers libibverbs-dev
	ibverbs-utils openmpi-bin libopenmpi-dev ucx-utils mpich libmpich-dev
	libfabric-bin openssh-server openssh-client gnuplot-nox)

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--no-install) INSTALL=0; shift ;;
		--no-build) BUILD_IT=0; shift ;;
		--quick) QUICK=1; shift ;;
		--soak) SOAK_MIN=${2:?}; shift 2 ;;
		--nodes) NODES=${2:?}; shift 2 ;;
		--stacks) STACKS=${2:?}; shift 2 ;;
		--shim-env) SHIM_ENV=$2; shift 2 ;;
		--mpi-env) MPI_ENV=$2; shift 2 ;;
		--run-timeout) RUN_TIMEOUT=${2:?}; shift 2 ;;
		--mpiwork-args) MPIWORK_ARGS=$2; shift 2 ;;
		--workloads) WORKLOADS=${2:?}; shift 2 ;;
		--configs) CONFIGS=${2:?}; shift 2 ;;
		--repeat) REPEAT=${2:?}; shift 2 ;;
		*) common_option "$@" || die "unknown argument: $1 (see --help)"; shift 2 ;;
		esac
	done
	common_options_done results
	[[ $SOAK_MIN =~ ^[0-9]+$ ]] || die "--soak wants whole minutes"
	[[ $NODES =~ ^[2-4]$ ]] || die "--nodes wants 2, 3 or 4"
	[ -n "$RUN_TIMEOUT" ] || RUN_TIMEOUT=$((1200 + SOAK_MIN * 60))
	[[ $RUN_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--run-timeout wants seconds"
	local kv words=()
	read -r -a words <<<"$MPI_ENV"
	for kv in "${words[@]}"; do
		[[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*=[^[:space:]]*$ ]] || die "--mpi-env: '$kv' is not K=V"
		case $kv in
		LD_PRELOAD=* | UMMUSHIM_*) die "--mpi-env: $kv belongs to a configuration (--shim-env)" ;;
		esac
	done
	local s
	for s in $STACKS; do
		case $s in ompi-ucx | mpich-ucx | ompi-ofi) ;; *) die "unknown stack $s" ;; esac
	done
	for s in ${WORKLOADS//,/ }; do
		case $s in pingpong | collectives | halo | recycle) ;; *) die "unknown workload $s" ;; esac
	done
	NVARIANTS=$(tr ';' '\n' <<<"${SHIM_ENV:-$FULL_VARIANTS}" | grep -c .) || true
	for s in $CONFIGS; do
		[[ $s =~ ^(a|b|c)$ ]] || { [[ $s =~ ^b([1-9][0-9]*)$ ]] && [ "${BASH_REMATCH[1]}" -le "$NVARIANTS" ]; } ||
			die "--configs: $s is not a, b, c or b1..b$NVARIANTS (one per --shim-env group)"
	done
	[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "--repeat wants a positive number"
}

# The PACKAGES=( ... ) block of .ci/run, without comments.
project_packages() {
	local ci=$ROOT/.ci/run
	[ -f "$ci" ] || return 1
	sed -n '/^PACKAGES=(/,/^)/p' "$ci" | sed '1d; $d; s/#.*//' | tr -s ' \t' '\n' | grep .
}

is_installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

install_packages() {
	local pkgs=() missing=() p
	mapfile -t pkgs < <(project_packages || printf '%s\n' "${FALLBACK_PACKAGES[@]}")
	for p in "${pkgs[@]}"; do
		is_installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} -gt 0 ] || { say "all ${#pkgs[@]} packages present"; return; }
	[ "$INSTALL" = 1 ] || die "missing packages (and --no-install): ${missing[*]}"
	[ "$(id -u)" = 0 ] || die "missing packages, run as root to install: ${missing[*]}"
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The cluster run; its raw outputs land in RESULTS/cluster.
run_cluster() { # TIMEOUT_S GUEST-ENV...
	local timeout=$1 envs=() kv
	shift
	for kv in "$@"; do envs+=(--env "$kv"); done
	rm -rf "$RESULTS/cluster"
	mkdir -p "$RESULTS/cluster"
	cut -d' ' -f1-3 /proc/loadavg >"$RESULTS/host-load.txt"
	"$ROOT/scripts/cluster/cluster.sh" --nodes "$NODES" --timeout "$timeout" \
		--module "$BUILD/kernel/ummunot.ko" --out "$RESULTS/cluster" "${envs[@]}" \
		-- "$ROOT/scripts/cluster/guest-main.sh" "$BUILD" "$RESULTS/cluster/node1/raw"
}

summarize() {
	python3 "$ROOT/scripts/cluster/summarize.py" --ummushim "$BUILD/tools/ummushim-uninstalled" \
		"$RESULTS/cluster" "$RESULTS"
	local dat stack ncfg
	for dat in "$RESULTS"/cluster-*.dat; do
		[ -e "$dat" ] || continue
		stack=$(basename "$dat" .dat)
		stack=${stack#cluster-}
		ncfg=$(($(head -n 1 "$dat" | wc -w) / 2))
		gnuplot -e "datafile='$dat'; outfile='${dat%.dat}.png'; ncfg=$ncfg; stack='$stack'" \
			"$ROOT/scripts/cluster/plot-cluster.gp"
	done
	# The per-rank logs of the (b) runs (one at debug level), from every node.
	mkdir -p "$RESULTS/shim-logs"
	cp "$RESULTS"/cluster/node*/shim-*.log "$RESULTS/shim-logs/" 2>/dev/null || true
	say "results: $RESULTS/cluster.txt, cluster.json, cluster-STACK.png, shim-stats/, shim-logs/"
}

main() {
	local rc=0 t0=$SECONDS timeout=7200 products=() p
	parse_args "$@"
	install_packages
	products=(kernel/ummunot.ko preload/libummushim.so scripts/bench-mpi/libregcount-real.so
		scripts/bench-mpi/libregcount-app.so)
	case " $STACKS " in *" ompi-"*) products+=(scripts/bench-mpi/mpiwork.openmpi) ;; esac
	case " $STACKS " in *" mpich-"*) products+=(scripts/bench-mpi/mpiwork.mpich) ;; esac
	if [ "$BUILD_IT" = 1 ]; then
		build "${products[@]}"
	else
		for p in "${products[@]}"; do
			[ -e "$BUILD/$p" ] || die "--no-build: $BUILD/$p is missing"
		done
	fi
	local guest=("CLUSTER_NODES=$NODES" "RUN_TIMEOUT=$RUN_TIMEOUT" "MPI_ENV=$MPI_ENV")
	local one=${SHIM_ENV:-UMMUSHIM_SUBRANGE=all}
	if [ "$SOAK_MIN" -gt 0 ]; then
		# The one mpirun plus the boot and the nodes' shutdown.
		timeout=$((RUN_TIMEOUT + 1800))
		guest+=("SOAK_SECONDS=$((SOAK_MIN * 60))" "MPIWORK_ARGS=${MPIWORK_ARGS:-$SOAK_ARGS}"
			"SHIM_VARIANTS=${one%%;*}")
	elif [ "$QUICK" = 1 ]; then
		# Every node beyond two slows the emulated others down.
		timeout=$((1500 + (NODES - 2) * 900))
		guest+=(STACKS=ompi-ucx "CONFIGS=a b" "MPIWORK_ARGS=${MPIWORK_ARGS:-$QUICK_ARGS}"
			"SHIM_VARIANTS=${one%%;*}")
	else
		local variants=${SHIM_ENV:-$FULL_VARIANTS} nruns=0 c
		for c in $CONFIGS; do
			[ "$c" = b ] && nruns=$((nruns + NVARIANTS)) || nruns=$((nruns + 1))
		done
		# Every run at its limit, per stack, plus the debug run and the boot.
		timeout=$((RUN_TIMEOUT * (nruns * REPEAT * $(wc -w <<<"$STACKS") + 1) + 1800))
		guest+=("STACKS=$STACKS" "MPIWORK_ARGS=${MPIWORK_ARGS:-$FULL_ARGS}"
			"SHIM_VARIANTS=$variants" "WORKLOADS=$WORKLOADS" "CONFIGS=$CONFIGS"
			"REPEAT=$REPEAT")
		if [ "$REPEAT" -eq 1 ]; then
			guest+=(DEBUG_LOG_RUN=separate "DEBUG_LOG_ARGS=$DEBUG_ARGS")
		else
			guest+=(DEBUG_LOG_RUN=none)
		fi
	fi
	say "booting $NODES nodes; MPI runs take minutes under emulation"
	run_cluster "$timeout" "${guest[@]}" || rc=$?
	compgen -G "$RESULTS/cluster/node1/raw/*.txt" >/dev/null ||
		die "the cluster run produced no MPI results (status $rc)"
	summarize
	if [ "$SOAK_MIN" -gt 0 ]; then
		python3 "$ROOT/scripts/cluster/summarize.py" --ummushim "$BUILD/tools/ummushim-uninstalled" \
			--soak "$RESULTS/cluster" |
			tee "$RESULTS/soak.txt" || rc=1
	elif [ "$QUICK" = 1 ]; then
		python3 "$ROOT/scripts/cluster/summarize.py" --ummushim "$BUILD/tools/ummushim-uninstalled" \
			--check-quick "$RESULTS/cluster" "$QUICK_ITERS" || rc=1
	elif [ "$REPEAT" -gt 1 ]; then
		python3 "$ROOT/scripts/cluster/summarize.py" --ummushim "$BUILD/tools/ummushim-uninstalled" \
			--repeat "$RESULTS/cluster" "$RESULTS" || rc=1
	fi
	say "wall time $((SECONDS - t0)) s"
	[ "$rc" -eq 0 ] || say "FAILED (status $rc, see above)"
	exit "$rc"
}

main "$@"
