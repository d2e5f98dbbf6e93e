#!/usr/bin/env python3
"""Tables, JSON and plot data of a main-job run on the virtual cluster.

Usage: summarize.py --ummushim CMD RESULT_DIR OUT_DIR
       summarize.py --ummushim CMD --check-quick RESULT_DIR ITERS   (the quick main job's checks)
       summarize.py --ummushim CMD --soak RESULT_DIR                (a soak's totals and verdict)
       summarize.py --ummushim CMD --repeat RESULT_DIR OUT_DIR      (repeated configurations, main-job.sh --repeat)
RESULT_DIR is cluster.sh's --out: node1/raw/STACK-CONFIG.txt hold mpiwork's
RESULT lines, node1/raw/STACK-CONFIG.nic the nodes' NIC counters around the
run, node1/raw/STACK-CONFIG.rxe all of rxe0's counters around it,
nodeN/shim-STACK-CONFIG.HOST.PID.log the shim's logs of every node.
CONFIG is a, bN or c, with -rK for the Kth repetition of main-job.sh --repeat.
The shim's statistics of each (b) run are summed per host and in total by
the project's own `ummushim stats` (CMD: the command, e.g. the build tree's
tools/ummushim-uninstalled).  Writes OUT_DIR/cluster.json, cluster.txt (also
printed), shim-stats/STACK-CONFIG.{txt,json} (ummushim stats' table and
JSON) and, per stack, cluster-STACK.dat (for plot-cluster.gp).  --repeat
writes OUT_DIR/repeat.txt (also printed) and repeat.json: per stack and
workload each repetition's time per configuration, the medians, the median
of the per-repetition ratios of each (b) column to (c), registrations, and
per run the slowest timed sections and rxe0's error counters.
"""
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict

STACKS = {"ompi-ucx": "Open MPI + UCX", "mpich-ucx": "MPICH + UCX",
          "ompi-ofi": "Open MPI + libfabric (verbs;ofi_rxm)"}
STAT_FIELDS = ("hits", "misses", "real_regs", "invalidations", "stale", "evictions")
CONFIG_ORDER = {"a": 0, "c": 99}


def shim_logs(result_dir, tag):
    return sorted(glob.glob(os.path.join(result_dir, "node*", f"shim-{tag}.*.log")))


def ummushim_stats(cmd, logs, as_json):
    """`ummushim stats [--json] LOGS`: its output, or None when it found nothing."""
    argv = [sys.executable, cmd, "stats"] + (["--json"] if as_json else []) + logs
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return None
    return done.stdout


def shim_stats(cmd, result_dir, tag):
    """The (b) run's statistics from `ummushim stats --json`: (per host, total, table)."""
    logs = shim_logs(result_dir, tag)
    if not logs:
        return {}, {}, ""
    if not cmd:
        sys.exit("summarize.py: --ummushim is needed to read the shim's statistics")
    out = ummushim_stats(cmd, logs, True)
    if out is None:
        return {}, {}, ""
    parsed = json.loads(out)

    def flat(agg):
        return dict(agg["fields"], processes=agg["processes"])
    hosts = {h: flat(a) for h, a in sorted(parsed["hosts"].items())}
    return hosts, flat(parsed["total"]), ummushim_stats(cmd, logs, False) or ""


def nic_deltas(raw, tag):
    """Per host: rxe0 packets sent/received and eth0 bytes out/in during the run."""
    path = os.path.join(raw, f"{tag}.nic")
    seen = defaultdict(dict)
    if os.path.exists(path):
        # "WHEN HOST N N N N", or the same spread over lines "WHEN HOST N", "WHEN N"...
        host = None
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) < 2:
                    continue
                when, numbers = w[0], w[1:]
                if not numbers[0].isdigit():
                    host, numbers = numbers[0], numbers[1:]
                    seen[host][when] = []
                if host is not None and when in seen[host]:
                    seen[host][when] += [int(x) for x in numbers if x.isdigit()]
    deltas = {}
    for host, when in sorted(seen.items()):
        if len(when.get("before", ())) == 4 and len(when.get("after", ())) == 4:
            d = [b - a for a, b in zip(when["before"], when["after"])]
            deltas[host] = dict(zip(("rxe_sent_pkts", "rxe_rcvd_pkts", "eth_tx_bytes", "eth_rx_bytes"), d))
    return deltas


