#!/bin/bash
# A cluster node's job inside its VM (started by scripts/cluster/cluster.sh
# through run-vm.sh, with CLUSTER_NODES set).
#   guest-node.sh serve         a helper node: wait until node1 says stop
#   guest-node.sh head CMD...   node1: wait until every node answers ssh,
#                               run CMD, then tell the helpers to stop
# Both make the node's result directory available as /run/ummunot-results.
# Exit status: CMD's (head), 0 (serve); 98 when a node never answered ssh.
set -eu -o pipefail

STOP_FILE=/run/ummunot-cluster-stop
SSH_WAIT_S=900

say() { echo "$(hostname): $*" >&2; }

ln -sfn "$UMMUNOT_VM_OUT" /run/ummunot-results

serve() {
	say "up, sshd listening; waiting for node1"
	while [ ! -e "$STOP_FILE" ]; do
		sleep 1
	done
	say "stopping"
}

# Every node, node1 included (mpirun may ssh to itself by name), answers.
wait_for_nodes() {
	local i t0=$SECONDS
	for i in $(seq "$CLUSTER_NODES"); do
		until ssh "node$i" true 2>/dev/null; do
			if [ $((SECONDS - t0)) -ge "$SSH_WAIT_S" ]; then
				say "node$i did not answer ssh within $SSH_WAIT_S s"
				ssh -v "node$i" true 2>&1 | tail -5 >&2 || true
				return 1
			fi
			sleep 2
		done
	done
	say "all $CLUSTER_NODES nodes answer ssh after $((SECONDS - t0)) s"
}

stop_helpers() {
	local i
	for i in $(seq 2 "$CLUSTER_NODES"); do
		# shellcheck disable=SC2029 # the path is the same on every node
		ssh "node$i" touch "$STOP_FILE" || say "could not tell node$i to stop"
	done
}

head_node() {
	local rc=0
	wait_for_nodes || { stop_helpers; exit 98; }
	"$@" || rc=$?
	# For the host: from now on the helpers may stop.
	echo "$rc" >"$UMMUNOT_VM_OUT/cluster-command-done"
	stop_helpers
	return "$rc"
}

case ${1:-} in
serve) serve ;;
head) shift; head_node "$@" ;;
*) echo "usage: guest-node.sh serve | head CMD..." >&2; exit 2 ;;
esac
