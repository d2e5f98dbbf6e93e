#!/bin/bash
# Packaging test: `meson install --destdir` puts libummushim.so, ummunot.h,
# the pkg-config file and the udev rule where users expect them, the header
# compiles in a user-space program found through pkg-config, and the
# installed shim exports the versioned verbs entry points it interposes.
#
# Usage: install.sh BUILD_DIR
set -eu -o pipefail

build=$(cd "$1" && pwd)
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# meson's own view of where things go.
introspect() { # KEY
	meson introspect --buildoptions "$build" |
		python3 -c "import json,sys; print(next(o['value'] for o in json.load(sys.stdin) if o['name']=='$1'))"
}
prefix=$(introspect prefix)
libdir=$(introspect libdir)
includedir=$(introspect includedir)
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
case $includedir in /*) ;; *) includedir=$prefix/$includedir ;; esac

dest=$(mktemp -d "${TMPDIR:-/tmp}/ummunot-install.XXXXXX")
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --no-rebuild --destdir "$dest" >"$dest.log" 2>&1 ||
	{ cat "$dest.log"; rm -f "$dest.log"; fail "meson install failed"; }
rm -f "$dest.log"
echo "installed into $dest (prefix $prefix):"
(cd "$dest" && find . -type f -o -type l | sort | sed 's/^/  /')

shim=$dest$libdir/libummushim.so
header=$dest$includedir/ummunot.h
pc=$dest$libdir/pkgconfig/ummunot.pc
rules=$dest$prefix/lib/udev/rules.d/60-ummunot.rules
for f in "$shim" "$header" "$pc" "$rules"; do
	[ -e "$f" ] || fail "not installed: ${f#"$dest"}"
done

# The shim must export each interposed entry point with libibverbs' version.
for sym in ibv_reg_mr@@IBVERBS_1.1 ibv_reg_mr_iova@@IBVERBS_1.7 \
	ibv_reg_mr_iova2@@IBVERBS_1.8 ibv_dereg_mr@@IBVERBS_1.1 \
	ibv_rereg_mr@@IBVERBS_1.1 ibv_dealloc_pd@@IBVERBS_1.1 \
	ibv_close_device@@IBVERBS_1.1; do
	# objdump -T shows a default version bare ("IBVERBS_1.1 ibv_reg_mr").
	objdump -T "$shim" | grep -Eq "[[:space:]]${sym##*@@}[[:space:]]+${sym%%@@*}\$" ||
		fail "installed libummushim.so does not export $sym"
done

# pkg-config finds the header directory; a user program compiles with it.
pcdir=$(dirname "$pc")
cflags=$(PKG_CONFIG_PATH=$pcdir PKG_CONFIG_SYSROOT_DIR=$dest pkg-config --cflags ummunot) ||
	fail "pkg-config cannot read ummunot.pc"
PKG_CONFIG_PATH=$pcdir pkg-config --modversion ummunot >/dev/null || fail "ummunot.pc has no version"
cat >"$dest/use.c" <<'C'
#include <stdio.h>
#include <ummunot.h>

int main(void)
{
	struct ummunot_register_ioctl r = { 0 };
	struct ummunot_event e = { 0 };

	printf("%s %zu %zu %lu\n", UMMUNOT_DEVICE_PATH, sizeof(r), sizeof(e),
	       (unsigned long)UMMUNOT_REGISTER_REGION);
	return 0;
}
C
# shellcheck disable=SC2086 # cflags is a list of compiler flags
cc -std=c11 -Wall -Wextra -Werror $cflags -o "$dest/use" "$dest/use.c" ||
	fail "a program including the installed ummunot.h does not compile (cflags: $cflags)"
out=$("$dest/use")
[ "${out%% *}" = /dev/ummunot ] || fail "unexpected output from the header test: $out"
echo "PASS: shim, header, pkg-config file and udev rule installed; header usable via pkg-config ($cflags)"