def rxe_deltas(raw, tag):
    """Per host: every rxe0 counter's change during the run (STACK-CONFIG.rxe)."""
    path = os.path.join(raw, f"{tag}.rxe")
    seen = defaultdict(dict)
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) < 3:
                    continue
                seen[w[1]][w[0]] = {k: int(v) for k, _, v in (x.partition("=") for x in w[2:])
                                    if v.isdigit()}
    return {host: {k: when["after"][k] - when["before"].get(k, 0) for k in when["after"]}
            for host, when in sorted(seen.items()) if "before" in when and "after" in when}


REGCOUNT_RE = re.compile(r"regcount-(real|app): pid=\d+ regs=(\d+) reg_fail=\d+ deregs=(\d+) "
                         r"reg_ns=(\d+) dereg_ns=(\d+)(?: reg_bytes=(\d+))?")


def err_matches(raw, tag, pattern):
    """Every match of @pattern in a run's stderr (where the counting preloads write)."""
    path = os.path.join(raw, f"{tag}.err")
    if not os.path.exists(path):
        return []
    with open(path, errors="replace") as f:
        return list(pattern.finditer(f.read()))


def regcount_totals(raw, tag):
    """The counting preloads' exit lines: per layer, processes and sums over all ranks."""
    totals = {}
    for m in err_matches(raw, tag, REGCOUNT_RE):
        t = totals.setdefault(m.group(1), {"processes": 0, "regs": 0, "deregs": 0,
                                           "reg_ns": 0, "dereg_ns": 0})
        t["processes"] += 1
        for key, value in zip(("regs", "deregs", "reg_ns", "dereg_ns", "reg_bytes"), m.groups()[1:]):
            if value is not None:	# reg_bytes: not in older runs' lines
                t[key] = t.get(key, 0) + int(value)
    return totals


TRACE_RE = re.compile(r"regcount-real-trace: (?:pid=\d+ )?op=(reg|dereg) start_ns=\d+ ns=(\d+) bytes=(\d+)")
# Per-call classes of the trace summary: the workloads' buffers, and the
# pools of tens of MiB that MPI_Init registers.
SMALL_CALL = 1 << 20


def regcount_trace(raw, tag):
    """REGCOUNT_TRACE=1 lines below the shim: {"reg"|"dereg": [(ns, bytes)]}, {} without."""
    calls = {}
    for m in err_matches(raw, tag, TRACE_RE):
        calls.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(3))))
    return calls


def trace_lines(runs, mine, configs, reps):
    """Per configuration: the real calls of at most SMALL_CALL bytes, per repetition."""
    if not any(r["trace"] for r in mine):
        return []
    text = [f"  per call below the shim (REGCOUNT_TRACE), calls of at most {SMALL_CALL >> 20} MiB, all ranks:"
            " n, median ms, sum ms of ibv_reg_mr; sum ms of ibv_dereg_mr; and the larger calls' n and sum ms"]
    for cfg in configs:
        for k in reps:
            r = next((x for x in mine if x["config"] == cfg and x["rep"] == k), None)
            if not r or not r["trace"]:
                continue
            small = sorted(ns for ns, b in r["trace"].get("reg", []) if b <= SMALL_CALL)
            large = [ns for ns, b in r["trace"].get("reg", []) if b > SMALL_CALL]
            dereg = sum(ns for ns, b in r["trace"].get("dereg", []) if b <= SMALL_CALL)
            med = statistics.median(small) / 1e6 if small else float("nan")
            text.append(f"    {cfg:<4} #{k:<3} reg n={len(small):<4} median {med:6.2f} sum {sum(small) / 1e6:8.1f}"
                        f"   dereg sum {dereg / 1e6:7.1f}   larger: n={len(large)} sum {sum(large) / 1e6:8.1f}")
    return text


def transports(raw, tag):
    """UCX's endpoint configurations as logged (transport per lane)."""
    found = set()
    for ext in ("txt", "err"):
        path = os.path.join(raw, f"{tag}.{ext}")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                found.update(m.group(1) for m in re.finditer(r"ep_cfg\[\d+\]: (.*)", f.read()))
    return sorted(found)


