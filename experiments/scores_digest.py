"""Digest of every method's scores on a fixed slice of the embedded default: a check that a
refactoring left every method's numbers bit-identical.

    python experiments/scores_digest.py --out digests.json          # before the change
    python experiments/scores_digest.py --check digests.json        # after: exit 1 on a change

Pool: every 11th document of the embedded default (198 documents, all domains); target: the
first 20 HumanEval problems. LAMDAS trains its prefix for one epoch (the check is of the
plumbing, not the method's quality). About 4 minutes on a 2-core CPU, most of it the LM methods.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import numpy as np

import jaxsel
from jaxsel.data.defaults import default_pool, humaneval_target

CASES = {  # name -> (method, options)
    "zipfit": ("zipfit", {}),
    "zipfit-gzip": ("zipfit", {"compressor": "gzip"}),
    "zipfit-debias": ("zipfit", {"debias": "length"}),
    "zipfit-fast": ("zipfit-fast", {}),
    "dsir": ("dsir", {}),
    "dsir-gumbel": ("dsir", {"resample": "gumbel", "seed": 3}),
    "random": ("random", {"seed": 5}),
    "embed-sim": ("embed-sim", {}),
    "gip": ("gip", {"embed": "minilm", "k": 20}),
    "ppl": ("ppl", {"max_tokens": 64}),
    "lamdas": ("lamdas", {"epochs": 1, "max_tokens": 64}),
    "hybrid": ("hybrid", {}),
}


def digest(scores: jaxsel.Scores) -> str:
    h = hashlib.sha256(np.ascontiguousarray(scores.values, np.float64).tobytes())
    if scores.order is not None:
        h.update(np.asarray(scores.order, np.int64).tobytes())
    return h.hexdigest()[:16]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the digests here (JSON)")
    p.add_argument("--check", help="compare with digests written by --out")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    args = p.parse_args()
    full = default_pool()
    pool = full.subset(range(0, len(full), 11))
    target = humaneval_target().subset(range(20))
    got = {}
    for name in args.cases.split(","):
        method, options = CASES[name]
        got[name] = digest(jaxsel.score(pool, target, method=method, **options))
        print(f"{name}: {got[name]}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(got, f, indent=1)
    if args.check:
        with open(args.check) as f:
            want = json.load(f)
        bad = [n for n in got if want.get(n) != got[n]]
        print("identical" if not bad else f"CHANGED: {', '.join(bad)}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
