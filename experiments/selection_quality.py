"""Selection quality on the embedded default: domain precision@K and downstream held-out CE.

Command (from the repository root):

    .venv/bin/python experiments/selection_quality.py [--target humaneval|markdown|man|c|...]
        [--pool-size 400] [--tokens 4096] [--batch-size 4] [--doc-tokens 0] [--random-seeds 2]
        [--lamdas-epochs 1] [--train-seeds 1]
        [--methods random,dsir,zipfit,zipfit-debias,zipfit-fast,embed-sim,lamdas,hybrid
                   (also: the HYBRID_VARIANTS below)]
        [--out out/selection_quality] [--seed 0]

What it does: a seeded random subsample of `--pool-size` documents of the embedded mixed pool
(python, c, man, javascript, license, markdown) and a target split (seeded) into a target for
the methods (80%) and a held-out split (20%) that no method sees:

- `--target humaneval` (default): the 164 HumanEval problems; precision counts the `python`
  domain.
- `--target markdown` (or any other domain of the pool: c, javascript, license, man, python):
  100 documents of that domain of the embedded default (for markdown: node modules' READMEs and
  docs) drawn (seeded) from those *not* in the subsample, so target and pool never share a
  document; precision counts that domain (markdown's prose-like off-target domains: license
  texts, man pages).

Every method scores the pool against the target with its default settings (except the ones
named below); the table gives precision@100/200 of the target's domain, P@R (R = the number of
the domain's documents in the pool: precision at the rank where a perfect method has found them
all) and, with `--tokens N > 0`, the held-out cross-entropy (nats/token) of SmolLM2-135M after
LoRA fine-tuning (r = 8, `jaxsel.downstream` defaults except those below) on the first N tokens
of each method's ranking: the same tokens, steps, learning-rate schedule and seed for every
method, so selections are compared at equal token budgets. `random` is the floor; with
`--random-seeds R` it runs with seeds 0..R-1 (rows `random`, `random-1`, ...), whose CE spread
is selection noise. With `--train-seeds S` every selection is fine-tuned S times (fine-tuning
seeds 0..S-1: LoRA init and batch order) and its CE is the mean over seeds (the table adds each
row's lowest and highest seed CE); at 16k tokens one selection's CE moved by up to 0.09 between
seeds, so single-seed differences below that are not evidence. Each CE is also given as a
difference to `random` with a paired bootstrap over the held-out texts (1,000 resamples of the
texts, the same for every method; per-text NLL averaged over the fine-tuning seeds; the
2.5-97.5% interval). `untrained` is the model before fine-tuning.

Settings made small for a shared 2-core CPU (change them for a real run): lamdas trains its
prefix for `--lamdas-epochs` epochs on the target truncated to 128 tokens and scores the first
128 tokens of each candidate; downstream rows are 128 tokens, `--batch-size` rows per step,
evaluation texts truncated to 128 tokens. A budget of whole documents is only the ranking's
first few documents (4,096 tokens = 2-5 pool documents here); `--doc-tokens 128` trains on the
first 128 tokens of each of the first 32 instead, so CE reflects more of the ranking.
`zipfit-debias` is `zipfit --debias length`; `hybrid` is the default hybrid (dsir + zipfit +
embed-sim, members whose scores follow length debiased, z-score fusion; their scores reused
from this run's workdir); the `HYBRID_VARIANTS` (not in the default list) fuse other members or
the same ones otherwise, each setting spelled out: `hybrid-es` (zipfit + embed-sim, the default
debiasing), `hybrid-length` (zipfit + embed-sim, every member debiased: the setting of the
tables measured before 2026-12-02), `hybrid-raw` and `hybrid-rrf` (zipfit + embed-sim, no
debiasing, by z-scores and by RRF), `hybrid-dsir` and `hybrid-dsir-raw` (dsir + zipfit +
embed-sim, every member or none debiased), `hybrid-dsir-es` (dsir + embed-sim, every member
debiased).

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
from jaxsel.methods import hybrid, lamdas, zipfit
from jaxsel.methods import random as random_method

ALL = "random,dsir,zipfit,zipfit-debias,zipfit-fast,embed-sim,lamdas,hybrid"
DOMAINS = ("c", "javascript", "license", "man", "markdown", "python")  # the embedded pool's
TARGETS = {"humaneval": "python", **{d: d for d in DOMAINS}}
HYBRID_VARIANTS = {  # other members or fusion settings than the default hybrid's
    "hybrid-es": {"of": "zipfit,embed-sim"},
    "hybrid-length": {"of": "zipfit,embed-sim", "debias": "length"},
    "hybrid-raw": {"of": "zipfit,embed-sim", "debias": "none"},
    "hybrid-rrf": {"of": "zipfit,embed-sim", "debias": "none", "fusion": "rrf"},
    "hybrid-dsir": {"of": "dsir,zipfit,embed-sim", "debias": "length"},
    "hybrid-dsir-raw": {"of": "dsir,zipfit,embed-sim", "debias": "none"},
    "hybrid-dsir-es": {"of": "dsir,embed-sim", "debias": "length"},
}


def method_and_config(name: str, args):
    if name == "zipfit-debias":
        return methods.get("zipfit"), zipfit.Config(debias="length")
    if name == "lamdas":
        cfg = lamdas.Config(epochs=args.lamdas_epochs, max_tokens=128, train_max_tokens=128)
        return methods.get("lamdas"), cfg
    if name in HYBRID_VARIANTS:
        return methods.get("hybrid"), hybrid.Config(**HYBRID_VARIANTS[name])
    if name.startswith("random-"):
        return methods.get("random"), random_method.Config(seed=int(name.split("-")[1]))
    m = methods.get(name)
    return m, m.config_cls()


def pool_and_target(args):
    """(pool subsample, target for the methods, held-out split, target domain)."""
    full = default_pool()
    keep = np.sort(np.random.default_rng(args.seed).permutation(len(full))[: args.pool_size])
    if args.target == "humaneval":
        target = humaneval_target()
    else:
        domains = full.field("domain")
        rest = np.setdiff1d(np.arange(len(full)), keep)
        cand = [i for i in rest if domains[i] == TARGETS[args.target]]
        pick = np.random.default_rng(args.seed + 1).permutation(cand)[:100]
        target = full.subset(np.sort(pick))
    target, heldout = downstream.split_heldout(target, 0.2, args.seed)
    return full.subset(keep), target, heldout, TARGETS[args.target]


def write(out: Path, rows: list[dict], meta: dict, done: bool) -> None:
    meta = {**meta, "complete": done}
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    ce = "untrained_ce" in meta
    head = f"| method | P@100 | P@200 | P@R (R = {meta['domain_in_pool']}) |"
    seeds = meta.get("train_seeds", 1) > 1
    if ce:
        head += " held-out CE | vs untrained | vs random (95% bootstrap) |"
        head += " seed CE min–max |" if seeds else ""
    head += " score s |" + (" fine-tune s |" if ce else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = next((r for r in rows if r["method"] == "random" and "ce" in r), None)
    for r in rows:
        cells = [r["method"], f"{r['P@100']:.2f}", f"{r['P@200']:.2f}", f"{r['P@R']:.2f}"]
        if ce:
            vs = ""
            if base is not None and r is not base:
                lo, hi = downstream.paired_bootstrap(r, base)
                vs = f"{r['ce'] - base['ce']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
            cells += [f"{r['ce']:.4f}", f"{r['ce'] - meta['untrained_ce']:+.4f}", vs]
            if seeds:
                cells.append(f"{min(r['ce_seeds']):.4f}–{max(r['ce_seeds']):.4f}")
        cells.append(f"{r['score_seconds']:.0f}")
        if ce:
            cells.append(f"{r['finetune_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if ce:
        lines.append(f"| untrained | | | | {meta['untrained_ce']:.4f} | | |" + " |" * (2 + seeds))
    if not done:
        lines.append("\n(partial: the run did not finish every method)")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=sorted(TARGETS), default="humaneval")
    ap.add_argument("--pool-size", type=int, default=400)
    ap.add_argument("--tokens", type=int, default=4096, help="0: precision only")
    ap.add_argument("--batch-size", type=int, default=4, help="rows of 128 tokens per step")
    ap.add_argument(
        "--doc-tokens", type=int, default=0, help="first N tokens of each text (0: whole texts)"
    )
    ap.add_argument("--methods", default=ALL)
    ap.add_argument("--random-seeds", type=int, default=2)
    ap.add_argument("--lamdas-epochs", type=int, default=1)
    ap.add_argument(
        "--train-seeds", type=int, default=1, help="fine-tune each selection with seeds 0..S-1"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/selection_quality")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool, target, heldout, domain = pool_and_target(args)
    domains = [str(d) for d in pool.field("domain")]
    names = args.methods.split(",")
    if "random" in names:
        at = names.index("random") + 1
        names[at:at] = [f"random-{s}" for s in range(1, args.random_seeds)]
    t0 = time.perf_counter()
    meta = {
        "target": args.target,
        "domain": domain,
        "pool": len(pool),
        "domain_in_pool": domains.count(domain),
        "target_items": len(target),
        "heldout": len(heldout),
    }
    lm = dcfg = None
    if args.tokens or "lamdas" in names:
        from jaxsel.models.loaders import load_smollm2

        lm = load_smollm2()
    if args.tokens:
        dcfg = DownstreamConfig(
            tokens=args.tokens,
            seq_len=128,
            batch_size=args.batch_size,
            eval_every=0,
            eval_max_tokens=128,
            doc_tokens=args.doc_tokens,
            seeds=args.train_seeds,
        )
        meta["downstream"] = dataclasses.asdict(dcfg)
        meta["train_seeds"] = args.train_seeds
        meta["untrained_ce"] = downstream.heldout_ce(lm, None, heldout.texts, dcfg)
    rows = []
    for name in names:
        method, cfg = method_and_config(name, args)
        t1 = time.perf_counter()
        kw = {"lm": lm} if name == "lamdas" else {}
        wd = out / "work" / ("" if name.startswith("hybrid") else name)
        scores = method.score(pool, target, cfg, workdir=wd, progress=False, **kw)
        score_s = time.perf_counter() - t1
        ranking = scores.ranking()
        ranked = [domains[i] for i in ranking]
        row = {
            "method": name,
            "P@100": precision_at_k(ranked, domain, 100),
            "P@200": precision_at_k(ranked, domain, 200),
            "P@R": precision_at_k(ranked, domain, meta["domain_in_pool"]),
            "score_seconds": score_s,
        }
        if args.tokens:
            t1 = time.perf_counter()
            texts = [pool.texts[i] for i in ranking]
            rows_tok, used = downstream.pack_tokens(
                lm.tokenizer, texts, dcfg.tokens, dcfg.seq_len, name, dcfg.doc_tokens
            )
            curve = downstream.finetune_curve(
                lm, name, rows_tok, heldout.texts, dcfg, meta["untrained_ce"]
            )
            row.update(
                ce=curve.ce[-1],
                ce_seeds=[c[-1] for c in curve.ce_seeds],
                texts_used=used,
                final_nll=curve.final_nll,
                final_tokens=curve.final_tokens,
                train_loss=curve.train_loss,
                finetune_seconds=time.perf_counter() - t1,
            )
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.startswith(("final", "train"))}))
        write(out, rows, {**meta, "seconds": time.perf_counter() - t0}, False)
    write(out, rows, {**meta, "seconds": time.perf_counter() - t0}, True)
    print((out / "table.md").read_text())


if __name__ == "__main__":
    main()