def load(result_dir, ummushim=None):
    """All runs: {tag: {"results": {workload: RESULT}, "shim": ..., ...}}."""
    raw = os.path.join(result_dir, "node1", "raw")
    runs = {}
    for path in sorted(glob.glob(os.path.join(raw, "*.txt"))):
        tag = os.path.basename(path)[:-4]
        m = re.fullmatch(r"(.+)-(a|b\d+|c)(?:-r(\d+))?", tag)
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
        hosts, total, shim_table = shim_stats(ummushim, result_dir, tag)
        seconds = None
        if os.path.exists(os.path.join(raw, f"{tag}.seconds")):
            with open(os.path.join(raw, f"{tag}.seconds")) as f:
                seconds = int(f.read().strip() or 0)
        start = os.path.getmtime(path)
        if os.path.exists(os.path.join(raw, f"{tag}.start")):
            with open(os.path.join(raw, f"{tag}.start")) as f:
                start = int(f.read().strip() or 0)
        runs[tag] = {"stack": m.group(1), "config": m.group(2), "variant": variant, "start": start,
                     "rep": int(m.group(3)) if m.group(3) else None, "rxe": rxe_deltas(raw, tag),
                     "results": results, "shim": hosts, "shim_total": total,
                     "shim_table": shim_table, "nic": nic_deltas(raw, tag),
                     "mpirun_seconds": seconds, "regcount": regcount_totals(raw, tag),
                     "trace": regcount_trace(raw, tag),
                     "transports": transports(raw, tag)}
    order = lambda t: (list(STACKS).index(runs[t]["stack"]),
                       CONFIG_ORDER.get(runs[t]["config"], int(runs[t]["config"][1:]) if runs[t]["config"][1:].isdigit() else 50),
                       runs[t]["rep"] or 0)
    return {t: runs[t] for t in sorted(runs, key=order)}


def fmt_list(values):
    return "/".join("-" if v < 0 else str(v) for v in values)


def config_name(run, with_rep=True):
    cfg = run["config"]
    name = {"a": "(a) cache off", "c": "(c) MPI's own cache"}.get(cfg, f"(b) shim {run['variant']}".strip())
    return f"{name} #{run['rep']}" if with_rep and run.get("rep") else name


def mean(values):
    return sum(values) / len(values) if values else 0.0


def table(runs, stack, workload):
    """Per workload: a row per configuration."""
    lines = []
    rows = [(t, r) for t, r in runs.items() if r["stack"] == stack and workload in r["results"]]
    if not rows:
        return lines
    base = {(r["config"], r["rep"]): r["results"][workload] for _, r in rows}
    lines.append(f"{STACKS[stack]}, {workload}:")
    lines.append(f"  {'config':<30} {'time s':>8} {'MB/s':>8} {'b/a':>5} {'b/c':>5}  "
                 f"{'real regs per rank':<22} {'mean':>6} {'hits':>6} errors")
    for tag, run in rows:
        r = run["results"][workload]
        cfg = run["config"]

        def ratio(other):
            o = base.get((other, run["rep"]))
            if not cfg.startswith("b") or not o or not o["MBps"]:
                return ""
            return f"{r['MBps'] / o['MBps']:.2f}"
        hits = "" if min(r["app_regs"]) < 0 else str(sum(r["app_regs"]) - sum(r["real_regs"]))
        lines.append(f"  {config_name(run):<30} {r['seconds']:>8.3f} {r['MBps']:>8.2f} {ratio('a'):>5} {ratio('c'):>5}  "
                     f"{fmt_list(r['real_regs']):<22} {mean(r['real_regs']):>6.1f} {hits:>6} {r['errors']}")
    return lines


