#!/bin/bash
# Runs in the test VM (vm-deb-install.sh; Soft-RoCE up, no module loaded).
# Installs the built .deb files into a fresh root -- an overlay of the
# read-only host root with a tmpfs upper layer, the source tree hidden, this
# kernel the only one with a config in /boot -- and checks, as the issue
# asks: DKMS builds the module for the running kernel, the package loads it,
# the packaged udev rule gives /dev/ummunot mode 0666, `ummushim check`
# exits 0 as an unprivileged user, an unmodified verbs program under
# `ummushim run` caches with 0 stale; `apt-get purge` leaves nothing behind.
# Usage: guest-deb-install.sh DEB_DIR VERBS_PROGRAM SRC_ROOT
set -u

debs=$1
verbs_prog=$2
src=$3
kver=$(uname -r)
ov=/tmp/overlay
root=$ov/root
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

# An unprivileged user in the new root (ulimit -l is inherited: unlimited).
as_nobody() {
	in_root setpriv --reuid=65534 --regid=65534 --clear-groups \
		env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 "$@"
}

nobody_can_open() {
	as_nobody dd if=/dev/ummunot of=/dev/null count=0 status=none 2>/dev/null
}

# ---- the fresh root ---------------------------------------------------------------
mkdir -p "$ov/upper" "$ov/work" "$root"
mount -t tmpfs -o size=1200m tmpfs "$ov/upper" || bail "tmpfs for the overlay"
mkdir -p "$ov/upper/u" "$ov/upper/w"
mount -t overlay overlay -o "lowerdir=/,upperdir=$ov/upper/u,workdir=$ov/upper/w" "$root" ||
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
mount -t tmpfs tmpfs "$root$src" || bail "hiding $src"
mount -t tmpfs tmpfs "$root/boot" || bail "tmpfs /boot"
cp "/boot/config-$kver" "$root/boot/"
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
echo "# fresh root at $root (overlay over /), kernel $kver, $(ls "$debs")"

check "the source tree is not visible in the new root" test ! -e "$root$src/meson.build"
check "nothing of ummunot is installed in the new root yet" sh -c \
	"! ls '$root'/usr/src/ummunot-* '$root'/usr/lib/*/libummushim.so '$root'/usr/local/lib/*/libummushim.so \
'$root'/usr/bin/ummushim '$root'/var/lib/dkms/ummunot >/dev/null 2>&1"
check "the module is not loaded before the install" test ! -e /sys/module/ummunot

# ---- install ------------------------------------------------------------------------
# Without udevd, as in this VM, dpkg runs the maintainer scripts alone.
echo "# $(date +%T) dpkg -i (DKMS builds the module: minutes under emulation)"
if in_root env DEBIAN_FRONTEND=noninteractive dpkg -i "${deb_files[@]}" 2>&1 | tee /tmp/dpkg.log |
	sed -u 's/^/# dpkg: /'; [ "${PIPESTATUS[0]}" = 0 ]; then
	ok "dpkg -i of the three packages"
else
	not_ok "dpkg -i of the three packages"
	find "$root/var/lib/dkms" -name make.log -exec sed 's/^/# make.log: /' {} + 2>/dev/null
	bail "installation failed"
fi
echo "# $(date +%T) installed"
status=$(in_root dkms status -m ummunot)
echo "# dkms status: $status"
check "DKMS built and installed ummunot for $kver" grep -q "^ummunot/.*, $kver, .*: installed" <<<"$status"
ko=$(in_root modinfo -k "$kver" -n ummunot 2>/dev/null)
check "the module is in /lib/modules/$kver/updates/dkms ($ko)" \
	grep -q "^/lib/modules/$kver/updates/dkms/ummunot.ko" <<<"$ko"
check "its vermagic is $kver" sh -c "chroot '$root' modinfo -k '$kver' -F vermagic ummunot | grep -q '^$kver '"
check "the package loaded the module" test -d /sys/module/ummunot
check "/dev/ummunot exists" test -c /dev/ummunot

# udevd does not run in this VM: have udevadm apply the packaged rules to
# the device's add event, as udevd would when the module loads.
if nobody_can_open; then
	not_ok "before the rule applies, an unprivileged user cannot open /dev/ummunot"
