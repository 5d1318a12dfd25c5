"""Selection quality on the embedded default: domain precision@K and downstream held-out CE.

Command (from the repository root):

    .venv/bin/python experiments/selection_quality.py [--pool-size 600] [--tokens 4096]
        [--methods random,dsir,zipfit,zipfit-debias,zipfit-fast,embed-sim,lamdas,hybrid]
        [--out out/selection_quality] [--seed 0]

What it does: a seeded random subsample of `--pool-size` documents of the embedded mixed pool
(python, c, man, javascript, license, markdown); HumanEval as the target, split (seeded) into a
target for the methods (80%) and a held-out split (20%) that no method sees. Every method scores
the pool against the target with its default settings (except the ones named below); the table
gives precision@100/200 of the `python` domain, and the held-out HumanEval cross-entropy
(nats/token) of SmolLM2-135M after LoRA fine-tuning (r = 8, `jaxsel.downstream` defaults except
those below) on the first `--tokens` tokens of each method's ranking: the same tokens, steps,
learning-rate schedule and seed for every method, so selections are compared at equal token
budgets. `random` is the floor; `untrained` is the model before fine-tuning.

Settings made small for a shared 2-core CPU (change them for a real run): lamdas trains its
prefix for `--lamdas-epochs` epochs on the target truncated to 128 tokens and scores the first
128 tokens of each candidate; downstream rows are 128 tokens, batch 8, evaluation texts
truncated to 128 tokens. `zipfit-debias` is `zipfit --debias length`; `hybrid` is the default
reciprocal-rank fusion of zipfit and embed-sim (their scores reused from this run's workdir).

Results are written after every method (`<out>/results.json`, `<out>/table.md`), so an
interrupted run shows what finished, marked as partial.
Hardware and runtime: the README section names the machine, its load and the wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from jaxsel import downstream, methods
from jaxsel.data.defaults import default_pool, humaneval_target
from jaxsel.downstream import DownstreamConfig
from jaxsel.evaluate import precision_at_k
from jaxsel.methods import lamdas, zipfit
from jaxsel.models.loaders import load_smollm2

ALL = "random,dsir,zipfit,zipfit-debias,zipfit-fast,embed-sim,lamdas,hybrid"


def method_and_config(name: str, args):
    if name == "zipfit-debias":
        return methods.get("zipfit"), zipfit.Config(debias="length")
    if name == "lamdas":
        cfg = lamdas.Config(epochs=args.lamdas_epochs, max_tokens=128, train_max_tokens=128)
        return methods.get("lamdas"), cfg
    m = methods.get(name)
    return m, m.config_cls()


def write(out: Path, rows: list[dict], meta: dict, done: bool) -> None:
    meta = {**meta, "complete": done}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    head = "| method | P@100 | P@200 | held-out CE | vs untrained | score s | fine-tune s |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        ce = r.get("ce")
        cells = [
            r["method"],
            f"{r['P@100']:.2f}",
            f"{r['P@200']:.2f}",
            "" if ce is None else f"{ce:.4f}",
            "" if ce is None else f"{ce - meta['untrained_ce']:+.4f}",
            f"{r['score_seconds']:.0f}",
            "" if ce is None else f"{r['finetune_seconds']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| untrained | | | {meta['untrained_ce']:.4f} | | | |")
    if not done:
        lines.append("\n(partial: the run did not finish every method)")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool-size", type=int, default=600)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--methods", default=ALL)
    ap.add_argument("--lamdas-epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/selection_quality")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    full = default_pool()
    keep = np.sort(np.random.default_rng(args.seed).permutation(len(full))[: args.pool_size])
    pool = full.subset(keep)
    target, heldout = downstream.split_heldout(humaneval_target(), 0.2, args.seed)
    domains = [str(d) for d in pool.field("domain")]
    lm = load_smollm2()
    dcfg = DownstreamConfig(
        tokens=args.tokens, seq_len=128, batch_size=8, eval_every=0, eval_max_tokens=128
    )
    t0 = time.perf_counter()
    meta = {
        "pool": len(pool),
        "python_in_pool": domains.count("python"),
        "target": len(target),
        "heldout": len(heldout),
        "downstream": dataclasses.asdict(dcfg),
        "untrained_ce": downstream.heldout_ce(lm, None, heldout.texts, dcfg),
    }
    rows = []
    for name in args.methods.split(","):
        method, cfg = method_and_config(name, args)
        t1 = time.perf_counter()
        kw = {"lm": lm} if name == "lamdas" else {}
        wd = out / "work" / ("" if name == "hybrid" else name)
        scores = method.score(pool, target, cfg, workdir=wd, progress=False, **kw)
        score_s = time.perf_counter() - t1
        ranking = scores.ranking()
        ranked = [domains[i] for i in ranking]
        row = {
            "method": name,
            "P@100": precision_at_k(ranked, "python", 100),
            "P@200": precision_at_k(ranked, "python", 200),
            "score_seconds": score_s,
        }
        t1 = time.perf_counter()
        rows_tok, _ = downstream.pack_tokens(
            lm.tokenizer, [pool.texts[i] for i in ranking], dcfg.tokens, dcfg.seq_len, name
        )
        curve = downstream.finetune_curve(
            lm, name, rows_tok, heldout.texts, dcfg, meta["untrained_ce"]
        )
        row.update(ce=curve.ce[-1], finetune_seconds=time.perf_counter() - t1)
        rows.append(row)
        print(json.dumps(row), flush=True)
        write(out, rows, {**meta, "seconds": time.perf_counter() - t0}, False)
    write(out, rows, {**meta, "seconds": time.perf_counter() - t0}, True)
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
