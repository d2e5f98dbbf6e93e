#!/bin/bash
# The main job's part on node1 of the virtual cluster (scripts/main-job.sh
# runs it through scripts/cluster/cluster.sh): the workloads of mpiwork on
# NODES x RANKS_PER_NODE ranks, for each MPI stack and configuration:
#   (a) the MPI library's registration cache off, no shim
#   (b) the same under LD_PRELOAD=libummushim.so (one column per SHIM_VARIANTS
#       entry, each a space-separated list of UMMUSHIM_* settings)
#   (c) the MPI library's own registration cache
# Stacks: ompi-ucx (Open MPI + UCX; cache off = UCX_IB_REG_METHODS=direct),
# mpich-ucx (MPICH ch4:ucx; the same), ompi-ofi (Open MPI, pml cm + mtl ofi
# over libfabric verbs;ofi_rxm; cache off = FI_MR_CACHE_MAX_COUNT=0).
# Every run has libregcount-real.so preloaded (ibv_reg_mr calls reaching
# libibverbs); (b) also libregcount-app.so above the shim (what the MPI
# library asks for).  Raw outputs land in OUT as STACK-CONFIG.{txt,err};
# the shim's logs as shim-STACK-CONFIG.HOST.PID.log, written to each node's
# tmpfs while MPI runs (a debug line written over 9p costs milliseconds
# under emulation and would be measured) and copied afterwards into
# /run/ummunot-results, that node's result directory.
#
# Usage: guest-main.sh BUILD_DIR OUT_DIR
# Environment: STACKS (default "ompi-ucx mpich-ucx ompi-ofi"), CONFIGS
#   (default "a b c"; b: every shim variant, bN: the Nth alone), REPEAT
#   (default 1; N > 1: N repetitions of the CONFIGS in turn per stack, every
#   second one in reverse order, tagged STACK-CONFIG-rK), SHIM_VARIANTS
#   (default: one, "UMMUSHIM_SUBRANGE=all"),
#   WORKLOADS (default pingpong,collectives,halo,recycle), MPIWORK_ARGS,
#   MPI_ENV (K=V words for every run, after the stack's own settings),
#   RANKS_PER_NODE (2), CLUSTER_NODES (from cluster.sh), DEBUG_LOG_RUN
#   (a STACK-CONFIG whose shim logs at debug level, default ompi-ucx-b1;
#   "separate": none of the measured runs, but one more short Open MPI run
#   of the first shim variant, ompi-ucx-debug, with DEBUG_LOG_ARGS),
#   RUN_TIMEOUT (seconds per mpirun, 1200), SOAK_SECONDS (> 0: only the
#   soak: halo and recycle under the shim).
# Per run, STACK-CONFIG.nic holds every node's Soft-RoCE packet counters
# and eth0 byte counters before and after it: the proof that the traffic
# went through rxe0 and over the virtual wire; STACK-CONFIG.rxe all of
# rxe0's counters (retransmissions, timeouts, sequence errors) the same way,
# STACK-CONFIG.start the run's start (seconds since the epoch, the guest's
# clock, which is the host's).
set -eu -o pipefail

BUILD=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
NODE_OUT=/run/ummunot-results
SHIM_LOGS=/tmp/ummunot-shim-logs
SHIM=$BUILD/preload/libummushim.so
COUNT_REAL=$BUILD/scripts/bench-mpi/libregcount-real.so
COUNT_APP=$BUILD/scripts/bench-mpi/libregcount-app.so
NODES=${CLUSTER_NODES:-2}
PER_NODE=${RANKS_PER_NODE:-2}
NP=$((NODES * PER_NODE))
HOSTS=$(for i in $(seq "$NODES"); do printf 'node%s:%s,' "$i" "$PER_NODE"; done)
HOSTS=${HOSTS%,}
WORKLOADS=${WORKLOADS:-pingpong,collectives,halo,recycle}
SHIM_VARIANTS=${SHIM_VARIANTS:-UMMUSHIM_SUBRANGE=all}
status=0

say() { echo "guest-main: $*" >&2; }

ulimit -l unlimited

# What the MPI library's registration cache needs switched off for (a)/(b).
cache_off_env() { # STACK
	case $1 in
	*-ucx) echo UCX_IB_REG_METHODS=direct ;;
	*-ofi) echo FI_MR_CACHE_MAX_COUNT=0 ;;
	esac
}