def run_table(runs, stack):
    """Per run (all workloads): the shim's sums from `ummushim stats`, the NIC's counters."""
    rows = [r for r in runs.values() if r["stack"] == stack]
    if not rows:
        return []
    lines = [f"{STACKS[stack]}, whole runs (all workloads; shim columns: ummushim stats, total of all ranks):",
             f"  {'config':<30} {'mpirun s':>8} {'procs':>5} {'hits':>6} {'misses':>6} {'real_regs':>9} "
             f"{'reg_ms':>8} {'inval':>6} {'stale':>5}  {'real reg+dereg':>15}  "
             f"rxe0 pkts out (per node)  eth0 MB out (per node)"]
    for run in rows:
        t = run["shim_total"]
        shim = (f"{t.get('processes', 0):>5} {t.get('hits', 0):>6} {t.get('misses', 0):>6} "
                f"{t.get('real_regs', 0):>9} {t.get('reg_ns', 0) / 1e6:>8.1f} {t.get('invalidations', 0):>6} "
                f"{t.get('stale', 0):>5}") if t else f"{'':>5} {'':>6} {'':>6} {'':>9} {'':>8} {'':>6} {'':>5}"
        nic = run["nic"]
        pkts = "/".join(str(n["rxe_sent_pkts"]) for n in nic.values()) or "-"
        mb = "/".join(f"{n['eth_tx_bytes'] / 1e6:.1f}" for n in nic.values()) or "-"
        secs = "" if run["mpirun_seconds"] is None else str(run["mpirun_seconds"])
        real = run["regcount"].get("real")
        cost = ""
        if real and real["regs"]:
            cost = f"{(real['reg_ns'] + real['dereg_ns']) / real['regs'] / 1e6:.1f} ms/reg"
        lines.append(f"  {config_name(run):<30} {secs:>8} {shim}  {cost:>15}  {pkts:<24} {mb}")
    return lines


def check_quick(result_dir, iters, ummushim):
    """The quick main job's assertions; prints ok/FAIL lines, returns failures."""
    runs = load(result_dir, ummushim)
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


def soak(result_dir, ummushim):
    """A soak's totals; returns 1 when anything was lost or wrong."""
    runs = load(result_dir, ummushim)
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


# rxe0 counters that count traffic, not trouble.
RXE_TRAFFIC = ("sent_pkts", "rcvd_pkts", "rdma_sends", "rdma_recvs")


def ratio_row(label, pairs):
    """A row of per-repetition (b)/(c) ratios from (b, c) values (None: missing), and their median."""
    ratios = [b / c if b is not None and c else None for b, c in pairs]
    got = [x for x in ratios if x is not None]
    med = statistics.median(got) if got else float("nan")
    line = (f"  {label:<32}" + "".join(f"{x:>8.2f}" if x is not None else f"{'-':>8}" for x in ratios)
            + f"{med:>8.2f}   (b) faster in {sum(x < 1 for x in got)} of {len(got)}")
    return line, {"ratios": ratios, "median": med}


