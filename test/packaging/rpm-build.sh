#!/bin/bash
# Packaging test (host): rpmbuild builds the RPM split of
# packaging/rpm/ummunot.spec (ummunot-dkms, libummushim, ummunot-devel) from
# a source tarball of the tree, and each package holds what it should; the
# DKMS package's scriptlets add, build, install and remove the module.
# Installing the RPMs needs an RPM-based system and is not tested here.
# Build requirements are not checked (--nodeps): they are RPM package names
# and this is a Debian host.
# Usage: rpm-build.sh SRC_ROOT
set -eu -o pipefail

src=$(cd "$1" && pwd)
spec=$src/packaging/rpm/ummunot.spec
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

command -v rpmbuild >/dev/null || fail "rpmbuild is not installed (package rpm)"
version=$(sed -n 's/^Version:[[:space:]]*//p' "$spec")
meson_version=$(sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$src/meson.build" | head -n 1)
deb_version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
if [ -z "$version" ] || [ "$version" != "$meson_version" ] || [ "$version" != "$deb_version" ]; then
	fail "versions differ: spec '$version', meson.build '$meson_version', debian/changelog '$deb_version'"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ummunot-rpm.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/SOURCES" "$work/stage/ummunot-$version"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$src" ls-files -z --cached --others --exclude-standard |
		(cd "$src" && tar --null -T - -cf -) | tar -xf - -C "$work/stage/ummunot-$version"
else
	tar -C "$src" --exclude='./build*' -cf - . | tar -xf - -C "$work/stage/ummunot-$version"
fi
tar -C "$work/stage" -czf "$work/SOURCES/ummunot-$version.tar.gz" "ummunot-$version"

# No debuginfo subpackage: Debian lacks RHEL's find-debuginfo tooling.
nice -n 10 rpmbuild -bb --nodeps --define "_topdir $work" --define "debug_package %{nil}" \
	"$spec" >"$work/build.log" 2>&1 || { tail -n 60 "$work/build.log"; fail "rpmbuild failed"; }
arch=$(rpm --eval '%{_arch}')
libdir=$(rpm --eval '%{_libdir}')
libexecdir=$(rpm --eval '%{_libexecdir}')
rpms=$work/RPMS

# expect_files RPM PATH...: the package contains each PATH (man pages may be
# compressed: RHEL compresses them, Debian's rpmbuild does not).
expect_files() {
	local pkg=$1 path
	shift
	[ -f "$pkg" ] || fail "not built: ${pkg#"$rpms"/}"
	rpm -qlp "$pkg" 2>/dev/null >"$work/list"
	for path in "$@"; do
		grep -Eqx -- "$path(\.(gz|xz|bz2|zst))?" "$work/list" || fail "$(basename "$pkg") lacks $path"
	done
	echo "$(basename "$pkg"): $(wc -l <"$work/list") paths, including the $# expected"
}
dkms_rpm=$rpms/noarch/ummunot-dkms-$version-1.noarch.rpm
expect_files "$dkms_rpm" "/usr/src/ummunot-$version/dkms.conf" \
	"/usr/src/ummunot-$version/ummunot.c" "/usr/src/ummunot-$version/include/ummunot.h" \
	/usr/lib/udev/rules.d/60-ummunot.rules /usr/lib/modules-load.d/ummunot.conf \
	/usr/share/man/man4/ummunot.4
expect_files "$rpms/$arch/libummushim-$version-1.$arch.rpm" "$libdir/libummushim.so" \
	/usr/bin/ummushim "$libexecdir/ummushim/ummushim-probe" \
	/usr/share/man/man1/ummushim.1 /usr/share/man/man7/libummushim.7
expect_files "$rpms/$arch/ummunot-devel-$version-1.$arch.rpm" /usr/include/ummunot.h \
	"$libdir/pkgconfig/ummunot.pc"
rpm -qp --scripts "$dkms_rpm" 2>/dev/null >"$work/scripts"
for step in "dkms add" "dkms build" "dkms install" "dkms remove"; do
	grep -q "$step -m ummunot -v $version" "$work/scripts" || fail "ummunot-dkms's scriptlets lack '$step'"
done
rpm -qp --requires "$dkms_rpm" 2>/dev/null | grep -qx dkms || fail "ummunot-dkms does not require dkms"
grep -q "$libexecdir/ummushim/ummushim-probe" < <(rpm2cpio "$rpms/$arch/libummushim-$version-1.$arch.rpm" |
	cpio -i --quiet --to-stdout ./usr/bin/ummushim) ||
	fail "the packaged ummushim does not name the packaged probe"
echo "PASS: rpmbuild built ummunot-dkms, libummushim and ummunot-devel $version (not installed: no RPM system here)"
