#!/bin/bash
# Run a command inside a QEMU VM booting Debian's own kernel, with the host
# root mounted read-only, and fail loudly if the guest kernel logs a BUG,
# WARNING, oops or similar.  See usage() below.
#
# Exit status: the command's own exit status when the run was clean;
# 99 (meson's "hard error") when the harness itself failed: bad usage, VM
# setup failure (e.g. insmod refused the module), timeout, no exit status
# reported by the guest, or a bad kernel log.
set -eu -o pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESS_FAILURE=99

# What the initramfs needs to mount the host root over virtio-9p; modprobe
# adds their dependencies from the kernel's modules.dep, in load order, and
# leaves out whatever the kernel has built in (modules.builtin).
INITRAMFS_NEEDS=(virtio_pci 9pnet_virtio 9p)

# Kernel log lines that mean the kernel under test misbehaved (a user
# program's "traps: prog[N] general protection fault ip:..." is not one).
BAD_LOG_PATTERN='BUG[: ]|WARNING:|Oops|general protection fault[,:]|Call Trace|'\
'kernel BUG|UBSAN|KASAN|possible circular locking|INFO: task .* blocked|'\
'RCU stall|self-detected stall|detected stalls|list_add corruption|'\
'list_del corruption|refcount_t:|Kernel panic'
# Expected noise: loading our unsigned out-of-tree module taints the kernel.
EXPECTED_LOG_PATTERN='loading out-of-tree module taints kernel|module verification failed'

# loglevel=4: only errors and worse go to the console (streamed between the
# test output); everything, warnings included, is in dmesg.txt and checked.
# slab_nomerge: the module's slab cache keeps its own line in /proc/slabinfo.
# numa_balancing=disable, transparent_hugepage=madvise: no background page
# migration or huge-page collapse/split invalidating test ranges at random
# (tests migrate pages with move_pages() and opt in to THP with madvise).
# no_timer_check: on a busy host the emulated CPU is too slow for the
# kernel's IO-APIC timer check, which then panics ("IO-APIC + timer doesn't
# work"); the check is for broken real hardware.
KERNEL_CMDLINE=(console=ttyS0 loglevel=4 edd=off panic=-1 panic_on_warn=0
	slab_nomerge log_buf_len=4M numa_balancing=disable
	transparent_hugepage=madvise no_timer_check)

usage() {
	cat <<'EOF'
Usage: scripts/vm/run-vm.sh [OPTIONS] -- CMD [ARGS...]
       scripts/vm/run-vm.sh --selftest

Boots Debian's kernel in QEMU (TCG, 2 CPUs on 2 NUMA nodes, 2 GiB, no
network), with the host root read-only at /, and runs CMD as root in the
current directory.  CMD's output is shown on stdout.  The guest has its
own /tmp, /run and /root; the host's copy of the current directory and of
every absolute path among CMD and ARGS that lies under them is bound back.

Options:
  --module PATH.ko       insmod this module before CMD (failure = harness failure)
  --module-param K=V     module parameter (repeatable)
  --rdma                 set up Soft-RoCE: rxe0 on dummy netdev d0 (192.0.2.1/24),
                         or on eth0 with --netdev
  --netdev SPEC          a virtio-net NIC (eth0) on QEMU's -netdev SPEC (without
                         id), e.g. dgram,local.type=unix,...: only netdevs that
                         stay on this machine (unix or loopback sockets)
  --ip ADDR/PREFIX       eth0's address (needs --netdev; its MAC follows from it)
  --hostname NAME        the guest's host name (default ummunot-vm)
  --hosts FILE           extra /etc/hosts lines for the guest
  --sshd DIR             start sshd: DIR holds sshd_config (pointing into
                         /run/ummunot-ssh, where DIR is copied) and root's
                         ssh client files (config, keys, known_hosts)
  --env K=V              pass this variable to CMD (repeatable)
  --kernel-arg ARG       add ARG to the kernel command line (repeatable)
  --timeout SEC          kill the VM after SEC seconds (default 600)
  --out DIR              result directory (default: a new /var/tmp/ummunot-vm-out.*),
                         writable in the guest at the same path, given to CMD as
                         $UMMUNOT_VM_OUT; the guest's kernel log lands in DIR/dmesg.txt
  --selftest             prove the harness reports exit codes and bad kernel logs