def repeat_summary(result_dir, out, ummushim):
    """main-job.sh --repeat: each repetition's times, medians, per-repetition ratios."""
    runs = load(result_dir, ummushim)
    text = ["Repeated configurations within one boot per stack (odd repetitions in the order given,",
            "even ones reversed); s = the slowest rank's seconds inside MPI calls for the workload;",
            "regs = real ibv_reg_mr calls per rank during the workload (mean over ranks);",
            "reg ms = time in libibverbs' ibv_reg_mr + ibv_dereg_mr per rank (libregcount-real.so),",
            "ms/reg the same per real registration, of which reg the ibv_reg_mr part, KiB/reg their",
            "mean size (medians over the repetitions) -- these four over the WHOLE mpirun, start-up",
            "included, where a few pools of tens of MiB registered in MPI_Init weigh most; the",
            "workload's own calls: run with --mpi-env REGCOUNT_TRACE=1 (one line per call);",
            "ratio = (b)'s s / (c)'s s of the same repetition; iteration ratio = the same for the",
            "median iteration (the slowest rank's time of each iteration), which a single",
            "retransmission stall of Soft-RoCE does not move.", ""]
    report, bad = {}, 0
    for stack in STACKS:
        mine = [r for r in runs.values() if r["stack"] == stack and r["rep"]]
        workloads = sorted({w for r in mine for w in r["results"]})
        configs = sorted({r["config"] for r in mine}, key=lambda c: CONFIG_ORDER.get(c, 50 + int(c[1:] or 0)))
        reps = sorted({r["rep"] for r in mine})
        for w in workloads:
            cell = {(r["config"], r["rep"]): r for r in mine if w in r["results"]}
            text.append(f"{STACKS[stack]}, {w}, {len(reps)} repetitions:")
            text.append(f"  {'config':<32}" + "".join(f"{'#' + str(k):>8}" for k in reps)
                        + f"{'median':>8} {'regs':>6} {'reg ms':>7} {'ms/reg':>6} {'reg':>5} {'KiB/reg':>7}")
            entry = report.setdefault(stack, {}).setdefault(w, {})
            for cfg in configs:
                times = [cell[(cfg, k)]["results"][w]["seconds"] if (cfg, k) in cell else None for k in reps]
                got = [t for t in times if t is not None]
                regs = [mean(cell[(cfg, k)]["results"][w]["real_regs"]) for k in reps if (cfg, k) in cell]
                reg_ms, per_reg, reg_only, kib = [], [], [], []
                for k in reps:
                    real = cell[(cfg, k)]["regcount"].get("real") if (cfg, k) in cell else None
                    if real and real["processes"] and real["regs"]:
                        reg_ms.append((real["reg_ns"] + real["dereg_ns"]) / real["processes"] / 1e6)
                        per_reg.append((real["reg_ns"] + real["dereg_ns"]) / real["regs"] / 1e6)
                        reg_only.append(real["reg_ns"] / real["regs"] / 1e6)
                        if "reg_bytes" in real:
                            kib.append(real["reg_bytes"] / real["regs"] / 1024)
                bad += len(got) != len(reps) or any(cell[(cfg, k)]["results"][w]["errors"] for k in reps
                                                    if (cfg, k) in cell)
                name = config_name(next(r for (c, _), r in cell.items() if c == cfg), False) if got else cfg
                med = statistics.median(got) if got else float("nan")
                rg = (f"{min(regs):.0f}" if regs and min(regs) == max(regs) else
                      f"{min(regs):.0f}-{max(regs):.0f}" if regs else "-")
                text.append(f"  {name:<32}" + "".join(f"{t:>8.2f}" if t is not None else f"{'-':>8}" for t in times)
                            + f"{med:>8.2f} {rg:>6} {statistics.median(reg_ms) if reg_ms else float('nan'):>7.0f}"
                            + f" {statistics.median(per_reg) if per_reg else float('nan'):>6.1f}"
                            + f" {statistics.median(reg_only) if reg_only else float('nan'):>5.1f}"
                            + f" {statistics.median(kib) if kib else float('nan'):>7.0f}")
                entry[cfg] = {"name": name, "seconds": times, "median_s": med, "regs_per_rank": regs,
                              "reg_dereg_ms_per_rank": reg_ms, "reg_dereg_ms_per_reg": per_reg,
                              "reg_ms_per_reg": reg_only, "kib_per_reg": kib}
            def seconds(c, k):
                return cell[(c, k)]["results"][w]["seconds"] if (c, k) in cell else None

            def mid_iteration(c, k):
                secs = cell[(c, k)]["results"][w].get("sections_s") if (c, k) in cell else None
                return statistics.median(secs) if secs else None
            for cfg in configs:
                if not cfg.startswith("b") or "c" not in configs:
                    continue
                for label, key, value in ((f"ratio {cfg}/c", f"{cfg}/c", seconds),
                                          (f"iteration ratio {cfg}/c", f"{cfg}/c iteration", mid_iteration)):
                    line, entry[key] = ratio_row(label, [(value(cfg, k), value("c", k)) for k in reps])
                    text.append(line)
            text.extend(trace_lines(runs, [r for r in mine if w in r["results"]], configs, reps))
            text.append("")
        if not mine:
            continue
        text.append(f"{STACKS[stack]}, each run in the order it ran: mpirun s, the slowest rank's time of each "
                    "timed section (one per iteration): max / median, rxe0 counters other than traffic "
                    "that changed (node1/node2), the shim's hits/misses/real regs (all ranks)")
        for tag, r in sorted(((t, r) for t, r in runs.items() if r in mine), key=lambda tr: tr[1]["start"]):
            secs = [x for res in r["results"].values() for x in res.get("sections_s", [])]
            sec = f"{max(secs):6.2f} / {statistics.median(secs):5.2f}" if secs else f"{'-':>14}"
            names = sorted({k for d in r["rxe"].values() for k, v in d.items() if v and k not in RXE_TRAFFIC})
            rxe = " ".join(k + "=" + "/".join(str(d.get(k, 0)) for d in r["rxe"].values()) for k in names) or "none"
            t = r["shim_total"]
            shim = f"{t.get('hits', 0)}/{t.get('misses', 0)}/{t.get('real_regs', 0)}" if t else "-"
            when = time.strftime("%H:%M:%S", time.gmtime(r["start"]))
            text.append(f"  {tag:<22} {when} {r['mpirun_seconds'] or 0:>5}  {sec}  rxe: {rxe}  shim: {shim}")
        text.append("")
    print("\n".join(text))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "repeat.txt"), "w") as f:
        f.write("\n".join(text) + "\n")
    with open(os.path.join(out, "repeat.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 1 if bad or not report else 0


def main():
    args = sys.argv[1:]
    ummushim = None
    if len(args) >= 2 and args[0] == "--ummushim":
        ummushim, args = args[1], args[2:]
    if args and args[0] == "--check-quick" and len(args) == 3:
        sys.exit(1 if check_quick(args[1], int(args[2]), ummushim) else 0)
    if args and args[0] == "--soak" and len(args) == 2:
        sys.exit(soak(args[1], ummushim))
    if args and args[0] == "--repeat" and len(args) == 3:
        sys.exit(repeat_summary(args[1], args[2], ummushim))
    if len(args) != 2 or args[0].startswith("-"):
        sys.exit(__doc__)
    result_dir, out = args
    os.makedirs(out, exist_ok=True)
    runs = load(result_dir, ummushim)
    if not runs:
        sys.exit("summarize.py: no runs found under " + result_dir)
    workloads = []
    for run in runs.values():
        for w in run["results"]:
            if w not in workloads:
                workloads.append(w)
    text = ["MB/s = bytes received and checked by all ranks / slowest rank's time in MPI calls;",
            "b/a, b/c = (b)'s MB/s over (a)'s, (c)'s (the same bytes: the inverse time ratio);",
            "real regs = ibv_reg_mr calls reaching libibverbs per rank (rank 0/1 on node1, ...);",
            "hits = registrations asked for - real ones, all ranks (the counting preloads);",
            "real reg+dereg = time in libibverbs' ibv_reg_mr + ibv_dereg_mr per real registration,",
            "whole run, all ranks (libregcount-real.so's timers).", ""]
    for stack in STACKS:
        for w in workloads:
            t = table(runs, stack, w)
            if t:
                text += t + [""]
        t = run_table(runs, stack)
        if t:
            text += t + [""]
    text.append("shim statistics per (b) run (ummushim stats):")
    stats_dir = os.path.join(out, "shim-stats")
    os.makedirs(stats_dir, exist_ok=True)
    for tag, run in runs.items():
        if not run["shim_table"]:
            continue
        text.append(f"  {tag} ({run['variant']}):")
        text += ["    " + line for line in run["shim_table"].rstrip().splitlines()]
        with open(os.path.join(stats_dir, f"{tag}.txt"), "w") as f:
            f.write(run["shim_table"])
        with open(os.path.join(stats_dir, f"{tag}.json"), "w") as f:
            json.dump({"hosts": run["shim"], "total": run["shim_total"]}, f, indent=1, sort_keys=True)
    text.append("UCX transports: " + "; ".join(sorted({t for r in runs.values() for t in r["transports"]})))
    print("\n".join(text))
    with open(os.path.join(out, "cluster.txt"), "w") as f:
        f.write("\n".join(text) + "\n")
    with open(os.path.join(out, "cluster.json"), "w") as f:
        json.dump(runs, f, indent=1)
    # Per stack: MB/s and mean real registrations per rank, workload x configuration.
    for stack in STACKS:
        tags = [t for t, r in runs.items() if r["stack"] == stack]
        if not tags:
            continue
        with open(os.path.join(out, f"cluster-{stack}.dat"), "w") as f:
            f.write("workload " + " ".join(config_name(runs[t]).replace(" ", "_") for t in tags)
                    + " " + " ".join("regs:" + runs[t]["config"] for t in tags) + "\n")
            for w in workloads:
                mbps = [str(runs[t]["results"].get(w, {}).get("MBps", "NaN")) for t in tags]
                regs = [f"{mean(runs[t]['results'][w]['real_regs']):.2f}" if w in runs[t]["results"] else "NaN"
                        for t in tags]
                f.write(f"{w} " + " ".join(mbps + regs) + "\n")


if __name__ == "__main__":
    main()