# Settings every run of STACK shares.  scripts/main-job.sh's header says
# why UCX_RNDV_THRESH=8K and UCX_IB_FORK_INIT=n.
common_env() { # STACK
	case $1 in
	*-ucx) echo UCX_NET_DEVICES=rxe0:1 UCX_TLS=rc,self UCX_UD_ETH_DGID_CHECK=n \
		UCX_RNDV_THRESH=8K UCX_IB_FORK_INIT=n UCX_LOG_LEVEL=info "${MPI_ENV:-}" ;;
	*-ofi) echo 'FI_PROVIDER=verbs;ofi_rxm' FI_UNIVERSE_SIZE=16 FI_VERBS_IFACE=eth0 \
		RDMAV_FORK_SAFE=0 "${MPI_ENV:-}" ;;
	esac
}

# The launcher and its options for STACK, with ENV (K=V words) exported.
launcher() { # STACK K=V...
	local stack=$1 kv
	shift
	case $stack in
	ompi-*)
		printf '%s\0' mpirun.openmpi --allow-run-as-root -np "$NP" -H "$HOSTS" \
			--mca oob_tcp_if_include eth0 --mca btl self --mca osc ^ucx
		case $stack in
		ompi-ucx) printf '%s\0' --mca pml ucx --mca pml_ucx_tls any --mca pml_ucx_devices any ;;
		ompi-ofi) printf '%s\0' --mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include 'verbs;ofi_rxm' ;;
		esac
		for kv in "$@"; do printf '%s\0' -x "$kv"; done
		;;
	mpich-*)
		printf '%s\0' mpirun.mpich -n "$NP" -hosts "$HOSTS" -iface eth0
		for kv in "$@"; do printf '%s\0' -genv "${kv%%=*}" "${kv#*=}"; done
		;;
	esac
}

program_of() { # STACK
	case $1 in
	ompi-*) echo "$BUILD/scripts/bench-mpi/mpiwork.openmpi" ;;
	mpich-*) echo "$BUILD/scripts/bench-mpi/mpiwork.mpich" ;;
	esac
}

run_config() { # STACK CONFIG(a|bN|c)[-rK] WORKLOADS [MPIWORK ARG...]
	local stack=$1 cfg=${2%-r*} list=$3 tag=$1-$2 env=() cmd=() rc=0 level=info
	shift 3
	read -r -a env <<<"$(common_env "$stack")"
	case $cfg in
	a) env+=("$(cache_off_env "$stack")" "LD_PRELOAD=$COUNT_REAL") ;;
	b* | debug)
		local variant index=${cfg#b}
		[ "$cfg" != debug ] || index=1
		variant=$(sed -n "${index}p" <<<"${SHIM_VARIANTS//;/$'\n'}")
		[ "$tag" != "${DEBUG_LOG_RUN:-ompi-ucx-b1}" ] && [ "$cfg" != debug ] || level=debug
		# shellcheck disable=SC2206 # a list of K=V words
		env+=("$(cache_off_env "$stack")" "LD_PRELOAD=$COUNT_APP:$SHIM:$COUNT_REAL"
			UMMUSHIM_STATS=1 "UMMUSHIM_LOG_LEVEL=$level"
			"UMMUSHIM_LOG_FILE=$SHIM_LOGS/shim-$tag.%h.%p.log" $variant)
		echo "$variant" >"$OUT/$tag.variant"
		;;
	c) env+=("LD_PRELOAD=$COUNT_REAL") ;;
	*) say "unknown configuration $cfg"; return 1 ;;
	esac
	mapfile -d '' -t cmd < <(launcher "$stack" "${env[@]}")
	say "$tag: ${env[*]}"
	printf '%s\n' "${env[@]}" >"$OUT/$tag.env"
	: >"$OUT/$tag.nic"
	: >"$OUT/$tag.rxe"
	node_counters before "$tag"
	local t0=$SECONDS
	date +%s >"$OUT/$tag.start"
	timeout "${RUN_TIMEOUT:-1200}" "${cmd[@]}" "$(program_of "$stack")" "$list" \
		--label "$tag" "$@" >"$OUT/$tag.txt" 2>"$OUT/$tag.err" || rc=$?
	echo "$((SECONDS - t0))" >"$OUT/$tag.seconds"
	node_counters after "$tag"
	grep '^RESULT' "$OUT/$tag.txt" | cut -c1-200 >&2 || true
	# Which device and transport UCX picked for each endpoint.
	grep -ho 'ep_cfg.*' "$OUT/$tag.txt" "$OUT/$tag.err" | sort | uniq -c >&2 || true
	if [ "$rc" -ne 0 ]; then
		say "$tag failed with status $rc; its stderr:"
		grep -v ' UCX  INFO ' "$OUT/$tag.err" | tail -20 >&2
		status=1
	fi
}

