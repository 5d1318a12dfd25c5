"""How far a ring's growing RoPE positions can go in float32 (FineZip `--sliding ring`).

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/rope_positions.py [--offsets 0,8192,65536,...] [--texts 3]

Hardware / runtime: any; ~2 minutes on the 2-core CPU development VM.

A ring codes segment position p with RoPE at p itself (`llama.decode_step(ring=True)`), so a
long segment reaches positions far past the model's 2,048. In exact arithmetic attention sees only
position differences, so shifting every position of a text by the same offset changes nothing;
in float32 the angles p * inv_freq lose precision as p grows, and integers past 2**24 are not
even representable. This runs SmolLM2-135M (float32) teacher-forced over 1,024-token slices of
the Vim-manual corpus of experiments/bench/finezip.py (bos + 1,023 tokens at 100 KB, 400 KB and
700 KB into the megabyte) with positions arange(1024) + offset, and prints the mean bits/token
against offset 0. Measured (2-core AMD EPYC VM, 2026-12-02): +0.000% up to 65,536, -0.002% at 2**18,
+0.011% at 2**20, +0.008% at 2**22, +26.4% at 2**24 — hence `api.RING_EXACT_POSITIONS`.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxsel.models import llama
from jaxsel.models.loaders import load_smollm2

sys.path.insert(0, str(Path(__file__).parent / "bench"))
from finezip import manual  # noqa: E402


def bits_per_token(lm, tokens: jax.Array, offset: int) -> float:
    pos = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32) + offset, tokens.shape)
    mask = jnp.ones(tokens.shape, bool)
    h = llama.forward(lm.params, tokens, mask, lm.cfg, positions=pos)
    head = functools.partial(llama.lm_logits, lm.params, cfg=lm.cfg)
    lp, _ = llama.token_logprobs_and_ranks(head, h[:, :-1], tokens[:, 1:], mask[:, 1:])
    return float(-np.mean(np.asarray(lp, np.float64)) / np.log(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--offsets", default="0,8192,65536,262144,1048576,4194304,16777216")
    ap.add_argument("--texts", type=int, default=3)
    args = ap.parse_args()
    lm = load_smollm2()
    text = manual(1_000_000).decode()
    rows = [
        [lm.tokenizer.bos_id] + lm.tokenizer.encode(text[s : s + 12_000])[:1023]
        for s in (100_000, 400_000, 700_000)[: args.texts]
    ]
    tokens = jnp.asarray(np.array(rows, np.int32))
    base = bits_per_token(lm, tokens, 0)
    for off in (int(o) for o in args.offsets.split(",")):
        b = bits_per_token(lm, tokens, off)
        print(f"offset {off:>10,}: {b:.5f} bits/token ({100 * (b / base - 1):+.3f}%)", flush=True)


if __name__ == "__main__":
    main()
