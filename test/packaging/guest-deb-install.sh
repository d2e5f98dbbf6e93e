#!/bin/bash
# Runs in the test VM (vm-deb-install.sh; Soft-RoCE up, no module loaded).
# Installs the built .deb files into a fresh root -- an overlay of the
# read-only host root with a tmpfs upper layer, the source tree hidden, this
# kernel the only one with a config in /boot -- with systemd-udevd running
# in that root, and checks, as the issue asks: DKMS builds the module for
# the running kernel, the package loads it, udevd applies the packaged rule
# (/dev/ummunot mode 0666), the packaged modules-load.d entry loads it again
# the way boot does, `ummushim check` exits 0 as an unprivileged user, an
# unmodified verbs program under `ummushim run` caches with 0 stale;
# `apt-get purge` leaves nothing behind.
# The kernel's modules directory in that root is a small one: the modules
# this VM has loaded, the kernel's indexes and its build link to the
# headers.  DKMS runs depmod over the whole directory after each install and
# removal, and over Debian's 4,000 modules read through 9p under emulation
# that takes more than 5 minutes each time; the module DKMS builds, the way
# it is installed and indexed, and what the purge must remove are the same.
# Every step runs under a time bound (bounded below): a step that hangs is
# reported with the processes still running and fails the test, it never
# stalls the run.
# Usage: guest-deb-install.sh DEB_DIR VERBS_PROGRAM SRC_ROOT
set -u

debs=$1
verbs_prog=$2
src=$3
kver=$(uname -r)
ov=/tmp/overlay
root=$ov/root
upper=$ov/upper/u
modules_dir=$root/lib/modules/$kver
# The host root as the overlay's lower layer sees it (no submounts).
lower=$ov/lower
test_dir=/opt/ummunot-pkgtest
CYCLES=50
# shellcheck source=SCRIPTDIR/../lib/shim-tap.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/shim-tap.sh"

bail() {
	echo "Bail out! $*"
	exit 1
}

in_root() {
	chroot "$root" "$@"
}

# The processes of this VM, with what each waits on, for a step that is slow.
show_processes() {
	ps -eo pid,ppid,stat,etimes,wchan:24,args --forest | sed 's/^/#   /'
}

# bounded SECONDS LOG DESCRIPTION COMMAND...: runs COMMAND (stdin
# /dev/null, output to LOG) in its own session; every 120 s it says what is
# still running; after SECONDS it shows the processes, kills the session and
# returns 124.  Otherwise COMMAND's status.  Either way LOG is shown.
bounded() {
	local limit=$1 log=$2 what=$3 start=$SECONDS pid rc=0 next=120
	shift 3
	echo "# $(date +%T) $what"
	setsid "$@" </dev/null >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		if [ $((SECONDS - start)) -ge "$limit" ]; then
			echo "# TIMEOUT: $what still running after $limit s; output so far:"
			sed 's/^/#   | /' "$log"
			show_processes
			kill -TERM -- "-$pid" 2>/dev/null
			sleep 5
			kill -KILL -- "-$pid" 2>/dev/null
			wait "$pid"
			return 124
		fi
		if [ $((SECONDS - start)) -ge "$next" ]; then
			echo "# $(date +%T) $what: still running after $next s: $(tail -c 200 "$log" | tr '\n' ' ')"
			next=$((next + 120))
		fi
		sleep 1
	done
	wait "$pid" || rc=$?
	sed 's/^/#   | /' "$log"
	echo "# $(date +%T) $what: $((SECONDS - start)) s, status $rc"
	return "$rc"
}

# udevadm refuses to talk to udevd from a chroot unless told it is fine.
UDEVADM=(chroot "$root" env SYSTEMD_IGNORE_CHROOT=1 udevadm)

# An unprivileged user in the new root (ulimit -l is inherited: unlimited).
AS_NOBODY=(chroot "$root" setpriv --reuid=65534 --regid=65534 --clear-groups
	env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8)
as_nobody() {
	"${AS_NOBODY[@]}" "$@"
}

nobody_can_open() {
	as_nobody dd if=/dev/ummunot of=/dev/null count=0 status=none 2>/dev/null
}

# (shim-tap.sh defines a function stat: the program is "command stat".)
mode_is_0666() {
	[ -c /dev/ummunot ] && [ "$(command stat -c %a /dev/ummunot)" = 666 ] && return 0
	echo "# /dev/ummunot: $(ls -l /dev/ummunot 2>&1)"
	return 1
}

