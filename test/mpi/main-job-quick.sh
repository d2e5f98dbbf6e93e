#!/bin/bash
# The main job's quick mode as a test: scripts/main-job.sh --quick on the
# 2-node virtual cluster (Open MPI + UCX across the nodes, all workloads,
# every received word checked, (a) cache off and (b) under the shim).  It
# fails unless all data matched, the ranks ran on both nodes over rc_verbs
# on rxe0, the ping-pong's registrations fell to about one per buffer under
# the shim, both nodes' shims reported statistics, and no MR went stale
# (scripts/cluster/summarize.py --check-quick lists each check).
# Usage: main-job-quick.sh SRC_ROOT BUILD_DIR
set -eu -o pipefail

src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
results=$(mktemp -d /var/tmp/ummunot-main-quick.XXXXXX)
"$src/scripts/main-job.sh" --quick --no-install --no-build --build-dir "$build" \
	--results "$results"
# Passed: nothing to keep.
rm -rf "$results"
