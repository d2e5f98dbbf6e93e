#!/bin/sh
# /init of the VM's initramfs (busybox sh).  Loads the virtio/9p modules,
# mounts the host root read-only over 9p and switch_roots into the host's
# scripts/vm/guest-run.sh, whose path (and the result directory's) the host
# wrote into the writable 9p export "vmout" as .vm/boot.env.
# Any failure powers the guest off: the host then finds no exit code and
# reports the harness as failed, with this script's message on the console.
set -eu

ROOT_OPTS=trans=virtio,version=9p2000.L,msize=512000,ro,cache=loose
OUT_OPTS=trans=virtio,version=9p2000.L,msize=512000

fail() {
	echo "guest-init: $*" >&2
	poweroff -f
	sleep 60
}

mount_pseudo_fs() {
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	# The initramfs has no /dev/console node, so the kernel started us
	# without stdio: take the console now that devtmpfs provides it.
	exec </dev/console >/dev/console 2>&1
}

load_modules() {
	while read -r mod; do
		insmod "/modules/$mod" || fail "insmod $mod failed"
	done </modules/order
}

read_boot_env() {
	mkdir -p /vmout
	mount -t 9p -o "$OUT_OPTS" vmout /vmout || fail "cannot mount the vmout 9p export"
	[ -r /vmout/.vm/boot.env ] || fail "no .vm/boot.env in the result directory"
	# Defines VM_OUT and VM_RUNNER (absolute paths, quoted by the host).
	# shellcheck source=/dev/null
	. /vmout/.vm/boot.env
	umount /vmout
}

mount_host_root() {
	mkdir -p /newroot
	mount -t 9p -o "$ROOT_OPTS" hostroot /newroot || fail "cannot mount the host root over 9p"
	for fs in proc sys dev; do
		mount --move "/$fs" "/newroot/$fs"
	done
}

/bin/busybox --install -s /bin
mount_pseudo_fs
load_modules
read_boot_env
mount_host_root
[ -x "/newroot$VM_RUNNER" ] || fail "$VM_RUNNER is not executable in the host root"
exec switch_root /newroot "$VM_RUNNER" "$VM_OUT"