# The rule files in the root that name ummunot, each once (/lib may be /usr/lib).
rules_naming_ummunot() {
	grep -rlsw ummunot "$root"/etc/udev/rules.d "$root"/lib/udev/rules.d "$root"/usr/lib/udev/rules.d |
		xargs -r realpath | sort -u
}

# Files and directories a package or DKMS added to the root, from the lists
# dpkg keeps and from DKMS's own places (the module is in no package);
# directories the root had before (/usr/lib, ...) are not theirs.
installed_files() {
	local pkg path
	for pkg in ummunot-dkms libummushim ummunot-dev; do
		in_root dpkg-query -L "$pkg"
	done | while IFS= read -r path; do
		[ -e "$lower$path" ] || [ -L "$lower$path" ] || printf '%s\n' "$path"
	done
	for path in "$root/var/lib/dkms/ummunot" "$root/lib/modules/$kver/updates/dkms/"ummunot.ko* \
		"$root"/usr/src/ummunot-*; do
		[ ! -e "$path" ] || printf '%s\n' "${path#"$root"}"
	done
}

# Every change made to the root, as "TYPE PATH": what the overlay's upper
# layer holds apart from the test's own files (c = a whiteout: a deletion;
# directories only where the lower layer has none), and all of the modules
# directory.
root_changes() {
	local type path
	{
		(cd "$upper" && find . -mindepth 1 ! -path ".$test_dir" ! -path ".$test_dir/*" -printf '%y /%P\n') |
			while read -r type path; do
				[ "$type" != d ] || [ ! -d "$lower$path" ] || continue
				printf '%s %s\n' "$type" "$path"
			done
		(cd "$modules_dir" && find . -mindepth 1 -printf "%y /lib/modules/$kver/%P\n")
	} | sort
}

# The small modules directory (see the top): the modules loaded now, with
# the kernel's own lists and the build link, indexed by depmod.
make_modules_dir() {
	local name path
	mount -t tmpfs -o mode=755 tmpfs "$modules_dir" || return 1
	cp -P "/lib/modules/$kver/"{modules.order,modules.builtin,modules.builtin.modinfo,build} \
		"$modules_dir/" || return 1
	while read -r name _; do
		path=$(modinfo -k "$kver" -n "$name" 2>/dev/null) || continue
		[ -f "$path" ] || continue
		mkdir -p "$root$(dirname "$path")" && cp "$path" "$root$path" || return 1
	done </proc/modules
	bounded 300 /tmp/depmod.log "depmod -a $kver over the modules loaded now" \
		chroot "$root" depmod -a "$kver"
}

# The bookkeeping that installing and purging packages changes by design
# (dpkg's and apt's databases and logs, the linker cache, depmod's
# indexes), and what DKMS itself keeps: its module-signing key, made at the
# first build on a machine and used for every DKMS module (the dkms
# package's purge removes it), and the files sqlite adds next to root's rpm
# database, which `dkms remove` queries (rpm -qf) where rpm is installed.
# They may differ afterwards; nothing else may.
BOOKKEEPING="[a-z] /(var/lib/dpkg/|var/log/|var/cache/(apt|debconf|ldconfig)/|"
BOOKKEEPING+="var/lib/apt/|etc/ld\\.so\\.cache$|lib/modules/$kver/modules\\.|"
BOOKKEEPING+="var/lib/dkms/mok\\.(key|pub)$|root/\\.rpmdb/rpmdb\\.sqlite-(shm|wal)$)"

# ---- the fresh root ---------------------------------------------------------------
mkdir -p "$ov/upper" "$lower" "$root"
mount --bind / "$lower" || bail "bind / at $lower"
mount -t tmpfs -o size=1200m tmpfs "$ov/upper" || bail "tmpfs for the overlay"
mkdir -p "$upper" "$ov/upper/w"
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$ov/upper/w" "$root" ||
	bail "cannot mount an overlay over the host root"
# What udev would have created at boot: dkms uses <(...), which needs /dev/fd.
for fd in 0:stdin 1:stdout 2:stderr; do
	[ -e "/dev/${fd#*:}" ] || ln -s "/proc/self/fd/${fd%:*}" "/dev/${fd#*:}"
