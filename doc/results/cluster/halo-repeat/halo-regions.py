#!/usr/bin/env python3
"""What mpiwork's halo registers per rank under a region cache, computed.

Replays the halo's requests (scripts/bench-mpi/mpiwork_halo.c: the window's
offset per iteration from mpiwork_random(), the ghost rows received and the
edge rows sent) against a cache of page-aligned regions that never
invalidates (the halo's array stays mapped), and counts per iteration the
registrations and the rows they pin, for two merge rules:
  touching: a miss merges with cached regions it overlaps or touches (the
            shim before commit 61251ab)
  overlap:  only with those it overlaps (UCX's rcache; the shim since)
Rows are page-aligned and never overlap, so "overlap" registers each row alone.
Usage: halo-regions.py [ROWS DEPTH ITERS SEED]  (default: the full job's 64 2 10 1)
"""
import sys

M = (1 << 64) - 1


def mix(x):
    x ^= x >> 33
    x = (x * 0xff51afd7ed558ccd) & M
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & M
    return x ^ (x >> 33)


def seed_of(seed, it, frm, to, part):
    return mix(mix(mix(((seed << 32) ^ it) & M) ^ (((frm & 0xffffffff) << 32) | (to & 0xffffffff))) ^ part)


def random_of(seed, it, salt, n):
    return mix(seed_of(seed, it, -1, -1, salt)) % n


def replay(rows, depth, iters, seed, touching):
    window = max(rows // 2, 4 * depth)
    regions, out = [], []
    for it in range(iters):
        off = random_of(seed, it, 7, rows - window + 1)
        ghost, edge = (off, off + window - depth), (off + depth, off + window - 2 * depth)
        reqs = [ghost[d] + k for d in range(2) for k in range(depth)] + \
               [edge[d] + k for d in range(2) for k in range(depth)]
        n = pinned = 0
        for r in reqs:
            if any(a <= r < b for a, b in regions):
                continue            # a hit
            a, b = r, r + 1
            for x, y in regions:
                if (y > a and x < b) or (touching and (y == a or x == b)):
                    a, b = min(a, x), max(b, y)
            regions = [(x, y) for x, y in regions if not (x >= a and y <= b)]
            regions.append((a, b))
            n += 1
            pinned += b - a
        out.append((off, n, pinned))
    return out


def main():
    rows, depth, iters, seed = (int(x) for x in sys.argv[1:5]) if len(sys.argv) == 5 else (64, 2, 10, 1)
    old, new = replay(rows, depth, iters, seed, True), replay(rows, depth, iters, seed, False)
    print(f"halo: {rows} rows, depth {depth}, {iters} iterations, seed {seed}; per rank:")
    print("iteration  offset  registrations  rows pinned (touching)  rows pinned (overlap)")
    for it, (o, n) in enumerate(zip(old, new)):
        assert o[1] == n[1]
        print(f"{it:>9}  {o[0]:>6}  {o[1]:>13}  {o[2]:>22}  {n[2]:>21}")
    print(f"{'total':>9}  {'':>6}  {sum(x[1] for x in old):>13}  {sum(x[2] for x in old):>22}  "
          f"{sum(x[2] for x in new):>21}")


if __name__ == "__main__":
    main()
