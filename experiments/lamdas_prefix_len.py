"""LAMDAS ablation: reference-set log-likelihood vs prefix length P (paper Figure 3).

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/lamdas_prefix_len.py [--out out/lamdas]

Hardware / runtime: written for the 2-core CPU development machine (SmolLM2-135M forward
~400-900 tokens/s there when idle, several times less under load), where it takes ~20-40 min;
on a GPU the full setting (`--n-ref 82 --max-tokens 512 --epochs 10 --lr 1e-3`) is minutes.

CPU-sized subsample (the defaults): SmolLM2-135M (embedded), HumanEval split by parity — the
even-indexed problems are the reference set the prefix is trained on (first `--n-ref` = 40), the
odd-indexed ones are held out (first 40) — every text truncated to its first 128 tokens,
3 epochs of AdamW, batch 4, lr 1e-2 (the paper's 1e-3 is for ~10 epochs over a much larger
reference set; with 30 steps it barely moves the prefix), weight decay 0.1, prefix initialised
from the model's KV of the first P reference tokens. For each P in {1, 5, 10, 20, 30, 50} it
reports the mean token NLL (nats/token) of the reference set (what eq. 1 maximises, the
quantity of Figure 3) and of the held-out half, beside the plain model (no prefix).

Expected (paper): the likelihood rises with P and saturates around P = 30. The trained prefixes
are kept under `--out` (orbax checkpoints, resumable), one directory per P; the P = 30 one is
the default prefix of experiments/lamdas_default.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from pathlib import Path

import numpy as np

from jaxsel.data.defaults import humaneval_target
from jaxsel.methods import lamdas
from jaxsel.models.loaders import load_smollm2


def reference_split(n_ref: int, n_eval: int) -> tuple[list[str], list[str]]:
    """HumanEval by parity: even-indexed problems train, odd-indexed are held out."""
    texts = humaneval_target().texts
    return list(texts[0::2][:n_ref]), list(texts[1::2][:n_eval])


def nll(terms: np.ndarray) -> tuple[float, float]:
    """(conditioned, plain) mean token NLL from `likelihood_terms` rows."""
    n = terms[:, 3].sum()
    return float(-terms[:, 1].sum() / n), float(-terms[:, 2].sum() / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/lamdas")
    ap.add_argument("--lens", default="1,5,10,20,30,50")
    ap.add_argument("--n-ref", type=int, default=40)
    ap.add_argument("--n-eval", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lm = load_smollm2()
    ref, held = reference_split(args.n_ref, args.n_eval)
    rows = []
    for p_len in (int(x) for x in args.lens.split(",")):
        cfg = lamdas.Config(
            prefix_len=p_len,
            epochs=args.epochs,
            lr=args.lr,
            max_tokens=args.max_tokens,
            prefix_dir=str(out / f"prefix-P{p_len}"),
        )
        t0 = time.perf_counter()
        prefix, losses = lamdas.train_prefix(lm, ref, cfg, progress=args.progress)
        t_train = time.perf_counter() - t0
        ref_c, ref_p = nll(lamdas.likelihood_terms(lm, prefix, ref, cfg, progress=args.progress))
        held_c, held_p = nll(lamdas.likelihood_terms(lm, prefix, held, cfg, progress=args.progress))
        rows.append(
            {
                "P": p_len,
                "train_nll_per_epoch": losses,
                "ref_nll": ref_c,
                "ref_nll_plain": ref_p,
                "heldout_nll": held_c,
                "heldout_nll_plain": held_p,
                "train_seconds": round(t_train, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    report = {"settings": vars(args), "uptime": load, "rows": rows}
    (out / "prefix_len.json").write_text(json.dumps(report, indent=1))
    print(
        f"\n{'P':>4} {'ref NLL':>9} {'held-out NLL':>13}   (plain model: ref "
        f"{rows[0]['ref_nll_plain']:.4f}, held-out {rows[0]['heldout_nll_plain']:.4f})"
    )
    for r in rows:
        print(f"{r['P']:>4} {r['ref_nll']:>9.4f} {r['heldout_nll']:>13.4f}")
    print(load)


if __name__ == "__main__":
    main()
