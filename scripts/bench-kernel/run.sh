#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
# Runs bench-kernel (munmap latency, REGISTER+UNREGISTER cost and the
# MADV_DONTNEED latency of a page under all registrations, against the
# number of registrations) in the VM against the freshly built module,
# stores its JSON and prints a table.  A benchmark, not a test.
#
# Usage: scripts/bench-kernel/run.sh [BUILD_DIR [OUT_JSON]] [-- BENCH_ARGS...]
#   BUILD_DIR  meson build directory (default: ./build of the source tree)
#   OUT_JSON   where to write the results (default: BUILD_DIR/bench-kernel.json)
#   BENCH_ARGS passed to bench-kernel, e.g. --reps 500 --max 100000
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$src/build
out=
args=()
if [ $# -gt 0 ] && [ "$1" != -- ]; then build=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" != -- ]; then out=$1; shift; fi
if [ $# -gt 0 ] && [ "$1" = -- ]; then shift; args=("$@"); fi
build=$(cd "$build" && pwd)
out=${out:-$build/bench-kernel.json}

bench=$build/test/kernel/bench-kernel
module=$build/kernel/ummunot.ko
for f in "$bench" "$module"; do
	[ -e "$f" ] || { echo "run.sh: $f missing: build first (ninja -C $build)" >&2; exit 1; }
done

# The guest sees the result directory at the same path; keep it off /tmp
# (a tmpfs inside the guest).
vmout=$(mktemp -d /var/tmp/bench-kernel.XXXXXX)
trap 'rm -rf "$vmout"' EXIT
# The guest's cwd is ours: make sure it is visible there (not under /tmp).
cd "$src"
"$src/scripts/vm/run-vm.sh" --module "$module" --timeout 3000 --out "$vmout" \
	-- "$bench" --json "$vmout/bench-kernel.json" "${args[@]}"
mkdir -p "$(dirname "$out")"
cp "$vmout/bench-kernel.json" "$out"
echo "results: $out"

python3 - "$out" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
print(f"kernel {data['kernel']}, {data['reps']} repetitions per cell: median (p10-p90), ns")
rows = [("registrations", "munmap, unrelated page", "REGISTER+UNREGISTER",
         "MADV_DONTNEED, page under all")]
for r in data["results"]:
    rows.append((f"{r['registrations']:,}",
                 f"{r['munmap_median_ns']} ({r['munmap_p10_ns']}-{r['munmap_p90_ns']})",
                 f"{r['reg_unreg_median_ns']} ({r['reg_unreg_p10_ns']}-{r['reg_unreg_p90_ns']})",
                 f"{r['dontneed_overlap_median_ns']} ({r['dontneed_overlap_p10_ns']}-{r['dontneed_overlap_p90_ns']})"))
w = [max(len(row[i]) for row in rows) for i in range(4)]
for k, row in enumerate(rows):
    print("| " + " | ".join(c.rjust(w[i]) for i, c in enumerate(row)) + " |")
    if k == 0:
        print("|" + "|".join("-" * (w[i] + 1) + ":" for i in range(4)) + "|")
PY
