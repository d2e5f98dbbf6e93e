#!/bin/sh
# Build ummunot.ko out of tree in a copy of the sources, so the source tree
# stays clean.  Kbuild cannot take a path with a space (M=, -I), and a clone
# may live in one ("/home/me/my projects/ummunot"): the build runs in a
# private directory under /tmp with its own copy of the ABI header.
# Usage: build-module.sh KDIR SRCDIR INCLUDEDIR OUTDIR
set -eu
kdir=$1 src=$2 inc=$3 out=$4
work=$(mktemp -d /tmp/ummunot-kbuild.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/obj" "$work/include" "$out"
cp "$src/ummunot.c" "$src/Kbuild" "$work/obj/"
cp "$inc/ummunot.h" "$work/include/"
make -s -C "$kdir" M="$work/obj" UMMUNOT_INCLUDE="$work/include" modules
cp "$work/obj/ummunot.ko" "$out/ummunot.ko"
