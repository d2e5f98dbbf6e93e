#!/bin/bash
# A virtual cluster on this machine: N QEMU VMs (scripts/vm/run-vm.sh, TCG,
# 2 GiB and 2 vCPUs each) named node1..nodeN with addresses 192.0.2.1..N/24
# on a private Ethernet that exists only between these QEMU processes
# (unix datagram sockets in a temporary directory; with more than two nodes a
# hub, scripts/cluster/hub.py, repeats every frame to the other nodes).
# Each node loads the module, puts Soft-RoCE (rxe0) on its eth0 and runs
# sshd with host keys and a root key generated for this run, so that
# `mpirun -H node1:2,node2:2` launches across the nodes the ordinary way.
# CMD runs on node1 once every node answers ssh; then the others shut down.
#
# Usage: scripts/cluster/cluster.sh [--nodes N] [--timeout SEC] [--out DIR]
#            --module PATH.ko [--env K=V]... -- CMD [ARGS...]
#   --nodes N      2 (default) to 4
#   --timeout SEC  the whole run, boot to shutdown (default 1800)
#   --out DIR      results: DIR/node1 (CMD's $UMMUNOT_VM_OUT) ... DIR/nodeN,
#                  each with the node's console log and kernel log
#   --env K=V      for CMD (repeatable)
# In every node the node's own result directory is also /run/ummunot-results,
# so one path (e.g. a log file name with %h) works for ranks on any node.
#
# Exit status: CMD's; 99 when the cluster itself failed (a node did not
# boot or answer ssh, a bad kernel log, the time ran out): the failing
# node's console log is printed.
set -eu -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/scripts/cluster
HARNESS_FAILURE=99
HELPER_GRACE_S=180
NODES=2
TIMEOUT=1800
OUT=
MODULE=
ENVS=()
CMD=()
NET_DIR=
HUB_PID=
declare -A NODE_PID=()

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit "$HARNESS_FAILURE"; }

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--nodes) NODES=${2:?}; shift 2 ;;
		--timeout) TIMEOUT=${2:?}; shift 2 ;;
		--out) OUT=${2:?}; shift 2 ;;
		--module) MODULE=${2:?}; shift 2 ;;
		--env) ENVS+=(--env "${2:?}"); shift 2 ;;
		-h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		--) shift; CMD=("$@"); break ;;
		*) die "unknown argument: $1 (see --help)" ;;
		esac
	done
	[[ $NODES =~ ^[2-4]$ ]] || die "--nodes wants 2, 3 or 4"
	[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout wants seconds"
	[ -f "$MODULE" ] || die "--module: no file '$MODULE'"
	[ ${#CMD[@]} -gt 0 ] || die "no command after --"
	[ -n "$OUT" ] || OUT=$(mktemp -d /var/tmp/ummunot-cluster.XXXXXX)
	mkdir -p "$OUT"
	OUT=$(cd "$OUT" && pwd -P)
	MODULE=$(realpath "$MODULE")
}

# Stops whatever is still running: each node runs in its own process group.
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	local node
	for node in "${!NODE_PID[@]}"; do
		kill -- -"${NODE_PID[$node]}" 2>/dev/null || true
	done
	[ -z "$HUB_PID" ] || kill "$HUB_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	[ -z "$NET_DIR" ] || rm -rf "$NET_DIR"
}

# Host keys per node, one root key; sshd_config and root's client files.
make_ssh() { # DIR
	local dir=$1 i names=()
	mkdir -p "$dir/client"
	ssh-keygen -q -t ed25519 -N '' -C "root@ummunot-cluster" -f "$dir/client/id_ed25519"
	: >"$dir/client/known_hosts"
	for i in $(seq "$NODES"); do
		mkdir -p "$dir/node$i/client"
		ssh-keygen -q -t ed25519 -N '' -C "node$i" -f "$dir/node$i/ssh_host_ed25519_key"
		echo "node$i,192.0.2.$i $(cut -d' ' -f1,2 "$dir/node$i/ssh_host_ed25519_key.pub")" \
			>>"$dir/client/known_hosts"
		names+=("node$i")
	done
	cat >"$dir/client/config" <<-EOF2
		Host ${names[*]}
		  User root
		  IdentityFile ~/.ssh/id_ed25519
		  StrictHostKeyChecking yes
		  BatchMode yes
		  ConnectTimeout 120
		  ServerAliveInterval 30
		  LogLevel ERROR
	EOF2
	for i in $(seq "$NODES"); do
		cp "$dir/client/"* "$dir/node$i/client/"
		cp "$dir/client/id_ed25519.pub" "$dir/node$i/authorized_keys"
		cat >"$dir/node$i/sshd_config" <<-EOF2
			ListenAddress 192.0.2.$i
			HostKey /run/ummunot-ssh/ssh_host_ed25519_key
			AuthorizedKeysFile /run/ummunot-ssh/authorized_keys
			PermitRootLogin prohibit-password
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			UsePAM no
			PidFile /run/sshd.pid
			MaxStartups 100
		EOF2
	done
}

# Prints node I's -netdev: a direct link for two nodes, else a hub port.
netdev_of() { # I
	local i=$1 peer
	if [ "$NODES" -eq 2 ]; then
		peer=$((3 - i))
		echo "dgram,local.type=unix,local.path=$NET_DIR/node$i,remote.type=unix,remote.path=$NET_DIR/node$peer"
	else
		echo "dgram,local.type=unix,local.path=$NET_DIR/node$i,remote.type=unix,remote.path=$NET_DIR/hub$i"
	fi
}

start_node() { # I ROLE-COMMAND...
	local i=$1 dir
	dir=$OUT/node$i
	shift
	mkdir -p "$dir"
	# setsid: its own process group, so cleanup() stops the node's QEMU too.
	(cd "$ROOT" && exec setsid scripts/vm/run-vm.sh --module "$MODULE" --rdma \
		--netdev "$(netdev_of "$i")" --ip "192.0.2.$i/24" --hostname "node$i" \
		--hosts "$OUT/hosts" --sshd "$OUT/ssh/node$i" --timeout "$TIMEOUT" \
		--out "$dir" "${ENVS[@]}" --env "CLUSTER_NODES=$NODES" -- "$@") \
		>"$OUT/node$i.console" 2>&1 &
	NODE_PID[$i]=$!
}

show_console() { # I
	say "node$i's console (last 40 lines of $OUT/node$1.console):"
	tail -n 40 "$OUT/node$1.console" | sed 's/^/  | /' >&2
}

# Waits for node1; a helper node that ends before node1's command did has
# failed (they wait for node1's word), and so has the run.
supervise() {
	local i rc
	while kill -0 "${NODE_PID[1]}" 2>/dev/null; do
		[ ! -e "$OUT/node1/cluster-command-done" ] || break
		for i in $(seq 2 "$NODES"); do
			if ! kill -0 "${NODE_PID[$i]}" 2>/dev/null; then
				rc=0
				wait "${NODE_PID[$i]}" || rc=$?
				unset "NODE_PID[$i]"
				show_console "$i"
				die "node$i stopped (status $rc) before node1 finished"
			fi
		done
		sleep 2
	done
}

main() {
	local i rc=0 helper_rc
	parse_args "$@"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	NET_DIR=$(mktemp -d /tmp/ummunot-net.XXXXXX)
	rm -rf "$OUT/ssh" && make_ssh "$OUT/ssh"
	for i in $(seq "$NODES"); do
		printf '192.0.2.%s\tnode%s\n' "$i" "$i"
	done >"$OUT/hosts"
	if [ "$NODES" -gt 2 ]; then
		python3 "$HERE/hub.py" "$NET_DIR" "$NODES" &
		HUB_PID=$!
	fi
	say "booting $NODES nodes (results in $OUT)"
	for i in $(seq 2 "$NODES"); do
		start_node "$i" "$HERE/guest-node.sh" serve
	done
	rm -f "$OUT/node1/cluster-command-done"
	start_node 1 "$HERE/guest-node.sh" head "${CMD[@]}"
	supervise
	wait "${NODE_PID[1]}" || rc=$?
	unset "NODE_PID[1]"
	[ "$rc" -ne "$HARNESS_FAILURE" ] || show_console 1
	# node1 told the helpers to stop; one that did not hear it is stopped
	# after a grace period (its own timeout would be the whole run's).
	local grace_end=$((SECONDS + HELPER_GRACE_S))
	for i in $(seq 2 "$NODES"); do
		while kill -0 "${NODE_PID[$i]}" 2>/dev/null && [ "$SECONDS" -lt "$grace_end" ]; do
			sleep 2
		done
		if kill -0 "${NODE_PID[$i]}" 2>/dev/null; then
			say "node$i still running $HELPER_GRACE_S s after node1 ended: stopping it"
			kill -- -"${NODE_PID[$i]}" 2>/dev/null || true
		fi
		helper_rc=0
		wait "${NODE_PID[$i]}" || helper_rc=$?
		unset "NODE_PID[$i]"
		if [ "$helper_rc" -ne 0 ]; then
			show_console "$i"
			say "node$i ended with status $helper_rc"
			[ "$rc" -ne 0 ] || rc=$HARNESS_FAILURE
		fi
	done
	say "node1's command exited with status $rc"
	exit "$rc"
}

main "$@"
