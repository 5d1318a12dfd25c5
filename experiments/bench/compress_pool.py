"""Threads vs processes in the CPU compressor pool, per codec: the measurement behind
`jaxsel.compress.pool.EXECUTOR`.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/compress_pool.py [--reps 3] [--out out/bench-pool.json]

Hardware: any; the table in the README was taken on the 2-core development VM (shared with other
jobs: the load average is printed, and the best of --reps interleaved runs is kept).
Runtime: about 2-4 minutes there.

Workload: C(x ⊕ y_j) for pool items of the embedded default pool against the 164 HumanEval
targets, each codec at its default level (plus lz4 level 0 / gzip level 9, ZIP-FIT's two
settings), all cores, through `CompressorPool.pair_sizes` with each executor (for zstd also
"batch", zstandard's own C-thread `multi_compress_to_buffer`); slow codecs get fewer pool items.
Reported: pairs/s (wall) and pairs per CPU second of the process and its workers.

Expected (what `EXECUTOR` records): the executors within noise of each other for lz4, gzip, zlib,
zstd, bz2 (threads kept: least CPU per pair, no start-up, no copies); processes ahead for lzma.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _proc import machine, tree_cpu

from jaxsel.compress import CompressorPool, get
from jaxsel.data.defaults import default_pool, humaneval_target

CASES = [
    ("lz4", 0, 2171),
    ("gzip", 9, 60),
    ("zlib", 6, 100),
    ("zstd", 3, 400),
    ("bz2", 9, 24),
    ("lzma", 6, 12),
]


def timed(fn):
    cpu0, t0 = tree_cpu(os.getpid()), time.perf_counter()
    fn()
    return time.perf_counter() - t0, tree_cpu(os.getpid()) - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="out/bench-pool.json")
    args = ap.parse_args()
    xs_all = [t.encode() for t in default_pool().texts]
    ys = [t.encode() for t in humaneval_target().texts]
    print(machine(), flush=True)
    results: dict = {}
    for _ in range(args.reps):
        for name, level, n in CASES:
            xs = xs_all[:: len(xs_all) // n][:n]
            codec = get(name, level)
            for ex in ("threads", "processes") + (("batch",) if name == "zstd" else ()):
                with CompressorPool(codec, ys, executor=ex) as pool:
                    pool.pair_sizes(xs[:2])  # workers started and warm
                    wall, cpu = timed(lambda p=pool, xs=xs: p.pair_sizes(xs))
                results.setdefault((name, level, ex, n), []).append((wall, cpu))
    rows = []
    print(f"{'codec':8s} {'executor':11s} {'pairs':>7s} {'pairs/s':>9s} {'pairs/CPU s':>11s}")
    for (name, level, ex, n), rs in results.items():
        wall, cpu = min(r[0] for r in rs), min(r[1] for r in rs)
        pairs = n * len(ys)
        rows.append(
            {
                "codec": f"{name}-{level}",
                "executor": ex,
                "pairs": pairs,
                "pairs_per_s": round(pairs / wall),
                "pairs_per_cpu_s": round(pairs / cpu),
            }
        )
        print(f"{name}-{level:<3d} {ex:11s} {pairs:7d} {pairs / wall:9.0f} {pairs / cpu:11.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
