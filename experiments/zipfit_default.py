"""ZIP-FIT on the embedded default: how well each method finds the python documents of a mixed
pool, given HumanEval as the target, and how much of that is document length.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/zipfit_default.py [--out out/zipfit-default.json]

Hardware: any CPU; about 1-2 minutes on the 2-core development VM (gzip-9 is most of it).

Methods: zipfit with lz4 (level 0, the default) and gzip-9; the same two with `debias="length"`;
zipfit-fast (zstd-9 conditional compression, not the paper's score) plain and length-debiased;
DSIR (top-K and Gumbel top-K, seed 0); random (seed 0).
Reported for each: precision@K of the python domain (K = 100, 200, 400; base rate = its share of
the pool), precision by length bucket (`jaxsel.evaluate.precision_by_bucket`, K = 200: quartiles
of byte length, precision among the bucket's own top items), Spearman(score, length), and for
the zipfit variants their Spearman agreement and top-K overlap with exact lz4 zipfit.

Expected: exact zipfit ranks short documents first (Spearman with length about -0.9), so its
precision@K is modest; the length-debiased score roughly doubles it; zipfit-fast agrees only
loosely with exact NCD (it is a different quantity) yet finds python well; DSIR is strong here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxsel import methods
from jaxsel.data.defaults import default_pool, humaneval_target
from jaxsel.evaluate import precision_at_k, precision_by_bucket, spearman
from jaxsel.methods import dsir, zipfit

KS = (100, 200, 400)
DOMAIN = "python"

RUNS = {
    "zipfit lz4-0": ("zipfit", zipfit.Config("lz4", 0)),
    "zipfit gzip-9": ("zipfit", zipfit.Config("gzip", 9)),
    "zipfit lz4-0 +debias": ("zipfit", zipfit.Config("lz4", 0, debias="length")),
    "zipfit gzip-9 +debias": ("zipfit", zipfit.Config("gzip", 9, debias="length")),
    "zipfit-fast zstd-9": ("zipfit-fast", zipfit.FastConfig()),
    "zipfit-fast +debias": ("zipfit-fast", zipfit.FastConfig(debias="length")),
    "dsir": ("dsir", dsir.Config()),
    "dsir gumbel": ("dsir", dsir.Config(resample="gumbel")),
    "random": ("random", None),
}


def overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    return len(set(a[:k].tolist()) & set(b[:k].tolist())) / k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/zipfit-default.json")
    args = ap.parse_args()
    pool, target = default_pool(), humaneval_target()
    domains = [str(d) for d in pool.field("domain")]
    lengths = pool.nbytes()
    base = domains.count(DOMAIN) / len(domains)
    print(
        f"pool {len(pool)} docs ({domains.count(DOMAIN)} {DOMAIN}, base rate {base:.3f}), "
        f"target {len(target)} HumanEval problems"
    )
    results, rankings = {}, {}
    for name, (method, cfg) in RUNS.items():
        m = methods.get(method)
        t0 = time.perf_counter()
        s = m.score(pool, target, cfg if cfg is not None else m.config_cls())
        secs = time.perf_counter() - t0
        r = s.ranking()
        rankings[name] = r
        ranked = [domains[i] for i in r]
        results[name] = {
            "seconds": round(secs, 2),
            "precision": {k: precision_at_k(ranked, DOMAIN, k) for k in KS},
            "by_length": precision_by_bucket(r, domains, lengths, DOMAIN, 200),
            "spearman_length": spearman(s.values, lengths),
            "values": s.values,
        }
    exact = results["zipfit lz4-0"]
    for name, res in results.items():
        if name.startswith("zipfit"):
            res["spearman_vs_exact_lz4"] = spearman(res["values"], exact["values"])
            res["overlap_vs_exact_lz4"] = {
                k: overlap(rankings[name], rankings["zipfit lz4-0"], k) for k in KS
            }

    print("\n| method | P@100 | P@200 | P@400 | Spearman(score, length) | time s |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        p = r["precision"]
        print(
            f"| {name} | {p[100]:.3f} | {p[200]:.3f} | {p[400]:.3f} | "
            f"{r['spearman_length']:+.3f} | {r['seconds']:.1f} |"
        )
    print(f"\nbase rate {base:.3f}")

    buckets = results["random"]["by_length"]
    print(
        "\nprecision by length bucket (K = 200 split by the bucket's share of python docs; "
        "'sel' = how many of the overall top 200 fall in the bucket)\n"
    )
    print("| method | " + " | ".join(f"{b['bytes']} B" for b in buckets) + " |")
    print("|---|" + "---|" * len(buckets))
    for name, r in results.items():
        cells = [f"{b['precision']:.2f} (sel {b['selected_of_top_k']})" for b in r["by_length"]]
        print(f"| {name} | " + " | ".join(cells) + " |")

    print("\nagreement with exact zipfit lz4-0\n")
    print("| method | Spearman | top-100 overlap | top-200 overlap | top-400 overlap |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        if "spearman_vs_exact_lz4" in r and name != "zipfit lz4-0":
            o = r["overlap_vs_exact_lz4"]
            print(
                f"| {name} | {r['spearman_vs_exact_lz4']:+.3f} | {o[100]:.2f} | {o[200]:.2f} "
                f"| {o[400]:.2f} |"
            )
    for r in results.values():
        del r["values"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"base_rate": base, "results": results}, indent=2))


if __name__ == "__main__":
    main()
