#!/bin/sh
# Lay out the DKMS source tree of the ummunot module:
#   DEST/ummunot-<version>/{dkms.conf,Kbuild,Makefile,ummunot.c,include/ummunot.h}
# with @VERSION@ in kernel/dkms.conf replaced by the version.  For a system
# install DEST is /usr/src; then `dkms add/build/install -m ummunot -v <version>`.
#
# Usage: scripts/dkms-source.sh DEST [VERSION]
#   VERSION defaults to the project version in the top meson.build.
# Prints the directory it created.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)

die() {
	echo "dkms-source.sh: $*" >&2
	exit 1
}

project_version() {
	sed -n "s/^ *version *: *'\([^']*\)'.*/\1/p" "$ROOT/meson.build" | head -n 1
}

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	die "usage: dkms-source.sh DEST [VERSION]"
fi
dest=$1
version=${2:-$(project_version)}
[ -n "$version" ] || die "cannot find the project version in $ROOT/meson.build"
case $version in
*[!A-Za-z0-9._+~-]*) die "bad version string: $version" ;;
esac

tree=$dest/ummunot-$version
mkdir -p "$tree/include"
cp "$ROOT/kernel/Kbuild" "$ROOT/kernel/Makefile" "$ROOT/kernel/ummunot.c" "$tree/"
cp "$ROOT/include/ummunot.h" "$tree/include/"
sed "s/@VERSION@/$version/g" "$ROOT/kernel/dkms.conf" >"$tree/dkms.conf"
grep -q '@VERSION@' "$tree/dkms.conf" && die "placeholder left in $tree/dkms.conf"
printf '%s\n' "$tree"