# Per node, one line each to TAG.nic: WHEN HOST rxe0's sent_pkts rcvd_pkts,
# eth0's tx_bytes rx_bytes; and to TAG.rxe: WHEN HOST NAME=VALUE... (every
# rxe0 counter).  One ssh per node: each costs a second under emulation.
node_counters() { # WHEN TAG
	local i out
	for i in $(seq "$NODES"); do
		# shellcheck disable=SC2016 # expanded on the node
		out=$(ssh "node$i" 'c=/sys/class/infiniband/rxe0/ports/1/hw_counters
			n=/sys/class/net/eth0/statistics
			echo $(hostname) $(cat $c/sent_pkts $c/rcvd_pkts $n/tx_bytes $n/rx_bytes)
			cd $c && echo $(hostname) $(grep . ./* | sed "s|^\./||; s|:|=|")') ||
			{ say "node$i: no NIC counters"; continue; }
		sed -n "1s/^/$1 /p" <<<"$out" >>"$OUT/$2.nic"
		sed -n "2s/^/$1 /p" <<<"$out" >>"$OUT/$2.rxe"
	done
}

show_info() {
	{
		echo "== nodes: $HOSTS"
		for i in $(seq "$NODES"); do
			ssh "node$i" 'hostname; ip -br addr show eth0; rdma link show; ls -l /dev/ummunot' ||
				echo "(ssh node$i failed)"
		done
		echo "== ucx_info -d (rxe0)"
		UCX_NET_DEVICES=rxe0:1 ucx_info -d | grep -E 'Transport:|Device:' || true
		echo "== fi_info -p 'verbs;ofi_rxm'"
		FI_VERBS_IFACE=eth0 fi_info -p 'verbs;ofi_rxm' 2>&1 | head -12 || true
	} >"$OUT/cluster-info.txt" 2>&1
}

# On every node: the shim's log directory (before), its logs into the
# node's result directory (after).
on_nodes() { # SHELL-COMMAND
	local i
	for i in $(seq "$NODES"); do
		# shellcheck disable=SC2029 # the command is meant to be expanded here
		ssh "node$i" "$1" || say "node$i: '$1' failed"
	done
}

# Per node after the runs: NIC and Soft-RoCE counters (drops, retries).
# shellcheck disable=SC2317 # run by the EXIT trap
show_counters() {
	local i
	for i in $(seq "$NODES"); do
		# shellcheck disable=SC2016 # expanded on the node
		ssh "node$i" 'echo "== $(hostname)"; ip -s link show eth0
			cd /sys/class/infiniband/rxe0/ports/1/hw_counters && grep . ./*' ||
			echo "(ssh node$i failed)"
	done >"$OUT/cluster-counters.txt" 2>&1
}

# shellcheck disable=SC2317 # run by the EXIT trap
at_exit() {
	on_nodes "cp $SHIM_LOGS/* $NODE_OUT/ 2>/dev/null; true"
	show_counters
}

trap at_exit EXIT
on_nodes "mkdir -p $SHIM_LOGS"
show_info
if [ "${SOAK_SECONDS:-0}" -gt 0 ]; then
	# Half of the time each, one after the other.
	# shellcheck disable=SC2086 # MPIWORK_ARGS is a list of options
	run_config ompi-ucx b1 halo,recycle --seconds $((SOAK_SECONDS / 2)) \
		--seed "$RANDOM" ${MPIWORK_ARGS:-}
	exit "$status"
fi
nvariants=$(tr ';' '\n' <<<"$SHIM_VARIANTS" | grep -c .) || nvariants=1
configs=()
for cfg in ${CONFIGS:-a b c}; do
	if [ "$cfg" = b ]; then
		for v in $(seq "$nvariants"); do configs+=("b$v"); done
	else
		configs+=("$cfg")
	fi
done
repeat=${REPEAT:-1}
for stack in ${STACKS:-ompi-ucx mpich-ucx ompi-ofi}; do
	for rep in $(seq "$repeat"); do
		# Every second repetition in reverse (b c c b b c ...): a drift of
		# the host's load over the repetitions weighs on both alike.
		order=()
		for cfg in "${configs[@]}"; do
			if [ $((rep % 2)) -eq 1 ]; then order+=("$cfg"); else order=("$cfg" "${order[@]}"); fi
		done
		for cfg in "${order[@]}"; do
			[ "$repeat" -eq 1 ] || cfg+=-r$rep
			# shellcheck disable=SC2086
			run_config "$stack" "$cfg" "$WORKLOADS" ${MPIWORK_ARGS:-}
		done
	done
done
if [ "${DEBUG_LOG_RUN:-}" = separate ]; then
	# shellcheck disable=SC2086 # DEBUG_LOG_ARGS is a list of options
	run_config ompi-ucx debug pingpong,halo ${DEBUG_LOG_ARGS:-${MPIWORK_ARGS:-}}
fi
exit "$status"
