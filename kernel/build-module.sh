#!/bin/sh
# Build ummunot.ko out of tree in a copy of the sources, so the source tree
# stays clean.  Usage: build-module.sh KDIR SRCDIR INCLUDEDIR OUTDIR
set -eu
kdir=$1 src=$2 inc=$3 out=$4
mkdir -p "$out/obj"
cp "$src/ummunot.c" "$src/Kbuild" "$out/obj/"
make -s -C "$kdir" M="$(cd "$out/obj" && pwd)" \
	UMMUNOT_INCLUDE="$(cd "$inc" && pwd)" modules
cp "$out/obj/ummunot.ko" "$out/ummunot.ko"
