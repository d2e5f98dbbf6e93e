#!/bin/bash
# Packaging test: the DKMS recipe builds ummunot.ko for the installed Debian
# kernel.  Lays out the source tree with scripts/dkms-source.sh in a private
# directory and runs `dkms add` + `dkms build` with private --dkmstree and
# --sourcetree, a private TMPDIR and a private signing key, so nothing under
# /var/lib/dkms, /usr/src or /lib/modules changes.
#
# Usage: dkms-build.sh SRC_ROOT [KEEP_DIR]
#   KEEP_DIR: copy the built module there (for the VM load test), as DKMS
#   left it: ummunot.ko, or ummunot.ko.xz / .ko.zst / .ko.gz where the
#   kernel's packaging compresses modules (Debian's 6.12 kernels do).
# The kernel is the one the VM tests boot (scripts/vm/kernel-version.sh,
# UMMUNOT_KVER).
set -eu -o pipefail

src=$(cd "$1" && pwd)
keep=${2:-}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

command -v dkms >/dev/null || fail "dkms is not installed"
kver=$("$src/scripts/vm/kernel-version.sh")
[ -e "/lib/modules/$kver/build/Makefile" ] ||
	fail "no kernel headers for $kver at /lib/modules/$kver/build (install linux-headers-amd64)"

work=$(mktemp -d "${TMPDIR:-/tmp}/ummunot-dkms.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src" "$work/tree" "$work/tmp"

tree=$("$src/scripts/dkms-source.sh" "$work/src")
version=${tree##*/ummunot-}
echo "DKMS source tree: $tree (version $version), kernel $kver"
for f in dkms.conf Kbuild Makefile ummunot.c include/ummunot.h; do
	[ -f "$tree/$f" ] || fail "dkms-source.sh did not install $f"
done
grep -qx "PACKAGE_VERSION=\"$version\"" "$tree/dkms.conf" ||
	fail "dkms.conf does not carry PACKAGE_VERSION=\"$version\""

# dkms signs what it builds; keep its key out of /var/lib/dkms.
run_dkms() {
	TMPDIR=$work/tmp mok_signing_key=$work/mok.key mok_certificate=$work/mok.pub \
		dkms --dkmstree "$work/tree" --sourcetree "$work/src" "$@"
}

run_dkms add -m ummunot -v "$version"
run_dkms build -m ummunot -v "$version" -k "$kver" ||
	{ cat "$work"/tree/ummunot/"$version"/build/make.log 2>/dev/null; fail "dkms build failed"; }
run_dkms status -m ummunot -v "$version" | tee "$work/status"
grep -q "ummunot/$version, $kver, .*: built" "$work/status" || fail "dkms status does not say built"

mapfile -t kos < <(find "$work/tree/ummunot/$version/$kver" -name 'ummunot.ko*' -type f)
[ ${#kos[@]} -gt 0 ] || fail "no ummunot.ko* in the DKMS tree"
[ ${#kos[@]} -eq 1 ] || fail "several modules in the DKMS tree: ${kos[*]}"
ko=${kos[0]}
case $ko in
*/ummunot.ko | */ummunot.ko.xz | */ummunot.ko.zst | */ummunot.ko.gz) ;;
*) fail "unexpected module file name $ko" ;;
esac
vermagic=$(modinfo -F vermagic "$ko")
case $vermagic in
"$kver "*) ;;
*) fail "module vermagic '$vermagic' does not match kernel $kver" ;;
esac
echo "built $ko: vermagic '$vermagic'"
if [ -n "$keep" ]; then
	mkdir -p "$keep"
	cp "$ko" "$keep/"
fi
echo "PASS: dkms add + build for $kver"
