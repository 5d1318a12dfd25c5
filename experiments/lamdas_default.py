"""LAMDAS on the embedded default: retention per threshold tau (paper Figure 4) and precision@K
of the python domain with HumanEval as the reference set.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/lamdas_default.py [--out out/lamdas]

Hardware / runtime: written for the 2-core CPU development machine, ~10-20 min there
(SmolLM2-135M forward ~400-900 tokens/s when idle, less under load; both LAMDAS passes cost
2 forwards per candidate); on a GPU the full pool and `--max-tokens 512` take minutes.

CPU-sized subsample (the defaults):
- reference: the first 40 even-indexed HumanEval problems (the odd half is held out in
  experiments/lamdas_prefix_len.py), truncated to 128 tokens;
- prefix: P = 30, initialised from the model's KV of the first 30 reference tokens, 3 epochs of
  AdamW (lr 1e-2, weight decay 0.1, batch 4) — the settings of lamdas_prefix_len.py, so its
  P = 30 prefix (out/lamdas/prefix-P30) is reused when present;
- pool: the first `--per-domain` (40) documents of each domain of `default_pool()` (python, c,
  license, man, javascript, markdown: 240 documents, 1/6 python), truncated to 128 tokens.

Reported: retention (fraction of the pool with s > tau) for tau in {0.8, 0.9, 1.0, 1.1, 1.2}
(paper, SFT code data: ~50/40/30/10/5 %), the domain mix of the tau = 1 selection, precision@K
of python for K = #python and K = 10 % of the pool, for the per-token score (default), the
sequence-ratio variant (`ratio="sum"`), and, from the same forward passes, the plain model's
perplexity ranking (lowest NLL first: the paper's "PPL" baseline without fine-tuning).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np

from jaxsel.data.defaults import default_pool, humaneval_target
from jaxsel.evaluate import domain_mix, precision_at_k
from jaxsel.methods import lamdas
from jaxsel.models.loaders import load_smollm2
from jaxsel.scores import Scores

TAUS = (0.8, 0.9, 1.0, 1.1, 1.2)


def pool_subsample(per_domain: int):
    """The first `per_domain` documents of each domain, in pool order."""
    pool = default_pool()
    seen: Counter = Counter()
    keep = []
    for i, d in enumerate(pool.field("domain")):
        if seen[d] < per_domain:
            seen[d] += 1
            keep.append(i)
    return pool.subset(keep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/lamdas")
    ap.add_argument("--per-domain", type=int, default=40)
    ap.add_argument("--n-ref", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    lm = load_smollm2()
    ref = list(humaneval_target().texts[0::2][: args.n_ref])
    pool = pool_subsample(args.per_domain)
    domains = [str(d) for d in pool.field("domain")]
    cfg = lamdas.Config(
        prefix_len=30,
        epochs=args.epochs,
        lr=args.lr,
        max_tokens=args.max_tokens,
        prefix_dir=str(out / "prefix-P30"),
    )
    t0 = time.perf_counter()
    prefix, losses = lamdas.train_prefix(lm, ref, cfg, progress=args.progress)
    t1 = time.perf_counter()
    terms = lamdas.likelihood_terms(
        lm, prefix, pool.texts, cfg, progress=args.progress, workdir=out / "default-scores"
    )
    t2 = time.perf_counter()
    n_tok = np.maximum(terms.n_tokens, 1)
    rankings = {
        "lamdas (per-token ratio)": lamdas.ratio_scores(terms, "mean"),
        "lamdas (sequence ratio)": terms.log_ratio,  # log of the sum variant: same order
        "plain-model perplexity": terms.plain / n_tok,  # higher mean log p = lower perplexity
    }
    n_py = domains.count("python")
    k10 = len(pool) // 10
    prec = {}
    for name, vals in rankings.items():
        ranked = [domains[i] for i in Scores(vals, name).ranking()]
        prec[name] = {
            f"P@{n_py}": precision_at_k(ranked, "python", n_py),
            f"P@{k10}": precision_at_k(ranked, "python", k10),
        }
    s = rankings["lamdas (per-token ratio)"]
    retention = {str(t): float((s > t).mean()) for t in TAUS}
    at_one = [domains[i] for i in np.flatnonzero(s > 1.0)]
    by_domain = {d: float(np.median(s[np.array(domains) == d])) for d in sorted(set(domains))}
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    report = {
        "settings": vars(args),
        "pool_size": len(pool),
        "python_share": n_py / len(pool),
        "train_nll_per_epoch": losses,
        "train_seconds": round(t1 - t0, 1),
        "score_seconds": round(t2 - t1, 1),
        "tokens_scored": int(terms.n_tokens.sum()),
        "retention": retention,
        "selection_tau1_mix": domain_mix(at_one),
        "median_score_by_domain": by_domain,
        "score_quantiles": {q: float(np.quantile(s, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
        "precision": prec,
        "uptime": load,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "default.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