done
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
for fs in proc sys dev dev/pts; do
	mount --bind "/$fs" "$root/$fs" || bail "bind /$fs"
done
for fs in tmp run; do
	mount -t tmpfs -o mode=1777 tmpfs "$root/$fs" || bail "tmpfs $fs"
done
# Not the build tree: the sources are hidden, and only this kernel is
# offered to DKMS (the host has others; building for each is not the test).
# A tree under /tmp (or /run) is already hidden by the tmpfs above.
if [ -d "$root$src" ]; then
	mount -t tmpfs tmpfs "$root$src" || bail "hiding $src"
fi
mount -t tmpfs tmpfs "$root/boot" || bail "tmpfs /boot"
cp "/boot/config-$kver" "$root/boot/"
make_modules_dir || bail "cannot make the modules directory $modules_dir"
echo "# $modules_dir: $(find "$modules_dir" -name '*.ko*' | wc -l) modules"
mkdir -p "$root$test_dir"
cp "$debs"/*.deb "$verbs_prog" "$root$test_dir/"
chmod -R a+rX "$root$test_dir"
# man-db's trigger would re-index every manual page of the host root
# through 9p under emulation (minutes); the packages' pages are checked on
# the host (man-pages test).
rm -f "$root/var/lib/man-db/auto-update"
prog=$test_dir/$(basename "$verbs_prog")
deb_files=()
for deb in "$debs"/*.deb; do
	deb_files+=("$test_dir/$(basename "$deb")")
done
echo "# fresh root at $root (overlay over /), kernel $kver, $(cd "$debs" && echo *.deb)"

check "the source tree is not visible in the new root" test ! -e "$root$src/meson.build"
# Each path on its own (one `ls` of all would fail, and so "pass", as soon
# as any one of them is missing).
none_installed() {
	local p
	for p in "$root"/usr/src/ummunot-* "$root"/usr/lib/*/libummushim.so \
		"$root"/usr/local/lib/*/libummushim.so "$root"/usr/bin/ummushim \
		"$root"/var/lib/dkms/ummunot "$root"/lib/modules/"$kver"/updates/dkms/ummunot.ko* \
		"$root"/usr/lib/modules-load.d/ummunot.conf "$root"/etc/modules-load.d/ummunot.conf; do
		[ ! -e "$p" ] || { echo "# already there: ${p#"$root"}"; return 1; }
	done
	! grep -qsw ummunot "$root"/etc/modules "$root"/etc/modules-load.d/*.conf "$root"/usr/lib/modules-load.d/*.conf
}
check "nothing of ummunot is installed in the new root yet (files, modules-load entries)" none_installed
check "no udev rule of the root names ummunot yet" test -z "$(rules_naming_ummunot)"
check "the module is not loaded before the install" test ! -e /sys/module/ummunot
root_changes >/tmp/root-before

# ---- udevd, as on a booted system --------------------------------------------------
# The VM's init is a script, not systemd: start the root's own udevd, which
# then handles the device events of everything below (module loads).
bounded 60 /tmp/udevd.log "starting systemd-udevd in the new root" \
	chroot "$root" /lib/systemd/systemd-udevd --daemon
bounded 60 /tmp/udevping.log "udevadm control --ping" "${UDEVADM[@]}" control --ping
check "systemd-udevd runs in the new root" test -S "$root/run/udev/control"

# ---- install ------------------------------------------------------------------------
if bounded 2400 /tmp/dpkg.log "dpkg -i of the three packages (DKMS builds the module)" \
	chroot "$root" env DEBIAN_FRONTEND=noninteractive dpkg -i "${deb_files[@]}"; then
	ok "dpkg -i of the three packages"
else
	not_ok "dpkg -i of the three packages"
	find "$root/var/lib/dkms" -name make.log -exec sed 's/^/# make.log: /' {} + 2>/dev/null
	bail "installation failed"
fi
bounded 120 /tmp/settle.log "udevadm settle" "${UDEVADM[@]}" settle --timeout=100
status=$(in_root dkms status -m ummunot)
echo "# dkms status: $status"
check "DKMS built and installed ummunot for $kver" grep -q "^ummunot/.*, $kver, .*: installed" <<<"$status"
ko=$(in_root modinfo -k "$kver" -n ummunot 2>/dev/null)
# ummunot.ko, or ummunot.ko.xz where the kernel's modules are compressed (6.12).
check "the module is in /lib/modules/$kver/updates/dkms ($ko)" \
	grep -Eq "^/lib/modules/$kver/updates/dkms/ummunot\\.ko(\\.xz|\\.zst|\\.gz)?$" <<<"$ko"
check "its vermagic is $kver" sh -c "chroot '$root' modinfo -k '$kver' -F vermagic ummunot | grep -q '^$kver '"
check "the package loaded the module" test -d /sys/module/ummunot
check "/dev/ummunot exists" test -c /dev/ummunot
check "the packaged rule /usr/lib/udev/rules.d/60-ummunot.rules is the only one naming ummunot" \
	test "$(rules_naming_ummunot)" = "$(realpath "$root/usr/lib/udev/rules.d/60-ummunot.rules")"
check "udevd gave /dev/ummunot mode 0666" mode_is_0666
check "an unprivileged user opens /dev/ummunot" nobody_can_open

# ---- loading at boot ----------------------------------------------------------------
# Boot loads the module through /usr/lib/modules-load.d (systemd-modules-load);
# without the rule's effect a fresh node is mode 0600 (devtmpfs's default).
bounded 60 /tmp/rmmod.log "modprobe -r ummunot" chroot "$root" modprobe -r ummunot
bounded 120 /tmp/settle.log "udevadm settle" "${UDEVADM[@]}" settle --timeout=100
check "unloaded: no /sys/module/ummunot, no /dev/ummunot" sh -c "[ ! -e /sys/module/ummunot ] && [ ! -e /dev/ummunot ]"
bounded 120 /tmp/modules-load.log "systemd-modules-load (what boot runs)" \
	chroot "$root" /lib/systemd/systemd-modules-load
check "systemd-modules-load loaded ummunot from the packaged modules-load.d entry" sh -c \
	"[ -d /sys/module/ummunot ] && grep -qx ummunot '$root/usr/lib/modules-load.d/ummunot.conf'"
bounded 120 /tmp/settle.log "udevadm settle" "${UDEVADM[@]}" settle --timeout=100
check "after that load too, udevd gave /dev/ummunot mode 0666" mode_is_0666
bounded 120 /tmp/udev-test.log "udevadm test of the device's add event" \
	"${UDEVADM[@]}" test --action=add /sys/class/misc/ummunot
check "udev's own account: MODE 0666 from the packaged rule" \
	grep -Eq '/usr/lib/udev/rules.d/60-ummunot.rules:[0-9]+ MODE 0666' /tmp/udev-test.log

# ---- ummushim check, as an unprivileged user ----------------------------------------
rc=0
bounded 300 /tmp/check.log "ummushim check as nobody" "${AS_NOBODY[@]}" ummushim check || rc=$?
check "ummushim check exits 0 as an unprivileged user (got $rc)" test "$rc" = 0
check "check: module loaded" grep -Eq '^ok +module: +ummunot' /tmp/check.log
check "check: auto picks ummunot" grep -Eq '^ok +monitor: +auto picks ummunot' /tmp/check.log
check "check: the probe's second registration was a cache hit" \
	grep -Eq '^ok +probe: +on rxe0 the second registration was a cache hit \(monitor=ummunot\)' /tmp/check.log
check "check: the installed shim binds" \
	grep -Eq '^ok +interposition: +.* /usr/lib/[^/]+/libummushim.so$' /tmp/check.log
check "check reports no problem" sh -c "! grep -q '^problem' /tmp/check.log"

# ---- an unmodified verbs program under ummushim run ---------------------------------
not_linked_to_shim() {
	local libs
	libs=$(chroot "$root" ldd "$prog") || return 1
	! grep -q ummushim <<<"$libs"
}
check "$prog is not linked against the shim (ldd ran)" not_linked_to_shim
mkdir -p "$root/tmp/logs" && chmod 1777 "$root/tmp/logs"
if bounded 600 /tmp/run.log "$(basename "$prog") const $CYCLES under ummushim run, as nobody" \
	"${AS_NOBODY[@]}" ummushim run --stats --log /tmp/logs -- "$prog" const "$CYCLES"; then
	ok "$(basename "$prog") const $CYCLES under ummushim run"
else
	not_ok "$(basename "$prog") const $CYCLES under ummushim run"
fi
sed 's/^/# log: /' "$root"/tmp/logs/*
as_nobody ummushim stats /tmp/logs | sed 's/^/# /'
as_nobody ummushim stats --json /tmp/logs >/tmp/stats.json
check "under the installed shim: monitor ummunot, $CYCLES cycles on 2 real registrations, 0 stale" \
	python3 - /tmp/stats.json "$CYCLES" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))["total"]
f, cycles = t["fields"], int(sys.argv[2])
print("# total:", f)
assert t["texts"]["monitor"] == {"ummunot": 1}, t["texts"]
assert f["real_regs"] == 2 and f["hits"] == cycles - 1 and f["stale"] == 0, f
EOF
check "the statistics line itself says stale=0" sh -c "grep -h ' stats: ' '$root'/tmp/logs/* | grep -q ' stale=0 '"

# ---- purge ----------------------------------------------------------------------------
installed_files | sort -u >/tmp/installed
echo "# $(wc -l </tmp/installed) files and links the install added:"
sed 's/^/#   /' /tmp/installed
check "the install list holds the rule, the autoload entry, the shim, the command, the module" sh -c \
	"grep -qx /usr/lib/udev/rules.d/60-ummunot.rules /tmp/installed &&
grep -qx /usr/lib/modules-load.d/ummunot.conf /tmp/installed &&
grep -Eqx '/usr/lib/[^/]+/libummushim\\.so' /tmp/installed && grep -qx /usr/bin/ummushim /tmp/installed &&
grep -Eq '^/lib/modules/$kver/updates/dkms/ummunot\\.ko' /tmp/installed"
rm -rf "$root/tmp/logs"
if bounded 900 /tmp/purge.log "apt-get purge of the three packages" \
	chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get purge -y ummunot-dkms libummushim ummunot-dev; then
	ok "apt-get purge of the three packages"
else
	not_ok "apt-get purge of the three packages"
fi
bounded 120 /tmp/settle.log "udevadm settle" "${UDEVADM[@]}" settle --timeout=100
check "the module is unloaded, /dev/ummunot gone" sh -c "[ ! -e /sys/module/ummunot ] && [ ! -e /dev/ummunot ]"
# Purged means "not installed, no config files" (un/pn, or unknown to
# dpkg), not "rc".  One package per query: dpkg-query fails as a whole
# when any one of several is unknown.
purged_all() {
	local pkg state
	for pkg in ummunot-dkms libummushim ummunot-dev; do
		# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
		state=$(chroot "$root" dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) ||
			continue	# unknown to dpkg
		case $state in
		[up]n*) ;;
		*) echo "# $pkg: dpkg state '$state'"; return 1 ;;
		esac
	done
}
check "dpkg knows none of the packages (not even their config files)" purged_all
left=$(while IFS= read -r path; do [ -e "$root$path" ] || [ -L "$root$path" ] && echo "$path"; done </tmp/installed)
check "none of the $(wc -l </tmp/installed) installed files is left" test -z "$left"
[ -z "$left" ] || printf '# left: %s\n' "$left"
check "depmod's indexes no longer name ummunot (and exist)" sh -c "[ -f '$root'/lib/modules/'$kver'/modules.dep ] && ! grep -qsw ummunot '$root'/lib/modules/'$kver'/modules.dep '$root'/lib/modules/'$kver'/modules.alias"
# Before/after: every change the install and purge made to the root is in
# the overlay's upper layer.  Apart from package bookkeeping it must be as
# it was before the install (nothing added, nothing of the host deleted).
root_changes >/tmp/root-after
echo "# changes to the root after the purge (bookkeeping included):"
sed 's/^/#   /' /tmp/root-after
extra=$(comm -3 /tmp/root-before /tmp/root-after | sed 's/^\t/+ /; t; s/^/- /' | grep -Ev "^[-+] $BOOKKEEPING")
check "after the purge the root is as before the install, but for package bookkeeping" test -z "$extra"
[ -z "$extra" ] || printf '# differs (+ added, - gone): %s\n' "$extra"
check "nothing named *ummu* is left in the root" sh -c \
	"! grep -i ummu /tmp/root-after | grep -Ev '^. /var/lib/dpkg/|^. /var/log/'"

"${UDEVADM[@]}" control --exit 2>/dev/null
tap_done
