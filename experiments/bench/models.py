"""Causal-LM throughput: our JAX Llama (SmolLM2-135M) vs HF transformers (torch) on the same
weights, in the same run, with model FLOP/s as a fraction of this machine's measured matmul peak.

Command (from the repository root, after `make test` has built .venv):

    .venv/bin/python experiments/bench/models.py [--reps 3] [--out out/bench-models.json]

Hardware: any. On a GPU, JAX uses it and torch uses CUDA when available; the README numbers were
taken on the 2-core CPU development machine with `uptime` load printed beside them (other jobs
share those cores: read the load). Runtime: about 3-5 minutes on that CPU.

What it measures, for T = 512 tokens of real text (CPython standard library sources) and batch
1 and 8, in float32 and bfloat16:
- tokens/s of the teacher-forced forward with full logits (`forward` + `lm_logits`, jitted) and
  of transformers' `LlamaForCausalLM(...).logits` under `torch.inference_mode`, median of --reps
  timed calls after a warm-up, and the max abs logit difference between the two;
- tokens/s of `llama.token_logprobs` (what the `ppl` method runs: chunked head, no [B,T,V] out);
- tokens/s of `decode_step` (KV cache, batch 8), what FineZip's coder runs token by token;
- model FLOP/s and MFU: matmul FLOPs (projections, attention scores and values over the full
  T x T, MLP, head) per second over the FLOP/s of one large matmul measured here with XLA in
  the same dtype (the achievable peak).

Expected on the 2-core CPU: JAX and torch of the same order (hundreds of tokens/s), f32 logits
within ~1e-3 of torch, bf16 no faster than f32 on CPU (no bf16 matmul units).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sysconfig
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _timing import matmul_flops, median_time

from jaxsel.models import llama
from jaxsel.models.loaders import hf_state_dict, load_smollm2

T = 512
BATCHES = (1, 8)
STDLIB_FILES = ("textwrap.py", "argparse.py", "json/decoder.py", "functools.py", "heapq.py")


def _blocking(fn):
    return lambda *args: jax.block_until_ready(fn(*args))


def model_flops(cfg: llama.LlamaConfig, t: int) -> int:
    """Matmul FLOPs of one forward over t tokens with full logits (norms/RoPE excluded)."""
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    qo, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
    proj = 2 * t * (d * qo + 2 * d * kv + qo * d + 3 * d * f)
    attn = 2 * 2 * t * t * qo
    return cfg.num_layers * (proj + attn) + 2 * t * d * cfg.vocab_size


def real_tokens(tok, b: int) -> np.ndarray:
    """[b, T] ids: bos + a stream of CPython stdlib sources, cut into rows."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    ids = []
    for name in STDLIB_FILES:
        ids += tok.encode((stdlib / name).read_text(encoding="utf-8"))
    need = b * (T - 1)
    if len(ids) < need:
        raise SystemExit(f"only {len(ids)} tokens of text, need {need}")
    rows = np.asarray(ids[:need], np.int32).reshape(b, T - 1)
    return np.concatenate([np.full((b, 1), tok.bos_id, np.int32), rows], axis=1)


def hf_model(lm, torch, transformers, device):
    """transformers' LlamaForCausalLM with our (dequantised) weights."""
    c = lm.cfg
    conf = transformers.LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tie_embeddings, max_position_embeddings=c.max_position,
    )  # fmt: skip
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is loaded below
        model = transformers.LlamaForCausalLM(conf)
    sd = hf_state_dict(lm.params, c)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    return model.eval().to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    import torch
    import transformers

    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    load_before = uptime()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    lm32 = load_smollm2("float32")
    load_s = time.perf_counter() - t0
    hf32 = hf_model(lm32, torch, transformers, device)
    peaks = {dt: matmul_flops(args.reps, dt) for dt in ("float32", "bfloat16")}
    rows = []
    for dtype in ("float32", "bfloat16"):
        lm = lm32 if dtype == "float32" else load_smollm2(dtype)
        tdt = torch.float32 if dtype == "float32" else torch.bfloat16
        hf = hf32.to(tdt)
        cfg = lm.cfg
        logits = jax.jit(
            lambda p, t, m, cfg=cfg: llama.lm_logits(p, llama.forward(p, t, m, cfg), cfg)
        )
        logprobs = jax.jit(functools.partial(llama.token_logprobs, cfg=cfg))

        def torch_logits(tokens, hf=hf):
            with torch.inference_mode():
                x = torch.as_tensor(tokens, dtype=torch.long, device=device)
                return hf(x).logits.float().cpu().numpy()

        for b in BATCHES:
            tokens = real_tokens(lm.tokenizer, b)
            mask = np.ones_like(tokens, bool)
            ours = np.asarray(logits(lm.params, tokens, mask))
            diff = float(np.abs(ours - torch_logits(tokens)).max())
            flops = model_flops(cfg, T) * b
            timed = {
                "jax forward+logits": _blocking(logits),
                "torch forward+logits": lambda p, t, m, f=torch_logits: f(t),
                "jax token_logprobs": _blocking(logprobs),
            }
            for name, fn in timed.items():
                secs = median_time(fn, args.reps, lm.params, tokens, mask)
                rows.append({
                    "impl": name, "dtype": dtype, "batch": b, "tokens_per_s": b * T / secs,
                    "gflop_per_s": flops / secs / 1e9, "mfu": flops / secs / peaks[dtype],
                    "max_abs_logit_diff_jax_vs_torch": diff,
                })  # fmt: skip
                print(rows[-1], flush=True)
        # Incremental decoding, batch 8: one token per call against a cache of T positions.
        step = jax.jit(functools.partial(llama.decode_step, cfg=cfg), donate_argnums=1)
        toks = jnp.asarray(real_tokens(lm.tokenizer, 8)[:, :64])
        cache = llama.init_cache(cfg, 8, T)
        layers = llama.unstack_layers(lm.params)  # once, outside the step (see there)
        _, cache = step(layers, cache, toks[:, 0])  # compile
        t0 = time.perf_counter()
        for i in range(1, 64):
            out, cache = step(layers, cache, toks[:, i])
        out.block_until_ready()
        rows.append({
            "impl": "jax decode_step", "dtype": dtype, "batch": 8,
            "tokens_per_s": 8 * 63 / (time.perf_counter() - t0),
        })  # fmt: skip

    result = {
        "device": str(jax.devices()[0]),
        "torch_device": device,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "uptime_before": load_before,
        "uptime_after": uptime(),
        "smollm2_load_s": load_s,
        "matmul_gflop_per_s": {k: v / 1e9 for k, v in peaks.items()},
        "seq_len": T,
        "rows": rows,
    }
    print(f"load: {result['uptime_before']}  ->  {result['uptime_after']}")
    print(
        f"device {result['device']}, torch {device} ({result['torch_threads']} threads); "
        f"SmolLM2 load {load_s:.1f} s; XLA matmul peak f32 {peaks['float32'] / 1e9:.0f}, "
        f"bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s"
    )
    print("| impl | dtype | batch x 512 | tokens/s | GFLOP/s | MFU | max logit diff |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        extra = (
            f"{r['gflop_per_s']:.1f} | {r['mfu']:.1%} | {r['max_abs_logit_diff_jax_vs_torch']:.1e}"
            if "mfu" in r
            else "- | - | -"
        )
        print(f"| {r['impl']} | {r['dtype']} | {r['batch']} | {r['tokens_per_s']:.0f} | {extra} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
