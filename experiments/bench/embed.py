"""Encoder throughput: our JAX MiniLM vs HF transformers (torch CPU) on the same weights, plus
MiniLM cosine similarities of paraphrase vs unrelated pairs.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/embed.py [--reps 3] [--out out/bench-embed.json]

Hardware: any; the numbers in the README were taken on the 2-core CPU development machine with
`uptime` load printed beside them. Runtime: about 1-2 minutes on that CPU.

What it measures, for batch 32 of real texts (default pool) each truncated to exactly T tokens,
T in (128, 256):
- embeddings/s of `bert.embed` under jit (one device) and of transformers' BertModel + mean
  pooling + normalisation under torch.no_grad (torch's default thread count), median of --reps
  timed batches after a warm-up, and the max abs difference between the two;
- model FLOP/s and MFU: the encoder's matmul FLOPs (QKV, scores, values, output, FFN) per second
  over the FLOP/s of one large f32 matmul measured here with XLA (the achievable peak: best of
  3 × --reps calls, shared with bench/models.py);
- end to end `embed_corpus` on 256 pool texts (tokenising, length bucketing, all buckets
  compiled in a warm-up run);
- cosines of 3 paraphrase pairs and 3 unrelated pairs.

Expected: JAX and torch within ~1e-6 of each other and of the same order of speed; paraphrase
cosines well above unrelated ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
from _timing import matmul_flops, median_time

from jaxsel.data.defaults import default_pool
from jaxsel.models import bert
from jaxsel.models.embed import embed_corpus

BATCH = 32
PARAPHRASES = [
    ("A man is playing a guitar.", "Someone is strumming a guitar."),
    ("How do I reverse a list in Python?", "What is the way to invert the order of a Python list?"),
    ("The stock market fell sharply today.", "Share prices dropped steeply today."),
]
UNRELATED = [
    ("A man is playing a guitar.", "How do I reverse a list in Python?"),
    ("The stock market fell sharply today.", "def add(a, b):\n    return a + b"),
    ("Someone is strumming a guitar.", "The cat sat on the mat."),
]


def encoder_flops(cfg: bert.BertConfig, t: int) -> int:
    """Matmul FLOPs of one forward over t tokens (embedding lookup and norms excluded)."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    per_layer = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * f
    return cfg.num_layers * per_layer


def batch_of_length(enc: bert.LoadedEncoder, texts, t: int) -> tuple[np.ndarray, np.ndarray]:
    """BATCH real texts that are at least t tokens long, truncated to exactly t."""
    ids = [x for x in enc.tokenizer.encode_batch(list(texts), t) if len(x) == t][:BATCH]
    if len(ids) < BATCH:
        raise SystemExit(f"only {len(ids)} pool texts reach {t} tokens")
    return np.stack(ids), np.ones((BATCH, t), bool)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    import torch
    import transformers

    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    enc = bert.load_bert()
    hf = transformers.AutoModel.from_pretrained(bert.minilm_dir()).eval()
    pool = default_pool()
    peak = matmul_flops(args.reps)
    jit_embed = jax.jit(bert.embed, static_argnums=3)

    def torch_embed(tokens, mask):
        with torch.no_grad():
            m = torch.as_tensor(mask, dtype=torch.float32)[..., None]
            h = hf(
                input_ids=torch.as_tensor(tokens, dtype=torch.long),
                attention_mask=torch.as_tensor(mask, dtype=torch.long),
            ).last_hidden_state
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()

    rows = []
    for t in (128, 256):
        tokens, mask = batch_of_length(enc, pool.texts, t)
        ours = np.asarray(jit_embed(enc.params, tokens, mask, enc.cfg))
        diff = float(np.abs(ours - torch_embed(tokens, mask)).max())
        flops = encoder_flops(enc.cfg, t) * BATCH
        for name, fn in (
            ("jax", lambda tk, mk: jit_embed(enc.params, tk, mk, enc.cfg).block_until_ready()),
            ("torch", torch_embed),
        ):
            secs = median_time(fn, args.reps, tokens, mask)
            rows.append(
                {
                    "impl": name,
                    "tokens": t,
                    "emb_per_s": BATCH / secs,
                    "gflop_per_s": flops / secs / 1e9,
                    "mfu": flops / secs / peak,
                    "max_abs_diff_vs_other": diff,
                }
            )

    texts = pool.texts[:256]
    embed_corpus(texts, enc)  # warm-up: compiles every bucket these texts need
    t0 = time.perf_counter()
    embed_corpus(texts, enc)
    corpus_rate = len(texts) / (time.perf_counter() - t0)

    def cosines(pairs):
        e = embed_corpus([s for p in pairs for s in p], enc)
        return [float(c) for c in np.sum(e[0::2] * e[1::2], axis=1)]

    result = {
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "uptime_before": load_before,
        "uptime_after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "matmul_gflop_per_s": peak / 1e9,
        "batch": BATCH,
        "rows": rows,
        "embed_corpus_pool256_texts_per_s": corpus_rate,
        "paraphrase": [
            {"a": a, "b": b, "cos": c}
            for (a, b), c in zip(PARAPHRASES, cosines(PARAPHRASES), strict=True)
        ],
        "unrelated": [
            {"a": a, "b": b, "cos": c}
            for (a, b), c in zip(UNRELATED, cosines(UNRELATED), strict=True)
        ],
    }
    print(f"load: {result['uptime_before']}  ->  {result['uptime_after']}")
    print(f"XLA f32 matmul peak: {peak / 1e9:.1f} GFLOP/s; torch threads {result['torch_threads']}")
    print("| impl | tokens | embeddings/s | GFLOP/s | MFU | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['impl']} | {r['tokens']} | {r['emb_per_s']:.1f} | {r['gflop_per_s']:.1f} | "
            f"{r['mfu']:.1%} | {r['max_abs_diff_vs_other']:.1e} |"
        )
    print(f"embed_corpus, 256 pool texts (<=256 tokens, bucketed): {corpus_rate:.1f} texts/s")
    for kind in ("paraphrase", "unrelated"):
        for p in result[kind]:
            print(f"{kind:10s} {p['cos']:+.3f}  {p['a']!r} ~ {p['b']!r}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
