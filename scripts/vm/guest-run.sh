#!/bin/bash
# PID 1 of the test VM after switch_root onto the read-only host root.
# Prepares a usable system (tmpfs, devpts, hostname, the writable result
# directory at the host's path), loads the module under test and/or sets up
# Soft-RoCE as the host asked in .vm/config, runs .vm/job.sh, and leaves the
# job's exit code in .vm/rc and the kernel log in dmesg.txt for the host.
# Usage (by guest-init.sh only): guest-run.sh RESULT_DIR
set -eu

VM_OUT=$1
# The result directory is mounted here first (the guest's own tmpfs), and
# bound at the host's path only after the job directory was made visible:
# binding a clone under /tmp over the result directory would hide it.
VM_OUT_STAGE=/run/ummunot-vmout
VM_DIR=$VM_OUT_STAGE/.vm
JOB_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
GUEST_HOSTNAME=ummunot-vm
export PATH=$JOB_PATH

# What setup is doing, for the message when a step fails (set -e exits).
step="starting"
out_mounted=no

say() {
	echo "guest-run: $*" >&2
}

# Always ends the VM; before that, hands back whatever the host needs.
finish() {
	if [ "$out_mounted" = yes ]; then
		if [ ! -e "$VM_DIR/rc" ]; then
			say "setup failed during: $step"
			echo "$step" >"$VM_DIR/setup-error" || true
		fi
		dmesg >"$VM_OUT_STAGE/dmesg.txt" 2>&1 || true
		sync
	else
		say "setup failed during: $step (result directory not mounted)"
	fi
	busybox poweroff -f
}

# The host root, seen without the guest's tmpfs mounts over /tmp and /run.
HOST_VIEW=/mnt

mount_runtime_fs() {
	step="mounting tmpfs/devpts"
	mount --bind / "$HOST_VIEW"
	mount -t tmpfs -o mode=1777 tmpfs /tmp
	mount -t tmpfs -o mode=755 tmpfs /run
	mkdir -p /dev/pts /dev/shm
	mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
	mount -t tmpfs -o mode=1777 tmpfs /dev/shm
	mount -t cgroup2 cgroup2 /sys/fs/cgroup || say "no cgroup2 (continuing)"
	mount -t debugfs debugfs /sys/kernel/debug || say "no debugfs (continuing)"
}

# A clone under /tmp or /run on the host (CI may put one there) is hidden by
# the guest's tmpfs: bind the host's copy of its top directory back in.
bind_job_dir() {
	local dir top
	for dir in /tmp /run; do
		case $JOB_DIR/ in
		"$dir"/*/*)
			top=${JOB_DIR#"$dir"/}
			top=$dir/${top%%/*}
			step="making $top visible in the guest"
			mkdir -p "$top"
			mount --bind "$HOST_VIEW$top" "$top"
			;;
		esac
	done
}

mount_result_dir() {
	step="mounting the result directory"
	mkdir -p "$VM_OUT_STAGE"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmout "$VM_OUT_STAGE"
	out_mounted=yes
}

# The host's path may lie under /tmp, a fresh tmpfs, or inside the job
# directory bound back from the host root (read-only, where the host has
# already created it): make the mount point where possible, then bind.
bind_result_dir() {
	step="binding the result directory at $VM_OUT"
	mkdir -p "$VM_OUT" 2>/dev/null || true
	mount --bind "$VM_OUT_STAGE" "$VM_OUT"
}

# MPI and friends want their own host name to resolve.
set_hostname() {
	step="setting the host name"
	hostname "$GUEST_HOSTNAME"
	printf '127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost\n' \
		"$GUEST_HOSTNAME" >/run/hosts
	mount --bind /run/hosts /etc/hosts
	ip link set lo up
}

load_test_module() {
	step="insmod $MODULE ${MODULE_PARAMS[*]}"
	insmod "$MODULE" "${MODULE_PARAMS[@]}"
}

# Soft-RoCE on a dummy netdev: no traffic ever leaves the VM.
setup_rdma() {
	step="setting up Soft-RoCE (rxe0 on dummy d0)"
	ulimit -l unlimited
	modprobe -a ib_uverbs rdma_ucm rdma_rxe dummy
	ip link add d0 type dummy
	ip link set d0 up
	ip addr add 192.0.2.1/24 dev d0
	rdma link add rxe0 type rxe netdev d0
	step="checking that ibv_devices lists rxe0"
	ibv_devices | grep -qw rxe0
}

# Runs the job with a clean environment; the job script sets the rest.
run_job() {
	env -i PATH="$JOB_PATH" HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
		bash "$VM_DIR/job.sh" </dev/null
}

trap finish EXIT
mount_runtime_fs
mount_result_dir
set_hostname
step="reading $VM_DIR/config"
# Defines MODULE (path or empty), MODULE_PARAMS (array), RDMA (0/1) and
# JOB_DIR (the directory the job runs in).
# shellcheck source=/dev/null
. "$VM_DIR/config"
bind_job_dir
bind_result_dir
[ -z "$MODULE" ] || load_test_module
[ "$RDMA" = 0 ] || setup_rdma
step="running the job"
rc=0
run_job || rc=$?
echo "$rc" >"$VM_DIR/rc"
