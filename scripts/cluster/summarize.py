#!/usr/bin/env python3
"""Tables, JSON and plot data of a main-job run on the virtual cluster.

Usage: summarize.py RESULT_DIR OUT_DIR
       summarize.py --check-quick RESULT_DIR ITERS   (the quick main job's checks)
       summarize.py --soak RESULT_DIR                (a soak's totals and verdict)
RESULT_DIR is cluster.sh's --out: node1/raw/STACK-CONFIG.txt hold mpiwork's
RESULT lines, nodeN/shim-STACK-CONFIG.HOST.PID.log the shim's logs of every
node.  Writes OUT_DIR/cluster.json, cluster.txt (also printed) and
cluster-bandwidth.dat (for plot-cluster.gp).  Also usable as a module
(load()) by the quick test.
"""
import glob
import json
import os
import re
import sys
from collections import defaultdict

STACKS = {"ompi-ucx": "Open MPI + UCX", "mpich-ucx": "MPICH + UCX",
          "ompi-ofi": "Open MPI + libfabric (verbs;ofi_rxm)"}
STAT_FIELDS = ("hits", "misses", "real_regs", "invalidations", "stale", "evictions")
STATS_RE = re.compile(r"ummushim\[([^:\]]+):(\d+)\] stats: (.*)")


def shim_stats(result_dir, tag):
    """Per-host sums of the shim's exit statistics for one run."""
    per_host = defaultdict(lambda: defaultdict(int))
    for path in glob.glob(os.path.join(result_dir, "node*", f"shim-{tag}.*.log")):
        with open(path, errors="replace") as log:
            for line in log:
                m = STATS_RE.search(line)
                if not m:
                    continue
                fields = dict(kv.split("=", 1) for kv in m.group(3).split() if "=" in kv)
                host = per_host[m.group(1)]
                host["processes"] += 1
                for f in STAT_FIELDS:
                    if fields.get(f, "").isdigit():
                        host[f] += int(fields[f])
    return {h: dict(v) for h, v in sorted(per_host.items())}


def transports(raw, tag):
    """UCX's endpoint configurations as logged (transport per lane)."""
    found = set()
    for ext in ("txt", "err"):
        path = os.path.join(raw, f"{tag}.{ext}")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                found.update(m.group(1) for m in re.finditer(r"ep_cfg\[\d+\]: (.*)", f.read()))
    return sorted(found)


def load(result_dir):
    """All runs: {tag: {"results": {workload: RESULT}, "shim": ..., ...}}."""
    raw = os.path.join(result_dir, "node1", "raw")
    runs = {}
    for path in sorted(glob.glob(os.path.join(raw, "*.txt"))):
        tag = os.path.basename(path)[:-4]
        m = re.fullmatch(r"(.+)-(a|b\d+|c)", tag)
        if not m or m.group(1) not in STACKS:
            continue
        results = {}
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("RESULT "):
                    r = json.loads(line[7:])
                    results[r["workload"]] = r
        variant = ""
        if os.path.exists(os.path.join(raw, f"{tag}.variant")):
            with open(os.path.join(raw, f"{tag}.variant")) as f:
                variant = f.read().strip()
        runs[tag] = {"stack": m.group(1), "config": m.group(2), "variant": variant,
                     "results": results, "shim": shim_stats(result_dir, tag),
                     "transports": transports(raw, tag)}
    return runs


def fmt_list(values):
    return "/".join("-" if v < 0 else str(v) for v in values)


def table(runs, stack, workload):
    lines = []
    rows = [(t, r) for t, r in runs.items() if r["stack"] == stack and workload in r["results"]]
    if not rows:
        return lines
    base = {r["config"]: r["results"][workload] for _, r in rows}
    lines.append(f"{STACKS[stack]}, {workload}:")
    lines.append(f"  {'config':<28} {'time s':>9} {'MB/s':>8} {'b/a':>5} {'b/c':>5}  "
                 f"{'real regs per rank':<22} {'hits':>6} {'inval':>6} {'stale':>5} errors")
    for tag, run in rows:
        r = run["results"][workload]
        cfg = run["config"]
        name = {"a": "(a) cache off", "c": "(c) MPI's own cache"}.get(cfg, f"(b) shim {run['variant']}".strip())
        ratio = lambda other: (f"{r['MBps'] / base[other]['MBps']:.2f}"
                               if cfg.startswith("b") and other in base and base[other]["MBps"] else "")
        hits = "" if min(r["app_regs"]) < 0 else str(sum(r["app_regs"]) - sum(r["real_regs"]))
        inval = stale = ""
        if run["shim"]:
            inval = str(sum(h.get("invalidations", 0) for h in run["shim"].values()))
            stale = str(sum(h.get("stale", 0) for h in run["shim"].values()))
        lines.append(f"  {name:<28} {r['seconds']:>9.3f} {r['MBps']:>8.2f} {ratio('a'):>5} {ratio('c'):>5}  "
                     f"{fmt_list(r['real_regs']):<22} {hits:>6} {inval:>6} {stale:>5} {r['errors']}")
    return lines