Environment: UMMUNOT_KVER (release of an installed kernel to boot; default:
the one scripts/vm/kernel-version.sh picks, Debian's 6.1), UMMUNOT_KERNEL_DIR
(boot a kernel built by scripts/debug-kernel/build.sh instead: its
directory), UMMUNOT_VM_CACHE (initramfs cache directory, default
/var/tmp/ummunot-vm-<release>), UMMUNOT_VM_TIMEOUT_FACTOR (positive integer,
default 1: multiplies --timeout and is the guest's CK_TIMEOUT_MULTIPLIER,
for slow debug kernels).  A --module built for another kernel than the one
booted is refused.
EOF
}

die() {
	echo "run-vm.sh: $*" >&2
	exit "$HARNESS_FAILURE"
}

# ---- command line ---------------------------------------------------------

MODULE_PATH=
MODULE_PARAMS=()
RDMA=0
TIMEOUT=600
TIMEOUT_FACTOR=${UMMUNOT_VM_TIMEOUT_FACTOR:-1}
OUT_DIR=
OUT_DIR_IS_OURS=no
ENV_VARS=()
CMD=()
NETDEV=
NET_IP=
GUEST_NAME=ummunot-vm
HOSTS_FILE=
SSHD_DIR=

need_value() {
	[ "$2" -ge 2 ] || die "$1 needs a value (see --help)"
}

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--module) need_value "$1" $#; MODULE_PATH=$2; shift 2 ;;
		--module-param) need_value "$1" $#; MODULE_PARAMS+=("$2"); shift 2 ;;
		--rdma) RDMA=1; shift ;;
		--kernel-arg) need_value "$1" $#; KERNEL_CMDLINE+=("$2"); shift 2 ;;
		--env) need_value "$1" $#; ENV_VARS+=("$2"); shift 2 ;;
		--timeout) need_value "$1" $#; TIMEOUT=$2; shift 2 ;;
		--out) need_value "$1" $#; OUT_DIR=$2; shift 2 ;;
		--netdev) need_value "$1" $#; NETDEV=$2; shift 2 ;;
		--ip) need_value "$1" $#; NET_IP=$2; shift 2 ;;
		--hostname) need_value "$1" $#; GUEST_NAME=$2; shift 2 ;;
		--hosts) need_value "$1" $#; HOSTS_FILE=$2; shift 2 ;;
		--sshd) need_value "$1" $#; SSHD_DIR=$2; shift 2 ;;
		--selftest) exec "$SCRIPT_DIR/selftest.sh" ;;
		-h | --help) usage; exit 0 ;;
		--) shift; CMD=("$@"); return ;;
		*) usage >&2; die "unknown argument: $1" ;;
		esac
	done
}

