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
	# root's home (ssh client files, MPI's dot files) stays in the guest.
	mount -t tmpfs -o mode=700 tmpfs /root
	mkdir -p /dev/pts /dev/shm
	mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
	# bash's process substitution needs /dev/fd (udev would make it).
	ln -sfn /proc/self/fd /dev/fd
	mount -t tmpfs -o mode=1777 tmpfs /dev/shm
	mount -t cgroup2 cgroup2 /sys/fs/cgroup || say "no cgroup2 (continuing)"
	mount -t debugfs debugfs /sys/kernel/debug || say "no debugfs (continuing)"
}

# A clone under /tmp, /run or /root on the host (CI may put one in any) is
# hidden by the guest's tmpfs: bind the host's copy of its top directory
# back in.  The same for the module, which may live in another tree.
bind_host_path() {
	local path=$1 dir top
	for dir in /tmp /run /root; do
		case $path/ in
		"$dir"/*/*)
			top=${path#"$dir"/}
			top=$dir/${top%%/*}
			mountpoint -q "$top" && return 0
			step="making $top visible in the guest"
			if [ -d "$HOST_VIEW$top" ]; then
				mkdir -p "$top"
			else	# a file right under it: bind the file
				: >"$top"
			fi
			mount --bind "$HOST_VIEW$top" "$top"
			;;
		esac
	done
}

bind_job_dir() {
	local path
	bind_host_path "$JOB_DIR"
	[ -z "$MODULE" ] || bind_host_path "$MODULE"
	for path in "${HOST_PATHS[@]}"; do
		bind_host_path "$path"
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

# MPI and friends want their own host name to resolve (to the NIC's
# address when there is one), and the other nodes' names from --hosts.
set_hostname() {
	step="setting the host name"
	hostname "$GUEST_HOSTNAME"
	{
		if [ "$HAVE_NET" = 1 ]; then
			printf '127.0.0.1\tlocalhost\n%s\t%s\n' "${NET_IP%/*}" "$GUEST_HOSTNAME"
		else
			printf '127.0.0.1\tlocalhost %s\n' "$GUEST_HOSTNAME"
		fi
		printf '::1\tlocalhost ip6-localhost\n'
		[ "$HAVE_HOSTS" = 0 ] || grep -vw "$GUEST_HOSTNAME" "$VM_DIR/hosts" || true
	} >/run/hosts
	mount --bind /run/hosts /etc/hosts
	ip link set lo up
}

# A kernel that is not installed on the host (the debug kernel) brings its
# own /lib/modules/RELEASE; the host's directories are hidden.
mount_modules_dir() {
	step="mounting $MODULES_DIR at /lib/modules/${MODULES_DIR##*/}"
	mount -t tmpfs -o mode=755 tmpfs /lib/modules
	mkdir "/lib/modules/${MODULES_DIR##*/}"
	mount --bind "$MODULES_DIR" "/lib/modules/${MODULES_DIR##*/}"
}

# The virtio-net NIC on the VMs' private network.
setup_net() {
	step="bringing up eth0 ($NET_IP)"
	modprobe virtio_net
	ip link set eth0 up
	ip addr add "$NET_IP" dev eth0
}

# sshd and root's ssh client, from the files the host generated for this
# run (copied to /run/ummunot-ssh; sshd_config points there).
start_sshd() {
	step="starting sshd"
	cp -r "$VM_DIR/ssh" /run/ummunot-ssh
	chmod -R go-rwx /run/ummunot-ssh
	mkdir -p /run/sshd /root/.ssh
	chmod 755 /run/sshd
	cp /run/ummunot-ssh/client/* /root/.ssh/
	chmod 600 /root/.ssh/*
	# sshd's privilege separation user (openssh-server's postinst makes it).
	if ! id sshd >/dev/null 2>&1; then
		say "no user sshd on the host root: adding one in the guest"
		cp /etc/passwd /run/passwd
		echo 'sshd:x:65533:65534::/run/sshd:/usr/sbin/nologin' >>/run/passwd
		mount --bind /run/passwd /etc/passwd
	fi
	/usr/sbin/sshd -f /run/ummunot-ssh/sshd_config -E "$VM_OUT_STAGE/sshd.log"
}

load_test_module() {
	step="insmod $MODULE ${MODULE_PARAMS[*]}"
	insmod "$MODULE" "${MODULE_PARAMS[@]}"
}

# Soft-RoCE on eth0 (the VMs' private network), or on a dummy netdev: no
# traffic ever leaves the VM.
setup_rdma() {
	local dev=d0
	[ "$HAVE_NET" = 0 ] || dev=eth0
	step="setting up Soft-RoCE (rxe0 on $dev)"
	ulimit -l unlimited
	modprobe -a ib_uverbs rdma_ucm rdma_rxe
	if [ "$dev" = d0 ]; then
		modprobe dummy
		ip link add d0 type dummy
		ip link set d0 up
		ip addr add 192.0.2.1/24 dev d0
	fi
	rdma link add rxe0 type rxe netdev "$dev"
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
step="reading $VM_DIR/config"
# Defines MODULE (path or empty), MODULE_PARAMS (array), RDMA (0/1),
# MODULES_DIR (the kernel's own modules directory, or empty for the host's),
# JOB_DIR (the directory the job runs in), HOST_PATHS (the command's
# absolute path arguments), GUEST_HOSTNAME, NET_IP and HAVE_NET, HAVE_HOSTS, HAVE_SSHD (0/1).
# shellcheck source=/dev/null
. "$VM_DIR/config"
set_hostname
bind_job_dir
bind_result_dir
[ -z "$MODULES_DIR" ] || mount_modules_dir
[ "$HAVE_NET" = 0 ] || setup_net
[ -z "$MODULE" ] || load_test_module
[ "$RDMA" = 0 ] || setup_rdma
# After setup_rdma: sessions inherit sshd's unlimited locked memory.
[ "$HAVE_SSHD" = 0 ] || start_sshd
step="running the job"
rc=0
run_job || rc=$?
echo "$rc" >"$VM_DIR/rc"