def check_quick(result_dir, iters):
    """The quick main job's assertions; prints ok/FAIL lines, returns failures."""
    runs = load(result_dir)
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    workloads = ("pingpong", "alltoall", "allreduce", "halo", "recycle")
    for cfg in ("a", "b1"):
        run = runs.get(f"ompi-ucx-{cfg}")
        check(run is not None, f"({cfg}) ran")
        if not run:
            continue
        for w in workloads:
            r = run["results"].get(w)
            check(r is not None and r["iters"] == iters and r["messages"] > 0,
                  f"({cfg}) {w}: {iters} iterations, messages received")
            if r:
                check(r["errors"] == 0, f"({cfg}) {w}: every received word matched ({r['bytes']} bytes)")
                check(len(set(r["hosts"])) >= 2, f"({cfg}) {w}: ranks on {sorted(set(r['hosts']))}")
        check(any("rc_verbs/rxe0" in t for t in run["transports"]),
              f"({cfg}) UCX used rc_verbs on rxe0: {run['transports']}")
    a, b = runs.get("ompi-ucx-a"), runs.get("ompi-ucx-b1")
    if a and b and "pingpong" in a["results"] and "pingpong" in b["results"]:
        ranks = a["results"]["pingpong"]["ranks"]
        for rank in (0, ranks // 2):
            ra = a["results"]["pingpong"]["real_regs"][rank]
            rb = b["results"]["pingpong"]["real_regs"][rank]
            # Two buffers per rank (send, receive); (a) registers them per message.
            check(ra >= iters, f"pingpong rank {rank}: (a) registers per message ({ra} for {iters} iterations)")
            check(0 <= rb <= 3, f"pingpong rank {rank}: (b) about one registration per buffer ({rb} for 2 buffers)")
    if b:
        hosts = b["shim"]
        check(len(hosts) >= 2, f"(b) shim statistics from {len(hosts)} hosts: {sorted(hosts)}")
        procs = sum(h.get("processes", 0) for h in hosts.values())
        ranks = next(iter(b["results"].values()))["ranks"] if b["results"] else -1
        check(procs == ranks, f"(b) one statistics line per rank ({procs} of {ranks})")
        check(sum(h.get("hits", 0) for h in hosts.values()) > 0, "(b) the shim had cache hits")
        check(sum(h.get("invalidations", 0) for h in hosts.values()) > 0,
              "(b) the shim saw invalidations (recycled buffers)")
        check(all(h.get("stale", 0) == 0 for h in hosts.values()), "(b) no stale MR")
    print(f"quick main job: {len(failures)} checks failed")
    return len(failures)


def soak(result_dir):
    """A soak's totals; returns 1 when anything was lost or wrong."""
    runs = load(result_dir)
    run = runs.get("ompi-ucx-b1")
    if not run or not run["results"]:
        print("soak: no results")
        return 1
    bad = 0
    for w, r in run["results"].items():
        print(f"soak {w}: {r['seconds']:.0f} s in MPI over {r['iters']} iterations, "
              f"{r['messages']} messages, {r['bytes']} bytes checked, {r['errors']} errors, hosts {sorted(set(r['hosts']))}")
        bad += r["errors"] != 0
    tot = defaultdict(int)
    for h in run["shim"].values():
        for k, v in h.items():
            tot[k] += v
    print("soak shim totals: " + " ".join(f"{k}={tot[k]}" for k in ("processes",) + STAT_FIELDS))
    bad += tot["stale"] != 0 or tot["processes"] == 0 or len(run["results"]) != 2
    print("soak: " + ("PASS" if not bad else "FAIL"))
    return 1 if bad else 0


def main():
    if sys.argv[1] == "--check-quick":
        sys.exit(1 if check_quick(sys.argv[2], int(sys.argv[3])) else 0)
    if sys.argv[1] == "--soak":
        sys.exit(soak(sys.argv[2]))
    result_dir, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    runs = load(result_dir)
    if not runs:
        sys.exit("summarize.py: no runs found under " + result_dir)
    workloads = []
    for run in runs.values():
        for w in run["results"]:
            if w not in workloads:
                workloads.append(w)
    text = ["MB/s = bytes received and checked by all ranks / slowest rank's time in MPI calls;",
            "real regs = ibv_reg_mr calls reaching libibverbs per rank; hits = asked - real (b);",
            "inval/stale: the shim's exit statistics for the whole (b) run (all workloads), summed",
            "over all ranks of all nodes.", ""]
    for stack in STACKS:
        for w in workloads:
            t = table(runs, stack, w)
            if t:
                text += t + [""]
    text.append("shim statistics per host (b runs):")
    for tag, run in runs.items():
        for host, s in run["shim"].items():
            text.append(f"  {tag:<16} {host:<8} " + " ".join(f"{k}={v}" for k, v in s.items()))
    text.append("UCX transports: " + "; ".join(sorted({t for r in runs.values() for t in r["transports"]})))
    print("\n".join(text))
    with open(os.path.join(out, "cluster.txt"), "w") as f:
        f.write("\n".join(text) + "\n")
    with open(os.path.join(out, "cluster.json"), "w") as f:
        json.dump(runs, f, indent=1)
    with open(os.path.join(out, "cluster-bandwidth.dat"), "w") as f:
        tags = sorted(runs)
        f.write("workload " + " ".join(tags) + "\n")
        for w in workloads:
            vals = [str(runs[t]["results"].get(w, {}).get("MBps", "NaN")) for t in tags]
            f.write(f"{w} " + " ".join(vals) + "\n")


if __name__ == "__main__":
    main()