else
	ok "before the rule applies, an unprivileged user cannot open /dev/ummunot"
fi
in_root udevadm test --action=add /sys/class/misc/ummunot >/tmp/udev.log 2>&1
check "udev applies MODE 0666 from the packaged /usr/lib/udev/rules.d/60-ummunot.rules" \
	grep -Eq '/usr/lib/udev/rules.d/60-ummunot.rules:[0-9]+ MODE 0666' /tmp/udev.log
check "/dev/ummunot has mode 0666 ($(stat -c %a /dev/ummunot))" test "$(stat -c %a /dev/ummunot)" = 666
check "an unprivileged user opens /dev/ummunot" nobody_can_open

# ---- ummushim check, as an unprivileged user ----------------------------------------
rc=0
as_nobody ummushim check >/tmp/check.log 2>&1 || rc=$?
sed 's/^/# /' /tmp/check.log
check "ummushim check exits 0 as an unprivileged user (got $rc)" test "$rc" = 0
check "check: module loaded" grep -Eq '^ok +module: +ummunot' /tmp/check.log
check "check: auto picks ummunot" grep -Eq '^ok +monitor: +auto picks ummunot' /tmp/check.log
check "check: the probe's second registration was a cache hit" \
	grep -Eq '^ok +probe: +on rxe0 the second registration was a cache hit \(monitor=ummunot\)' /tmp/check.log
check "check: the installed shim binds" \
	grep -Eq '^ok +interposition: +.* /usr/lib/[^/]+/libummushim.so$' /tmp/check.log

# ---- an unmodified verbs program under ummushim run ---------------------------------
check "$prog is not linked against the shim" sh -c "! chroot '$root' ldd '$prog' | grep -q ummushim"
mkdir -p "$root/tmp/logs" && chmod 1777 "$root/tmp/logs"
if as_nobody ummushim run --stats --log /tmp/logs -- "$prog" const "$CYCLES" >/tmp/run.log 2>&1; then
	ok "$(basename "$prog") const $CYCLES under ummushim run"
else
	not_ok "$(basename "$prog") const $CYCLES under ummushim run"
fi
sed 's/^/# /' /tmp/run.log "$root"/tmp/logs/*
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

echo "# $(date +%T) purging"
# ---- purge ----------------------------------------------------------------------------
if in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y ummunot-dkms libummushim \
	ummunot-dev >/tmp/purge.log 2>&1; then
	ok "apt-get purge of the three packages"
else
	not_ok "apt-get purge of the three packages"
	sed 's/^/# /' /tmp/purge.log
fi
check "the module is unloaded" test ! -e /sys/module/ummunot
check "dpkg knows none of the packages" sh -c \
	"! chroot '$root' dpkg-query -W -f='\${db:Status-Abbrev} \${Package}\n' ummunot-dkms libummushim ummunot-dev 2>/dev/null | grep -q '^.i'"
# Everything the install changed is in the overlay's upper layer: nothing
# named after the project may remain there (whiteouts are deletions).
left=$(find "$ov/upper/u" -iname '*ummu*' ! -type c ! -path "*$test_dir*" ! -path '*/tmp/*' 2>/dev/null)
check "nothing named *ummu* is left in the root" test -z "$left"
[ -z "$left" ] || printf '# left: %s\n' "$left"
for path in /usr/lib/udev/rules.d/60-ummunot.rules /usr/lib/modules-load.d/ummunot.conf \
	/usr/bin/ummushim /usr/include/ummunot.h /var/lib/dkms/ummunot; do
	check "removed: $path" test ! -e "$root$path"
done
check "removed: the module file" sh -c "! ls '$root'/lib/modules/'$kver'/updates/dkms/ummunot.ko* 2>/dev/null"
check "removed: the shim" sh -c "! ls '$root'/usr/lib/*/libummushim.so 2>/dev/null"
check "removed: the module source" sh -c "! ls -d '$root'/usr/src/ummunot-* 2>/dev/null"

echo "1..$n"
[ "$failed" -eq 0 ]
