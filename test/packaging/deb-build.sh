#!/bin/bash
# Packaging test: builds the Debian packages from a clean copy of the tree
# with the standard tools (dpkg-buildpackage -us -uc -b: debhelper, dh-dkms),
# checks what each package holds, and runs lintian, which must report no
# error and no warning (every remaining tag is overridden with a reason in
# debian/*.lintian-overrides).
#
# Usage: deb-build.sh SRC_ROOT [KEEP_DIR]
#   KEEP_DIR: copy the built .deb files there (for the VM install test).
set -eu -o pipefail

src=$(cd "$1" && pwd)
keep=${2:-}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

for tool in dpkg-buildpackage dh dh_dkms lintian; do
	command -v "$tool" >/dev/null || fail "$tool is not installed (debhelper, dh-dkms, lintian)"
done
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
work=$(mktemp -d "${TMPDIR:-/tmp}/ummunot-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/ummunot-$version

# A clean copy: the tracked files (and new, not ignored ones), no build dirs.
mkdir "$tree"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$src" ls-files -z --cached --others --exclude-standard |
		(cd "$src" && tar --null -T - -cf -) | tar -xf - -C "$tree"
else
	tar -C "$src" --exclude='./build*' -cf - . | tar -xf - -C "$tree"
fi

echo "building the packages of ummunot $version in $tree"
(cd "$tree" && nice -n 10 dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 ||
	{ tail -n 60 "$work/build.log"; fail "dpkg-buildpackage failed"; }
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
dkms_deb=$work/ummunot-dkms_${version}_all.deb
shim_deb=$work/libummushim_${version}_$arch.deb
dev_deb=$work/ummunot-dev_${version}_$arch.deb
for deb in "$dkms_deb" "$shim_deb" "$dev_deb"; do
	[ -f "$deb" ] || fail "not built: $(basename "$deb")"
done

# expect_files DEB PATH...: the package contains each PATH.
expect_files() {
	local deb=$1 path
	shift
	dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' >"$work/list"
	for path in "$@"; do
		grep -qx "$path" "$work/list" || fail "$(basename "$deb") lacks $path"
	done
	echo "$(basename "$deb"): $(grep -vc '/$' "$work/list") files, including the $# expected"
}
expect_files "$dkms_deb" "/usr/src/ummunot-$version/dkms.conf" \
	"/usr/src/ummunot-$version/ummunot.c" "/usr/src/ummunot-$version/Kbuild" \
	"/usr/src/ummunot-$version/Makefile" "/usr/src/ummunot-$version/include/ummunot.h" \
	/usr/lib/udev/rules.d/60-ummunot.rules /usr/lib/modules-load.d/ummunot.conf \
	/usr/share/man/man4/ummunot.4.gz
expect_files "$shim_deb" "/usr/lib/$multiarch/libummushim.so" /usr/bin/ummushim \
	/usr/libexec/ummushim/ummushim-probe /usr/share/man/man1/ummushim.1.gz \
	/usr/share/man/man7/libummushim.7.gz
expect_files "$dev_deb" /usr/include/ummunot.h "/usr/lib/$multiarch/pkgconfig/ummunot.pc"
dpkg-deb -f "$dkms_deb" Depends | grep -q 'dkms' || fail "ummunot-dkms does not depend on dkms"
dpkg-deb --ctrl-tarfile "$dkms_deb" | tar -xOf - ./postinst | grep -q 'dkms' ||
	fail "ummunot-dkms's postinst does not run DKMS"
dpkg-deb --fsys-tarfile "$dkms_deb" | tar -xOf - "./usr/src/ummunot-$version/dkms.conf" |
	grep -qx "PACKAGE_VERSION=\"$version\"" || fail "dkms.conf does not carry version $version"

# lintian: show everything, fail on errors and warnings.
changes=$work/ummunot_${version}_$arch.changes
lintian --info --display-info --pedantic --fail-on error,warning "$changes" >"$work/lintian.log" 2>&1 ||
	{ cat "$work/lintian.log"; fail "lintian reports errors or warnings"; }
sed 's/^/lintian: /' "$work/lintian.log"
if [ -n "$keep" ]; then
	mkdir -p "$keep"
	cp "$dkms_deb" "$shim_deb" "$dev_deb" "$keep/"
fi
echo "PASS: ummunot-dkms, libummushim and ummunot-dev $version built; lintian reports no error and no warning"
