#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Turn the raw outputs of the main job / bench-all into tables, JSON and
gnuplot data files.

  summarize.py main RAW_DIR RESULTS_DIR   (raw files of guest-main.sh)
  summarize.py all  RESULTS_DIR           (after bench-all.sh's parts ran)

Only the standard library: it runs wherever meson runs.
"""
import glob
import json
import os
import re
import sys


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def best_of_rounds(raw, stem, key):
    """Merge STEM-rN.json over rounds: per size, the round where KEY (a rate)
    was highest, i.e. the least disturbed one.  The same rule applies to every
    configuration.  Returns (merged run or None, number of rounds)."""
    runs = [load_json(p) for p in sorted(glob.glob(os.path.join(raw, stem + "-r*.json")))]
    runs = [r for r in runs if r]
    if not runs:
        return None, 0
    merged = dict(runs[0])
    best = {}
    for run in runs:
        for res in run["results"]:
            cur = best.get(res["size"])
            if cur is None or res[key] > cur[key]:
                best[res["size"]] = res
    merged["results"] = [best[s] for s in sorted(best)]
    # Data errors count from every round, not just the chosen one.
    errors = {}
    for run in runs:
        for res in run["results"]:
            errors[res["size"]] = errors.get(res["size"], 0) + res.get("errors", 0)
    merged["results"] = [dict(r, errors=errors[r["size"]]) if "errors" in r else r
                         for r in merged["results"]]
    return merged, len(runs)


def regcount_totals(raw, stem):
    """Sum of regcount lines written by the processes of one run."""
    tot = {}
    nproc = 0
    for path in glob.glob(os.path.join(raw, stem + ".*")):
        for line in read_text(path).splitlines():
            m = re.match(r"regcount-(\w+): pid=\d+ (.*)", line)
            if not m:
                continue
            nproc += 1
            for k, v in re.findall(r"(\w+)=(\d+)", m.group(2)):
                key = m.group(1) + "_" + k
                tot[key] = tot.get(key, 0) + int(v)
    return tot, nproc


# The shim's exit statistics: the numeric "key=value" pairs on its lines that
# mention hits (preload/stats.c: hits=.. misses=.. real_regs=.. reg_ns=..).
STAT_PAIR = re.compile(r"\b([A-Za-z_]+)=(-?[0-9]+(?:\.[0-9]+)?)\b")


def shim_stats(paths):
    tot = {}
    files = 0
    for path in paths:
        seen = False
        for line in read_text(path).splitlines():
            if "hit" not in line.lower():
                continue
            for k, v in STAT_PAIR.findall(line):
                key = k.lower()
                if key in ("pid", "host"):
                    continue
                val = float(v) if "." in v else int(v)
                tot[key] = tot.get(key, 0) + val
                seen = True
        files += seen
    return tot, files


def transport_lines(raw):
    lines = set()
    # UCX logs to stdout by default; look at both streams.
    for path in glob.glob(os.path.join(raw, "mpi-*.err")) + glob.glob(os.path.join(raw, "mpi-*.txt")):
        for line in read_text(path).splitlines():
            m = re.search(r"(ep_cfg\[\d+\]: .*)$", line)
            if m:
                lines.add(m.group(1).strip())
    return sorted(lines)


def fmt(v, spec="{:.1f}"):
    return "-" if v is None else spec.format(v)


def ratio(x, y):
    return None if not x or not y else x / y


def per_rank(pair):
    """'r0/r1' for a [rank0, rank1] count pair; None entries when uncounted."""
    if not pair or min(pair) < 0:
        return "-", None
    return "%d/%d" % (pair[0], pair[1]), (pair[0] + pair[1]) / 2.0


def mpi_table(raw):
    runs = {}
    rounds = 0
    for c in "abc":
        runs[c], n = best_of_rounds(raw, "mpi-" + c, "bw_MBps")
        rounds = max(rounds, n)
    sizes = sorted({r["size"] for run in runs.values() if run for r in run["results"]})
    rows = []
    for size in sizes:
        row = {"size": size}
        for c, run in runs.items():
            res = next((r for r in (run or {}).get("results", []) if r["size"] == size), None)
            if not res:
                continue
            row["bw_" + c] = res["bw_MBps"]
            # Bandwidth of the fastest iteration: the least disturbed by a
            # busy host, the same rule for every configuration.
            row["bwbest_" + c] = res["size"] / res["one_way_min_us"]
            row["lat_us_" + c] = res["one_way_med_us"]
            row["errors_" + c] = res["errors"]
            row["msgs"] = res["messages_per_rank"]
            row["regs_" + c] = res["real_regs"]
            row["app_" + c] = res["app_regs"]
            row["reg_us_" + c] = res["real_reg_us"]
        # Hits per rank under the shim: what UCX asked for minus what reached
        # libibverbs (the shim turned the rest into cache hits).
        if "app_b" in row and min(row["app_b"] + row["regs_b"]) >= 0:
            row["hits_b"] = [a - r for a, r in zip(row["app_b"], row["regs_b"])]
        rows.append(row)
    return runs, rows, rounds


def print_mpi_table(rows, rounds, out):
    hdr = ("%9s %6s | %7s %7s %7s | %5s %5s | %7s %7s %7s | %5s | %9s %9s %9s | %9s %9s"
           % ("size", "msgs", "bw_a", "bw_b", "bw_c", "b/a", "b/c",
              "best_a", "best_b", "best_c", "b/a",
              "regs_a", "regs_b", "regs_c", "app_b", "hits_b"))
    print("MPI ping-pong over Open MPI + UCX (rc_verbs on rxe0), 2 ranks; bandwidth in MB/s "
          "(10^6 B/s, size / median one-way time); regs = real ibv_reg_mr calls per rank "
          "(rank0/rank1) during that size; app_b = registrations UCX requested under the "
          "shim; hits_b = app_b - regs_b; best_* = MB/s of the fastest iteration "
          "(size / min one-way time); per size the best of %d round(s) "
          "(configurations run in turn a b c a b c ...)" % rounds, file=out)
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for r in rows:
        print("%9s %6s | %7s %7s %7s | %5s %5s | %7s %7s %7s | %5s | %9s %9s %9s | %9s %9s" % (
            human(r["size"]), r.get("msgs", "-"),
            fmt(r.get("bw_a")), fmt(r.get("bw_b")), fmt(r.get("bw_c")),
            fmt(ratio(r.get("bw_b"), r.get("bw_a")), "{:.2f}"),
            fmt(ratio(r.get("bw_b"), r.get("bw_c")), "{:.2f}"),
            fmt(r.get("bwbest_a")), fmt(r.get("bwbest_b")), fmt(r.get("bwbest_c")),
            fmt(ratio(r.get("bwbest_b"), r.get("bwbest_a")), "{:.2f}"),
            per_rank(r.get("regs_a"))[0], per_rank(r.get("regs_b"))[0],
            per_rank(r.get("regs_c"))[0], per_rank(r.get("app_b"))[0],
            per_rank(r.get("hits_b"))[0]), file=out)


def human(n):
    for unit, shift in (("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return "%d%s" % (n >> shift, unit)
    return str(n)


def perop_table(raw, out):
    plain, rounds = best_of_rounds(raw, "perop-plain", "ops_per_s")
    shim, _ = best_of_rounds(raw, "perop-shim", "ops_per_s")
    rows = []
    if not plain:
        return rows
    cnt_plain, _ = regcount_totals(raw, "regcount-perop-plain-r1")
    cnt_shim, _ = regcount_totals(raw, "regcount-perop-shim-r1")
    print("\nUnmodified verbs program, reg + RDMA write + dereg around every write "
          "(loopback RC on rxe0); ops/s, timing covers reg+post+poll+dereg; best of %d "
          "round(s)" % rounds, file=out)
    hdr = "%9s | %8s %8s | %10s %10s | %6s | %8s %8s" % (
        "size", "ops", "ops_shim", "ops/s", "ops/s shim", "ratio", "err", "err_shim")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for p in plain["results"]:
        s = next((x for x in (shim or {}).get("results", []) if x["size"] == p["size"]), {})
        row = {"size": p["size"], "ops_plain": p["ops"], "ops_per_s_plain": p["ops_per_s"],
               "errors_plain": p["errors"], "ops_shim": s.get("ops"),
               "ops_per_s_shim": s.get("ops_per_s"), "errors_shim": s.get("errors")}
        rows.append(row)
        print("%9s | %8s %8s | %10s %10s | %6s | %8s %8s" % (
            human(p["size"]), p["ops"], fmt(s.get("ops"), "{}"),
            fmt(p["ops_per_s"], "{:.0f}"), fmt(s.get("ops_per_s"), "{:.0f}"),
            fmt(ratio(s.get("ops_per_s"), p["ops_per_s"]), "{:.2f}"),
            p["errors"], fmt(s.get("errors"), "{}")), file=out)
    # The writes of round 1, which the registration counts below belong to.
    r1p = load_json(os.path.join(raw, "perop-plain-r1.json")) or {"results": []}
    r1s = load_json(os.path.join(raw, "perop-shim-r1.json")) or {"results": []}
    total_plain = sum(r["ops"] for r in r1p["results"])
    total_shim = sum(r["ops"] for r in r1s["results"])
    print("real ibv_reg_mr calls (round 1): plain %s for %d writes (+1 target buffer); "
          "under the shim %s for %d writes" % (
              cnt_plain.get("real_regs", "-"), total_plain,
              cnt_shim.get("real_regs", "-"), total_shim), file=out)
    return {"rows": rows, "real_regs_plain": cnt_plain.get("real_regs"),
            "real_regs_shim": cnt_shim.get("real_regs"),
            "writes_plain": total_plain, "writes_shim": total_shim}


def write_mpi_dat(rows, path):
    with open(path, "w") as f:
        f.write("# size_bytes bw_a bw_b bw_c (MB/s)\n")
        for r in rows:
            f.write("%d %s %s %s\n" % (r["size"], *(
                "%.3f" % r["bw_" + c] if "bw_" + c in r else "NaN" for c in "abc")))


def main_summary(raw, results):
    os.makedirs(results, exist_ok=True)
    out = sys.stdout
    runs, rows, rounds = mpi_table(raw)
    summary = {"machine": machine_note(), "transport": transport_lines(raw),
               "rounds": rounds}
    load = read_text(os.path.join(raw, "host-load.txt")).strip()
    if load:
        summary["host_load"] = load
        print("host load average (1/5/15 min) before and after the VM run: %s" %
              " -> ".join(load.splitlines()), file=out)
    extra = read_text(os.path.join(raw, "mpi-extra-env.txt")).strip()
    summary["ucx_env_all_configs"] = extra
    if rows:
        print("UCX settings for a, b and c alike: UCX_NET_DEVICES=rxe0:1 UCX_TLS=rc,self "
              "UCX_UD_ETH_DGID_CHECK=n %s; (a),(b) add UCX_IB_REG_METHODS=direct" % extra, file=out)
        print_mpi_table(rows, rounds, out)
        for c in "abc":
            run = runs.get(c)
            if run is None:
                continue
            tot, nproc = regcount_totals(raw, "regcount-mpi-%s-r1" % c)
            summary.setdefault("mpi_totals", {})[c] = {
                "regcount": tot, "processes": nproc,
                "seconds": read_text(os.path.join(raw, "mpi-%s-r1.seconds" % c)).strip()}
            print("(%s) round 1: real registrations %s, time in real reg %s ms, dereg %s ms "
                  "(both ranks, whole run incl. start-up), mpirun %s s" % (
                      c, tot.get("real_regs", "-"),
                      fmt(tot.get("real_reg_ns", 0) / 1e6), fmt(tot.get("real_dereg_ns", 0) / 1e6),
                      summary["mpi_totals"][c]["seconds"]), file=out)
        stats, nfiles = shim_stats(glob.glob(os.path.join(raw, "shim-mpi-b-r1.*.log")))
        summary["shim_stats_b"] = stats
        print("shim exit statistics, (b) round 1, summed over %d rank(s): %s" % (
            nfiles, ", ".join("%s=%s" % kv for kv in sorted(stats.items())) or "none found"),
            file=out)
        errors = sum(r.get("errors_" + c, 0) for r in rows for c in "abc")
        print("data check: %s" % ("every received word matched in a, b and c" if errors == 0
                                  else "%d WRONG WORDS" % errors), file=out)
        write_mpi_dat(rows, os.path.join(results, "mpi-bandwidth.dat"))
    summary["mpi"] = rows
    perop = perop_table(raw, out)
    if perop:
        stats, _ = shim_stats(glob.glob(os.path.join(raw, "shim-perop-shim-r1.*.log")))
        perop["shim_stats"] = stats
        print("shim exit statistics (perop): %s" % (
            ", ".join("%s=%s" % kv for kv in sorted(stats.items())) or "none found"), file=out)
        summary["perop"] = perop
    print("\nTransport UCX chose (UCX_LOG_LEVEL=info):", file=out)
    for line in summary["transport"] or ["NOT FOUND"]:
        print("  " + line, file=out)
    with open(os.path.join(results, "main.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


def machine_note():
    cpu = ""
    for line in read_text("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"host_cpu": cpu, "host_cpus": os.cpu_count(),
            "vm": "QEMU TCG (software emulation), 2 vCPUs, 2 GiB, Debian kernel, "
                  "Soft-RoCE rxe0 on a dummy netdev"}


def hitpath_rows(raw, label):
    rows = []
    for threads in (1, 2):
        plain = load_json(os.path.join(raw, "hitpath-%s-plain-%dt.json" % (label, threads)))
        shim = load_json(os.path.join(raw, "hitpath-%s-shim-%dt.json" % (label, threads)))
        if not plain or not shim:
            continue
        stats, _ = shim_stats(glob.glob(os.path.join(
            raw, "shim-hitpath-%s-shim-%dt.*.log" % (label, threads))))
        monitor = "?"
        for path in glob.glob(os.path.join(raw, "shim-hitpath-%s-shim-%dt.*.log" % (label, threads))):
            m = re.search(r"monitor=(\w+)", read_text(path))
            monitor = m.group(1) if m else monitor
        rows.append({"where": label, "threads": threads,
                     "plain_ns": plain["ns_per_pair_median"],
                     "shim_ns": shim["ns_per_pair_median"],
                     "shim_ns_min": shim["ns_per_pair_min"],
                     "shim_ns_max": shim["ns_per_pair_max"],
                     "shim_pairs_per_s_total": shim["pairs_per_s_total"],
                     "monitor": monitor, "hits": stats.get("hits", 0),
                     "misses": stats.get("misses", 0),
                     "passthrough": stats.get("passthrough", 0),
                     "method": shim["method"]})
    return rows


def print_hitpath(rows, out):
    if not rows:
        return
    print("\nShim hit path against the libibverbs test double (regbench threads, 64 KiB "
          "buffer per thread; %s).  'double' = the test double's own reg+dereg (a malloc "
          "and a free, no shim); 'shim hit' = the same calls under libummushim.so, where "
          "every pair after the first is a cache hit and never reaches the double." %
          rows[0]["method"], file=out)
    hdr = "%-5s %7s | %14s %14s %16s | %-8s %10s %10s" % (
        "where", "threads", "double ns", "shim hit ns", "shim hit pairs/s", "monitor",
        "hits", "passthru")
    print(hdr, file=out)
    print("-" * len(hdr), file=out)
    for r in rows:
        print("%-5s %7d | %14.1f %14.1f %16.0f | %-8s %10s %10s" % (
            r["where"], r["threads"], r["plain_ns"], r["shim_ns"],
            r["shim_pairs_per_s_total"], r["monitor"], r["hits"], r["passthrough"]),
            file=out)
    if any(r["monitor"] == "none" for r in rows):
        print("(monitor=none: the shim found no invalidation source there and passed every "
              "call through, so that row is the pass-through cost, not the hit path)", file=out)


def kernel_rows(results, out):
    data = load_json(os.path.join(results, "kernel.json"))
    if not data:
        return None
    print("\nModule: munmap of an unrelated page and REGISTER+UNREGISTER vs registrations on "
          "one fd (scripts/bench-kernel, in the VM, kernel %s, %s reps, median ns)" % (
              data.get("kernel"), data.get("reps")), file=out)
    print("%14s | %12s %12s" % ("registrations", "munmap ns", "reg+unreg ns"), file=out)
    with open(os.path.join(results, "kernel.dat"), "w") as f:
        f.write("# registrations munmap_median_ns reg_unreg_median_ns\n")
        for r in data.get("results", []):
            print("%14d | %12s %12s" % (r["registrations"], r["munmap_median_ns"],
                                        r["reg_unreg_median_ns"]), file=out)
            f.write("%d %s %s\n" % (max(r["registrations"], 1), r["munmap_median_ns"],
                                    r["reg_unreg_median_ns"]))
    return data


def all_summary(results):
    """bench-all: collect every part into bench-all.json, tables, plot data."""
    out = sys.stdout
    summary = {"machine": machine_note()}
    main = load_json(os.path.join(results, "main.json"))
    if main:
        summary["mpi"] = main.get("mpi")
        summary["perop"] = main.get("perop")
    raw = os.path.join(results, "raw")
    sweep = {m: best_of_rounds(raw, "regsweep-" + m, "pairs_per_s") for m in ("uncached", "hit")}
    if sweep["uncached"][0] and sweep["hit"][0]:
        hit = {r["size"]: r for r in sweep["hit"][0]["results"]}
        rows = []
        stats, _ = shim_stats(glob.glob(os.path.join(raw, "shim-regsweep-hit-r1.*.log")))
        print("\nreg+dereg pairs/s in the VM on rxe0, one reused buffer: uncached (no shim) vs "
              "cache hit (shim); rate = 1/median pair time; best of %d round(s)" %
              sweep["uncached"][1], file=out)
        print("%9s | %12s %12s | %10s %10s | %8s" % (
            "size", "pairs/s unc", "pairs/s hit", "us unc", "us hit", "hit/unc"), file=out)
        with open(os.path.join(results, "regsweep.dat"), "w") as f:
            f.write("# size_bytes pairs_per_s_uncached pairs_per_s_hit\n")
            for u in sweep["uncached"][0]["results"]:
                h = hit.get(u["size"])
                if not h:
                    continue
                rows.append({"size": u["size"], "uncached": u, "hit": h,
                             "ratio": h["pairs_per_s"] / u["pairs_per_s"]})
                f.write("%d %.1f %.1f\n" % (u["size"], u["pairs_per_s"], h["pairs_per_s"]))
                print("%9s | %12.0f %12.0f | %10.2f %10.3f | %8.1f" % (
                    human(u["size"]), u["pairs_per_s"], h["pairs_per_s"],
                    u["us_per_pair"], h["us_per_pair"], rows[-1]["ratio"]), file=out)
        print("shim statistics (hit run, round 1): %s" % (
            ", ".join("%s=%s" % kv for kv in sorted(stats.items())) or "none found"), file=out)
        summary["regsweep"] = {"rows": rows, "shim_stats": stats}
    hp = hitpath_rows(os.path.join(results, "raw-host"), "host") + hitpath_rows(raw, "vm")
    print_hitpath(hp, out)
    summary["hitpath"] = hp
    with open(os.path.join(results, "hitpath.dat"), "w") as f:
        f.write("# label plain_ns shim_ns\n")
        for r in hp:
            f.write('"%s %dT" %.2f %.2f\n' % (r["where"], r["threads"], r["plain_ns"], r["shim_ns"]))
    summary["kernel"] = kernel_rows(results, out)
    with open(os.path.join(results, "bench-all.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


def main(argv):
    if len(argv) == 4 and argv[1] == "main":
        return main_summary(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "all":
        return all_summary(argv[2])
    print(__doc__, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