check_args() {
	[ ${#CMD[@]} -gt 0 ] || die "no command given after --"
	[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a positive number of seconds"
	[[ $TIMEOUT_FACTOR =~ ^[1-9][0-9]*$ ]] ||
		die "UMMUNOT_VM_TIMEOUT_FACTOR wants a positive integer, not '$TIMEOUT_FACTOR'"
	TIMEOUT=$((TIMEOUT * TIMEOUT_FACTOR))
	[ "$TIMEOUT_FACTOR" -eq 1 ] || ENV_VARS=("CK_TIMEOUT_MULTIPLIER=$TIMEOUT_FACTOR" "${ENV_VARS[@]}")
	[ -z "$MODULE_PATH" ] || [ -f "$MODULE_PATH" ] || die "no module file $MODULE_PATH"
	[ -n "$MODULE_PATH" ] || [ ${#MODULE_PARAMS[@]} -eq 0 ] ||
		die "--module-param without --module"
	check_net_args
	local kv
	for kv in "${MODULE_PARAMS[@]}" "${ENV_VARS[@]}"; do
		[[ $kv =~ ^[A-Za-z_][A-Za-z0-9_.-]*= ]] || die "not KEY=VALUE: $kv"
	done
	for kv in "${ENV_VARS[@]}"; do
		[[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "not a variable name: ${kv%%=*}"
	done
}

# Only netdevs whose other end is on this machine: unix sockets, or
# sockets on the loopback address.
check_net_args() {
	[[ $GUEST_NAME =~ ^[a-zA-Z0-9][a-zA-Z0-9-]*$ ]] || die "bad --hostname: $GUEST_NAME"
	[ -z "$HOSTS_FILE" ] || [ -f "$HOSTS_FILE" ] || die "no hosts file $HOSTS_FILE"
	[ -z "$SSHD_DIR" ] || [ -f "$SSHD_DIR/sshd_config" ] || die "no $SSHD_DIR/sshd_config"
	if [ -z "$NETDEV" ]; then
		[ -z "$NET_IP" ] || die "--ip needs --netdev"
		return
	fi
	[[ $NETDEV != *id=* ]] || die "--netdev SPEC must not set id="
	[[ $NETDEV != *mcast=* ]] || die "--netdev: no multicast (it could leave this machine)"
	case $NETDEV in
	dgram,* | stream,* | socket,*) ;;
	*) die "--netdev: only dgram, stream or socket netdevs (got ${NETDEV%%,*})" ;;
	esac
	local hosts
	hosts=$(tr ',' '\n' <<<"$NETDEV" | sed -n 's/^\(.*host\|localaddr\|listen\|connect\|udp\)=//p')
	if grep -qvE '^(127\.0\.0\.1|localhost)?(:[0-9]+)?$' <<<"$hosts"; then
		die "--netdev may only name loopback addresses: $NETDEV"
	fi
	[[ $NET_IP =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)\.([0-9]+)/[0-9]+$ ]] ||
		die "--netdev needs --ip ADDR/PREFIX"
}

# A locally administered MAC made of the address's last two bytes.
guest_mac() {
	local ip=${NET_IP%/*}
	local b3 b4
	b3=$(cut -d. -f3 <<<"$ip")
	b4=$(cut -d. -f4 <<<"$ip")
	printf '52:54:00:77:%02x:%02x\n' "$b3" "$b4"
}

# The guest mounts fresh tmpfs on these, hiding the host's contents; it
# binds the job's directory back in from /tmp and /run, not from /dev/shm.
check_cwd_visible() {
	case $PWD/ in "$OUT_DIR"/*) return ;; esac
	case $PWD/ in
	/dev/shm/*) die "the current directory $PWD is under /dev/shm, which the guest covers with a tmpfs: run from elsewhere" ;;
	esac
}

# ---- initramfs ------------------------------------------------------------

# ---- the kernel ----------------------------------------------------------------

# An installed Debian kernel (/boot, /lib/modules), or one built by
# scripts/debug-kernel/build.sh (UMMUNOT_KERNEL_DIR: bzImage, release,
# root/lib/modules/RELEASE).
KERNEL_IMAGE=
MODULES_ROOT=/

select_kernel() { # KVER
	if [ -n "${UMMUNOT_KERNEL_DIR:-}" ]; then
		KERNEL_IMAGE=$UMMUNOT_KERNEL_DIR/bzImage
		MODULES_ROOT=$UMMUNOT_KERNEL_DIR/root
		# Under KASAN + lockdep + TCG, ACPICA needs more than its 30 s
		# loop limit for the 128 rounds of QEMU's PCI0._PRT method: each
		# boot spent 2 x 30 s in AE_AML_LOOP_TIMEOUT before falling back.
		# PCI interrupts then come from the MP table (virtio uses MSI-X).
		# Only for that kernel: another one given by hand boots as is.
		case $(cat "$UMMUNOT_KERNEL_DIR/release" 2>/dev/null) in
		*-ummunot-debug) KERNEL_CMDLINE+=(acpi=noirq) ;;
		esac
	else
		KERNEL_IMAGE=/boot/vmlinuz-$1
	fi
	[ -f "$KERNEL_IMAGE" ] || die "no kernel image $KERNEL_IMAGE"
	[ -f "$MODULES_ROOT/lib/modules/$1/modules.dep" ] ||
		die "no $MODULES_ROOT/lib/modules/$1/modules.dep (kernel $1 installed incompletely?)"
}

# insmod refuses a module built for another kernel with a terse "Invalid
# module format": say which kernels they are.  A file modinfo cannot read
# is left for insmod to refuse in the guest.
check_module_matches() { # KVER
	local vermagic
	[ -n "$MODULE_PATH" ] || return 0
	vermagic=$(modinfo -F vermagic "$MODULE_PATH" 2>/dev/null) || return 0
	[ -n "$vermagic" ] || return 0
	[ "${vermagic%% *}" = "$1" ] ||
		die "$MODULE_PATH was built for kernel ${vermagic%% *}, but the VM boots $1 (set UMMUNOT_KVER or UMMUNOT_KERNEL_DIR, or rebuild against that kernel)"
}

# Prints the files of the modules the initramfs must load, in load order.
initramfs_module_files() { # KVER
	local deps line
	deps=$(modprobe --show-depends -d "$MODULES_ROOT" -S "$1" -a "${INITRAMFS_NEEDS[@]}") ||
		die "modprobe cannot resolve ${INITRAMFS_NEEDS[*]} for kernel $1"
	while read -r line; do
		case $line in
		"insmod "*) line=${line#insmod }; printf '%s\n' "${line%% *}" ;;
		"builtin "*) ;;
		*) die "unexpected line from modprobe --show-depends: $line" ;;
		esac
	done <<<"$deps" | awk '!seen[$0]++'
}

# busybox insmod may not decompress modules: store them decompressed.
copy_module_decompressed() { # SRC DEST.ko
	case $1 in
	*.ko) cp "$1" "$2" ;;
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -qdc "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) die "unknown module file type: $1" ;;
	esac
}

busybox_binary() {
	local bb
	bb=$(command -v busybox) || die "busybox not found (install busybox-static)"
	file_is_static "$bb" || die "$bb is not statically linked (install busybox-static)"
	printf '%s\n' "$bb"
}

file_is_static() {
	! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'INTERP'
}

# Everything the initramfs is made of; its hash names the cached image.
initramfs_inputs() { # KVER BUSYBOX MODULE_FILES...
	printf 'kernel %s\n' "$1"
	shift
	sha256sum "$SCRIPT_DIR/guest-init.sh" "$SCRIPT_DIR/run-vm.sh" "$@"
}

populate_initramfs() { # DIR BUSYBOX MODULE_FILES...
	local dir=$1 bb=$2 path name
	shift 2
	mkdir -p "$dir"/{bin,modules,proc,sys,dev,newroot,vmout}
	cp "$bb" "$dir/bin/busybox"
	ln -s busybox "$dir/bin/sh"
	cp "$SCRIPT_DIR/guest-init.sh" "$dir/init"
	chmod 755 "$dir/init" "$dir/bin/busybox"
	: >"$dir/modules/order"
	for path in "$@"; do
		name=$(basename "${path%.ko*}").ko
		copy_module_decompressed "$path" "$dir/modules/$name"
		echo "$name" >>"$dir/modules/order"
	done
}

# Prints the path of an up-to-date initramfs, building it when needed.
# The image is written under a temporary name and renamed, so concurrent
# runs never see a partial file.
ensure_initramfs() { # KVER
	local kver=$1 cache bb key image stage list file
	local files=()
	cache=${UMMUNOT_VM_CACHE:-/var/tmp/ummunot-vm-$kver}
	bb=$(busybox_binary)
	list=$(initramfs_module_files "$kver")
	while IFS= read -r file; do
		[ -n "$file" ] || continue
		[ -f "$file" ] || die "kernel $kver: no module file $file"
		files+=("$file")
	done <<<"$list"
	key=$(initramfs_inputs "$kver" "$bb" "${files[@]}" | sha256sum | cut -c1-16)
	image=$cache/initramfs-$key.cpio
	if [ ! -f "$image" ]; then
		mkdir -p "$cache"
		stage=$(mktemp -d "$cache/stage.XXXXXX")
		populate_initramfs "$stage/root" "$bb" "${files[@]}"
		(cd "$stage/root" && find . -print0 |
			cpio --null --create --format=newc --owner=0:0 --quiet) >"$stage/image"
		mv -f "$stage/image" "$image"
		rm -rf "$stage"
		# Drop images for older inputs (a day old, so no running VM uses them).
		find "$cache" -maxdepth 1 -name 'initramfs-*.cpio' -mtime +1 -delete
	fi
	printf '%s\n' "$image"
}

# ---- job description for the guest ------------------------------------------

prepare_out_dir() {
	if [ -z "$OUT_DIR" ]; then
		OUT_DIR=$(mktemp -d /var/tmp/ummunot-vm-out.XXXXXX)
		OUT_DIR_IS_OURS=yes
	fi
	mkdir -p "$OUT_DIR"
	OUT_DIR=$(cd "$OUT_DIR" && pwd -P)
	rm -rf "$OUT_DIR/.vm" "$OUT_DIR/dmesg.txt"
	mkdir "$OUT_DIR/.vm"
}

# Single-quotes a string for busybox sh (guest-init.sh sources boot.env).
sh_quote() {
	printf "'%s'" "${1//\'/\'\\\'\'}"
}

write_boot_env() {
	{
		echo "VM_OUT=$(sh_quote "$OUT_DIR")"
		echo "VM_RUNNER=$(sh_quote "$SCRIPT_DIR/guest-run.sh")"
	} >"$OUT_DIR/.vm/boot.env"
}

# The guest sees the host's /lib/modules; a kernel that is not installed
# there brings its own (modprobe needs it, if only for modules.builtin).
guest_modules_dir() { # KVER
	[ "$MODULES_ROOT" = / ] || printf '%s\n' "$MODULES_ROOT/lib/modules/$1"
}

# The command's arguments that name existing host files by absolute path
# (a build directory apart from the clone, say), quoted for the config.
host_path_args() {
	local arg
	for arg in "${CMD[@]}"; do
		case $arg in
		/*) [ ! -e "$arg" ] || printf ' %q' "$arg" ;;
		esac
	done
}

# The module is copied into the result directory: the guest may not see
# its original path (e.g. under /tmp, which the guest covers with a tmpfs).
write_config() { # KVER
	local guest_module=
	if [ -n "$MODULE_PATH" ]; then
		guest_module=$OUT_DIR/.vm/$(basename "${MODULE_PATH%.ko*}").ko
		copy_module_decompressed "$MODULE_PATH" "$guest_module"
	fi
	{
		printf 'MODULE=%q\n' "$guest_module"
		printf 'MODULE_PARAMS=('
		[ ${#MODULE_PARAMS[@]} -eq 0 ] || printf ' %q' "${MODULE_PARAMS[@]}"
		printf ' )\n'
		printf 'RDMA=%q\n' "$RDMA"
		printf 'MODULES_DIR=%q\n' "$(guest_modules_dir "$1")"
		printf 'JOB_DIR=%q\n' "$PWD"
		printf 'HOST_PATHS=('
		host_path_args
		printf ' )\n'
		printf 'GUEST_HOSTNAME=%q\n' "$GUEST_NAME"
		printf 'NET_IP=%q\n' "$NET_IP"
		printf 'HAVE_NET=%q\n' "$([ -n "$NETDEV" ] && echo 1 || echo 0)"
		printf 'HAVE_HOSTS=%q\n' "$([ -n "$HOSTS_FILE" ] && echo 1 || echo 0)"
		printf 'HAVE_SSHD=%q\n' "$([ -n "$SSHD_DIR" ] && echo 1 || echo 0)"
	} >"$OUT_DIR/.vm/config"
	[ -z "$HOSTS_FILE" ] || cp "$HOSTS_FILE" "$OUT_DIR/.vm/hosts"
	if [ -n "$SSHD_DIR" ]; then
		cp -r "$SSHD_DIR" "$OUT_DIR/.vm/ssh"
		chmod -R go-rwx "$OUT_DIR/.vm/ssh"
	fi
}

# The command travels as a bash script, never on the kernel command line.
write_job() {
	local kv
	{
		echo '# Generated by run-vm.sh; run by guest-run.sh under bash.'
		printf 'export UMMUNOT_VM_OUT=%q\n' "$OUT_DIR"
		for kv in "${ENV_VARS[@]}"; do
			printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
		done
		printf 'cd -- %q || exit 125\n' "$PWD"
		printf '%q ' "${CMD[@]}"
		echo
	} >"$OUT_DIR/.vm/job.sh"
}

# ---- the VM -----------------------------------------------------------------

run_qemu() { # INITRAMFS
	# A virtio-net NIC on --netdev, or no network at all.
	local net=(-nic none)
	[ -z "$NETDEV" ] ||
		net=(-netdev "$NETDEV,id=net0" -device "virtio-net-pci,netdev=net0,mac=$(guest_mac)")
	# --foreground keeps qemu in our process group, so whoever kills that
	# group (meson on its test timeout, Ctrl-C) also kills qemu.
	# qboot: fast, and no BIOS escape sequences on the console.
	# One CPU and 1 GiB on each of two NUMA nodes, so tests can migrate pages;
	# one socket per CPU, or the kernel warns about an LLC shared across nodes.
	timeout --foreground --kill-after=10 "$TIMEOUT" qemu-system-x86_64 \
		-nographic -bios qboot.rom -no-reboot "${net[@]}" -m 2048 -smp 2,sockets=2,cores=1,threads=1 \
		-object memory-backend-ram,id=mem0,size=1G \
		-object memory-backend-ram,id=mem1,size=1G \
		-numa node,nodeid=0,cpus=0,memdev=mem0 \
		-numa node,nodeid=1,cpus=1,memdev=mem1 \
		-kernel "$KERNEL_IMAGE" -initrd "$1" -append "${KERNEL_CMDLINE[*]}" \
		-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
		-device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
		-fsdev "local,id=vmout,path=$OUT_DIR,security_model=none,multidevs=remap" \
		-device virtio-9p-pci,fsdev=vmout,mount_tag=vmout \
		</dev/null | tee "$OUT_DIR/.vm/console.log"
}

# ---- verdict ----------------------------------------------------------------

report_bad_log() {
	local log=$1 bad
	bad=$(grep -Ev "$EXPECTED_LOG_PATTERN" "$log" | grep -E "$BAD_LOG_PATTERN") || return 0
	{
		echo "run-vm.sh: FAILED: the guest kernel log ($log) shows problems:"
		printf '%s\n' "$bad" | sed 's/^/  | /'
		echo "run-vm.sh: first report in context:"
		grep -Ev "$EXPECTED_LOG_PATTERN" "$log" | grep -E -m1 -A40 "$BAD_LOG_PATTERN" |
			sed 's/^/  | /'
	} >&2
	return 1
}

# User programs the guest kernel reported as crashed (show_signal_msg():
# "prog[pid]: segfault at ADDR ip IP sp SP error E in BINARY[OFFSET,...]",
# then its "Code:" line; "traps: prog[pid] ..." for the other traps).
USER_FAULT_PATTERN='\]: segfault at |traps: [^ ]+\[[0-9]+\] '

# Show them, whatever the result: a crashed test program is then explained
# by the test log itself (addr2line -e BINARY OFFSET names the line; the
# address tells a wild pointer from memory that was unmapped).  They fail
# nothing by themselves: the test that ran the program decides.
report_user_faults() { # LOG
	local log=$1 faults
	[ -f "$log" ] || return 0
	faults=$(grep -E -A1 --no-group-separator "$USER_FAULT_PATTERN" "$log") || return 0
	{
		echo "run-vm.sh: the guest kernel reported crashed user programs:"
		printf '%s\n' "$faults" | sed 's/^/  | /'
	} >&2
}

# Sets GUEST_RC; returns nonzero (after saying why) if the run was not clean.
judge_run() { # QEMU_STATUS
	local status=$1 ok=0
	if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
		echo "run-vm.sh: FAILED: timed out after $TIMEOUT s" >&2
		ok=1
	elif [ "$status" -ne 0 ]; then
		echo "run-vm.sh: FAILED: qemu exited with status $status" >&2
		ok=1
	fi
	if [ -f "$OUT_DIR/.vm/rc" ]; then
		GUEST_RC=$(cat "$OUT_DIR/.vm/rc")
		[[ $GUEST_RC =~ ^[0-9]+$ ]] || { echo "run-vm.sh: FAILED: bad exit status '$GUEST_RC'" >&2; ok=1; }
	else
		echo "run-vm.sh: FAILED: the guest reported no exit status" >&2
		[ ! -f "$OUT_DIR/.vm/setup-error" ] ||
			echo "run-vm.sh: guest setup failed during: $(cat "$OUT_DIR/.vm/setup-error")" >&2
		ok=1
	fi
	if [ -f "$OUT_DIR/dmesg.txt" ]; then
		report_bad_log "$OUT_DIR/dmesg.txt" || ok=1
	else
		echo "run-vm.sh: FAILED: no kernel log came back; checking the console instead" >&2
		report_bad_log "$OUT_DIR/.vm/console.log" || true
		ok=1
	fi
	return "$ok"
}

main() {
	local kver initramfs status=0
	parse_args "$@"
	check_args
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
	kver=$("$SCRIPT_DIR/kernel-version.sh") || die "no kernel to boot"
	select_kernel "$kver"
	check_module_matches "$kver"
	initramfs=$(ensure_initramfs "$kver")
	prepare_out_dir
	check_cwd_visible
	write_boot_env
	write_config "$kver"
	write_job
	echo "run-vm.sh: booting $kver (results in $OUT_DIR)" >&2
	run_qemu "$initramfs" || status=$?
	report_user_faults "$OUT_DIR/dmesg.txt"
	GUEST_RC=
	if ! judge_run "$status"; then
		echo "run-vm.sh: results kept in $OUT_DIR" >&2
		exit "$HARNESS_FAILURE"
	fi
	echo "run-vm.sh: guest command exited with status $GUEST_RC; kernel log clean" >&2
	# Nobody asked for the results of a passing run in a directory we made up.
	if [ "$OUT_DIR_IS_OURS" = yes ] && [ "$GUEST_RC" -eq 0 ]; then
		rm -rf "$OUT_DIR"
	fi
	exit "$GUEST_RC"
}

# selftest.sh sources this file to check the log patterns without a VM.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	main "$@"
fi
